"""Inference memory of a large decode: the paper's multimodal decoder on its 803,297 output queries, one shot.

The decoder of the paper's multimodal autoencoder (1,026-channel queries, one cross-attention head, no query
residual, the 784 x 512 latents; transformers' ``PerceiverForMultimodalAutoencoding`` with seeded random weights,
ours converted from it) decodes ``--outputs`` queries in one piece, under ``torch.no_grad()``, four ways at equal
weights and on the same queries (fresh ``[1, O, 1026]`` tensors made by the decode, as the output adapters make
them):

* ``before``: no overwrites (the layers as they were: each intermediate a new tensor) and the queries held by
  the caller through the whole layer;
* ``in-place activations``: the MLP's GELU overwrites its input and the residual is added into the MLP's output
  (:func:`perceiver_io.core.attention.overwrites_allowed`);
* ``+ queries freed``: also :meth:`~perceiver_io.core.decoder.PerceiverDecoder.decode_made_queries` (the default
  path): the raw queries are freed after their LayerNorm and the normalised ones after the attention;
* ``transformers``: the peer, transformers' ``PerceiverBasicDecoder`` of the same model (the caller holds the
  queries).

Reported: the peak resident memory above the process's memory before the decode (``/proc/self/clear_refs`` resets
the kernel's peak counter), the time of the decode, and how far each output is from the ``before`` output (ours:
bitwise equal). About 4 minutes on 2 cores at the default size (peaks near 15 GiB); ``--quick``: 20,000 outputs.
"""

import contextlib
from typing import Any

import _measure as m
from _measure import SEED, progress

ROWS = ("before", "in-place activations", "+ queries freed", "transformers")


@contextlib.contextmanager
def overwrites(allowed: bool) -> Any:
    """Turn the layers' inference overwrites off (``allowed=False``) for the block."""
    from perceiver_io.core import attention, decoder

    saved = attention.overwrites_allowed
    if not allowed:
        attention.overwrites_allowed = decoder.overwrites_allowed = lambda: False  # type: ignore[assignment]
    try:
        yield
    finally:
        attention.overwrites_allowed = decoder.overwrites_allowed = saved  # type: ignore[assignment]


def run(args: Any) -> dict[str, Any]:
    import torch

    import vs_transformers as vt
    from perceiver_io.convert import from_transformers

    torch.set_num_threads(args.threads)
    hf = m.build_transformers(vt.MULTIMODAL, vt.MULTIMODAL_CONFIG)
    decoder, hf_decoder = from_transformers(hf).eval().decoder, hf.perceiver.decoder.decoder
    del hf
    torch.manual_seed(SEED)
    channels = decoder.config.num_query_channels
    latents = torch.randn(1, 784, 512)

    def make_queries(start: int, end: int) -> torch.Tensor:
        return torch.randn(1, end - start, channels, generator=torch.Generator().manual_seed(SEED))

    raw: dict[str, Any] = {"env": m.environment(args.threads), "options": args.o, "query_channels": channels,
                           "rows": {}}
    reference = None
    with torch.no_grad():
        for name in ROWS:
            progress(f"{name}: decoding {args.outputs:,} queries ...")
            with overwrites(name != "before"), m.peak_memory() as memory, m.watch() as timing:
                if name == "+ queries freed":
                    out = decoder.decode_made_queries(make_queries, 0, args.outputs, latents)
                elif name == "transformers":  # the caller holds the queries through the decode
                    out = hf_decoder(make_queries(0, args.outputs), latents).logits
                else:
                    out = decoder.decode_queries(make_queries(0, args.outputs), latents)
            reference = out if reference is None else reference
            raw["rows"][name] = {"peak_extra_bytes": memory["extra_bytes"], "peak_was_reset": memory["peak_was_reset"],
                                 "seconds": round(timing["s"], 2), "equal_to_before": bool(torch.equal(out, reference)),
                                 "max_abs_diff_to_before": (out - reference).abs().max().item()}
            del out
    raw["output_bytes"] = reference.numel() * reference.element_size()
    return raw


def render(raw: dict[str, Any]) -> str:
    o, rows = raw["options"], raw["rows"]
    before, peer = rows["before"]["peak_extra_bytes"], rows["transformers"]["peak_extra_bytes"]
    lines = ["# Inference memory of the paper's multimodal decode (one shot)", "", *m.env_lines(raw["env"]),
             f"- the decoder of the paper's multimodal autoencoder (ours converted from transformers' "
             f"`PerceiverForMultimodalAutoencoding`, equal weights), {o['outputs']:,} queries of "
             f"{raw['query_channels']:,} channels, 784 x 512 latents, `torch.no_grad()`; the output alone is "
             f"{raw['output_bytes'] / 2**30:.2f} GiB; peak: resident memory above the memory before the decode", ""]
    header = ["decode", "peak memory (GiB)", "vs before", "vs transformers", "seconds", "output vs before"]
    table = [[name, f"{r['peak_extra_bytes'] / 2**30:.2f}", f"{r['peak_extra_bytes'] / before:.2f}x",
              f"{r['peak_extra_bytes'] / peer:.2f}x", f"{r['seconds']:.1f}",
              "bitwise equal" if r["equal_to_before"] else f"max abs diff {r['max_abs_diff_to_before']:.1e}"]
             for name, r in rows.items()]
    return "\n".join([*lines, m.markdown_table(header, table, left=(0,))])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, quick="20,000 outputs (a smoke test)", rows="")
    parser.add_argument("--outputs", type=int, default=None, help="output queries (default 803297; --quick 20000)")
    if args := m.parse(parser, argv, render, options=("quick", "outputs"), defaults={"outputs": (803_297, 20_000)}):
        m.finish(args.out, "decode_memory-quick" if args.quick else "decode_memory", run(args), render)


if __name__ == "__main__":
    main()
