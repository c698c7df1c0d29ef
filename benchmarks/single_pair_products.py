"""One-head attention at batch 1 on the CPU: each product as one 2-D ``mm`` against the batched ``matmul``.

:func:`perceiver_io.core.attention.matrix_product` runs a product whose batch dimensions are all 1 (one head of one
sample: the input cross-attentions of the image, flow and multimodal models at batch 1) as ``torch.mm`` instead of
``torch.matmul``. For the one-head attention shapes of the paper-size models, bf16 (where the CPU takes the plain
path in training), forward + backward of :func:`~perceiver_io.core.attention.unfused_attention`, with autograd's
backward and with ``recompute`` (the ``recompute_attention`` switch's backward), the library's path against the same
code with ``torch.matmul`` in its place; 2 threads, each timed by :func:`_measure.autorange` (at most
``--max-run-time`` s; median per run; the two take turns to go first). Also the largest difference between the two
paths' outputs and gradients (0: the same bits). About two minutes.
"""

import contextlib
import itertools
from functools import partial
from typing import Any, Iterator

import _measure as m
from _measure import progress

# name, description, q, k, v shapes [B, H, N, D]
SHAPES: list[dict[str, Any]] = [dict(zip(("name", "shape", "q", "k", "v"), s)) for s in [
    ("image-cross", "image 224 x 224 cross-attention (1 head of 261, 50,176 inputs, 512 latents)", (1, 1, 512, 261),
     (1, 1, 50176, 261), (1, 1, 50176, 261)),
    ("multimodal-cross", "multimodal cross-attention (1 head of 704, 52,097 inputs, 784 latents)", (1, 1, 784, 704),
     (1, 1, 52097, 704), (1, 1, 52097, 704)),
    ("multimodal-decoder", "multimodal decoder chunk (16k queries, 1 head of 512)", (1, 1, 16384, 512),
     (1, 1, 784, 512), (1, 1, 784, 512)),
]]


@contextlib.contextmanager
def batched_products() -> Iterator[None]:
    """Inside, the library's attention runs every product through ``torch.matmul`` (what it did before)."""
    import torch

    from perceiver_io.core import attention

    library = attention.matrix_product
    attention.matrix_product = torch.matmul
    try:
        yield
    finally:
        attention.matrix_product = library


def measure(shapes: list[dict[str, Any]], threads: int, max_run_time: float) -> list[dict[str, Any]]:
    import torch

    from perceiver_io.core.attention import unfused_attention

    def run(tensors: list[Any], recompute: bool, batched: bool) -> None:
        with batched_products() if batched else contextlib.nullcontext():
            m.forward_or_backward(partial(unfused_attention, *tensors, recompute=recompute), True, tensors)

    def results(tensors: list[Any], recompute: bool, batched: bool) -> list[Any]:
        with batched_products() if batched else contextlib.nullcontext():
            out = unfused_attention(*tensors, recompute=recompute)
        grads = torch.autograd.grad(out, tensors, torch.ones_like(out))
        return [out.detach(), *grads]

    rows = []
    for s, recompute in itertools.product(shapes, (False, True)):
        generator = torch.Generator().manual_seed(0)
        tensors = [torch.randn(s[x], generator=generator).bfloat16().requires_grad_() for x in "qkv"]
        ms = {batched: 1e3 * m.autorange(partial(run, tensors, recompute, batched), threads, max_run_time).median
              for batched in ((False, True) if len(rows) % 2 == 0 else (True, False))}  # take turns to go first
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(results(tensors, recompute, False), results(tensors, recompute, True)))
        rows.append({"shape": s["shape"], "backward": "recomputed" if recompute else "autograd",
                     "batched_ms": ms[True], "library_ms": ms[False], "ratio": ms[False] / ms[True], "max_diff": diff})
        progress(f"{s['shape']}, {rows[-1]['backward']}: batched {ms[True]:.1f} ms, 2-D {ms[False]:.1f} ms, "
                 f"max diff {diff:.3g}")
    return rows


def render(raw: dict[str, Any]) -> str:
    table = [[r["shape"], r["backward"], f"{r['batched_ms']:.1f}", f"{r['library_ms']:.1f}", f"{r['ratio']:.2f}",
              f"{r['max_diff']:.3g}"] for r in raw["rows"]]
    header = ["attention shape (bf16, fwd+bwd)", "backward", "batched matmul ms", "2-D mm ms (library)",
              "2-D / batched", "max abs diff of outputs and gradients"]
    return "\n\n".join([
        "# One-head attention at batch 1: 2-D products against batched ones",
        "\n".join([*m.env_lines(raw["environment"]), f"- {raw['method']}; method in the docstring of "
                   "`benchmarks/single_pair_products.py`"]),
        m.markdown_table(header, table, left=(0, 1)),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, rows="comma-separated shapes (default: all): " + ",".join(s["name"] for s in SHAPES))
    parser.add_argument("--max-run-time", type=float, default=10.0,
                        help="seconds at most per path and cell (default 10; fewer when the spread is small)")
    if args := m.parse(parser, argv, render):
        m.finish(args.out, "single_pair_products", {
            "environment": m.environment(args.threads), "method": m.AUTORANGE_METHOD,
            "rows": measure(m.select_rows(SHAPES, args.rows), args.threads, args.max_run_time)}, render)


if __name__ == "__main__":
    main()
