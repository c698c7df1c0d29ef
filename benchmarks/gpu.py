"""GPU: a training step (forward + backward) of the paper-size presets in bf16, ours against transformers' port at
equal weights on the same card: step time, peak memory, inputs per second and model FLOPs utilisation (MFU).

Rows (paper sizes; batch per row below): ``imagenet_fourier`` (224 x 224 pixels: 50,176 inputs), ``mlm``
(``language_perceiver_bytes``, 2,048 bytes) and ``optical_flow`` (368 x 496 frame pairs: 182,528 inputs). Both
implementations hold the same weights (``perceiver_io.convert.to_transformers`` of ours) and run under
``torch.autocast(bfloat16)``; ours uses ``F.scaled_dot_product_attention`` with every backend allowed (flash where
the shapes allow), transformers' Perceiver its own matrix-product attention.

* Time: CUDA events around ``--steps`` steps after ``--warmup`` steps (zero_grad, forward, mean-square loss of the
  float32 outputs, backward); the median step.
* Memory: ``torch.cuda.max_memory_allocated`` over one step after a reset (weights, gradients and activations).
* FLOPs: :func:`perceiver_io.flops.count_flops` of one forward (every matrix product, attention included) x 3 for
  forward + backward; MFU = FLOPs / step time / the card's dense bf16 peak (a table of known cards, or
  ``--peak-tflops``).

``--tiny`` shrinks every row (small latents, small inputs) so that the script runs on the CPU in seconds: what the
tests run, so that the script is ready for the day a GPU is lent. The whole GPU run is sized for under 8 minutes on
one large card (``--steps 10``).

It runs once, unattended, on a borrowed card whose torch and transformers may differ from ours: an implementation
that fails (out of memory or any other error) is recorded in its row with the error and the run goes on, and the
``.json`` is rewritten after every row, so a run stopped early still leaves the rows it finished (re-render them with
``--from-json``). From the repository root, without installing: ``PYTHONPATH=src PYTHONUNBUFFERED=1 python3
benchmarks/gpu.py --out OUT_DIR``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _measure as m  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, matched by name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0}

ROWS: list[dict[str, Any]] = [
    {"name": "imagenet_fourier", "preset": "imagenet_fourier", "batch": 16, "image": (224, 224)},
    {"name": "mlm", "preset": "language_perceiver_bytes", "batch": 16, "seq_len": 2048},
    {"name": "optical_flow", "preset": "optical_flow", "batch": 4, "frames": (368, 496)},
]
# --tiny: the same models, small enough for a CPU (config parts overridden as create_model takes them).
TINY_ENCODER = {"num_latents": 16, "num_latent_channels": 64, "num_blocks": 1, "num_self_attends_per_block": 2,
                "num_self_attend_heads": 2}
TINY = {"imagenet_fourier": {"batch": 2, "image": (32, 32),
                             "overrides": {"encoder": TINY_ENCODER, "decoder": {"query": {"num_channels": 64}}}},
        "mlm": {"batch": 2, "seq_len": 64,
                "overrides": {"max_seq_len": 64, "encoder": {**TINY_ENCODER, "qk_channels": 64, "v_channels": 64}}},
        "optical_flow": {"batch": 1, "frames": (12, 16),
                         "overrides": {"train_size": (12, 16), "encoder": {**TINY_ENCODER, "num_blocks": 1}}}}


def build_row(row: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A row's models with the same weights on ``device`` (``ours``, ``theirs``), the arguments of our forward
    (``args``) and of transformers' (``kwargs``), and the inputs per sample (``per_sample``)."""
    from perceiver_io import create_model
    from perceiver_io.adapters.flow import frame_patches
    from perceiver_io.convert.transformers import to_transformers

    torch.manual_seed(m.SEED)
    ours = create_model(row["preset"], **row.get("overrides", {})).to(device).train()
    theirs = to_transformers(ours).to(device).train()
    b = row["batch"]
    if "image" in row:
        h, w = row["image"]
        x = torch.randn(b, 3, h, w, device=device)
        return {"ours": ours, "theirs": theirs, "args": (x,), "kwargs": {"pixel_values": x}, "per_sample": h * w}
    if "seq_len" in row:
        n = row["seq_len"]
        ids = torch.randint(6, 262, (b, n), device=device)
        mask = torch.ones(b, n, dtype=torch.bool, device=device)
        return {"ours": ours, "theirs": theirs, "args": (ids, mask),
                "kwargs": {"input_ids": ids, "attention_mask": mask}, "per_sample": n}
    h, w = row["frames"]
    frames = torch.rand(b, 2, 3, h, w, device=device) * 2 - 1
    return {"ours": ours, "theirs": theirs, "args": (frames,), "kwargs": {"inputs": frame_patches(frames)},
            "per_sample": 2 * h * w}


def step(model: torch.nn.Module, call: Callable[[], torch.Tensor], device: torch.device) -> None:
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = call()
    out.float().pow(2).mean().backward()


def measure_impl(model: torch.nn.Module, call: Callable, device: torch.device, warmup: int, steps: int) -> dict:
    """Median step time (s) and peak memory (bytes; CUDA only) of fwd + bwd steps of ``model``."""
    for _ in range(warmup):
        step(model, call, device)
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(model, call, device)
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        memory = torch.cuda.max_memory_allocated(device)
    else:
        for _ in range(steps):
            t0 = time.perf_counter()
            step(model, call, device)
            times.append(time.perf_counter() - t0)
        memory = None
    return {"step_s": statistics.median(times), "peak_bytes": memory}


def card_peak(device: torch.device, override: float | None) -> tuple[str, float | None]:
    """The card's name and its dense bf16 peak in FLOP/s (None when unknown or on the CPU)."""
    if device.type != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name(device)
    if override:
        return name, override * 1e12
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return name, peak * 1e12 if peak else None


def failure(error: BaseException) -> dict[str, str]:
    """An implementation's entry when it could not run: the error in the table, its traceback on stderr."""
    if isinstance(error, torch.OutOfMemoryError):
        return {"error": "out of memory"}
    traceback.print_exception(error, file=sys.stderr)
    first_line = str(error).splitlines()[0][:160] if str(error) else ""
    return {"error": f"{type(error).__name__}: {first_line}".replace("|", "/")}  # a table cell


def run_row(row: dict[str, Any], device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    """One row: both implementations' steps (:func:`measure_impl`) and the step's FLOPs; a part that fails is
    recorded as ``{"error": ...}`` (:func:`failure`) and the rest still runs."""
    from perceiver_io.flops import count_flops

    result: dict[str, Any] = {"name": row["name"], "batch": row["batch"]}
    try:
        built = build_row(row, device)
    except Exception as error:  # noqa: BLE001 - one broken row must not cost the others their device time
        entry = failure(error)  # one traceback on stderr, the same cell for both implementations
        return {**result, "inputs": 0, "step_flops": 0, "ours": entry, "transformers": entry}
    ours, theirs, args, kwargs = built["ours"], built["theirs"], built["args"], built["kwargs"]
    result["inputs"] = built["per_sample"] * row["batch"]
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            result["step_flops"] = 3 * count_flops(ours, *args)
    except Exception as error:  # noqa: BLE001
        traceback.print_exception(error, file=sys.stderr)
        result["step_flops"] = 0  # no TFLOP/s or MFU for this row
    calls = {"ours": (ours, lambda: ours(*args)), "transformers": (theirs, lambda: theirs(**kwargs).logits)}
    for impl, (model, call) in calls.items():
        m.progress(f"{row['name']}: {impl} ...")
        try:
            result[impl] = measure_impl(model, call, device, warmup, steps)
        except Exception as error:  # noqa: BLE001
            result[impl] = failure(error)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return result


def render(raw: dict[str, Any]) -> str:
    env, peak = raw["env"], raw["peak_flops"]
    lines = [f"# GPU: a bf16 training step of the paper-size presets, ours against transformers ({raw['card']})", "",
             f"- date: {env['date']}; command: `{env['command']}`",
             f"- torch {env['torch']}, transformers {env['transformers']}; card: {raw['card']}; dense bf16 peak: "
             f"{peak / 1e12:.0f} TFLOP/s" if peak else f"- torch {env['torch']}, transformers {env['transformers']}; "
             f"device: {raw['card']} (no bf16 peak known: MFU not shown)",
             f"- {raw['warmup']} warm-up steps, median of {raw['steps']} steps; tiny rows: {raw['tiny']}", ""]
    header = ["row", "implementation", "batch", "step (ms)", "inputs/s", "peak memory (GiB)", "TFLOP/s", "MFU",
              "speed-up (transformers time / ours)", "memory saving (transformers / ours)"]
    table = []
    for r in raw["rows"]:
        theirs = r["transformers"]
        for impl in ("ours", "transformers"):
            o = r[impl]
            if "error" in o:
                table.append([r["name"], impl, str(r["batch"]), o["error"], "", "", "", "", "", ""])
                continue
            flops = r["step_flops"]
            mem = f"{o['peak_bytes'] / 2**30:.2f}" if o["peak_bytes"] is not None else "n/a"
            ratio_t = ratio_m = ""
            if impl == "ours" and "error" not in theirs:
                ratio_t = f"{theirs['step_s'] / o['step_s']:.2f}x"
                if o["peak_bytes"] and theirs["peak_bytes"]:
                    ratio_m = f"{theirs['peak_bytes'] / o['peak_bytes']:.2f}x"
            table.append([r["name"], impl, str(r["batch"]), f"{o['step_s'] * 1e3:.1f}",
                          f"{r['inputs'] / o['step_s']:,.0f}", mem,
                          f"{flops / o['step_s'] / 1e12:.1f}" if flops else "n/a",
                          f"{flops / o['step_s'] / peak:.1%}" if peak and flops else "n/a", ratio_t, ratio_m])
    return "\n".join(lines + [m.markdown_table(header, table)])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, rows=", ".join(r["name"] for r in ROWS) + " (comma-separated; default: all)")
    parser.add_argument("--tiny", action="store_true", help="shrunken rows that run on the CPU (the tests)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda where available)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per implementation (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, for MFU")
    args = m.parse(parser, argv, render)
    if args is None:
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("gpu.py: no GPU here; the paper-size rows need one (--tiny runs shrunken rows on the CPU)")
    torch.set_num_threads(args.threads)
    rows = [dict(r, **TINY[r["name"]]) if args.tiny else r for r in m.select_rows(ROWS, args.rows)]
    card, peak = card_peak(device, args.peak_tflops)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    stem = "gpu-tiny" if args.tiny else "gpu"
    raw = {"env": m.environment(args.threads), "card": card, "peak_flops": peak, "tiny": args.tiny,
           "steps": args.steps, "warmup": args.warmup, "rows": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        raw["rows"].append(run_row(r, device, args.warmup, args.steps))
        (args.out / f"{stem}.json").write_text(json.dumps(raw, indent=2) + "\n")  # what a stopped run leaves
    m.finish(args.out, stem, raw, render)


if __name__ == "__main__":
    main()
