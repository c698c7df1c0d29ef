"""Which attention path is faster on the CPU: ``F.scaled_dot_product_attention`` or plain matmul-softmax-matmul?

The measurement behind :func:`perceiver_io.core.attention.use_fused_attention`: for the attention
shapes of the ``vs_transformers.py`` rows, fp32 and bf16, forward (inference mode) and forward+backward,
SDPA (default backend choice: flash where the head sizes are equal, else the math path) against
:func:`perceiver_io.core.attention.unfused_attention`, 2 threads, each timed by :func:`_measure.autorange`
(at most ``--max-run-time`` s; median per run; the paths take turns to go first). Lower ``unfused / SDPA`` =
the plain path is faster; it stores the ``[B, H, Nq, Nk]`` scores, the flash kernel does not, so the policy
keeps SDPA where it is about as fast. About a minute (``--rows mlm-self,mlm-cross``: fewer shapes).
"""

import itertools
from functools import partial
from typing import Any

import _measure as m
from _measure import progress

# name, description, q, k, v shapes [B, H, N, D]
SHAPES: list[dict[str, Any]] = [dict(zip(("name", "shape", "q", "k", "v"), s)) for s in [
    ("image-self", "image-64 self-attention (8 heads of 128)", (1, 8, 512, 128), (1, 8, 512, 128), (1, 8, 512, 128)),
    ("image-cross", "image-64 cross-attention (1 head of 261, 4096 inputs)", (1, 1, 512, 261), (1, 1, 4096, 261),
     (1, 1, 4096, 261)),
    ("mlm-self", "MLM self-attention (qk 32, v 160 per head)", (2, 8, 256, 32), (2, 8, 256, 32), (2, 8, 256, 160)),
    ("mlm-cross", "MLM cross-attention (512 inputs, qk 32, v 160)", (2, 8, 256, 32), (2, 8, 512, 32), (2, 8, 512, 160)),
    ("mlm-decoder", "MLM decoder (512 queries, qk 32, v 160)", (2, 8, 512, 32), (2, 8, 256, 32), (2, 8, 256, 160)),
    ("multimodal-decoder", "multimodal decoder chunk (16k queries, 1 head of 512)", (1, 1, 16384, 512),
     (1, 1, 784, 512), (1, 1, 784, 512)),
]]


def measure(shapes: list[dict[str, Any]], threads: int, max_run_time: float) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    from perceiver_io.core.attention import unfused_attention, use_fused_attention

    rows, paths = [], {"sdpa": F.scaled_dot_product_attention, "unfused": unfused_attention}
    for dtype, s, backward in itertools.product((torch.float32, torch.bfloat16), shapes, (False, True)):
        generator = torch.Generator().manual_seed(0)
        tensors = [torch.randn(s[x], generator=generator).to(dtype).requires_grad_(backward) for x in "qkv"]
        ms = {path: 1e3 * m.autorange(partial(m.forward_or_backward, partial(paths[path], *tensors), backward,
                                              tensors), threads, max_run_time).median
              for path in list(paths)[:: 1 if len(rows) % 2 == 0 else -1]}  # the paths take turns to go first
        rows.append({"shape": s["shape"], "dtype": str(dtype).removeprefix("torch."),
                     "mode": "fwd+bwd" if backward else "forward", "sdpa_ms": ms["sdpa"], "unfused_ms": ms["unfused"],
                     "ratio": ms["unfused"] / ms["sdpa"],
                     "policy": "sdpa" if use_fused_attention(tensors[0], tensors[2]) else "unfused"})
        progress(f"{rows[-1]['dtype']} {rows[-1]['mode']:8s} {s['shape']}: sdpa {ms['sdpa']:.2f} ms, "
                 f"unfused {ms['unfused']:.2f} ms")
    return rows


def render(raw: dict[str, Any]) -> str:
    table = [[r["shape"], r["dtype"], r["mode"], f"{r['sdpa_ms']:.2f}", f"{r['unfused_ms']:.2f}", f"{r['ratio']:.2f}",
              r["policy"] + ("" if (r["policy"] == "unfused") == (r["ratio"] < 1) else " (slower here)")]
             for r in raw["rows"]]
    header = ["attention shape", "dtype", "mode", "SDPA ms", "unfused ms", "unfused / SDPA", "path the library takes"]
    return "\n\n".join([
        "# CPU attention: SDPA vs plain matmul-softmax-matmul",
        "\n".join([*m.env_lines(raw["environment"]), "- " + raw.get("method", "median of alternating runs after two "
                   "warm-ups") + "; method in the docstring of `benchmarks/attention_cpu.py`"]),
        m.markdown_table(header, table, left=(0, 1, 2, 6)),
        "- the library's CPU rule (`use_fused_attention`): SDPA for fp32 with equal q/v head sizes (flash kernel, "
        "no stored scores) and, on a CPU with AMX, for bf16 inference with equal head sizes that are multiples of 8; "
        "the plain path otherwise. \"(slower here)\": the other path was faster in this run.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, rows="comma-separated shapes (default: all): " + ",".join(s["name"] for s in SHAPES))
    parser.add_argument("--max-run-time", type=float, default=10.0,
                        help="seconds at most per path and cell (default 10; fewer when the spread is small)")
    if args := m.parse(parser, argv, render):  # the environment at the start, then the rows
        m.finish(args.out, "attention_cpu", {"environment": m.environment(args.threads), "method": m.AUTORANGE_METHOD,
                                             "rows": measure(m.select_rows(SHAPES, args.rows), args.threads,
                                                             args.max_run_time)}, render)


if __name__ == "__main__":
    main()
