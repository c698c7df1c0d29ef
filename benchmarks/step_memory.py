"""Peak memory and time of one training step (forward + backward) of the paper-size image classifier.

``imagenet_fourier`` (224 x 224 pixels: M = 50,176 inputs of 261 channels, one cross-attention head, 512 x 1024
latents, 8 x 6 self-attends, class query) at batch 1, against transformers' ``PerceiverForImageClassificationFourier``
holding the same weights (``perceiver_io.convert.to_transformers``), in fp32 and under bf16 autocast. Ours runs as
it is and with its memory switches: ``activation_checkpointing`` (recompute the latent self-attention stack),
``input_chunk_size`` (the input cross-attention over chunks of input positions, flash-attention style, in
forward and backward) and, in bf16, ``recompute_attention`` (the plain attention path's probabilities recomputed in
the backward); ``ours-projected`` turns off the defaults ``absorb_projections``, ``recompute_activations`` and
``fused_gradient_accumulation`` (what the library did before them), ``ours-kept`` only the second, ``-unfused``
rows only the third. Memory: each row in a fresh worker process (:mod:`_measure`): the model built,
one warm-up step at full size, gradients dropped, then one measured step: peak RSS above the RSS before it (weights
excluded, gradients and activations included). Time: one worker per precision holds transformers and ours (its
switches set before each step) and runs ``--rounds`` rounds of one step per row, the order rotated each round, after
a warm-up step each; a row's time is its median, its ratio the median over rounds of its step / transformers' step
of the same round. The loss is the sum of the logits, so every weight gets a gradient. About 11 minutes on 2 cores
(``--quick``: a shrunken model on 32 x 32 images, for the tests).

``--task flow``: the same for ``optical_flow`` at its training size (368 x 496 frame pairs: M = 182,528 inputs of 322
channels, 2048 x 512 latents, 24 self-attends, and 182,528 output queries, one per pixel) against transformers'
``PerceiverForOpticalFlow``; ours also with ``input_chunk_size`` and ``output_chunk_size`` (the decoder over chunks
of queries, each chunk checkpointed); the loss is the sum of the flow. Fewer rows and 3 rounds by default: about
27 minutes.
"""

import statistics

from typing import Any

import _measure as m
from _measure import MIB, progress

CHUNK = 2048
ROWS: list[dict[str, Any]] = [dict(name=f"{impl}-{precision}", impl=impl, precision=precision) for impl, precision in [
    ("transformers", "fp32"), ("ours", "fp32"), ("ours-unfused", "fp32"), ("ours-kept", "fp32"),
    ("ours-projected", "fp32"), ("ours+checkpointing", "fp32"), ("ours+chunks", "fp32"), ("ours+both", "fp32"),
    ("transformers", "bf16"), ("ours", "bf16"), ("ours-unfused", "bf16"), ("ours-kept", "bf16"),
    ("ours+recompute", "bf16"), ("ours+recompute-unfused", "bf16"), ("ours+recompute+chunks", "bf16"),
    ("ours+both", "bf16"),
]]
FLOW_ROWS: list[dict[str, Any]] = [dict(name=f"{impl}-{precision}", impl=impl, precision=precision)
                                    for impl, precision in [
    ("transformers", "fp32"), ("ours", "fp32"), ("ours+chunks", "fp32"),
    ("transformers", "bf16"), ("ours", "bf16"), ("ours+recompute", "bf16"), ("ours+recompute+chunks", "bf16"),
]]
OUTPUT_CHUNK = 16384
FLOW_SIZE, FLOW_TINY = (368, 496), dict(size=(12, 16), overrides=dict(
    train_size=(12, 16), encoder=dict(num_latents=16, num_latent_channels=64, num_self_attends_per_block=2,
                                      num_self_attend_heads=2)))
TINY = dict(image_size=32, overrides=dict(
    encoder=dict(num_latents=32, num_latent_channels=64, num_blocks=2, num_self_attends_per_block=2,
                 num_self_attend_heads=2),
    decoder=dict(query=dict(num_channels=64)),  # transformers' class query is as wide as the latents
))
NOTES = {
    "ours-kept": "`recompute_activations` off: LayerNorm and GELU outputs (in bf16 their casts and the residual sums) "
                 "kept for the backward",
    "ours-unfused": "`fused_gradient_accumulation` off: the weight gradients of the 8 uses of each latent Linear "
                    "summed after their products",
    "ours-projected": "`absorb_projections`, `recompute_activations` and `fused_gradient_accumulation` off (the "
                      "library before 2026-12-03)",
    "ours+checkpointing": "`activation_checkpointing`: the latent stack recomputed in the backward",
    "ours+chunks": f"`input_chunk_size={CHUNK}`: the input cross-attention over chunks of {CHUNK} inputs",
    "ours+both": "both switches",
    "ours+recompute": "`recompute_attention`: the plain attention path recomputes its probabilities in the backward, "
                      "the input cross-attention also its keys and values",
    "ours+recompute-unfused": "`recompute_attention`, `fused_gradient_accumulation` off",
    "ours+recompute+chunks": f"`recompute_attention` and `input_chunk_size={CHUNK}`",
}
FLOW_NOTES = {
    **NOTES,
    "ours+chunks": f"`input_chunk_size={CHUNK}` and `output_chunk_size={OUTPUT_CHUNK}` (each decoder chunk "
                   "checkpointed)",
    "ours+recompute+chunks": f"`recompute_attention`, `input_chunk_size={CHUNK}` and "
                             f"`output_chunk_size={OUTPUT_CHUNK}`",
}


def configure(ours: Any, impl: str) -> None:
    """Set ``impl``'s switches on ``ours`` (every other switch at its default)."""
    from perceiver_io.core import MultiHeadAttention, set_recompute_activations, set_recompute_probabilities

    ours.encoder.gradient_checkpointing = impl in ("ours+checkpointing", "ours+both")
    ours.encoder.input_chunk_size = CHUNK if "chunks" in impl or impl == "ours+both" else None
    set_recompute_probabilities(ours, "recompute" in impl)
    set_recompute_activations(ours, impl not in ("ours-kept", "ours-projected"))
    ours.encoder.fused_gradient_accumulation = not impl.endswith(("-unfused", "-projected"))
    for layer in ours.modules():
        if isinstance(layer, MultiHeadAttention):
            layer.absorb_projections = impl != "ours-projected"


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Memory worker: one measured step of one row. Timing worker (``spec["rows"]``): alternating rounds."""
    import torch

    from perceiver_io import create_model
    from perceiver_io.convert import to_transformers

    torch.manual_seed(m.SEED)
    tiny, flow = spec["tiny"], spec.get("task") == "flow"
    if flow:
        from perceiver_io.adapters.flow import frame_patches

        h, w = FLOW_TINY["size"] if tiny else FLOW_SIZE
        ours = create_model("optical_flow", **(FLOW_TINY["overrides"] if tiny else {})).train()
        # zero at initialisation (official): the flow, the loss and every gradient before it would be 0
        torch.nn.init.normal_(ours.decoder.output.weight, std=0.02)
        x = torch.rand(1, 2, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
        theirs_input = frame_patches(x)
        ours_flow_scale = ours.output_adapter.config.flow_scale_factor
    else:
        size = TINY["image_size"] if tiny else 224
        ours = create_model("imagenet_fourier", **(TINY["overrides"] if tiny else {})).train()
        x = theirs_input = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    impls = [row["impl"] for row in spec["rows"]] if "rows" in spec else [spec["impl"]]
    hf = to_transformers(ours).train() if "transformers" in impls else None
    if impls == ["transformers"]:
        del ours

    def forward(impl: str) -> torch.Tensor:
        if impl == "transformers":  # transformers' flow head leaves out the official x20 that ours applies
            logits = hf(inputs=theirs_input).logits
            return logits * ours_flow_scale if flow else logits
        if flow and "chunks" in impl:
            return ours(x, output_chunk_size=(FLOW_TINY["size"][0] if tiny else OUTPUT_CHUNK))
        return ours(x)

    def step(impl: str) -> dict[str, Any]:
        model = hf if impl == "transformers" else ours
        if impl != "transformers":
            configure(ours, impl)
        with m.watch() as timing:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["precision"] == "bf16"):
                loss = forward(impl).float().sum()
            loss.backward()
        model.zero_grad(set_to_none=True)
        return {**timing, "loss": float(loss)}  # the loss: every row computes the same function of the same weights

    if "rows" not in spec:
        step(spec["impl"])  # warm-up at full size (allocator, lazy initialisation)
        with m.peak_memory() as memory:
            result = step(spec["impl"])
        model = hf if hf is not None else ours
        return {**memory, **result, "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / MIB}
    for impl in impls:
        step(impl)
    rounds: list[dict[str, float]] = []
    for i in range(spec["rounds"]):
        order = impls[i % len(impls):] + impls[: i % len(impls)]
        rounds.append({impl: step(impl)["s"] for impl in order})
        progress(f"[timing {spec['precision']}] round {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in rounds[-1].items()))
    return {"rounds": rounds}


def render(raw: dict[str, Any]) -> str:
    flow = raw.get("task") == "flow"
    rows, notes = (FLOW_ROWS, FLOW_NOTES) if flow else (ROWS, NOTES)
    res = {r["name"]: r for r in raw["rows"]}
    timing = {precision: m.ok(outcome) for precision, outcome in raw.get("timing", {}).items()}

    def result(name: str) -> dict[str, Any] | None:
        return m.ok(res.get(name))

    def seconds(row: dict[str, Any], r: dict[str, Any], peer: dict[str, Any] | None) -> list[str]:
        """The time cells: median and ratio over the alternating rounds, else the measured step's (older runs)."""
        rounds = (timing.get(row["precision"]) or {}).get("rounds")
        if not rounds:
            flag = "*" if r["other_cores"] > m.CONTENTION_CORES else ""
            return [f"{r['s']:.2f}{flag}", f"{r['s'] / peer['s']:.2f}" if peer else "n/a"]
        med = statistics.median
        return [f"{med(t[row['impl']] for t in rounds):.2f}",
                f"{med(t[row['impl']] / t['transformers'] for t in rounds):.2f}"]

    table = []
    for row in rows:
        r, peer = result(row["name"]), result(f"transformers-{row['precision']}")
        if row["name"] not in res:
            continue
        if r is None:
            table.append([row["impl"], row["precision"], m.na(res[row["name"]]), "", "", "", ""])
            continue
        mib = r["extra_bytes"] / MIB
        time_cells = seconds(row, r, peer)
        table.append([row["impl"], row["precision"], f"{mib:,.0f}", time_cells[0],
                      f"{mib / (peer['extra_bytes'] / MIB):.2f}" if peer else "n/a", time_cells[1],
                      notes.get(row["impl"], "")])
    env = raw["env"]
    title = (f"`optical_flow` at {raw['frame_size'][0]} x {raw['frame_size'][1]} frame pairs" if flow else
             f"`imagenet_fourier` at {raw['image_size']} x {raw['image_size']}")
    lines = [f"# Training-step memory: {title}, batch 1" + (" (--quick: a shrunken model)" if raw["tiny"] else ""),
             "",
             *m.env_lines(env, raw["options"], "row time limit"),
             "- memory: per row a fresh worker process; one warm-up step, gradients dropped, one measured step "
             f"(forward + backward of the sum of the {'flow' if flow else 'logits'}); peak MiB = peak RSS above the "
             "RSS before the step (weights excluded; gradients and activations included)",
             ("- seconds: " + "; ".join(f"{p} the median of {len(t['rounds'])} alternating rounds" for p, t in
                                       timing.items() if t) + " (one process per precision, every row's step once "
              "per round, order rotated); time / transformers: median over rounds of the row's step / transformers' "
              "step of the same round" if any(timing.values()) else
              f"- seconds: the measured step's wall time (`*`: other load over {m.CONTENTION_CORES} cores meanwhile)"),
             "- ratios against transformers at the same precision", "",
             m.markdown_table(["implementation", "precision", "peak MiB", "seconds", "memory / transformers",
                               "time / transformers", "switches"], table, left=(0, 1, 6))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, row_timeout=600, quick="a shrunken model on small inputs (for the tests)",
                          rows="comma-separated row names (default: all): " + ", ".join(r["name"] for r in ROWS)
                          + "; with --task flow: " + ", ".join(r["name"] for r in FLOW_ROWS))
    parser.add_argument("--task", choices=("image", "flow"), default="image",
                        help="image: imagenet_fourier at 224 x 224 (default); flow: optical_flow at 368 x 496")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating timing rounds per precision (default 5; 3 with --task flow)")
    if not (args := m.parse(parser, argv, render, measure)):
        return
    flow = args.task == "flow"
    args.rounds = args.rounds or (3 if flow else 5)
    env, results, rows = m.environment(args.threads), [], m.select_rows(FLOW_ROWS if flow else ROWS, args.rows)
    for row in rows:
        outcome = m.run_worker(__file__, {**row, "tiny": args.quick, "task": args.task}, args.o, args.row_timeout_s)
        results.append({"name": row["name"], **outcome})
        r = m.ok(outcome)
        progress(f"{row['name']}: "
                 + (f"{r['extra_bytes'] / MIB:,.0f} MiB, {r['s']:.2f} s" if r else m.na(outcome, True)))
    timing = {}
    for precision in sorted({row["precision"] for row in rows}):
        spec = {"rows": [r for r in rows if r["precision"] == precision], "precision": precision, "tiny": args.quick,
                "rounds": args.rounds, "task": args.task}
        timing[precision] = m.run_worker(__file__, spec, args.o, args.row_timeout_s * (1 + args.rounds),
                                         fixed_malloc=False)
        progress(f"timing {precision}: " + ("done" if m.ok(timing[precision]) else m.na(timing[precision], True)))
    raw = {"env": env, "options": args.o, "tiny": args.quick, "rows": results, "timing": timing}
    if flow:
        raw.update(task="flow", frame_size=FLOW_TINY["size"] if args.quick else FLOW_SIZE)
    else:
        raw["image_size"] = TINY["image_size"] if args.quick else 224
    stem = "step_memory" + ("-flow" if flow else "")
    m.finish(args.out, stem + ("-quick" if args.quick else ""), raw, render)


if __name__ == "__main__":
    main()
