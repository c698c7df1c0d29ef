"""How fast could a forward+backward step of the ``vs_transformers.py`` rows possibly run on this CPU?

A lower bound on the step time from its matrix products, measured against transformers in the same run.

What it measures
----------------
For each row of ``benchmarks/vs_transformers.py`` (same models, equal weights, same inputs, same loss):

1. **The GEMMs of one fwd+bwd step.** A ``TorchDispatchMode`` records every ``mm``, ``addmm``,
   ``bmm`` and ``baddbmm`` the step dispatches (forward and backward), with its operands' sizes
   and strides and its wall time inside the step. Ours runs with SDPA forced to the math backend
   for this one recorded step, so the attention products show up as GEMMs (the fused CPU kernel
   computes the same products, blocked). **GEMM share** = time inside GEMMs / the step's wall time,
   both from the same step: transformers' share is the smallest ours/transformers ratio reachable by
   making everything except the products free while computing them no faster than transformers does.
2. **Rounds.** Each round times one real step of each implementation (ours with its default SDPA;
   order alternates), then re-runs every distinct (operator, operand layout) alone on random
   tensors of the same sizes and strides, best of several runs: the fastest this machine's BLAS
   computes that product at that moment. This machine's speed drifts by 10-30% from minute to
   minute, so every bound is divided by transformers' step **of the same round**.
3. **The bounds.** ``own-rate bound`` = sum over the step's GEMMs of that GEMM's best time: the
   step's time if every product ran at its best isolated speed and nothing else (softmax,
   LayerNorm, GELU, copies, autograd, allocation) took any time. ``peak bound`` = the step's GEMM
   FLOPs at the best rate of any of the row's products: lower still, it would also need the thin
   or odd-sized products to run as fast as the best one. Both use the smaller GEMM work of the two.

``lowest ratio`` = bound / transformers' step: no implementation doing this arithmetic in fp32 on
this machine can have a smaller ours/transformers time ratio. The issue's target (fwd+bwd at least
1.5x faster) needs a ratio <= 0.667.

Usage: ``.venv/bin/python benchmarks/gemm_bound.py [--rows mlm-512,image-64] [--repeats 3]``.
Writes ``benchmarks/results/gemm_bound.{md,json}``. About 10 minutes for all rows on 2 cores
(561 s measured; the multimodal row most of it); do not run other heavy work meanwhile.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _measure
import vs_transformers as vt
from _measure import progress, write_outputs

GEMM_OPS = ("mm", "addmm", "bmm", "baddbmm")
SQUARE_SIZES = (1024, 2048, 4096)
MIN_TIMING_S = 0.1  # a GEMM is re-run until this much time (or MAX_REPS runs) for its best-of
MAX_REPS = 5
IMPLS = (vt.OURS, vt.HF)


@dataclass
class GemmCall:
    """One recorded GEMM: the operator and its arguments (tensors as size/stride/dtype)."""

    op: str
    args: tuple
    flops: float
    seconds: float = 0.0  # wall time of the call inside the recorded step

    @property
    def key(self) -> tuple:
        return (self.op, self.args)


def _spec(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), str(value.dtype))
    return value


def _gemm_flops(op: str, args: tuple) -> float:
    """2 * m * k * n (times the batch for bmm/baddbmm) from the recorded operand sizes."""
    a, b = (args[1], args[2]) if op in ("addmm", "baddbmm") else (args[0], args[1])
    (*batch, m, k), n = a[1], b[1][-1]
    count = 1
    for d in batch:
        count *= d
    return 2.0 * count * m * k * n


class GemmRecorder:
    """Context manager recording every GEMM dispatched inside it (forward and backward)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self
        self.calls: list[GemmCall] = []

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                name = func.overloadpacket.__name__
                if name not in GEMM_OPS or kwargs:
                    return func(*args, **(kwargs or {}))
                spec = tuple(_spec(a) for a in args)
                start = time.perf_counter()
                out = func(*args)
                recorder.calls.append(GemmCall(name, spec, _gemm_flops(name, spec), time.perf_counter() - start))
                return out

        self._mode = _Mode()

    def __enter__(self) -> "GemmRecorder":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)


def _materialise(spec: Any) -> Any:
    import torch

    if isinstance(spec, tuple) and spec and spec[0] == "tensor":
        _, size, stride, dtype = spec
        return torch.empty_strided(size, stride, dtype=getattr(torch, dtype.split(".")[-1])).normal_()
    return spec


def best_time(op: str, args: tuple) -> float:
    """Best wall time of the GEMM ``op`` on fresh random operands with the recorded layout."""
    import torch

    func = getattr(torch.ops.aten, op).default
    tensors = [_materialise(a) for a in args]
    with torch.no_grad():
        func(*tensors)  # warm-up (BLAS packing buffers, page faults)
        times: list[float] = []
        while len(times) < 2 or (sum(times) < MIN_TIMING_S and len(times) < MAX_REPS):
            start = time.perf_counter()
            func(*tensors)
            times.append(time.perf_counter() - start)
    return min(times)


def square_peak() -> dict[int, float]:
    """Best GFLOP/s of large square fp32 products (``a @ b``, n x n)."""
    return {
        n: 2.0 * n**3 / best_time("mm", (("tensor", (n, n), (n, 1), "torch.float32"),) * 2) / 1e9
        for n in SQUARE_SIZES
    }


@dataclass
class RowResult:
    name: str
    description: str
    gemm_gflop: dict[str, float]
    gemm_calls: dict[str, int]
    distinct_gemms: int
    in_step_gemm_share: dict[str, float]
    step_s: dict[str, list[float]] = field(default_factory=dict)
    own_rate_bound_s: list[float] = field(default_factory=list)
    peak_bound_s: list[float] = field(default_factory=list)
    peak_gflops: list[float] = field(default_factory=list)
    slowest: list[dict[str, Any]] = field(default_factory=list)

    def median(self, impl: str) -> float:
        return statistics.median(self.step_s[impl])

    def bound_ratios(self, bounds: list[float]) -> list[float]:
        """Per round: the bound over transformers' step of the same round."""
        return [b / t for b, t in zip(bounds, self.step_s[vt.HF])]


def record_gemms(case: vt.Case, impl: str) -> tuple[list[GemmCall], float]:
    """The GEMMs of one fwd+bwd step of ``impl`` (ours with the math SDPA backend), and the step's wall time."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = sdpa_kernel(SDPBackend.MATH) if impl != vt.HF else nullcontext()
    with backend, GemmRecorder() as recorder:
        start = time.perf_counter()
        vt.step(case, impl, "fwd+bwd", case.inputs)
        wall = time.perf_counter() - start
    vt.clear_grads(case, impl)
    return recorder.calls, wall


def run_row(row: dict[str, Any], repeats: int, budget_s: float) -> RowResult:
    """Record the row's GEMMs, then per round: both real steps and every distinct GEMM alone."""
    progress(f"[{row['name']}] building models")
    case = vt.build_case(row, list(IMPLS))
    vt.set_mode(case, "fwd+bwd")
    calls: dict[str, list[GemmCall]] = {}
    share: dict[str, float] = {}
    record_s: dict[str, float] = {}
    for impl in IMPLS:
        progress(f"[{row['name']}] recording the GEMMs of one {impl} fwd+bwd step")
        calls[impl], record_s[impl] = record_gemms(case, impl)
        share[impl] = sum(c.seconds for c in calls[impl]) / record_s[impl]
    distinct = {c.key: c for impl in IMPLS for c in calls[impl]}
    flops = {impl: sum(c.flops for c in calls[impl]) for impl in IMPLS}

    rounds = max(1, min(repeats, int(budget_s // max(1e-9, sum(record_s.values())))))
    result = RowResult(
        name=row["name"],
        description=vt.row_description(row),
        gemm_gflop={impl: flops[impl] / 1e9 for impl in IMPLS},
        gemm_calls={impl: len(calls[impl]) for impl in IMPLS},
        distinct_gemms=len(distinct),
        in_step_gemm_share=share,
        step_s={impl: [] for impl in IMPLS},
    )
    for r in range(rounds):
        # the bound is re-measured next to each round's steps: this machine's speed drifts by
        # 10-30% from minute to minute, so a bound and a step from different minutes do not compare
        for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
            progress(f"[{row['name']}] round {r + 1}/{rounds}: timed {impl} step")
            start = time.perf_counter()
            vt.step(case, impl, "fwd+bwd", case.inputs)
            result.step_s[impl].append(time.perf_counter() - start)
            vt.clear_grads(case, impl)
        progress(f"[{row['name']}] round {r + 1}/{rounds}: timing {len(distinct)} distinct GEMMs alone")
        best = {key: best_time(call.op, call.args) for key, call in distinct.items()}
        peak = max(c.flops / best[k] / 1e9 for k, c in distinct.items())
        result.own_rate_bound_s.append(min(sum(best[c.key] for c in calls[impl]) for impl in IMPLS))
        result.peak_bound_s.append(min(flops.values()) / (peak * 1e9))
        result.peak_gflops.append(peak)
        if r == 0:
            result.slowest = slowest_products(calls[vt.OURS], best, peak)
    del case
    gc.collect()
    return result


def slowest_products(calls: list[GemmCall], best: dict[tuple, float], peak_gflops: float, top: int = 6) -> list[dict[str, Any]]:
    """The products whose best speed loses the most time against the peak rate, over one step."""
    lost: dict[tuple, dict[str, Any]] = {}
    for c in calls:
        entry = lost.setdefault(c.key, {
            "op": c.op, "operands": [list(a[1]) for a in c.args if isinstance(a, tuple) and a and a[0] == "tensor"],
            "count": 0, "gflop": 0.0, "best_gflops": c.flops / best[c.key] / 1e9, "lost_s": 0.0,
        })
        entry["count"] += 1
        entry["gflop"] += c.flops / 1e9
        entry["lost_s"] += best[c.key] - c.flops / (peak_gflops * 1e9)
    return sorted(lost.values(), key=lambda e: -e["lost_s"])[:top]


def report(results: list[RowResult], env: dict[str, Any], squares: dict[int, float], wall_s: float) -> tuple[str, dict]:
    target = vt.TIME_TARGET
    header = [
        "row", "transformers ms", "ours ms", "ours/transformers", "GEMM GFLOP (ours / transformers)",
        "GEMM share of the step (ours / transformers)", "lowest ratio: own-rate bound", "lowest ratio: peak bound",
        f"ratio <= {target:.3f} possible?",
    ]

    def spread(values: list[float]) -> str:
        text = f"{statistics.median(values):.2f}"
        return text + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")

    table = []
    for r in results:
        hf, ours = r.median(vt.HF), r.median(vt.OURS)
        own = r.bound_ratios(r.own_rate_bound_s)
        table.append([
            r.name, f"{hf * 1e3:.0f}", f"{ours * 1e3:.0f}", f"{ours / hf:.2f}",
            f"{r.gemm_gflop[vt.OURS]:.1f} / {r.gemm_gflop[vt.HF]:.1f}",
            f"{r.in_step_gemm_share[vt.OURS]:.0%} / {r.in_step_gemm_share[vt.HF]:.0%}",
            spread(own), spread(r.bound_ratios(r.peak_bound_s)),
            "yes" if statistics.median(own) <= target else "**no**",
        ])
    squares_text = ", ".join(f"{n}x{n}: {g:.0f}" for n, g in squares.items())
    lines = [
        "# Lower bound on a fwd+bwd step from its GEMMs (CPU, fp32)",
        "",
        f"- date: {env['date']}; command: `{env['command']}`",
        f"- torch {env['torch']}, transformers {env['transformers']}, python {env['python']}; CPU: {env['cpu']} "
        f"({env['cpu_count']} logical cores), torch threads: {env['threads']}; load average at start: {env['load_average']}",
        f"- best rate of large square fp32 products (GFLOP/s): {squares_text}",
        "- rows, models, inputs and loss: as in `benchmarks/vs_transformers.py` (equal weights); "
        "method: see the docstring of `benchmarks/gemm_bound.py`",
        "- steps: median of alternating rounds "
        + ", ".join(f"{r.name}: k = {len(r.step_s[vt.HF])}" for r in results),
        "",
        "## Rows",
        "",
        *[f"- **{r.name}**: {r.description}" for r in results],
        "",
        "## Results",
        "",
        vt.markdown_table(header, table),
        "",
        "- GEMM share of the step: time inside GEMM calls / wall time of the same step (the recorded one; "
        "ours with math SDPA). transformers' share is the lowest ratio an implementation could reach by making "
        "everything but the products free while computing them no faster than transformers does.",
        "- lowest ratio: a bound over transformers' step **of the same round** (median over rounds, range in "
        "brackets). own-rate bound: every GEMM of the step at the best speed this machine's BLAS reaches on that "
        "exact product alone (best of several runs), everything else free. peak bound: all GEMM FLOPs at the best "
        "rate seen for any of the row's products ("
        + ", ".join(f"{r.name}: {statistics.median(r.peak_gflops):.0f} GFLOP/s" for r in results)
        + "); reaching it would need products this BLAS runs slower (thin, odd-sized) to run at its best rate.",
        f"- the issue's target (fwd+bwd at least 1.5x faster) needs ours/transformers <= {target:.3f}; "
        "\"possible?\" compares the own-rate bound with it.",
        "- GEMM FLOPs of ours are counted with SDPA on its math backend (the attention products as GEMMs); "
        "the timed step uses the default (fused where the head sizes allow).",
        "- GEMM calls recorded per step (ours / transformers): "
        + ", ".join(f"{r.name}: {r.gemm_calls[vt.OURS]} / {r.gemm_calls[vt.HF]} ({r.distinct_gemms} distinct)" for r in results),
        f"- wall time of the whole run: {wall_s:.0f} s",
        "",
        "## Where the own-rate bound loses against the peak (ours' products, one step, first round)",
        "",
    ]
    for r in results:
        lines += [f"**{r.name}**", "", vt.markdown_table(
            ["op", "operands", "calls", "GFLOP", "best GFLOP/s", "ms lost vs peak"],
            [[e["op"], " x ".join(str(tuple(o)) for o in e["operands"]), str(e["count"]), f"{e['gflop']:.1f}",
              f"{e['best_gflops']:.0f}", f"{e['lost_s'] * 1e3:.0f}"] for e in r.slowest],
        ), ""]
    lines = lines[:-1]
    raw = {
        "environment": env,
        "square_peak_gflops": squares,
        "rows": [r.__dict__ for r in results],
        "wall_s": wall_s,
    }
    return "\n".join(lines), raw


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny versions of the rows (smoke check)")
    parser.add_argument("--rows", help="comma-separated row names (default: all rows of vs_transformers.py)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per row (default 3; fewer past --budget)")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of timed rounds per row (default 90)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    rows = vt.QUICK_ROWS if args.quick else vt.ROWS
    if args.rows:
        rows = vt.select_rows(rows, args.rows)
    if args.repeats < 1:
        raise SystemExit(f"--repeats: expected at least 1, got {args.repeats}")
    torch.set_num_threads(vt.THREADS)
    torch.manual_seed(vt.SEED)
    started = time.monotonic()
    env = _measure.environment(vt.THREADS)
    env["command"] = " ".join([".venv/bin/python", "benchmarks/gemm_bound.py", *sys.argv[1:]])
    progress("timing large square products")
    squares = square_peak()
    results = [run_row(row, args.repeats, args.budget) for row in rows]
    markdown, raw = report(results, env, squares, time.monotonic() - started)
    print(markdown)
    write_outputs(args.out, "gemm_bound-quick" if args.quick else "gemm_bound", markdown, raw)


if __name__ == "__main__":
    main()
