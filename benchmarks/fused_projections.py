"""Does fusing the attention projections pay on the CPU? Separate Linears against one fused Linear, fp32.

For the q/k/v projections of a self-attention and the k/v projections of a cross-attention (the shapes of the
``vs_transformers.py`` rows), three ways: ``separate`` Linears (the library's layout, the one the official and
transformers checkpoints share), one Linear over weights ``stored`` concatenated (another parameter layout), and one
Linear over the separate weights concatenated at each call (``cat per call``: fusion that keeps today's
parameters; its fwd+bwd includes splitting the weight gradient back). Forward (inference mode) and forward+backward
(gradients of the input, weights and biases), each timed by :func:`_measure.autorange` (median per run, at most
``--max-run-time`` s, the ways taking turns to go first), 2 threads. About 1.5 minutes.
"""

import itertools
from functools import partial
from typing import Any

import _measure as m
from _measure import progress

WAYS = ("separate", "stored", "cat per call")
# name, description, projection input [B, N, C], output channels of each projection
ROWS: list[dict[str, Any]] = [dict(zip(("name", "shape", "x", "outs"), r)) for r in [
    ("mlm-self", "MLM self-attention q/k/v (256 x 1280 latents, batch 2)", (2, 256, 1280), (256, 256, 1280)),
    ("mlm-cross", "MLM cross-attention k/v (512 x 768 inputs, batch 2)", (2, 512, 768), (256, 1280)),
    ("image-self", "image-64 self-attention q/k/v (512 x 1024 latents)", (1, 512, 1024), (1024, 1024, 1024)),
    ("image-cross", "image-64 cross-attention k/v (4096 x 261 inputs)", (1, 4096, 261), (261, 261)),
    ("multimodal-self", "multimodal self-attention q/k/v (784 x 512 latents)", (1, 784, 512), (512, 512, 512)),
]]


def project(way: str, x: Any, weights: list[Any], biases: list[Any], stored: tuple[Any, Any]) -> list[Any]:
    """The projections of ``x [B, N, C]`` one ``way``: a list of ``[B, N, out]``."""
    import torch
    import torch.nn.functional as F

    if way == "separate":
        return [F.linear(x, w, b) for w, b in zip(weights, biases)]
    weight, bias = stored if way == "stored" else (torch.cat(weights), torch.cat(biases))
    return list(F.linear(x, weight, bias).split([w.shape[0] for w in weights], dim=-1))


def measure(rows: list[dict[str, Any]], threads: int, max_run_time: float) -> list[dict[str, Any]]:
    import torch

    results = []
    for i, (row, backward) in enumerate(itertools.product(rows, (False, True))):
        g, c = torch.Generator().manual_seed(0), row["x"][-1]
        x = torch.randn(row["x"], generator=g)
        weights = [torch.randn(o, c, generator=g) / c**0.5 for o in row["outs"]]
        biases = [torch.zeros(o) for o in row["outs"]]
        stored = (torch.cat(weights), torch.cat(biases))
        leaves = [t.requires_grad_(backward) for t in (x, *weights, *biases, *stored)]
        ms = {way: 1e3 * m.autorange(partial(m.forward_or_backward, partial(project, way, x, weights, biases, stored),
                                             backward, leaves), threads, max_run_time).median
              for way in WAYS[i % 3:] + WAYS[: i % 3]}  # the ways take turns to go first
        results.append({"shape": row["shape"], "mode": "fwd+bwd" if backward else "forward", "ms": ms})
        progress(f"{results[-1]['mode']:8s} {row['shape']}: " + ", ".join(f"{w} {v:.2f} ms" for w, v in ms.items()))
    return results


def render(raw: dict[str, Any]) -> str:
    table = [[r["shape"], r["mode"], *[f"{r['ms'][w]:.2f}" for w in WAYS],
              *[f"{r['ms'][w] / r['ms']['separate']:.2f}" for w in WAYS[1:]]] for r in raw["rows"]]
    header = ["projections", "mode", *[f"{w} ms" for w in WAYS], *[f"{w} / separate" for w in WAYS[1:]]]
    return "\n\n".join([
        "# CPU attention projections: separate Linears vs one fused Linear (fp32)",
        "\n".join([*m.env_lines(raw["environment"]), f"- {raw['method']}; method in the docstring of "
                   "`benchmarks/fused_projections.py`"]),
        m.markdown_table(header, table),
        "- stored: one Linear over weights kept concatenated (a parameter layout unlike the checkpoints'); cat per "
        "call: the separate weights concatenated at every call. Below 1.00 the fused way is faster.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, rows="comma-separated rows (default: all): " + ",".join(r["name"] for r in ROWS))
    parser.add_argument("--max-run-time", type=float, default=10.0,
                        help="seconds at most per way and cell (default 10; fewer when the spread is small)")
    if args := m.parse(parser, argv, render):
        env = m.environment(args.threads)
        rows = measure(m.select_rows(ROWS, args.rows), args.threads, args.max_run_time)
        m.finish(args.out, "fused_projections", {"environment": env, "method": m.AUTORANGE_METHOD, "rows": rows},
                 render)


if __name__ == "__main__":
    main()
