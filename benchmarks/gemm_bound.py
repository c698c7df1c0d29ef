"""How fast could a forward+backward step of the ``vs_transformers.py`` rows possibly run on this CPU?

For each row (same models, equal weights, inputs and loss): a ``TorchDispatchMode`` records every GEMM (mm, addmm,
bmm, baddbmm) of one fwd+bwd step with its operands' layout and time (ours with SDPA on the math backend, so the
attention products are GEMMs). Each round then times one real step of ours, ours under ``torch.compile`` and
transformers (order alternating), re-runs every distinct GEMM alone (best of 2-5 runs), and re-runs ours' GEMMs
back to back in step order on operands allocated ahead (warm: reused per layout; cold: fresh for every call).
``own-rate bound`` = the sum of the step's GEMMs at their best isolated times, everything else free; ``peak bound``
= its GEMM FLOPs at the best rate of any of the row's products; ``ceiling`` = ours' own-rate bound / its GEMMs back
to back. Bounds are divided by the steps of the same round (the machine drifts by 10-30% from minute to minute).
About 15 minutes on 2 cores.
"""

import math
import statistics
import time
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import _measure as m
import vs_transformers as vt
from _measure import progress

GEMM_OPS = ("mm", "addmm", "bmm", "baddbmm")
SQUARE_SIZES = (1024, 2048, 4096)
MIN_TIMING_S = 0.1  # a GEMM is re-run until this much time (or MAX_REPS runs) for its best-of
MAX_REPS = 5
IMPLS = (vt.OURS, vt.HF)  # GEMMs recorded
TIMED = (vt.OURS, vt.COMPILED, vt.HF)  # steps timed each round
WITHIN = 0.95  # the target: ours' step within 5% of the own-rate bound (bound / ours >= 0.95)
KINDS = ("warm", "cold")  # back-to-back GEMMs on reused operands, on fresh ones
REPLAY_BATCH_BYTES = 2**30  # back-to-back GEMMs: operands allocated ahead in batches of about this size


class GemmCall(NamedTuple):
    """One recorded GEMM: operator, arguments (tensors as ("tensor", size, stride, dtype)), FLOPs (counted by
    ``torch.utils.flop_counter``), wall time."""

    op: str
    args: tuple
    flops: int
    seconds: float


class GemmRecorder(TorchDispatchMode):
    """Records every GEMM dispatched inside it (forward and backward) in ``calls``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[GemmCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.overloadpacket.__name__
        if name not in GEMM_OPS or kwargs:
            return func(*args, **(kwargs or {}))
        start = time.perf_counter()
        out = func(*args)
        seconds = time.perf_counter() - start
        spec = tuple(("tensor", tuple(a.shape), tuple(a.stride()), str(a.dtype)) if isinstance(a, torch.Tensor) else a
                     for a in args)
        self.calls.append(GemmCall(name, spec, flop_registry[func.overloadpacket](*args, out_val=out), seconds))
        return out


def best_time(op: str, args: tuple) -> float:
    """Best wall time of the GEMM ``op`` on fresh random operands with the recorded layout: one
    warm-up (BLAS packing buffers, page faults), then the best of 2-5 runs (until MIN_TIMING_S)."""
    func = getattr(torch.ops.aten, op).default
    tensors = operands(args)
    with torch.no_grad():
        timed = m.timer(lambda: func(*tensors))
        first = max(timed.timeit(1), 1e-9)
        return min(timed.repeat(max(2, min(MAX_REPS, math.ceil(MIN_TIMING_S / first))), 1))


def operands(args: tuple) -> list[Any]:
    """Fresh random tensors with the sizes, strides and dtypes recorded in ``args`` (other arguments as they are)."""
    return [torch.empty_strided(a[1], a[2], dtype=getattr(torch, a[3].split(".")[-1])).normal_()
            if isinstance(a, tuple) and a and a[0] == "tensor" else a for a in args]


def back_to_back_s(calls: list[GemmCall], fresh: bool) -> float:
    """Seconds of ``calls`` run in order with nothing between them, on operands allocated ahead in batches of about
    REPLAY_BATCH_BYTES (outside the timing). ``fresh``: each call on its own new operands (not in cache); else one
    set of operands per distinct (op, layout) of a batch, reused by its repeats (as in :func:`best_time`)."""
    total, i = 0.0, 0
    while i < len(calls):
        batch, shared, size = [], {}, 0
        while i < len(calls) and (not batch or size < REPLAY_BATCH_BYTES):
            key = (calls[i].op, calls[i].args) if not fresh else i
            if key not in shared:
                shared[key] = operands(calls[i].args)
                size += sum(t.untyped_storage().nbytes() for t in shared[key] if isinstance(t, torch.Tensor))
            batch.append((getattr(torch.ops.aten, calls[i].op).default, shared[key]))
            i += 1
        with torch.no_grad():
            start = time.perf_counter()
            for func, tensors in batch:
                func(*tensors)
            total += time.perf_counter() - start
        del batch, shared
    return total


def record_gemms(case: vt.Case, impl: str) -> tuple[list[GemmCall], float]:
    """The GEMMs of one fwd+bwd step of ``impl`` (ours with the math SDPA backend), and the step's wall time."""
    with sdpa_kernel(SDPBackend.MATH) if impl != vt.HF else nullcontext(), GemmRecorder() as recorder:
        wall = vt.step(case, impl, "fwd+bwd", case.inputs)["s"]
    return recorder.calls, wall


def slowest_products(calls: list[GemmCall], best: dict[tuple, float], peak_gflops: float, top: int = 6) -> list[dict]:
    """The products whose best speed loses the most time against the peak rate, over one step (``best``: the best
    time of each (op, args))."""
    lost: dict[tuple, dict[str, Any]] = {}
    for c in calls:
        entry = lost.setdefault((c.op, c.args), {
            "op": c.op, "operands": [list(a[1]) for a in c.args if isinstance(a, tuple) and a and a[0] == "tensor"],
            "count": 0, "gflop": 0.0, "best_gflops": c.flops / best[c.op, c.args] / 1e9, "lost_s": 0.0,
        })
        entry["count"] += 1
        entry["gflop"] += c.flops / 1e9
        entry["lost_s"] += best[c.op, c.args] - c.flops / (peak_gflops * 1e9)
    return sorted(lost.values(), key=lambda e: -e["lost_s"])[:top]


def run_row(row: dict[str, Any], repeats: int, budget_s: float) -> dict[str, Any]:
    """Record the row's GEMMs, then per round: both real steps and every distinct GEMM alone."""
    progress(f"[{row['name']}] building models")
    case, calls, record_s = vt.set_mode(vt.build_case(row, list(TIMED)), "fwd+bwd"), {}, {}
    for impl in IMPLS:
        progress(f"[{row['name']}] recording the GEMMs of one {impl} fwd+bwd step")
        calls[impl], record_s[impl] = record_gemms(case, impl)
    progress(f"[{row['name']}] torch.compile: compiling (the first step), then one warm-up step")
    compile_s = vt.step(case, vt.COMPILED, "fwd+bwd", case.inputs)["s"]
    vt.step(case, vt.COMPILED, "fwd+bwd", case.inputs)
    distinct = {(c.op, c.args): c for impl in IMPLS for c in calls[impl]}
    flops = {impl: sum(c.flops for c in calls[impl]) for impl in IMPLS}
    r: dict[str, Any] = dict(
        name=row["name"], description=vt.row_description(row),
        gemm_gflop={impl: flops[impl] / 1e9 for impl in IMPLS}, gemm_calls={impl: len(calls[impl]) for impl in IMPLS},
        distinct_gemms=len(distinct),
        in_step_gemm_share={impl: sum(c.seconds for c in calls[impl]) / record_s[impl] for impl in IMPLS},
        step_s={impl: [] for impl in TIMED}, own_rate_bound_s=[], peak_bound_s=[], peak_gflops=[], slowest=[],
        compile_s=compile_s, ours_bound_s=[], back_to_back_s={"warm": [], "cold": []},
    )
    rounds = m.rounds(repeats, budget_s, sum(record_s.values()) + record_s[vt.OURS])
    for i in range(rounds):
        # the bound is re-measured next to each round's steps: a bound and a step from different minutes do not compare
        for impl in TIMED if i % 2 == 0 else TIMED[::-1]:
            progress(f"[{row['name']}] round {i + 1}/{rounds}: timed {impl} step")
            r["step_s"][impl].append(vt.step(case, impl, "fwd+bwd", case.inputs)["s"])
        progress(f"[{row['name']}] round {i + 1}/{rounds}: timing {len(distinct)} distinct GEMMs alone")
        best = {key: best_time(call.op, call.args) for key, call in distinct.items()}
        peak = max(c.flops / best[k] / 1e9 for k, c in distinct.items())
        r["own_rate_bound_s"].append(min(sum(best[c.op, c.args] for c in calls[impl]) for impl in IMPLS))
        r["ours_bound_s"].append(sum(best[c.op, c.args] for c in calls[vt.OURS]))
        progress(f"[{row['name']}] round {i + 1}/{rounds}: ours' {len(calls[vt.OURS])} GEMMs back to back")
        for kind, fresh in (("warm", False), ("cold", True)):
            r["back_to_back_s"][kind].append(back_to_back_s(calls[vt.OURS], fresh))
        r["peak_bound_s"].append(min(flops.values()) / (peak * 1e9))
        r["peak_gflops"].append(peak)
        if i == 0:
            r["slowest"] = slowest_products(calls[vt.OURS], best, peak)
    return r


def render(raw: dict[str, Any]) -> str:
    results, target, med = raw["rows"], vt.TIME_TARGET, statistics.median
    header = ["row", "transformers ms", "ours ms (eager / compiled)", "ours/transformers (eager / compiled)",
              "GEMM GFLOP (ours / transformers)", "GEMM share of the step (ours / transformers)",
              "lowest ratio: own-rate bound", "lowest ratio: peak bound", "own-rate bound / ours (eager / compiled)",
              "ours' GEMMs back to back ms (warm / cold)", "ceiling: own-rate bound / back to back (warm / cold)",
              f"within {1 - WITHIN:.0%} of the bound? (eager / compiled)"]

    def per_round(r: dict[str, Any], bounds: str, impl: str) -> list[float]:  # the bound over impl's step, per round
        return [b / t for b, t in zip(r[bounds], r["step_s"][impl])]

    def spread(values: list[float], digits: int = 2) -> str:
        return f"{med(values):.{digits}f}" + (
            f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else "")

    def both(values: list[str]) -> str:
        return " / ".join(values)

    def ceiling(r: dict[str, Any], kind: str) -> list[float]:  # ours' own-rate bound / its GEMMs back to back
        return [b / t for b, t in zip(r["ours_bound_s"], r["back_to_back_s"][kind])]

    table, lowest = [], []
    for r in results:
        ours = [impl for impl in (vt.OURS, vt.COMPILED) if r["step_s"].get(impl)]
        hf, own = med(r["step_s"][vt.HF]), {impl: per_round(r, "own_rate_bound_s", impl) for impl in ours}
        lowest.append(med(per_round(r, "own_rate_bound_s", vt.HF)))
        table.append([
            r["name"], f"{hf * 1e3:.0f}", both([f"{med(r['step_s'][i]) * 1e3:.0f}" for i in ours]),
            both([f"{med(r['step_s'][i]) / hf:.2f}" for i in ours]),
            f"{r['gemm_gflop'][vt.OURS]:.1f} / {r['gemm_gflop'][vt.HF]:.1f}",
            f"{r['in_step_gemm_share'][vt.OURS]:.0%} / {r['in_step_gemm_share'][vt.HF]:.0%}",
            spread(per_round(r, "own_rate_bound_s", vt.HF)), spread(per_round(r, "peak_bound_s", vt.HF)),
            both([spread(own[i]) for i in ours]),
            # the ceiling to 3 digits: it is read against 0.95
            both([f"{med(r['back_to_back_s'][k]) * 1e3:.0f}" for k in KINDS]),
            both([spread(ceiling(r, k), 3) for k in KINDS]),
            both(["yes" if med(own[i]) >= WITHIN else "no" for i in ours])])
    return "\n\n".join([
        "# Lower bound on a fwd+bwd step from its GEMMs (CPU, fp32)",
        "\n".join([
            *m.env_lines(raw["environment"]),
            "- best rate of large square fp32 products (GFLOP/s): "
            + ", ".join(f"{n}x{n}: {g:.0f}" for n, g in raw["square_peak_gflops"].items()),
            "- rows, models, inputs and loss: as in `benchmarks/vs_transformers.py` (equal weights); "
            "method: see the docstring of `benchmarks/gemm_bound.py`",
            "- steps: median of alternating rounds "
            + ", ".join(f"{r['name']}: k = {len(r['step_s'][vt.HF])}" for r in results)]),
        "\n".join(["## Rows", "", *[f"- **{r['name']}**: {r['description']}" for r in results]]),
        "## Results\n\n" + m.markdown_table(header, table),
        "\n".join([
            "- GEMM share: time inside GEMMs / the recorded step's time. lowest ratio: a bound over transformers' step "
            "of the same round (median, range in brackets); no implementation of this arithmetic can go lower. peak "
            "bound rate: " + ", ".join(f"{r['name']} {med(r['peak_gflops']):.0f} GFLOP/s" for r in results) + ".",
            f"- own-rate bound / ours: the target is >= {WITHIN}. ceiling: the highest own-rate bound / step any step "
            f"computing ours' products with this BLAS can reach; under {WITHIN} with warm operands in "
            + (", ".join(r["name"] for r in results if med(ceiling(r, "warm")) < WITHIN) or "no row")
            + ", with cold ones in " + (", ".join(r["name"] for r in results if med(ceiling(r, "cold")) < WITHIN)
                                        or "no row") + ".",
            f"- the retired target (ours/transformers <= {target:.3f}) is ruled out by the own-rate bound in "
            + (", ".join(r["name"] for r, low in zip(results, lowest) if low > target) or "no row") + ".",
            "- compiled: `torch.compile(model)` (inductor), same weights; compile time (not in the medians): "
            + ", ".join(f"{r['name']} {r['compile_s']:.0f} s" for r in results),
            "- GEMM calls per step (ours / transformers): " + ", ".join(
                f"{r['name']}: {r['gemm_calls'][vt.OURS]} / {r['gemm_calls'][vt.HF]} ({r['distinct_gemms']} distinct)"
                for r in results),
            f"- wall time of the whole run: {raw['wall_s']:.0f} s"]),
        "## Where the own-rate bound loses against the peak (ours' products, one step, first round)",
        *[f"**{r['name']}**\n\n" + m.markdown_table(
            ["op", "operands", "calls", "GFLOP", "best GFLOP/s", "ms lost vs peak"],
            [[e["op"], " x ".join(str(tuple(o)) for o in e["operands"]), str(e["count"]), f"{e['gflop']:.1f}",
              f"{e['best_gflops']:.0f}", f"{e['lost_s'] * 1e3:.0f}"] for e in r["slowest"]]) for r in results],
    ])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, quick="tiny versions of the rows (smoke check)",
                          rows="comma-separated row names (default: all rows of vs_transformers.py)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per row (default 3; fewer past --budget)")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of timed rounds per row (default 90)")
    if not (args := m.parse(parser, argv, render)):
        return
    rows = m.select_rows(vt.QUICK_ROWS if args.quick else vt.ROWS, args.rows)
    torch.set_num_threads(args.threads)
    torch.manual_seed(m.SEED)
    started, env = time.monotonic(), m.environment(args.threads)
    progress("timing large square products")
    squares = {n: 2.0 * n**3 / best_time("mm", (("tensor", (n, n), (n, 1), "torch.float32"),) * 2) / 1e9
               for n in SQUARE_SIZES}
    results = [run_row(row, args.repeats, args.budget) for row in rows]
    raw = dict(environment=env, square_peak_gflops=squares, rows=results, wall_s=time.monotonic() - started)
    m.finish(args.out, "gemm_bound-quick" if args.quick else "gemm_bound", raw, render)


if __name__ == "__main__":
    main()
