"""Demo section ``unit-sets``: Perceiver IO as a set encoder with a pointer head, against a Transformer.

The paper's StarCraft II experiment at small scale: skirmish scenes of 8 to 48 units (type, owner, position,
health) generated at run time (:mod:`perceiver_io.data.unit_sets`). Every unit points at the enemy it should attack
(the one it kills fastest, discounted by distance: a relation between the two units) and a set-level head says which
side wins. Perceiver IO (the units are its output queries) and a Transformer encoder over all units, with the same
adapters, heads and recipe, are trained briefly; beside them: heuristics that use one cue only (nearest enemy,
fastest kill ignoring distance, more total health) and chance. FLOPs per example are counted from 64 to 512 units:
Perceiver IO's grow linearly, the Transformer's quadratically.

Writes into its folder: ``scene.png``, ``flops.png``, ``learning_curves.png``, ``model/`` (the Perceiver IO,
``save_pretrained`` format) and ``logs/`` (the CSV training logs).
"""

from __future__ import annotations

import copy
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .section import Picture, Section, SectionResult

# The recipe. configs/unit_sets/perceiver.yaml and transformer.yaml hold the same (tests keep them equal).
UNIT_SETS_STEPS = 1000
UNIT_SETS_DATA: dict[str, Any] = dict(min_units=8, max_units=48, batch_size=32, num_val=256, num_test=512)
"""``UnitSetsDataModule`` arguments (besides ``seed`` and ``num_train = steps x batch size``: one epoch)."""
UNIT_SETS_OPTIMIZATION: dict[str, Any] = dict(
    optimizer="adamw", lr=2e-3, weight_decay=0.01, schedule="warmup_cosine", warmup_fraction=0.05, max_grad_norm=1.0,
)
MODEL_SIZE: dict[str, Any] = dict(max_units=512, num_channels=64, num_heads=4, widening_factor=2)
PERCEIVER_TASK: dict[str, Any] = dict(
    preset="unit_sets", overrides={**MODEL_SIZE, "num_latents": 16, "num_self_attends": 2}, **UNIT_SETS_OPTIMIZATION
)
"""``UnitSetTask`` arguments of the Perceiver IO: 1 cross-attend, 2 latent self-attends, 1 decoding cross-attend."""
TRANSFORMER_TASK: dict[str, Any] = dict(
    preset="unit_sets_transformer", overrides={**MODEL_SIZE, "num_layers": 4}, **UNIT_SETS_OPTIMIZATION
)
"""The Transformer baseline: 4 self-attention layers over all units, the same width, adapters and heads."""

SEED = 0
QUICK_STEPS = 4
VAL_EVERY = 100  # optimiser steps between validations (the learning curves)
FLOP_UNITS = (64, 128, 256, 512)
MODELS = {"perceiver": ("Perceiver IO (units as output queries)", "tab:blue", PERCEIVER_TASK),
          "transformer": ("Transformer encoder (nn.TransformerEncoder)", "tab:orange", TRANSFORMER_TASK)}
TYPE_MARKERS = ("o", "^", "s", "D")  # worker, infantry, armour, air (data.unit_sets.UNIT_TYPES)
OWNER_COLOURS = ("tab:blue", "tab:red")


def _data(steps: int) -> Any:
    from ..data import UnitSetsDataModule

    data = UnitSetsDataModule(seed=SEED, num_train=steps * UNIT_SETS_DATA["batch_size"], **UNIT_SETS_DATA)
    data.setup("fit")
    data.setup("test")
    return data


def _train(out: Path, name: str, task_kwargs: dict[str, Any], data: Any, steps: int, quick: bool) -> dict[str, Any]:
    """Train one model with the recipe for one epoch of ``steps`` batches; log to ``out/logs/<name>/metrics.csv``."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from ..training.unit_sets import UnitSetTask

    pl.seed_everything(SEED, verbose=False)
    task = UnitSetTask(**copy.deepcopy(task_kwargs))
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, default_root_dir=str(out),
        logger=CSVLogger(str(out / "logs"), name=name, version=""), enable_checkpointing=False,
        log_every_n_steps=1 if quick else 20, enable_model_summary=False, num_sanity_val_steps=0,
        val_check_interval=min(VAL_EVERY, steps), limit_val_batches=1 if quick else None,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    seconds = time.perf_counter() - start
    return {"model": task.model.eval(), "seconds": seconds, "steps": trainer.global_step,
            "metrics_csv": out / "logs" / name / "metrics.csv",
            "parameters": sum(p.numel() for p in task.model.parameters())}


def _evaluate(model: torch.nn.Module, data: Any) -> dict[str, Any]:
    """Pointer and set accuracy on the test split, and every scene's chosen targets (for the picture)."""
    from ..training.unit_sets import pointer_hits, set_inputs

    correct = counted = set_correct = scenes = 0
    chosen: list[np.ndarray] = []
    with torch.no_grad():
        for batch in data.test_dataloader():
            out = model(set_inputs(batch), batch["mask"])
            c, n = pointer_hits(out.pointer_logits, batch["target"])
            correct, counted = correct + int(c), counted + int(n)
            set_correct += int((out.set_logits.argmax(-1) == batch["winner"]).sum())
            scenes += len(batch["winner"])
            picks = out.pointer_logits.argmax(-1)
            chosen += [picks[i, : int(m.sum())].numpy() for i, m in enumerate(batch["mask"])]
    return {"pointer_accuracy": correct / counted, "set_accuracy": set_correct / scenes, "units": counted,
            "scenes": scenes, "chosen": chosen}


def _heuristics(data: Any) -> dict[str, float]:
    """One-cue rules on the same test scenes: which share of units / scenes each gets right."""
    from ..data.unit_sets import DAMAGE, attack_targets, skirmish_winner

    dataset = data.datasets["test"]
    hits = {"nearest": 0, "fastest_kill": 0, "random": 0.0}
    units = health_right = 0
    for i in range(len(dataset)):
        scene = dataset.scene(i)
        target = attack_targets(scene)
        enemy = scene.owner[:, None] != scene.owner[None, :]
        distance = np.linalg.norm(scene.position[:, None] - scene.position[None], axis=-1)
        kill_speed = DAMAGE[scene.unit_type[:, None], scene.unit_type[None, :]] / scene.health[None, :]
        hits["nearest"] += int((np.where(enemy, distance, np.inf).argmin(1) == target).sum())
        hits["fastest_kill"] += int((np.where(enemy, kill_speed, -np.inf).argmax(1) == target).sum())
        hits["random"] += float((1.0 / enemy.sum(1)).sum())  # expected hits of a uniformly random enemy
        units += scene.num_units
        health = np.bincount(scene.owner, weights=scene.health, minlength=2)
        health_right += int(int(health[1] > health[0]) == skirmish_winner(scene))
    winners = np.array([skirmish_winner(dataset.scene(i)) for i in range(len(dataset))])
    majority = max(winners.mean(), 1 - winners.mean())
    return {**{k: v / units for k, v in hits.items()}, "more_health": health_right / len(dataset),
            "majority": float(majority)}


def _flops(models: dict[str, torch.nn.Module]) -> dict[str, list[int]]:
    """Counted forward FLOPs per example (one set of ``n`` real units) for each ``n`` in ``FLOP_UNITS``."""
    from ..flops import count_flops

    generator = torch.Generator().manual_seed(SEED)
    flops: dict[str, list[int]] = {name: [] for name in models}
    for n in FLOP_UNITS:
        inputs = {"continuous": torch.rand(1, n, 3, generator=generator),
                  "categorical": torch.stack([torch.randint(0, 4, (1, n), generator=generator),
                                              torch.randint(0, 2, (1, n), generator=generator)], dim=-1)}
        for name, model in models.items():
            flops[name].append(count_flops(model, inputs))
    return flops


def _read_curves(metrics_csv: Path) -> dict[str, list[float]]:
    curves: dict[str, list[float]] = {"step": [], "pointer": [], "set": []}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            if row.get("val/pointer_acc"):
                curves["step"].append(int(row["step"]))
                curves["pointer"].append(100 * float(row["val/pointer_acc"]))
                curves["set"].append(100 * float(row["val/set_acc"]))
    return curves


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _learning_curves(runs: dict[str, dict[str, Any]], heuristics: dict[str, float], png: Path) -> None:
    plt = _pyplot()
    fig, (ax_pointer, ax_set) = plt.subplots(1, 2, figsize=(11, 4.0))
    for name, run in runs.items():
        label, colour, _ = MODELS[name]
        c = _read_curves(run["metrics_csv"])
        ax_pointer.plot(c["step"], c["pointer"], color=colour, marker="o", markersize=3, label=label)
        ax_set.plot(c["step"], c["set"], color=colour, marker="o", markersize=3, label=label)
    ax_pointer.axhline(100 * heuristics["nearest"], color="grey", linestyle="--", linewidth=1,
                       label="heuristic: nearest enemy")
    ax_pointer.axhline(100 * heuristics["fastest_kill"], color="grey", linestyle=":", linewidth=1,
                       label="heuristic: fastest kill, ignoring distance")
    ax_set.axhline(100 * heuristics["more_health"], color="grey", linestyle="--", linewidth=1,
                   label="heuristic: more total health wins")
    for ax, what in ((ax_pointer, "pointer accuracy (% of units whose target is right)"),
                     (ax_set, "set accuracy (% of scenes whose winner is right)")):
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(what, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ax_pointer.set_ylim(0, 100)
    ax_pointer.set_title("which enemy each unit attacks (validation, 256 scenes)", fontsize=10)
    ax_set.set_title("which side wins (validation, 256 scenes)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _flops_plot(flops: dict[str, list[int]], png: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, values in flops.items():
        label, colour, _ = MODELS[name]
        ax.plot(FLOP_UNITS, [v / 1e6 for v in values], color=colour, marker="o", label=label)
        ax.annotate(f"{values[-1] / 1e6:.0f} M", (FLOP_UNITS[-1], values[-1] / 1e6), textcoords="offset points",
                    xytext=(-10, 6), ha="right", fontsize=8, color=colour)
    ax.set_xlabel("units in the set")
    ax.set_ylabel("forward MFLOPs per example (counted)")
    ax.set_xticks(FLOP_UNITS)
    ax.set_title("cost per example: linear (Perceiver IO) vs quadratic (Transformer)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _scene_picture(data: Any, evaluations: dict[str, dict[str, Any]], png: Path) -> None:
    """One test scene per model: units, each unit's chosen target (green right, red wrong) and, where wrong, the
    true target (dashed)."""
    from ..data.unit_sets import UNIT_TYPES, attack_targets

    dataset = data.datasets["test"]
    # A mid-sized scene, so that the arrows stay readable.
    index = next((i for i in range(len(dataset)) if 20 <= dataset.scene(i).num_units <= 28), 0)
    scene = dataset.scene(index)
    truth = attack_targets(scene)
    plt = _pyplot()
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], marker=m, linestyle="", color="lightgrey", markeredgecolor="black", markersize=8,
                     label=UNIT_TYPES[k]) for k, m in enumerate(TYPE_MARKERS)]
    legend += [Line2D([], [], marker="o", linestyle="", color=c, markersize=8, label=f"side {owner}")
               for owner, c in enumerate(OWNER_COLOURS)]
    legend += [Line2D([], [], color="tab:green", label="chosen, right"), Line2D([], [], color="tab:red", label="chosen, wrong"),
               Line2D([], [], color="black", linestyle="--", alpha=0.6, label="true target (where wrong)")]
    p = scene.position
    low, high = p.min(0) - 0.05, p.max(0) + 0.05
    fig, axes = plt.subplots(1, len(evaluations), figsize=(6 * len(evaluations), 6.4))
    for ax, (name, evaluation) in zip(np.atleast_1d(axes), evaluations.items()):
        chosen = evaluation["chosen"][index]
        for i, (j, t) in enumerate(zip(chosen, truth)):
            colour = "tab:green" if j == t else "tab:red"
            ax.annotate("", p[j], p[i], arrowprops=dict(arrowstyle="->", color=colour, lw=1.2, alpha=0.8,
                                                         shrinkA=5, shrinkB=5))
            if j != t:
                ax.annotate("", p[t], p[i], arrowprops=dict(arrowstyle="->", color="black", lw=0.9, alpha=0.6,
                                                             linestyle="--", shrinkA=5, shrinkB=5))
        for k, marker in enumerate(TYPE_MARKERS):
            for owner, colour in enumerate(OWNER_COLOURS):
                sel = (scene.unit_type == k) & (scene.owner == owner)
                ax.scatter(p[sel, 0], p[sel, 1], s=40 + 120 * scene.health[sel], marker=marker, c=colour,
                           edgecolors="black", linewidths=0.5, zorder=3)
        right = int((chosen == truth).sum())
        ax.set_title(f"{MODELS[name][0]}: {right} of {scene.num_units} targets right", fontsize=10)
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    fig.suptitle(f"Test scene {index}, {scene.num_units} units: each arrow goes from a unit to the enemy it attacks "
                 "(marker size: health)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def run(out: Path, quick: bool = False) -> SectionResult:
    from .. import from_pretrained

    steps = QUICK_STEPS if quick else UNIT_SETS_STEPS
    data = _data(steps)
    runs = {name: _train(out, name, task, data, steps, quick) for name, (_, _, task) in MODELS.items()}
    evaluations = {name: _evaluate(r["model"], data) for name, r in runs.items()}

    main = runs["perceiver"]
    main["model"].save_pretrained(out / "model")
    reloaded = _evaluate(from_pretrained(out / "model").eval(), data)
    identical = all(np.array_equal(a, b) for a, b in zip(reloaded["chosen"], evaluations["perceiver"]["chosen"]))
    if not identical:
        raise RuntimeError("unit-sets: the reloaded model does not reproduce the trained model's targets")

    heuristics = _heuristics(data)
    flops = _flops({name: r["model"] for name, r in runs.items()})
    _learning_curves(runs, heuristics, out / "learning_curves.png")
    _flops_plot(flops, out / "flops.png")
    _scene_picture(data, evaluations, out / "scene.png")

    test = evaluations["perceiver"]
    n_units, n_scenes = test["units"], test["scenes"]
    columns = ["model", f"pointer accuracy ({n_units:,} units)", f"set accuracy ({n_scenes} scenes)",
               f"MFLOPs / example at {FLOP_UNITS[0]} / {FLOP_UNITS[-1]} units", "parameters", "training"]
    rows = []
    for name, r in runs.items():
        e = evaluations[name]
        rows.append([MODELS[name][0], _pct(e["pointer_accuracy"]), _pct(e["set_accuracy"]),
                     f"{flops[name][0] / 1e6:.1f} / {flops[name][-1] / 1e6:.0f}", f"{r['parameters']:,}",
                     f"{r['steps']} steps, {r['seconds']:.0f} s ({1000 * r['seconds'] / max(r['steps'], 1):.0f} ms/step)"])
    rows += [
        ["heuristic: the nearest enemy", _pct(heuristics["nearest"]), "-", "-", "-", "-"],
        ["heuristic: the enemy it kills fastest, ignoring distance", _pct(heuristics["fastest_kill"]), "-", "-",
         "-", "-"],
        ["heuristic: the side with more total health wins", "-", _pct(heuristics["more_health"]), "-", "-", "-"],
        ["chance (a random enemy; the more frequent winner)", _pct(heuristics["random"]), _pct(heuristics["majority"]),
         "-", "-", "-"],
    ]
    ratio = flops["transformer"][-1] / flops["perceiver"][-1]
    summary = (f"Trained for {steps} steps each on skirmishes of {UNIT_SETS_DATA['min_units']}-"
               f"{UNIT_SETS_DATA['max_units']} units, Perceiver IO points {_pct(test['pointer_accuracy'])} of the "
               f"test units at the right enemy (Transformer: {_pct(evaluations['transformer']['pointer_accuracy'])}, "
               f"best one-cue heuristic: {_pct(max(heuristics['nearest'], heuristics['fastest_kill']))}); at "
               f"{FLOP_UNITS[-1]} units it needs {ratio:.1f}x fewer FLOPs per example than the Transformer.")
    metrics = {
        "task": "unit sets: per-unit attack target (pointer) and skirmish winner (set level)",
        "seed": SEED,
        "recipe": {"steps": steps, "data": UNIT_SETS_DATA, "optimization": UNIT_SETS_OPTIMIZATION,
                   "models": {name: task["overrides"] for name, (_, _, task) in MODELS.items()}},
        "models": {name: {"pointer_accuracy": round(evaluations[name]["pointer_accuracy"], 4),
                          "set_accuracy": round(evaluations[name]["set_accuracy"], 4),
                          "train_seconds": round(r["seconds"], 1), "steps": r["steps"],
                          "parameters": r["parameters"],
                          "flops_per_example": dict(zip(map(str, FLOP_UNITS), flops[name]))}
                   for name, r in runs.items()},
        "heuristics": {k: round(v, 4) for k, v in heuristics.items()},
        "test_units": n_units, "test_scenes": n_scenes,
        "reloaded_predictions_identical": identical,
    }
    facts = [
        ("recipe", f"AdamW lr {UNIT_SETS_OPTIMIZATION['lr']:g}, warm-up + cosine, batch "
                   f"{UNIT_SETS_DATA['batch_size']}, {steps} steps (one pass over freshly generated scenes), "
                   f"seed {SEED}; width {MODEL_SIZE['num_channels']}, {MODEL_SIZE['num_heads']} heads"),
        ("saved + reloaded", f"{out.name}/model/ (save_pretrained, from_pretrained): targets identical = {identical}"),
    ]
    notes = [
        "Both models: the same set adapter, heads, recipe, seed and data; only the encoder differs. Perceiver IO: "
        "1 cross-attend into 16 latents, 2 latent self-attends, 1 decoding cross-attend with the units as queries; "
        "Transformer: 4 self-attention layers over all units.",
        "FLOPs: forward matrix products of one set, counted with torch.utils.flop_counter (attention included); "
        "the pointer head's [units x units] logits are in both.",
    ]
    pictures = [
        Picture("scene.png", "One test scene: the enemy each unit attacks, as chosen by each model"),
        Picture("flops.png", "Counted FLOPs per example from 64 to 512 units"),
        Picture("learning_curves.png", "Validation pointer and set accuracy during training, next to the heuristics"),
    ]
    return SectionResult(summary=summary, columns=columns, rows=rows, facts=facts, pictures=pictures,
                         metrics=metrics, notes=notes)


SECTION = Section(name="unit-sets", title="Unit sets: Perceiver IO as a set encoder with a pointer head",
                  budget_s=120, run=run)
