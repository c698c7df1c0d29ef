"""Peak memory and time of one training step (forward + backward) of the paper-size image classifier.

``imagenet_fourier`` (224 x 224 pixels: M = 50,176 inputs of 261 channels, one cross-attention head, 512 x 1024
latents, 8 x 6 self-attends, class query) at batch 1, against transformers' ``PerceiverForImageClassificationFourier``
holding the same weights (``perceiver_io.convert.to_transformers``), in fp32 and under bf16 autocast. Ours runs as
it is and with its memory switches: ``activation_checkpointing`` (recompute the latent self-attention stack),
``input_chunk_size`` (the input cross-attention over chunks of input positions, flash-attention style, in
forward and backward) and, in bf16, ``recompute_attention`` (the plain attention path's probabilities recomputed in
the backward). Each row runs in a fresh worker process (:mod:`_measure`): the model built, one warm-up step
at full size, gradients dropped, then one measured step: peak RSS above the RSS before it (weights excluded,
gradients and activations included) and its wall time. The loss is the sum of the logits, so every weight gets a
gradient. About 3 minutes on 2 cores (``--quick``: a shrunken model on 32 x 32 images, for the tests).
"""

from typing import Any

import _measure as m
from _measure import MIB, progress

CHUNK = 2048
ROWS: list[dict[str, Any]] = [dict(name=f"{impl}-{precision}", impl=impl, precision=precision) for impl, precision in [
    ("transformers", "fp32"), ("ours", "fp32"), ("ours+checkpointing", "fp32"), ("ours+chunks", "fp32"),
    ("ours+both", "fp32"), ("transformers", "bf16"), ("ours", "bf16"), ("ours+recompute", "bf16"),
    ("ours+recompute+chunks", "bf16"), ("ours+both", "bf16"),
]]
TINY = dict(image_size=32, overrides=dict(
    encoder=dict(num_latents=32, num_latent_channels=64, num_blocks=2, num_self_attends_per_block=2,
                 num_self_attend_heads=2),
    decoder=dict(query=dict(num_channels=64)),  # transformers' class query is as wide as the latents
))
NOTES = {
    "ours+checkpointing": "`activation_checkpointing`: the latent stack recomputed in the backward",
    "ours+chunks": f"`input_chunk_size={CHUNK}`: the input cross-attention over chunks of {CHUNK} inputs",
    "ours+both": "both switches",
    "ours+recompute": "`recompute_attention`: the plain attention path recomputes its probabilities in the backward",
    "ours+recompute+chunks": f"`recompute_attention` and `input_chunk_size={CHUNK}`",
}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from perceiver_io import create_model
    from perceiver_io.convert import to_transformers
    from perceiver_io.core import set_recompute_probabilities

    torch.manual_seed(m.SEED)
    tiny = spec["tiny"]
    size = TINY["image_size"] if tiny else 224
    ours = create_model("imagenet_fourier", **(TINY["overrides"] if tiny else {})).train()
    if spec["impl"] == "transformers":
        model = to_transformers(ours).train()
        del ours
        forward = lambda x: model(inputs=x).logits  # noqa: E731
    else:
        model = forward = ours
        model.encoder.gradient_checkpointing = spec["impl"] in ("ours+checkpointing", "ours+both")
        model.encoder.input_chunk_size = CHUNK if "chunks" in spec["impl"] or spec["impl"] == "ours+both" else None
        set_recompute_probabilities(model, "recompute" in spec["impl"])
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["precision"] == "bf16"):
            loss = forward(x).float().sum()
        loss.backward()
        return float(loss)

    step()  # warm-up at full size (allocator, lazy initialisation)
    model.zero_grad(set_to_none=True)
    with m.peak_memory() as memory, m.watch() as timing:
        loss = step()
    # The loss shows that every row computes the same function of the same weights.
    return {**memory, **timing, "loss": loss,
            "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / MIB}


def render(raw: dict[str, Any]) -> str:
    res = {r["name"]: r for r in raw["rows"]}

    def result(name: str) -> dict[str, Any] | None:
        return m.ok(res.get(name))

    table = []
    for row in ROWS:
        r, peer = result(row["name"]), result(f"transformers-{row['precision']}")
        if row["name"] not in res:
            continue
        if r is None:
            table.append([row["impl"], row["precision"], m.na(res[row["name"]]), "", "", "", ""])
            continue
        mib = r["extra_bytes"] / MIB
        flag = "*" if r["other_cores"] > m.CONTENTION_CORES else ""
        table.append([row["impl"], row["precision"], f"{mib:,.0f}", f"{r['s']:.2f}{flag}",
                      f"{mib / (peer['extra_bytes'] / MIB):.2f}" if peer else "n/a",
                      f"{r['s'] / peer['s']:.2f}" if peer else "n/a", NOTES.get(row["impl"], "")])
    env = raw["env"]
    lines = [f"# Training-step memory: `imagenet_fourier` at {raw['image_size']} x {raw['image_size']}, batch 1"
             + (" (--quick: a shrunken model)" if raw["tiny"] else ""), "",
             *m.env_lines(env, raw["options"], "row time limit"),
             "- per row: a fresh worker process; one warm-up step, gradients dropped, one measured step (forward + "
             "backward of the sum of the logits); peak MiB = peak RSS above the RSS before the step (weights "
             "excluded; gradients and activations included); seconds = its wall time (`*`: other load over "
             f"{m.CONTENTION_CORES} cores meanwhile); ratios against transformers at the same precision", "",
             m.markdown_table(["implementation", "precision", "peak MiB", "seconds", "memory / transformers",
                               "time / transformers", "switches"], table, left=(0, 1, 6))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, row_timeout=600, quick="a shrunken model on 32 x 32 images (for the tests)",
                          rows="comma-separated row names (default: all): " + ", ".join(r["name"] for r in ROWS))
    if not (args := m.parse(parser, argv, render, measure)):
        return
    env, results = m.environment(args.threads), []
    for row in m.select_rows(ROWS, args.rows):
        outcome = m.run_worker(__file__, {**row, "tiny": args.quick}, args.o, args.row_timeout_s)
        results.append({"name": row["name"], **outcome})
        r = m.ok(outcome)
        progress(f"{row['name']}: "
                 + (f"{r['extra_bytes'] / MIB:,.0f} MiB, {r['s']:.2f} s" if r else m.na(outcome, True)))
    raw = {"env": env, "options": args.o, "tiny": args.quick, "image_size": TINY["image_size"] if args.quick else 224,
           "rows": results}
    m.finish(args.out, "step_memory-quick" if args.quick else "step_memory", raw, render)


if __name__ == "__main__":
    main()
