"""Which attention path is faster on the CPU: ``F.scaled_dot_product_attention`` or plain matmul-softmax-matmul?

The measurement behind :func:`perceiver_io.core.attention.use_fused_attention`. For the attention
shapes of the ``vs_transformers.py`` rows, in fp32 and bf16, forward (inference mode) and
forward+backward, it times SDPA (default backend choice: the flash kernel where the head sizes
are equal, the math path otherwise) against
:func:`perceiver_io.core.attention.unfused_attention`, alternating, median of ``--repeats`` runs
after two warm-ups, in one process, 2 threads. Lower ``unfused / SDPA`` = the plain path is faster.
The plain path materialises the ``[B, H, Nq, Nk]`` scores (and keeps them for backward), the flash
kernel does not: the policy keeps SDPA wherever it is about as fast, for its memory.

Usage: ``.venv/bin/python benchmarks/attention_cpu.py [--repeats 9]`` (about a minute); writes
``benchmarks/results/attention_cpu.{md,json}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import _measure
from _measure import progress, write_outputs

THREADS = 2
# (name, q shape, k shape, v shape): [B, H, N, D]
SHAPES: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = [
    ("image-64 self-attention (8 heads of 128)", (1, 8, 512, 128), (1, 8, 512, 128), (1, 8, 512, 128)),
    ("image-64 cross-attention (1 head of 261, 4096 inputs)", (1, 1, 512, 261), (1, 1, 4096, 261), (1, 1, 4096, 261)),
    ("MLM self-attention (qk 32, v 160 per head)", (2, 8, 256, 32), (2, 8, 256, 32), (2, 8, 256, 160)),
    ("MLM cross-attention (512 inputs, qk 32, v 160)", (2, 8, 256, 32), (2, 8, 512, 32), (2, 8, 512, 160)),
    ("MLM decoder (512 queries, qk 32, v 160)", (2, 8, 512, 32), (2, 8, 256, 32), (2, 8, 256, 160)),
    ("multimodal decoder chunk (16k queries, 1 head of 512)", (1, 1, 16384, 512), (1, 1, 784, 512), (1, 1, 784, 512)),
]


def time_one(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_step(attend: Callable[..., Any], tensors: list[Any], backward: bool) -> Callable[[], None]:
    import torch

    def step() -> None:
        if backward:
            out = attend(*tensors)
            out.backward(torch.ones_like(out))
            for t in tensors:
                t.grad = None
        else:
            with torch.inference_mode():
                attend(*tensors)

    return step


def measure(repeats: int) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    from perceiver_io.core.attention import unfused_attention, use_fused_attention

    rows = []
    paths = {"sdpa": F.scaled_dot_product_attention, "unfused": unfused_attention}
    for dtype in (torch.float32, torch.bfloat16):
        for name, *shapes in SHAPES:
            for backward in (False, True):
                generator = torch.Generator().manual_seed(0)
                tensors = [torch.randn(s, generator=generator).to(dtype).requires_grad_(backward) for s in shapes]
                steps = {path: make_step(fn, tensors, backward) for path, fn in paths.items()}
                for step in steps.values():
                    step(), step()
                times: dict[str, list[float]] = {path: [] for path in paths}
                for r in range(repeats):
                    for path in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                        times[path].append(time_one(steps[path]))
                medians = {path: statistics.median(ts) for path, ts in times.items()}
                chosen = "sdpa" if use_fused_attention(tensors[0], tensors[2]) else "unfused"
                rows.append({
                    "shape": name, "dtype": str(dtype).removeprefix("torch."), "mode": "fwd+bwd" if backward else "forward",
                    "sdpa_ms": medians["sdpa"] * 1e3, "unfused_ms": medians["unfused"] * 1e3,
                    "ratio": medians["unfused"] / medians["sdpa"], "policy": chosen,
                })
                r = rows[-1]
                progress(f"{r['dtype']} {r['mode']:8s} {name}: sdpa {r['sdpa_ms']:.2f} ms, unfused {r['unfused_ms']:.2f} ms")
    return rows


def report(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    table = [
        [r["shape"], r["dtype"], r["mode"], f"{r['sdpa_ms']:.2f}", f"{r['unfused_ms']:.2f}", f"{r['ratio']:.2f}",
         r["policy"] + ("" if (r["policy"] == "unfused") == (r["ratio"] < 1) else " (slower here)")]
        for r in rows
    ]
    header = ["attention shape", "dtype", "mode", "SDPA ms", "unfused ms", "unfused / SDPA", "path the library takes"]
    lines = [
        "# CPU attention: SDPA vs plain matmul-softmax-matmul",
        "",
        f"- date: {env['date']}; command: `{env['command']}`",
        f"- torch {env['torch']}, python {env['python']}; CPU: {env['cpu']} ({env['cpu_count']} logical cores), "
        f"torch threads: {env['threads']}; load average at start: {env['load_average']}",
        "- median of alternating runs after two warm-ups; method in the docstring of `benchmarks/attention_cpu.py`",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|---|---:|---:|---:|---|",
        *["| " + " | ".join(row) + " |" for row in table],
        "",
        "- the library's CPU rule (`use_fused_attention`): SDPA for fp32 with equal q/v head sizes (flash kernel, "
        "no stored scores), the plain path otherwise. \"(slower here)\": the other path was faster in this run.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per path (default 9)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="output folder")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats: expected at least 1, got {args.repeats}")
    torch.set_num_threads(THREADS)
    env = _measure.environment(THREADS)
    env["command"] = " ".join([".venv/bin/python", "benchmarks/attention_cpu.py", *sys.argv[1:]])
    rows = measure(args.repeats)
    markdown = report(rows, env)
    print(markdown)
    write_outputs(args.out, "attention_cpu", markdown, {"environment": env, "rows": rows})


if __name__ == "__main__":
    main()
