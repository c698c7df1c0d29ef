"""Scaling benchmark of the Perceiver IO encoder and decoder on CPU: forward time and peak memory.

What it measures
----------------
(a) Encoder, ``PerceiverEncoder(EncoderConfig(...))``, over M = 1k ... 64k inputs of the
    ImageNet-like width C = 261, with a latent stack reduced so it runs on CPU: 256 latents x 512
    channels, 1 cross-attention head, 2 blocks x 2 self-attends (8 heads), exact GELU, batch 1.
    Peer: transformers' ``PerceiverModel`` without pre-processor or decoder (its output is the
    latents) at the same configuration and with equal weights (ours are copied from it through
    ``perceiver_io.convert.transformers_names``); a one-off check at M = 1k reports the largest
    output difference.
(b) Decoder, ``PerceiverDecoder`` with Fourier queries over a (16, 256, 256) grid = 1,048,576
    points, 32 bands per dimension (3 * (1 + 2 * 32) = 195 query channels), latents 256 x 512,
    3 output channels, batch 1, over O = 1k ... 1M output queries: ``subsampled_output_points``
    = the first O flat indices, decoded with ``chunk_size`` = 65536 (O <= 64k is one shot, larger
    is chunked). Peer: the same decoder one shot (``chunk_size=None``) wherever it fits. Target:
    the chunked decode of 1M queries peaks at most 1.5x the memory of the one-shot 64k decode.

How
---
Every (size, implementation) row runs in a fresh worker process (this script re-invoked with
``--worker``) with ``torch.set_num_threads(2)``, under ``torch.inference_mode()``. The worker
builds the model and its inputs, runs a tiny primer forward (16 inputs or queries) so one-time
library initialisation (thread pool, kernel caches) is not counted, frees and trims the heap,
reads the RSS (``/proc/self/statm``), resets the peak-RSS counter (``/proc/self/clear_refs``;
falls back to ``ru_maxrss``), runs one warm-up forward and then ``--repeats`` timed forwards
(more for rows faster than 1 s in total, fewer when the warm-up is slow, see ``--row-budget``)
and reports the median time and the peak extra memory = peak RSS - RSS before the first
forward. Workers run glibc malloc with a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_=131072``,
see :data:`FIXED_MALLOC_ENV`; ``--default-malloc`` turns this off): with glibc's moving
threshold the same forward's peak varies by about 15% between runs. A worker that passes the
memory cap, runs past ``--row-timeout``, or fails to allocate is recorded as "n/a (memory)" /
"n/a (time)"; larger sizes of that implementation are then skipped with the same mark. Rows
disturbed by other work on the machine are re-run (``--retries``) and marked ``*`` if they stay
disturbed.
Details: ``benchmarks/_measure.py``.

Linearity columns divide time and memory by the row's size and compare with the smallest row
(1.0 = linear; memory ratios fall below 1.0 when a fixed part dominates small rows, and far
below for the chunked decoder, whose memory is bounded by the chunk).

Output: markdown tables and a summary on stdout and in ``<out>/scaling.md``, raw numbers in
``<out>/scaling.json`` (``scaling-quick.*`` with ``--quick``); progress on stderr.

Usage::

    .venv/bin/python benchmarks/scaling.py            # full (5-8 minutes on 2 cores)
    .venv/bin/python benchmarks/scaling.py --quick    # encoder <= 8k, decoder <= 64k
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import _measure
from _measure import MIB, WorkerOutcome, progress, write_outputs

THREADS = 2
SEED = 0
PRIMER_SIZE = 16

ENCODER_SIZES = [1024 * 2**i for i in range(7)]  # 1k ... 64k
ENCODER_SIZES_QUICK = ENCODER_SIZES[:4]  # ... 8k
DECODER_SIZES = [1024 * 4**i for i in range(6)]  # 1k ... 1M
DECODER_SIZES_QUICK = DECODER_SIZES[:4]  # ... 64k

ENCODER_SETTINGS: dict[str, Any] = dict(
    num_input_channels=261,
    num_latents=256,
    num_latent_channels=512,
    num_blocks=2,
    num_self_attends_per_block=2,
    num_cross_attend_heads=1,
    num_self_attend_heads=8,
    activation="gelu",
)
DECODER_GRID = (16, 256, 256)
DECODER_BANDS = 32
DECODER_OUTPUT_CHANNELS = 3
CHUNK_SIZE = 65536
MEMORY_TARGET = 1.5
# A row whose timed forwards saw other processes (or the hypervisor) take more than this many
# cores is re-run (--retries times at most, each after waiting up to QUIET_WAIT_S for the machine
# to calm down); the least disturbed run is kept and still-disturbed rows are marked.
CONTENTION_CORES = 0.3
CONTENTION_MIN_WALL_S = 0.2  # /proc/stat ticks are 10 ms: shorter timed sections cannot tell
QUIET_WAIT_S = 30.0
PLURAL = {"input": "inputs", "query": "queries"}
# glibc's malloc moves its mmap threshold with the sizes it has freed, so the same forward's peak
# RSS varies by +-15% from run to run; a fixed threshold (which also stops the moving) sends every
# tensor over 128 KiB to mmap, and peak RSS then follows the live tensors (same figure every run,
# forwards ~5-10% slower from fresh page faults). --default-malloc measures with glibc's defaults.
FIXED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}

ENCODER_IMPLS = ("ours", "transformers")
DECODER_IMPLS = ("chunked", "one-shot")


# ============================================================================================
# Worker side: build one model, measure one forward.


def build_transformers_encoder() -> Any:
    """transformers' ``PerceiverModel`` (no pre-processor, no decoder) at the encoder settings."""
    import torch
    import transformers

    s = ENCODER_SETTINGS
    config = transformers.PerceiverConfig(
        num_latents=s["num_latents"],
        d_latents=s["num_latent_channels"],
        d_model=s["num_input_channels"],
        num_blocks=s["num_blocks"],
        num_self_attends_per_block=s["num_self_attends_per_block"],
        num_self_attention_heads=s["num_self_attend_heads"],
        num_cross_attention_heads=s["num_cross_attend_heads"],
        hidden_act="gelu",
    )
    torch.manual_seed(SEED)
    return transformers.PerceiverModel(config).eval()


def build_our_encoder(hf_model: Any) -> Any:
    """Our ``PerceiverEncoder`` with the weights of ``hf_model``."""
    from perceiver_io.convert.transformers_names import core_state_from_transformers
    from perceiver_io.core import EncoderConfig, PerceiverEncoder

    encoder = PerceiverEncoder(EncoderConfig(**ENCODER_SETTINGS)).eval()
    state = core_state_from_transformers(hf_model.state_dict())
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return encoder


def encoder_forward(impl: str) -> Callable[[Any], Any]:
    """Build the ``impl`` encoder; return ``inputs [1, M, C] -> output``."""
    import gc

    hf_model = build_transformers_encoder()
    if impl == "transformers":
        return lambda x: hf_model(inputs=x).last_hidden_state
    ours = build_our_encoder(hf_model)
    del hf_model
    gc.collect()
    return ours


def encoder_inputs(size: int) -> Any:
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)
    return torch.randn(1, size, ENCODER_SETTINGS["num_input_channels"], generator=generator)


def build_decoder() -> Any:
    """Our ``PerceiverDecoder`` with 3-D Fourier queries over :data:`DECODER_GRID`."""
    import torch
    from perceiver_io.core import DecoderConfig, PerceiverDecoder, PositionEncodingConfig

    query = PositionEncodingConfig(kind="fourier", index_dims=DECODER_GRID, num_bands=DECODER_BANDS)
    torch.manual_seed(SEED)
    config = DecoderConfig(
        num_latent_channels=ENCODER_SETTINGS["num_latent_channels"],
        query=query,
        num_output_channels=DECODER_OUTPUT_CHANNELS,
    )
    return PerceiverDecoder(config).eval()


def decoder_latents() -> Any:
    import torch

    generator = torch.Generator().manual_seed(SEED + 2)
    s = ENCODER_SETTINGS
    return torch.randn(1, s["num_latents"], s["num_latent_channels"], generator=generator)


def measure_encoder(impl: str, size: int, repeats: int, budget: float) -> dict[str, Any]:
    forward = encoder_forward(impl)
    forward(encoder_inputs(PRIMER_SIZE))
    x = encoder_inputs(size)
    return vars(_measure.measure_forward(lambda: forward(x), repeats, budget))


def measure_decoder(impl: str, size: int, repeats: int, budget: float) -> dict[str, Any]:
    import torch

    decoder = build_decoder()
    latents = decoder_latents()
    chunk = CHUNK_SIZE if impl == "chunked" else None
    decoder(latents, subsampled_output_points=torch.arange(PRIMER_SIZE), chunk_size=chunk)
    points = torch.arange(size)
    forward = lambda: decoder(latents, subsampled_output_points=points, chunk_size=chunk)  # noqa: E731
    return vars(_measure.measure_forward(forward, repeats, budget))


def check_equal_weights() -> dict[str, Any]:
    """Largest |ours - transformers| of the encoder output at M = 1k (same weights, same inputs)."""
    hf_model = build_transformers_encoder()
    ours = build_our_encoder(hf_model)
    x = encoder_inputs(1024)
    diff = (ours(x) - hf_model(inputs=x).last_hidden_state).abs().max().item()
    return {"max_abs_diff": diff}


def worker_main(spec: dict[str, Any]) -> None:
    """Entry point of a worker process: measure the row ``spec`` and print its result line."""
    import torch

    torch.set_num_threads(THREADS)
    try:
        with torch.inference_mode():
            if spec["part"] == "check":
                result = check_equal_weights()
            elif spec["part"] == "encoder":
                result = measure_encoder(spec["impl"], spec["size"], spec["repeats"], spec["budget"])
            else:
                result = measure_decoder(spec["impl"], spec["size"], spec["repeats"], spec["budget"])
        result["status"] = "ok"
    except (RuntimeError, MemoryError) as exc:
        if not _measure.is_out_of_memory(exc):
            raise
        result = {"status": "memory", "detail": str(exc)[:500]}
    _measure.emit_result(result)


# ============================================================================================
# Parent side: run the rows, build the tables.


@dataclass
class Options:
    quick: bool
    repeats: int
    row_budget_s: float
    row_timeout_s: float
    mem_cap_bytes: int
    default_malloc: bool
    retries: int


def run_worker(spec: dict[str, Any], options: Options) -> WorkerOutcome:
    """Measure one row in a fresh worker process."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    if not options.default_malloc:
        env.update(FIXED_MALLOC_ENV)
    return _measure.run_worker(argv, options.row_timeout_s, options.mem_cap_bytes, env=env)


def contention(outcome: WorkerOutcome) -> float | None:
    """Cores taken by other processes and steal during the timed forwards (None: unknown)."""
    r = outcome.result
    if outcome.status != "ok" or r is None or "other_cores" not in r or sum(r["times_s"]) < CONTENTION_MIN_WALL_S:
        return None
    return r["other_cores"] + r["steal_cores"]


def is_disturbed(outcome: WorkerOutcome) -> bool:
    load = contention(outcome)
    return load is not None and load > CONTENTION_CORES


def run_row(spec: dict[str, Any], options: Options) -> WorkerOutcome:
    """Measure one row; re-run it when other work on the machine disturbed the timing."""
    best = run_worker(spec, options)
    for attempt in range(options.retries):
        if not is_disturbed(best):
            break
        busy = _measure.wait_for_quiet(CONTENTION_CORES, QUIET_WAIT_S)
        progress(
            f"  disturbed ({contention(best):.2f} other cores busy); machine now {busy:.2f} cores busy; "
            f"re-run {attempt + 1}/{options.retries}"
        )
        again = run_worker(spec, options)
        if again.status == "ok" and (contention(again) or 0.0) < (contention(best) or 0.0):
            best = again
    return best


def size_label(n: int) -> str:
    return f"{n // 2**20}M" if n >= 2**20 else f"{n // 1024}k"


def describe(outcome: WorkerOutcome) -> str:
    if outcome.status != "ok":
        return f"n/a ({outcome.status}) {outcome.detail}"
    r = outcome.result or {}
    load = contention(outcome)
    return (
        f"{r['median_s'] * 1e3:.1f} ms (median of {len(r['times_s'])}), "
        f"+{r['extra_bytes'] / MIB:.1f} MiB peak, worker {outcome.wall_s:.1f} s, "
        f"other load {'?' if load is None else f'{load:.2f}'} cores"
    )


def run_part(part: str, impls: tuple[str, ...], sizes: list[int], options: Options) -> dict[str, dict[int, WorkerOutcome]]:
    """All rows of one part; an implementation that runs out of memory or time skips larger sizes."""
    results: dict[str, dict[int, WorkerOutcome]] = {impl: {} for impl in impls}
    failed: dict[str, WorkerOutcome] = {}
    for size in sizes:
        for impl in impls:
            label = f"[{part} {impl} {size_label(size)}]"
            if impl in failed:
                prev = failed[impl]
                results[impl][size] = WorkerOutcome(prev.status, detail="skipped: a smaller size already failed")
                progress(f"{label} skipped ({prev.status} at a smaller size)")
                continue
            progress(f"{label} running ...")
            spec = {"part": part, "impl": impl, "size": size, "repeats": options.repeats, "budget": options.row_budget_s}
            outcome = run_row(spec, options)
            results[impl][size] = outcome
            progress(f"{label} {describe(outcome)}")
            if outcome.status in ("memory", "time"):
                failed[impl] = outcome
    return results


def retry_disturbed(parts: dict[str, dict[str, dict[int, WorkerOutcome]]], options: Options) -> None:
    """Last pass: measure rows that stayed disturbed once more, after waiting for a quiet machine."""
    for part, results in parts.items():
        for impl, rows in results.items():
            for size, outcome in rows.items():
                if not is_disturbed(outcome):
                    continue
                busy = _measure.wait_for_quiet(CONTENTION_CORES, 2 * QUIET_WAIT_S)
                progress(f"[{part} {impl} {size_label(size)}] still disturbed; last try (machine {busy:.2f} cores busy)")
                spec = {"part": part, "impl": impl, "size": size, "repeats": options.repeats, "budget": options.row_budget_s}
                again = run_worker(spec, options)
                progress(f"[{part} {impl} {size_label(size)}] {describe(again)}")
                if again.status == "ok" and (contention(again) or 0.0) < (contention(outcome) or 0.0):
                    rows[size] = again


# -------------------------------------------------------------------------------------------- tables


def ok(outcome: WorkerOutcome | None) -> dict[str, Any] | None:
    return outcome.result if outcome is not None and outcome.status == "ok" else None


def clean(outcome: WorkerOutcome | None) -> dict[str, Any] | None:
    """The result of a row measured fine and not disturbed (what the summary lines use)."""
    return ok(outcome) if outcome is not None and not is_disturbed(outcome) else None


def na(outcome: WorkerOutcome | None) -> str:
    return "n/a" if outcome is None else f"n/a ({outcome.status})"


def per_element_ratio(value: float, size: int, base_value: float, base_size: int) -> float:
    """``(value / size) / (base_value / base_size)``: 1.0 = linear in size."""
    return (value / size) / (base_value / base_size)


def baseline(rows: dict[int, WorkerOutcome], sizes: list[int]) -> tuple[int, dict[str, Any]] | None:
    """The smallest size that measured fine, with its result."""
    for size in sizes:
        result = ok(rows.get(size))
        if result is not None:
            return size, result
    return None


def impl_cells(rows: dict[int, WorkerOutcome], sizes: list[int], size: int) -> list[str]:
    """ms, us/element, time ratio, k, peak MiB, memory ratio of one implementation at ``size``."""
    result = ok(rows.get(size))
    if result is None:
        return [na(rows.get(size))] + ["-"] * 5
    base_size, base = baseline(rows, sizes)  # type: ignore[misc]
    t, m = result["median_s"], result["extra_bytes"]
    mem_ratio = f"{per_element_ratio(m, size, base['extra_bytes'], base_size):.3f}" if base["extra_bytes"] else "-"
    return [
        f"{t * 1e3:.1f}" + ("*" if is_disturbed(rows[size]) else ""),
        f"{t * 1e6 / size:.3f}",
        f"{per_element_ratio(t, size, base['median_s'], base_size):.2f}",
        str(len(result["times_s"])),
        f"{m / MIB:.1f}",
        mem_ratio,
    ]


def ratio_cells(a: WorkerOutcome | None, b: WorkerOutcome | None) -> list[str]:
    """a/b of time and of peak memory."""
    ra, rb = ok(a), ok(b)
    if ra is None or rb is None:
        return ["-", "-"]
    mem = f"{ra['extra_bytes'] / rb['extra_bytes']:.2f}" if rb["extra_bytes"] > 0 else "-"
    return [f"{ra['median_s'] / rb['median_s']:.2f}", mem]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def impl_header(name: str, unit: str, base: str) -> list[str]:
    return [
        f"{name} ms",
        f"{name} us/{unit}",
        f"{name} time/{unit} vs {base}",
        f"{name} k",
        f"{name} peak MiB",
        f"{name} mem/{unit} vs {base}",
    ]


def comparison_table(
    results: dict[str, dict[int, WorkerOutcome]], sizes: list[int], size_name: str, unit: str, first: str, second: str
) -> str:
    """One row per size: both implementations' cells, then ``first / second`` ratios."""
    base = size_label(sizes[0])
    header = [size_name] + impl_header(first, unit, base) + impl_header(second, unit, base)
    header += [f"{first}/{second} time", f"{first}/{second} mem"]
    a, b = results[first], results[second]
    rows = [
        [size_label(s)] + impl_cells(a, sizes, s) + impl_cells(b, sizes, s) + ratio_cells(a.get(s), b.get(s))
        for s in sizes
    ]
    return markdown_table(header, rows)


def encoder_table(results: dict[str, dict[int, WorkerOutcome]], sizes: list[int]) -> str:
    return comparison_table(results, sizes, "M", "input", "ours", "transformers")


def decoder_table(results: dict[str, dict[int, WorkerOutcome]], sizes: list[int]) -> str:
    return comparison_table(results, sizes, "O", "query", "chunked", "one-shot")


# -------------------------------------------------------------------------------------------- summary


def memory_target_line(results: dict[str, dict[int, WorkerOutcome]]) -> tuple[str, dict[str, Any]]:
    """The "chunked 1M peak / one-shot 64k peak" line with PASS/FAIL against :data:`MEMORY_TARGET`."""
    big, ref = ok(results["chunked"].get(DECODER_SIZES[-1])), ok(results["one-shot"].get(CHUNK_SIZE))
    name = f"chunked {size_label(DECODER_SIZES[-1])} peak / one-shot {size_label(CHUNK_SIZE)} peak"
    if big is None or ref is None or ref["extra_bytes"] <= 0:
        return f"- {name}: n/a (not measured in this run)", {"ratio": None, "pass": None}
    ratio = big["extra_bytes"] / ref["extra_bytes"]
    verdict = "PASS" if ratio <= MEMORY_TARGET else "FAIL"
    line = (
        f"- **{name} = {big['extra_bytes'] / MIB:.1f} MiB / {ref['extra_bytes'] / MIB:.1f} MiB = "
        f"{ratio:.2f}x -> {verdict}** (target <= {MEMORY_TARGET}x)"
    )
    return line, {"ratio": ratio, "pass": ratio <= MEMORY_TARGET}


def scaling_line(name: str, rows: dict[int, WorkerOutcome], sizes: list[int], unit: str) -> str:
    """Per-element time and memory of the largest measured size against the smallest (rows marked * left out)."""
    measured = [s for s in sizes if clean(rows.get(s))]
    if len(measured) < 2:
        return f"- {name}: too few rows measured"
    lo, hi = measured[0], measured[-1]
    a, b = rows[lo].result, rows[hi].result  # type: ignore[union-attr]
    t = per_element_ratio(b["median_s"], hi, a["median_s"], lo)
    mem = "n/a (smallest row 0)"
    if a["extra_bytes"] > 0:
        m = per_element_ratio(b["extra_bytes"], hi, a["extra_bytes"], lo)
        mem = f"x{b['extra_bytes'] / a['extra_bytes']:.1f} (per {unit} {m:.3f}x)"
    return (
        f"- {name}: {size_label(lo)} -> {size_label(hi)} ({hi // lo}x {PLURAL[unit]}): time x"
        f"{b['median_s'] / a['median_s']:.1f} (per {unit} {t:.2f}x), peak memory {mem}; "
        f"{marginal_text(rows, measured, unit)}"
    )


def marginal_text(rows: dict[int, WorkerOutcome], measured: list[int], unit: str) -> str:
    """Added time per added element between the first and between the last two measured sizes."""

    def slope(lo: int, hi: int) -> float:
        a, b = rows[lo].result, rows[hi].result  # type: ignore[union-attr]
        return (b["median_s"] - a["median_s"]) * 1e6 / (hi - lo)

    first, last = slope(measured[0], measured[1]), slope(measured[-2], measured[-1])
    return (
        f"marginal time per added {unit} {first:.3f} us ({size_label(measured[0])}-{size_label(measured[1])}) "
        f"-> {last:.3f} us ({size_label(measured[-2])}-{size_label(measured[-1])})"
    )


def peer_line(name: str, a: dict[int, WorkerOutcome], b: dict[int, WorkerOutcome], sizes: list[int]) -> str:
    pairs = [(s, clean(a.get(s)), clean(b.get(s))) for s in sizes]
    pairs = [(s, x, y) for s, x, y in pairs if x and y and y["extra_bytes"] > 0]
    if not pairs:
        return f"- {name}: no size measured for both"
    times = [x["median_s"] / y["median_s"] for _, x, y in pairs]
    mems = [x["extra_bytes"] / y["extra_bytes"] for _, x, y in pairs]
    s, x, y = pairs[-1]
    return (
        f"- {name}: time {min(times):.2f}-{max(times):.2f}x, peak memory {min(mems):.2f}-{max(mems):.2f}x "
        f"over {size_label(pairs[0][0])}-{size_label(s)}; at {size_label(s)}: time "
        f"{x['median_s'] / y['median_s']:.2f}x, memory {x['extra_bytes'] / y['extra_bytes']:.2f}x"
    )


def failures_line(parts: dict[str, dict[str, dict[int, WorkerOutcome]]]) -> str:
    bad = [
        f"{part} {impl} {size_label(size)}: {o.status} ({o.detail})"
        for part, results in parts.items()
        for impl, rows in results.items()
        for size, o in rows.items()
        if o.status != "ok"
    ]
    return "- rows not measured: " + ("none" if not bad else "; ".join(bad))


def contention_line(parts: dict[str, dict[str, dict[int, WorkerOutcome]]]) -> str:
    loads = [
        (contention(o), f"{part} {impl} {size_label(size)}")
        for part, results in parts.items()
        for impl, rows in results.items()
        for size, o in rows.items()
    ]
    known = [(load, name) for load, name in loads if load is not None]
    if not known:
        return "- other load during timed forwards: unknown"
    worst = max(known)
    marked = [name for load, name in known if load > CONTENTION_CORES]
    return (
        f"- other load during timed forwards (cores busy outside the worker, incl. steal): max "
        f"{worst[0]:.2f} ({worst[1]}); rows marked * (> {CONTENTION_CORES} even after re-runs): "
        + (", ".join(marked) if marked else "none")
    )


# -------------------------------------------------------------------------------------------- report


def command_line() -> str:
    exe = sys.executable
    rel = os.path.relpath(exe)
    return shlex.join([rel if not rel.startswith("..") else exe, *sys.argv])


def header_block(env: dict[str, Any], options: Options) -> str:
    return "\n".join(
        [
            "# Perceiver IO scaling benchmark (CPU)",
            "",
            f"- date: {env['date']}",
            f"- command: `{env['command']}`",
            f"- torch {env['torch']}, transformers {env['transformers']}, python {env['python']}",
            f"- CPU: {env['cpu']} ({env['cpu_count']} logical cores), torch threads: {env['threads']}",
            f"- memory available at start: {env['mem_available_gib']} GiB; worker memory cap "
            f"{options.mem_cap_bytes / 2**30:.1f} GiB; row time limit {options.row_timeout_s:.0f} s; "
            f"load average at start: {env['load_average']}",
            f"- timing: median of k timed forwards after one warm-up (k = {options.repeats}, more while they "
            f"take under 1 s, fewer when they would take over {options.row_budget_s:.0f} s, at least 1); memory: peak RSS minus RSS "
            "before the first forward, one fresh process per row (see the docstring of benchmarks/scaling.py)",
            "- allocator: "
            + (
                "glibc defaults (moving mmap threshold)"
                if options.default_malloc
                else "glibc with a fixed mmap threshold (`MALLOC_MMAP_THRESHOLD_=131072`: peak RSS follows the "
                "live tensors, reproducible; forwards ~5-10% slower than with the default)"
            ),
        ]
    )


def encoder_section(results: dict[str, dict[int, WorkerOutcome]], sizes: list[int], check: WorkerOutcome) -> str:
    s = ENCODER_SETTINGS
    diff = ok(check)
    check_text = f"{diff['max_abs_diff']:.2e}" if diff else na(check)
    return "\n".join(
        [
            "## (a) Encoder: forward time and peak extra memory vs number of inputs M",
            "",
            f"Inputs [1, M, {s['num_input_channels']}] -> latents [1, {s['num_latents']}, "
            f"{s['num_latent_channels']}]; {s['num_cross_attend_heads']} cross head, {s['num_blocks']} blocks x "
            f"{s['num_self_attends_per_block']} self-attends ({s['num_self_attend_heads']} heads), GELU. Peer: "
            "transformers `PerceiverModel` (no decoder) with equal weights; equal-weights check at M = 1k: "
            f"max |ours - transformers| = {check_text}. \"time/input vs 1k\" and \"mem/input vs 1k\" are the "
            "per-input cost relative to the smallest row (1.0 = linear); k = timed forwards.",
            "",
            encoder_table(results, sizes),
        ]
    )


def decoder_section(results: dict[str, dict[int, WorkerOutcome]], sizes: list[int]) -> str:
    channels = len(DECODER_GRID) * (1 + 2 * DECODER_BANDS)
    return "\n".join(
        [
            "## (b) Decoder: forward time and peak extra memory vs number of output queries O",
            "",
            f"Latents [1, {ENCODER_SETTINGS['num_latents']}, {ENCODER_SETTINGS['num_latent_channels']}] -> "
            f"[1, O, {DECODER_OUTPUT_CHANNELS}]; Fourier queries over a {DECODER_GRID} grid "
            f"({DECODER_BANDS} bands, {channels} query channels), `subsampled_output_points` = the first O flat "
            f"indices. \"chunked\" = `chunk_size={CHUNK_SIZE}` (one shot up to {size_label(CHUNK_SIZE)}), "
            "\"one-shot\" = `chunk_size=None` (the peer).",
            "",
            decoder_table(results, sizes),
        ]
    )


def summary_section(
    enc: dict[str, dict[int, WorkerOutcome]],
    dec: dict[str, dict[int, WorkerOutcome]],
    enc_sizes: list[int],
    dec_sizes: list[int],
    wall_s: float,
) -> tuple[str, dict[str, Any]]:
    target_line, target = memory_target_line(dec)
    lines = [
        "## Summary",
        "",
        target_line,
        scaling_line("encoder (ours)", enc["ours"], enc_sizes, "input"),
        scaling_line("encoder (transformers)", enc["transformers"], enc_sizes, "input"),
        peer_line("encoder ours/transformers", enc["ours"], enc["transformers"], enc_sizes),
        scaling_line("decoder chunked", dec["chunked"], dec_sizes, "query"),
        scaling_line("decoder one-shot", dec["one-shot"], dec_sizes, "query"),
        peer_line("decoder chunked/one-shot", dec["chunked"], dec["one-shot"], dec_sizes),
        "- (the lines above leave out rows marked *)",
        failures_line({"encoder": enc, "decoder": dec}),
        contention_line({"encoder": enc, "decoder": dec}),
        f"- wall time of the whole run: {wall_s:.0f} s",
    ]
    return "\n".join(lines), target


def outcomes_json(results: dict[str, dict[int, WorkerOutcome]]) -> dict[str, Any]:
    return {impl: {str(size): o.to_json() for size, o in rows.items()} for impl, rows in results.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="encoder up to 8k, decoder up to 64k (smoke check)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per row (default 5; more for rows under 1 s in total, fewer past --row-budget)")
    parser.add_argument(
        "--row-budget", type=float, default=40.0,
        help="seconds of timed forwards per row: at most budget // warm-up time of them, at least 1 (default 40)",
    )
    parser.add_argument("--row-timeout", type=float, default=300.0, help="kill a row's worker after this (s)")
    parser.add_argument(
        "--mem-cap-gib", type=float, default=None,
        help="kill a worker whose RSS passes this (default: 80%% of MemAvailable at start)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="output folder")
    parser.add_argument(
        "--retries", type=int, default=2, help="re-runs of a row disturbed by other work on the machine (default 2)"
    )
    parser.add_argument(
        "--default-malloc", action="store_true",
        help="keep glibc's moving mmap threshold in the workers (peak memory then varies by about 15%%)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    started = time.monotonic()
    cap = args.mem_cap_gib * 2**30 if args.mem_cap_gib else 0.8 * _measure.mem_available_bytes()
    options = Options(args.quick, args.repeats, args.row_budget, args.row_timeout, int(cap), args.default_malloc, args.retries)
    env = _measure.environment(THREADS)
    env["command"] = command_line()
    enc_sizes = ENCODER_SIZES_QUICK if args.quick else ENCODER_SIZES
    dec_sizes = DECODER_SIZES_QUICK if args.quick else DECODER_SIZES

    progress("[check] equal-weights check (encoder, M=1k) ...")
    check = run_row({"part": "check"}, options)
    progress(f"[check] {check.result if check.status == 'ok' else describe(check)}")
    enc = run_part("encoder", ENCODER_IMPLS, enc_sizes, options)
    dec = run_part("decoder", DECODER_IMPLS, dec_sizes, options)
    retry_disturbed({"encoder": enc, "decoder": dec}, options)
    wall = time.monotonic() - started

    summary, target = summary_section(enc, dec, enc_sizes, dec_sizes, wall)
    markdown = "\n\n".join(
        [header_block(env, options), encoder_section(enc, enc_sizes, check), decoder_section(dec, dec_sizes), summary]
    )
    print(markdown)
    raw = {
        "environment": env,
        "options": vars(options),
        "encoder_settings": ENCODER_SETTINGS,
        "decoder_settings": {
            "grid": DECODER_GRID, "bands": DECODER_BANDS, "output_channels": DECODER_OUTPUT_CHANNELS,
            "chunk_size": CHUNK_SIZE,
        },
        "equal_weights_check": check.to_json(),
        "encoder": outcomes_json(enc),
        "decoder": outcomes_json(dec),
        "memory_target": {"target": MEMORY_TARGET, **target},
        "wall_s": wall,
    }
    write_outputs(args.out, "scaling-quick" if args.quick else "scaling", markdown, raw)


if __name__ == "__main__":
    main()
