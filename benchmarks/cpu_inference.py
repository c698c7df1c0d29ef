"""CPU inference: forward throughput of the paper-size image classifier, MLM and flow model under each inference
switch and under onnxruntime, each with its accuracy cost, next to transformers' port measured in the same run.

Rows (batch 1): ``imagenet_fourier`` (224 x 224 pixels + Fourier features, 48.4M parameters, 406 GFLOP a forward),
``mlm`` (``language_perceiver_bytes``, 2,048 bytes, 201M parameters, 121 GFLOP) and ``optical_flow`` (a 368 x 496
frame pair, 41.1M parameters, 1,887 GFLOP; 77% of it attention products). Implementations of each row, all on the
same weights:

* ``ours fp32 eager``: the model, float32 (the reference of the ratios and of the errors);
* ``ours bf16``, ``ours int8``, ``ours compile``: ``perceiver_io.inference.optimize_for_inference`` with
  ``precision="bf16"``, ``quantize="int8"``, ``compile=True`` (one switch each);
* ``onnxruntime fp32``: ``perceiver_io.convert.onnx.export_onnx`` of the model, run by onnxruntime's CPU provider
  (``intra_op_num_threads`` = ``--threads``);
* ``transformers fp32 eager``: transformers' Perceiver head with our weights (``perceiver_io.convert.to_transformers``),
  the peer.

Weights are the presets' seeded random initialisation (the flow model's output layer, zero at initialisation as in the
official code, is re-initialised so that the flow is not all zero). Inputs are seeded random pixels, bytes
(all real, no padding) and frames in [-1, 1]. transformers' flow head leaves out the official x20 output scale; its
flow is multiplied by it before the comparison.

* Accuracy: relative error = max |y - y_fp32| / max |y_fp32| over the outputs of one forward on the row's input,
  against ours fp32 eager (the measure ``tests/test_inference.py`` bounds on the official fixtures).
* Time: one worker process per row (a fresh process: compiled code and memory of one row do not carry over) builds
  every implementation and makes one untimed first call of each (its time, which includes compiling, quantising,
  the ONNX export and the onnxruntime session, is the "setup" column), then k rounds, each timing one forward
  (``torch.inference_mode()``) of every implementation in an order rotated by the round; the median per
  implementation. k = ``--repeats`` lowered so that the rounds take about ``--row-budget`` s (from the first
  round), at least 1. A timed forward of at least 0.2 s during which other processes took more than 0.3 cores is
  disturbed and left out of the median (all count, marked ``*``, when every one was). glibc's default malloc.
* Duration: estimated before the run from the rows' FLOPs, the matrix-product rates of this CPU (probed in about a
  second) and the compile and export times of the presets' graphs; ``--estimate`` prints only that. About 9 minutes
  on 2 cores with avx512_bf16 (``--quick``: tiny rows, well under a minute).

Writes ``<out>/cpu_inference{-quick}.{md,json}``; ``--from-json`` re-renders a saved run.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _measure as m  # noqa: E402
from _measure import progress  # noqa: E402

FP32, BF16, INT8, COMPILE, ORT, HF = ("ours fp32 eager", "ours bf16", "ours int8", "ours compile", "onnxruntime fp32",
                                      "transformers fp32 eager")
IMPLS = (FP32, BF16, INT8, COMPILE, ORT, HF)
IMPL_KEYS = {"fp32": FP32, "bf16": BF16, "int8": INT8, "compile": COMPILE, "onnxruntime": ORT, "transformers": HF}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")

# gflop: ``perceiver_io.flops.count_flops`` of one forward (batch 1; every matrix product, attention included);
# linear: the share of it in Linear layers (what int8 quantises); compile_s, export_s: torch.compile's first call and
# export_onnx of the preset's graph (measured at the paper's depth with small widths on 1 thread of this project's
# 2-core machine, plus 20% for the paper-size constants); build_s: building the model, its transformers port and
# the bf16 and int8 copies.
ROWS: list[dict[str, Any]] = [
    {"name": "imagenet_fourier", "preset": "imagenet_fourier", "image": (224, 224),
     "gflop": 406.1, "linear": 0.807, "compile_s": 55.0, "export_s": 50.0, "build_s": 10.0},
    {"name": "mlm", "preset": "language_perceiver_bytes", "seq_len": 2048,
     "gflop": 120.9, "linear": 0.928, "compile_s": 60.0, "export_s": 30.0, "build_s": 25.0},
    {"name": "optical_flow", "preset": "optical_flow", "frames": (368, 496),
     "gflop": 1886.7, "linear": 0.229, "compile_s": 40.0, "export_s": 30.0, "build_s": 10.0},
]
# --quick: the same presets, shrunken (config parts overridden as create_model takes them).
_TINY = {"num_latents": 16, "num_latent_channels": 64, "num_blocks": 1, "num_self_attends_per_block": 1,
         "num_self_attend_heads": 2}
QUICK: dict[str, dict[str, Any]] = {
    "imagenet_fourier": {"image": (32, 32), "gflop": 0.01, "compile_s": 8.0, "export_s": 6.0, "build_s": 0.5,
                         "overrides": {"image_size": 32, "encoder": _TINY, "decoder": {"query": {"num_channels": 64}}}},
    "mlm": {"seq_len": 64, "gflop": 0.01, "compile_s": 8.0, "export_s": 6.0, "build_s": 0.5,
            "overrides": {"max_seq_len": 64, "encoder": {**_TINY, "qk_channels": 64, "v_channels": 64}}},
    "optical_flow": {"frames": (12, 16), "gflop": 0.01, "compile_s": 8.0, "export_s": 6.0, "build_s": 0.5,
                     "overrides": {"train_size": (12, 16), "encoder": _TINY}},
}
# How the estimate turns FLOPs into seconds: fp32 eager takes gflop / (probed fp32 rate x EFFICIENCY[fp32]); bf16
# gflop / (bf16 rate x EFFICIENCY[bf16]); int8 its Linear share at the int8 rate x EFFICIENCY[int8] plus the rest
# as fp32; compile, onnxruntime and transformers fp32 eager's time / their factor. Measured on mid-size versions of
# the three presets (30-130 GFLOP) on 1 thread of a busy 2-core AMD EPYC (avx512_bf16, no AMX), where onnxruntime's
# own GEMMs ran about twice as fast as torch's float32 ones; rough (+-30%), for planning.
EFFICIENCY = {FP32: 0.6, BF16: 0.3, INT8: 0.25, COMPILE: 1.0, ORT: 2.0, HF: 0.8}


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (``/proc/cpuinfo``)."""
    name, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "unknown":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": name, "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def cpu_line(cpu: dict[str, Any], threads: int) -> str:
    have = [f for f, on in cpu["flags"].items() if on]
    lacks = [f for f, on in cpu["flags"].items() if not on]
    return (f"CPU: {cpu['model']}; {', '.join(have) or 'none of the listed flags'}"
            + (f"; no {', '.join(lacks)}" if lacks else "") + f"; {threads} torch thread(s)")


def row_description(row: dict[str, Any]) -> str:
    if "image" in row:
        what = f"{row['image'][0]} x {row['image'][1]} image"
    elif "seq_len" in row:
        what = f"{row['seq_len']} bytes"
    else:
        what = f"{row['frames'][0]} x {row['frames'][1]} frame pair"
    shrunk = "; shrunken: " + str(row["overrides"]) if row.get("overrides") else ""
    return f"`{row['preset']}`, batch 1, {what}{shrunk}"


# ---------------------------------------------------------------------------------------------------- estimate


def probe_rates(threads: int) -> dict[str, float]:
    """Matrix-product rates of this CPU (GFLOP/s; a [512, 1024] x [1024, 1024] product, best of 20): fp32, bf16 and
    int8 (``torch._int_mm``); on a busy machine they come out low, and the estimate long."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(512, 1024), torch.randn(1024, 1024)
    qa, qb = a.to(torch.int8), b.to(torch.int8)
    calls = {"fp32": lambda: a @ b, "bf16": (lambda x, y: lambda: x @ y)(a.bfloat16(), b.bfloat16()),
             "int8": lambda: torch._int_mm(qa, qb)}
    flops = 2 * 512 * 1024 * 1024
    for fn in calls.values():  # warm-up (oneDNN builds its kernels on the first call)
        fn()
    return {k: flops / min(m.timer(fn).repeat(20, 1)) / 1e9 for k, fn in calls.items()}


def estimate(rows: list[dict[str, Any]], impls: list[str], rates: dict[str, float], o: dict[str, Any]) -> dict:
    """Estimated seconds of each row's worker (per implementation: one forward) and of the whole run."""
    out: dict[str, Any] = {"rates_gflops": {k: round(v, 1) for k, v in rates.items()}, "rows": {},
                           "load_average": os.getloadavg()[0], "cpu_count": os.cpu_count()}
    for row in rows:
        g = row["gflop"]
        lin = row.get("linear", 1.0)
        fp32 = g / rates["fp32"] / EFFICIENCY[FP32]
        fwd = {FP32: fp32, BF16: g / rates["bf16"] / EFFICIENCY[BF16], COMPILE: fp32 / EFFICIENCY[COMPILE],
               ORT: fp32 / EFFICIENCY[ORT], HF: fp32 / EFFICIENCY[HF],
               INT8: g * lin / rates["int8"] / EFFICIENCY[INT8] + (1 - lin) * fp32}
        fwd = {i: fwd[i] for i in impls}
        per_round = sum(fwd.values())
        k = m.rounds(o["repeats"], o["row_budget_s"], per_round)
        overhead = row["build_s"] + (row["compile_s"] if COMPILE in impls else 0) + (
            row["export_s"] if ORT in impls else 0)
        total = overhead + (1 + k) * per_round  # first calls, k rounds
        out["rows"][row["name"]] = {"forward_s": {i: round(s, 2) for i, s in fwd.items()}, "rounds": k,
                                    "overhead_s": overhead, "total_s": round(total, 1)}
    out["total_s"] = round(sum(r["total_s"] for r in out["rows"].values()), 1)
    return out


def estimate_lines(est: dict[str, Any]) -> list[str]:
    rates = est["rates_gflops"]
    lines = [f"estimated duration: {est['total_s'] / 60:.1f} min (probed GEMM rates: fp32 {rates['fp32']:.0f}, bf16 "
             f"{rates['bf16']:.0f}, int8 {rates['int8']:.0f} GFLOP/s; load average {est['load_average']:.1f} on "
             f"{est['cpu_count']} cores: other load slows the probe and lengthens the estimate alike)"]
    for name, r in est["rows"].items():
        lines.append(f"  {name}: {r['total_s']:.0f} s ({r['rounds']} round(s) after the first calls; "
                     f"{r['overhead_s']:.0f} s building, compiling and exporting; forward "
                     + ", ".join(f"{i} {s:.1f} s" for i, s in r["forward_s"].items()) + ")")
    return lines


# ---------------------------------------------------------------------------------------------------- worker


def build_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ours (fp32, eval), its inputs (positional) and transformers' call of them."""
    import torch

    from perceiver_io import create_model
    from perceiver_io.core.init import fan_in_

    torch.manual_seed(m.SEED)
    ours = create_model(row["preset"], **row.get("overrides", {})).eval()
    g = torch.Generator().manual_seed(m.SEED + 1)
    if "image" in row:
        inputs: tuple = (torch.randn(1, 3, *row["image"], generator=g),)
        return {"ours": ours, "inputs": inputs, "hf_call": lambda hf, x: hf(pixel_values=x).logits}
    if "seq_len" in row:
        n = row["seq_len"]
        inputs = (torch.randint(6, 262, (1, n), generator=g), torch.ones(1, n, dtype=torch.bool))
        return {"ours": ours, "inputs": inputs,
                "hf_call": lambda hf, ids, mask: hf(inputs=ids, attention_mask=mask).logits[:, :n]}
    from perceiver_io.adapters.flow import frame_patches

    with torch.no_grad():
        fan_in_(ours.decoder.output)  # the official flow head starts at zero: a flow of 0 has no relative error
    inputs = (torch.rand(1, 2, 3, *row["frames"], generator=g) * 2 - 1,)
    scale = ours.output_adapter.config.flow_scale_factor  # transformers' port leaves the official x20 out
    return {"ours": ours, "inputs": inputs,
            "hf_call": lambda hf, x: hf(inputs=frame_patches(x)).logits.permute(0, 3, 1, 2) * scale}


def make_runner(impl: str, built: dict[str, Any], threads: int, tmp: Path) -> Callable[[], Any]:
    """A callable running one forward of ``impl`` on the row's inputs (its setup done here)."""
    import torch

    from perceiver_io.inference import optimize_for_inference

    ours, inputs = built["ours"], built["inputs"]
    if impl == ORT:
        import onnxruntime as ort

        from perceiver_io.convert.onnx import export_onnx

        report = export_onnx(ours, tmp / "model.onnx", example_inputs=inputs, check=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
        feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
        return lambda: [torch.from_numpy(y) for y in session.run(None, feeds)]
    if impl == HF:
        from perceiver_io.convert import to_transformers

        hf = to_transformers(ours).eval()
        model: Any = lambda: built["hf_call"](hf, *inputs)  # noqa: E731
    else:
        opts = {FP32: {}, BF16: {"precision": "bf16"}, INT8: {"quantize": "int8"}, COMPILE: {"compile": True}}[impl]
        optimized = optimize_for_inference(ours, **opts)
        model = lambda: optimized(*inputs)  # noqa: E731

    def run() -> Any:
        with torch.inference_mode():
            return model()

    return run


def relative_error(got: Any, ref: Any) -> float:
    import torch

    got = got if isinstance(got, (list, tuple)) else [got]
    ref = ref if isinstance(ref, (list, tuple)) else [ref]
    if [tuple(g.shape) for g in got] != [tuple(r.shape) for r in ref]:
        raise RuntimeError(f"output shapes {[tuple(g.shape) for g in got]} != {[tuple(r.shape) for r in ref]}")
    return max(((torch.as_tensor(g).double() - r.double()).abs().max() / r.double().abs().max().clamp_min(1e-12)).item()
               for g, r in zip(got, ref))


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: build the row's implementations, their first calls (setup time, relative error), timed rounds."""
    row, impls, threads = spec["row"], spec["impls"], spec["threads"]
    start = time.perf_counter()
    built = build_row(row)
    build_s = time.perf_counter() - start
    result: dict[str, Any] = {"build_s": build_s, "impls": {}}
    runners: dict[str, Callable[[], Any]] = {}
    ref = None
    with tempfile.TemporaryDirectory() as tmp:
        for impl in [FP32, *(i for i in impls if i != FP32)]:  # fp32's first call gives the reference outputs
            progress(f"[{row['name']}] {impl}: setup and first call ...")
            t0 = time.perf_counter()
            try:
                runners[impl] = make_runner(impl, built, threads, Path(tmp))
                out = runners[impl]()
            except Exception as exc:  # a failing implementation is reported, the others measured
                if impl == FP32:  # the reference of the others
                    raise
                result["impls"][impl] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                runners.pop(impl, None)
                continue
            ref = out if ref is None else ref
            result["impls"][impl] = {"setup_s": time.perf_counter() - t0, "relative_error": relative_error(out, ref)}
            del out
        names = list(runners)
        runs: dict[str, list[dict[str, Any]]] = {i: [] for i in names}
        k = r = 1
        while r <= k:  # round 1 sizes k
            for impl in names[(r - 1) % len(names):] + names[: (r - 1) % len(names)]:
                with m.watch() as timed:
                    runners[impl]()
                runs[impl].append(dict(timed, round=r))
            if r == 1:
                per_round = sum(runs[i][0]["s"] for i in names)
                k = m.rounds(spec["repeats"], spec["row_budget_s"], per_round)
                progress(f"[{row['name']}] round 1 took {per_round:.1f} s: {k} timed round(s) ...")
            r += 1
    for impl, rs in runs.items():
        clean = [r for r in rs if not m.disturbed(r)]
        used = clean or rs
        result["impls"][impl].update(median_s=statistics.median(r["s"] for r in used), times_s=[r["s"] for r in rs],
                                     clean_runs=len(clean), runs=rs)
    result["rounds"] = k
    return result


# ---------------------------------------------------------------------------------------------------- report


def row_table(res: dict[str, Any]) -> list[list[str]]:
    timing = m.ok(res["outcome"])
    if timing is None:
        return [[impl, m.na(res["outcome"]), "", "", "", "", ""] for impl in res["impls"]]
    cells = timing["impls"]
    base = cells.get(FP32, {}).get("median_s")
    table = []
    for impl in res["impls"]:
        c = cells.get(impl)
        if c is None or "error" in c:
            table.append([impl, "n/a (error)" if c else "n/a", "", "", "", "", ""])
            continue
        mark = "*" if c["clean_runs"] == 0 else ""
        err = "reference" if impl == FP32 else f"{c['relative_error']:.1e}"
        table.append([impl, f"{c['median_s'] * 1e3:,.0f}{mark}", f"{1 / c['median_s']:.2f}",
                      f"{base / c['median_s']:.2f}x" if base else "n/a", err, f"{c['setup_s']:.1f}",
                      f"{len(c['times_s'])}" if c["clean_runs"] in (0, len(c["times_s"]))
                      else f"{c['clean_runs']} of {len(c['times_s'])}"])
    return table


def summary_lines(raw: dict[str, Any]) -> list[str]:
    lines = []
    for res in raw["rows"]:
        timing = m.ok(res["outcome"])
        if timing is None:
            lines.append(f"- {res['row']['name']}: not measured ({m.na(res['outcome'], True)[:200]})")
            continue
        cells = {i: c for i, c in timing["impls"].items() if "median_s" in c}
        base = cells.get(FP32, {}).get("median_s")
        if not base:
            lines.append(f"- {res['row']['name']}: no fp32 eager reference")
            continue
        ours = [i for i in cells if i not in (FP32, HF)]
        best = min(ours, key=lambda i: cells[i]["median_s"]) if ours else None
        parts = [f"fastest: {best} ({base / cells[best]['median_s']:.2f}x ours fp32 eager, relative error "
                 f"{cells[best]['relative_error']:.1e})"] if best else []
        if HF in cells:
            parts.append(f"transformers fp32 eager / ours fp32 eager time: {cells[HF]['median_s'] / base:.2f} (same "
                         f"weights: relative difference {cells[HF]['relative_error']:.1e})")
        failed = [f"{i} ({c['error'][:120]})" for i, c in timing["impls"].items() if "error" in c]
        parts += [f"failed: {'; '.join(failed)}"] if failed else []
        lines.append(f"- {res['row']['name']}: " + "; ".join(parts))
    return lines


def render(raw: dict[str, Any]) -> str:
    env, o, cpu = raw["environment"], raw["options"], raw["cpu"]
    header = ["implementation", "ms / forward", "forwards / s", "speed-up vs ours fp32 eager",
              "relative error vs ours fp32 eager", "setup + first call (s)", "k"]
    sections = [
        "# CPU inference: inference switches, onnxruntime and transformers, paper-size models at batch 1"
        + (" - quick: shrunken rows, a smoke check only" if o["quick"] else ""),
        "\n".join(m.env_lines(env, o, "row worker time limit") + [
            f"- {cpu_line(cpu, env['threads'])}; onnxruntime {env.get('onnxruntime', 'n/a')}",
            "- time: median of k rounds in one worker process per row, each round one forward (inference mode) of "
            f"every implementation, order rotated; k = --repeats ({o['repeats']}) lowered to fit --row-budget "
            f"({o['row_budget_s']:.0f} s), at least 1; `*`: every timed forward disturbed by other load",
            "- relative error: max |y - y_fp32| / max |y_fp32| over the outputs, against ours fp32 eager on the same "
            "input (for transformers: the equal-weights check)",
            "- setup + first call: building the variant (bf16 copy, int8 quantisation, torch.compile's compilation, "
            "ONNX export + onnxruntime session, transformers port) and its first forward",
            f"- estimated duration {raw['estimate']['total_s']:.0f} s; wall time of the run {raw['wall_s']:.0f} s"]),
    ]
    for res in raw["rows"]:
        sections.append("\n".join([
            f"## {res['row']['name']}: {row_description(res['row'])}", "",
            f"{cpu_line(cpu, env['threads'])}", "", m.markdown_table(header, row_table(res), left=(0,))]))
    sections.append("\n".join(["## Summary", "", *summary_lines(raw)]))
    return "\n\n".join(sections)


def run_row(row: dict[str, Any], impls: list[str], o: dict[str, Any], est: dict[str, Any]) -> dict[str, Any]:
    spec = {"row": row, "impls": impls, "threads": o["threads"], "repeats": o["repeats"],
            "row_budget_s": o["row_budget_s"]}
    timeout = max(o["row_timeout_s"], 3 * est["rows"][row["name"]]["total_s"])
    progress(f"[{row['name']}] worker (estimated {est['rows'][row['name']]['total_s']:.0f} s) ...")
    outcome = m.run_worker(__file__, spec, o, timeout, fixed_malloc=False)
    r = m.ok(outcome)
    progress(f"[{row['name']}] " + (m.na(outcome, True) if r is None else "; ".join(
        f"{i} {c['median_s'] * 1e3:.0f} ms" for i, c in r["impls"].items() if "median_s" in c)))
    return {"row": row, "impls": impls, "outcome": outcome}


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, 900.0, quick="shrunken rows (smoke check, under a minute)",
                          rows=", ".join(r["name"] for r in ROWS) + " (comma-separated; default: all)")
    parser.add_argument("--impls", help="comma-separated subset of " + ", ".join(IMPL_KEYS) + " (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per row (default 3; fewer past "
                        "--row-budget)")
    parser.add_argument("--row-budget", dest="row_budget_s", type=float, default=40.0,
                        help="seconds of timed rounds per row (default 40)")
    parser.add_argument("--estimate", action="store_true", help="print the estimated duration only")
    if (args := m.parse(parser, argv, render, measure, ("repeats", "row_budget_s"))) is None:
        return
    unknown = set((args.impls or "").split(",")) - {"", *IMPL_KEYS}
    if unknown:
        raise SystemExit(f"--impls: unknown {sorted(unknown)}; expected some of {list(IMPL_KEYS)}")
    impls = [IMPL_KEYS[k] for k in IMPL_KEYS if args.impls is None or k in args.impls.split(",")]
    impls = impls if FP32 in impls else [FP32, *impls]  # the reference of every ratio
    rows = [dict(r, **QUICK[r["name"]]) if args.quick else r for r in m.select_rows(ROWS, args.rows)]
    started, o = time.monotonic(), args.o
    est = estimate(rows, impls, probe_rates(args.threads), o)
    for line in estimate_lines(est):
        progress(line)
    if args.estimate:
        return
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    env = dict(m.environment(args.threads), onnxruntime=ort_version)
    results = [run_row(row, impls, o, est) for row in rows]
    raw = dict(environment=env, options=o, cpu=cpu_info(), estimate=est, rows=results,
               wall_s=time.monotonic() - started)
    m.finish(args.out, "cpu_inference" + ("-quick" if args.quick else ""), raw, render)


if __name__ == "__main__":
    main()
