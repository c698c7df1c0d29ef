"""Unit sets: Perceiver IO against a Transformer encoder of the same size, at 64, 256 and 512 units.

The paper's StarCraft II claim (Tables 1 and 7): Perceiver IO as the entity encoder matches the Transformer's
accuracy at lower cost, its cost growing linearly rather than quadratically in the number of units. Both models are
the presets at their defaults (``unit_sets``: 128 channels, 32 latents, 3 latent self-attends, the units as output
queries; ``unit_sets_transformer``: 5 ``nn.TransformerEncoderLayer`` s of width 128; the same adapters and heads;
about 1.08 M parameters each), on the unit-set environment of ``perceiver_io.data.unit_sets``.

(a) Cost at n units: counted forward FLOPs of one set (``perceiver_io.flops.count_flops``: every matrix product,
    attention included), and the median wall time of one training step (forward, backward, AdamW step) on a batch
    of ``--batch-size`` sets of exactly n units (:func:`_measure.autorange`, at most ``--row-budget`` s per row).
(b) Accuracy at n units: each model trained once, for ``--steps`` steps of ``--batch-size`` sets of 32 to 512 units
    (the demo's recipe otherwise: AdamW 2e-3, warm-up + cosine), then evaluated on ``--eval-scenes`` test scenes of
    exactly n units each: pointer accuracy (share of units whose top-scoring unit is their true target) and set
    accuracy (skirmish winner).

The ratio columns are Transformer / Perceiver IO, measured in the same run. About 40 minutes on 2 cores (2 threads),
most of it training; ``--quick``: tiny models, 20 steps (a smoke test).
"""

from typing import Any

import _measure as m
from _measure import SEED, progress

UNITS = (64, 256, 512)
MODELS = {"perceiver": ("Perceiver IO", "unit_sets"), "transformer": ("Transformer", "unit_sets_transformer")}
TRAIN_UNITS = (32, 512)
OPTIMIZATION: dict[str, Any] = dict(
    optimizer="adamw", lr=2e-3, weight_decay=0.01, schedule="warmup_cosine", warmup_fraction=0.05, max_grad_norm=1.0,
)
QUICK_OVERRIDES = {"perceiver": dict(num_channels=32, num_latents=8, num_self_attends=1, num_heads=2),
                   "transformer": dict(num_channels=32, num_layers=2, num_heads=2)}


def _batch(units: int, batch_size: int) -> dict[str, Any]:
    from perceiver_io.data.unit_sets import UnitSetDataset, collate_unit_sets

    dataset = UnitSetDataset(batch_size, units, units, seed=SEED, split="test")
    return collate_unit_sets([dataset[i] for i in range(batch_size)])


def measure_cost(model: Any, units: int, batch_size: int, budget_s: float, threads: int) -> dict[str, Any]:
    """Counted forward FLOPs of one set of ``units`` units, and the median time of one training step."""
    import torch

    from perceiver_io.flops import count_flops
    from perceiver_io.training.unit_sets import pointer_loss, set_inputs

    one = _batch(units, 1)
    flops = count_flops(model.eval(), set_inputs(one), one["mask"])
    batch = _batch(units, batch_size)
    inputs = set_inputs(batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        out = model(inputs, batch["mask"])
        loss = pointer_loss(out.pointer_logits, batch["target"])
        loss = loss + torch.nn.functional.cross_entropy(out.set_logits, batch["winner"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up outside the timing
    timed = m.autorange(step, threads, budget_s, min_run_time=1.0)
    return {"flops_per_example": flops, "step_s": timed.median, "step_runs": len(timed.times) * timed.number_per_run}


def train(name: str, overrides: dict[str, Any], steps: int, batch_size: int) -> tuple[Any, float]:
    from perceiver_io.data import UnitSetsDataModule
    from perceiver_io.training.unit_sets import UnitSetTask

    def build() -> tuple[Any, Any]:
        data = UnitSetsDataModule(min_units=TRAIN_UNITS[0], max_units=TRAIN_UNITS[1], batch_size=batch_size,
                                  num_train=steps * batch_size, num_val=batch_size, seed=SEED)
        return UnitSetTask(preset=MODELS[name][1], overrides=overrides, **OPTIMIZATION), data

    task, _, seconds = m.fit(build, progress_bar=True)
    return task.model.eval(), seconds


def evaluate(model: Any, units: int, scenes: int, batch_size: int) -> dict[str, float]:
    import torch

    from perceiver_io.data.unit_sets import UnitSetDataset, collate_unit_sets
    from perceiver_io.training.unit_sets import pointer_hits, set_inputs

    dataset = UnitSetDataset(scenes, units, units, seed=SEED, split="test")
    correct = counted = set_correct = 0
    with torch.no_grad():
        for start in range(0, scenes, batch_size):
            batch = collate_unit_sets([dataset[i] for i in range(start, min(start + batch_size, scenes))])
            out = model(set_inputs(batch), batch["mask"])
            c, n = pointer_hits(out.pointer_logits, batch["target"])
            correct, counted = correct + int(c), counted + int(n)
            set_correct += int((out.set_logits.argmax(-1) == batch["winner"]).sum())
    return {"pointer_accuracy": correct / counted, "set_accuracy": set_correct / scenes}


def run(args: Any) -> dict[str, Any]:
    import torch

    from perceiver_io import create_model

    torch.set_num_threads(args.threads)
    raw: dict[str, Any] = {"env": m.environment(args.threads), "options": args.o, "models": {}, "rows": []}
    models = {}
    for name, (label, preset) in MODELS.items():
        overrides = QUICK_OVERRIDES[name] if args.quick else {}
        torch.manual_seed(SEED)
        info = raw["models"][name] = {"label": label, "preset": preset, "overrides": overrides, "parameters": sum(
            p.numel() for p in create_model(preset, **overrides).parameters())}
        progress(f"{label}: training {args.steps} steps ...")
        models[name], seconds = train(name, overrides, args.steps, args.batch_size)
        info.update(train_seconds=round(seconds, 1), cost={})
        for units in UNITS:
            progress(f"{label}: cost at {units} units ...")
            torch.manual_seed(SEED)
            info["cost"][str(units)] = measure_cost(
                create_model(preset, **overrides), units, args.batch_size, args.row_budget, args.threads)
    for units in UNITS:
        row: dict[str, Any] = {"units": units}
        for name, model in models.items():
            progress(f"{MODELS[name][0]}: accuracy at {units} units ...")
            row[name] = {**evaluate(model, units, args.eval_scenes, args.batch_size),
                         **raw["models"][name]["cost"][str(units)]}
        raw["rows"].append(row)
    return raw


def render(raw: dict[str, Any]) -> str:
    o, models = raw["options"], raw["models"]
    lines = ["# Unit sets: Perceiver IO vs a Transformer encoder of the same size", "", *m.env_lines(raw["env"]),
             "- models: " + "; ".join(f"{v['label']} (`{v['preset']}`"
                                       f"{', ' + str(v['overrides']) if v['overrides'] else ''}): "
                                       f"{v['parameters']:,} parameters, trained {o['steps']} steps in "
                                       f"{v['train_seconds']:.0f} s" for v in models.values()),
             f"- training: batch {o['batch_size']} of sets of {TRAIN_UNITS[0]}-{TRAIN_UNITS[1]} units; evaluation: "
             f"{o['eval_scenes']} test scenes of exactly n units; step time: forward + backward + AdamW on a batch of "
             f"{o['batch_size']} sets of n units (median); FLOPs: forward, one set, counted", ""]
    header = ["units", "model", "pointer accuracy", "set accuracy", "MFLOPs / example", "ms / training step",
              "FLOPs ratio", "time ratio"]
    rows = [[str(row["units"]), models[name]["label"], f"{100 * r['pointer_accuracy']:.1f}%",
             f"{100 * r['set_accuracy']:.1f}%", f"{r['flops_per_example'] / 1e6:,.0f}", f"{1000 * r['step_s']:,.0f}",
             f"{t['flops_per_example'] / p['flops_per_example']:.2f}x" if name == "transformer" else "1",
             f"{t['step_s'] / p['step_s']:.2f}x" if name == "transformer" else "1"]
            for row in raw["rows"] for p, t in [(row["perceiver"], row["transformer"])] for name, r in
            (("perceiver", p), ("transformer", t))]
    return "\n".join([*lines, m.markdown_table(header, rows)])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, quick="tiny models and 20 training steps (a smoke test)", rows="")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default 1500; --quick 20)")
    parser.add_argument("--batch-size", type=int, default=16, help="sets per batch (default 16)")
    parser.add_argument("--eval-scenes", type=int, default=None, help="test scenes per size (default 256; --quick 16)")
    parser.add_argument("--row-budget", type=float, default=None, help="max seconds timing one step row (default 10)")
    if args := m.parse(parser, argv, render, options=("quick", "steps", "batch_size", "eval_scenes", "row_budget"),
                       defaults={"steps": (1500, 20), "eval_scenes": (256, 16), "row_budget": (10.0, 1.0)}):
        m.finish(args.out, "unit_sets-quick" if args.quick else "unit_sets", run(args), render)


if __name__ == "__main__":
    main()
