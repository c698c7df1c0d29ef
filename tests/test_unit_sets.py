"""Unit sets: the set models are permutation-equivariant, ignore padding, never point at it, reject bad input,
count their FLOPs (linear against quadratic), save and reload, and train through the task and the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from perceiver_io import create_model, from_pretrained
from perceiver_io.adapters.sets import SetOutputs
from perceiver_io.cli import main
from perceiver_io.data.unit_sets import CATEGORIES, NUM_CONTINUOUS, UnitSetsDataModule
from perceiver_io.flops import count_flops
from perceiver_io.models import SetPerceiverIO, SetTransformerBaseline
from perceiver_io.models.presets import UNIT_CATEGORIES, UNIT_CONTINUOUS
from perceiver_io.training.checkpoint_io import load_checkpoint
from perceiver_io.training.unit_sets import UnitSetTask, pointer_hits, pointer_loss

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "unit_sets"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SMALL = dict(num_channels=32, num_heads=2, widening_factor=2)
PRESETS = {"perceiver": ("unit_sets", dict(num_latents=8, num_self_attends=1)),
           "transformer": ("unit_sets_transformer", dict(num_layers=2))}


def small_model(kind: str, **overrides) -> torch.nn.Module:
    name, extra = PRESETS[kind]
    return create_model(name, **{**SMALL, **extra, **overrides}).eval()


def random_set(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    categorical = torch.stack([torch.randint(0, n, (batch, size), generator=g) for n in UNIT_CATEGORIES], dim=-1)
    return {"continuous": torch.rand(batch, size, UNIT_CONTINUOUS, generator=g), "categorical": categorical}


@pytest.fixture(params=["perceiver", "transformer"])
def model(request) -> torch.nn.Module:
    return small_model(request.param)


def test_presets_match_the_environment_and_are_the_same_size():
    assert (UNIT_CONTINUOUS, UNIT_CATEGORIES) == (NUM_CONTINUOUS, tuple(CATEGORIES))
    perceiver, transformer = create_model("unit_sets"), create_model("unit_sets_transformer")
    assert isinstance(perceiver, SetPerceiverIO) and isinstance(transformer, SetTransformerBaseline)
    counts = [sum(p.numel() for p in m.parameters()) for m in (perceiver, transformer)]
    assert counts == [1_080_578, 1_075_970]  # the numbers in the presets' docstrings


def test_outputs_are_permutation_equivariant_and_the_set_output_invariant(model):
    inputs = random_set(2, 12)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(inputs)
        permuted = model({k: v[:, perm] for k, v in inputs.items()})
    assert isinstance(out, SetOutputs)
    torch.testing.assert_close(permuted.entities, out.entities[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted.pointer_logits, out.pointer_logits[:, perm][:, :, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted.set_logits, out.set_logits, atol=1e-5, rtol=1e-5)


def test_padding_changes_nothing_for_real_units_and_is_never_pointed_at(model):
    real = random_set(1, 7)
    padded = {k: torch.cat([v, random_set(1, 5, seed=3)[k]], dim=1) for k, v in real.items()}  # random junk units
    mask = torch.tensor([[True] * 7 + [False] * 5])
    with torch.no_grad():
        alone = model(real)
        with_padding = model(padded, mask)
    torch.testing.assert_close(with_padding.entities[:, :7], alone.entities, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_padding.pointer_logits[:, :7, :7], alone.pointer_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_padding.set_logits, alone.set_logits, atol=1e-5, rtol=1e-5)
    assert torch.isneginf(with_padding.pointer_logits[:, :, 7:]).all()
    assert (with_padding.pointer_logits.argmax(-1) < 7).all()
    assert (with_padding.pointer_logits.softmax(-1)[..., 7:] == 0).all()


def test_pointer_loss_and_hits_ignore_padding():
    logits = torch.tensor([[[0.0, 5.0, float("-inf")], [5.0, 0.0, float("-inf")], [1.0, 2.0, float("-inf")]]])
    target = torch.tensor([[1, 1, -100]])
    correct, counted = pointer_hits(logits, target)
    assert (int(correct), int(counted)) == (1, 2)
    expected = (torch.log1p(torch.exp(torch.tensor(-5.0))) + torch.log1p(torch.exp(torch.tensor(5.0)))) / 2
    torch.testing.assert_close(pointer_loss(logits, target), expected)
    logits.requires_grad_(True)
    pointer_loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[0, 2] == 0).all()


@pytest.mark.parametrize("kind", ["perceiver", "transformer"])
def test_bad_input_is_a_clear_error(kind):
    model = small_model(kind, max_units=16)
    good = random_set(2, 6)
    cases = [
        ({k: torch.cat([v, v, v], dim=1) for k, v in random_set(1, 6).items()}, None, "larger than max_set_size=16"),
        (good, torch.tensor([[True] * 6, [False] * 6]), "sets [1] are all padding"),
        ({**good, "continuous": torch.rand(2, 6, 5)}, None, "inputs['continuous']: expected shape [2, 6, 3]"),
        ({**good, "categorical": good["categorical"] + torch.tensor([0, 1])}, None,
         "inputs['categorical'][..., 1]: ids must be in [0, 2), got values in [1, 2]"),
        ({**good, "categorical": good["categorical"].float()}, None, "expected an integer tensor"),
        ({"continuous": good["continuous"]}, None, "expected the keys ['categorical', 'continuous']"),
        (good, torch.ones(2, 5, dtype=torch.bool), "mask: expected shape [2, 6]"),
    ]
    for inputs, mask, message in cases:
        with pytest.raises((ValueError, TypeError)) as error:
            model(inputs, mask)
        assert message in str(error.value)


def test_flops_grow_linearly_for_perceiver_io_and_quadratically_for_the_transformer():
    perceiver, transformer = create_model("unit_sets").eval(), create_model("unit_sets_transformer").eval()
    flops = {n: [count_flops(m, random_set(1, n)) for m in (perceiver, transformer)] for n in (256, 512)}
    # The Transformer's attention matmuls are counted in full: 5 layers x (scores + mixing) over 1 + M tokens,
    # plus the pointer head's [M, M] logits (64 channels): the fused attention kernels are not skipped.
    by_op = count_flops(transformer, random_set(1, 512), by_op=True)
    assert by_op["aten.bmm"] == 5 * 2 * 2 * 513 * 513 * 128 + 2 * 512 * 512 * 64
    # At 512 units Perceiver IO costs well under the Transformer ...
    assert flops[512][0] < 0.3 * flops[512][1]
    # ... and doubling the units doubles its cost apart from the [M, M] pointer logits, which both share.
    pointer = {n: 2 * n * n * 64 for n in (256, 512)}
    growth = [(flops[512][i] - pointer[512]) / (flops[256][i] - pointer[256]) for i in range(2)]
    assert growth[0] < 2.0 and growth[1] > 2.3


@pytest.mark.parametrize("kind", ["perceiver", "transformer"])
def test_save_and_reload(kind, tmp_path):
    model = small_model(kind)
    model.save_pretrained(tmp_path / kind)
    again = from_pretrained(tmp_path / kind)
    assert type(again) is type(model) and again.config == model.config
    inputs = random_set(2, 5)
    with torch.no_grad():
        torch.testing.assert_close(again(inputs).pointer_logits, model(inputs).pointer_logits)


def _val_loss(task: UnitSetTask, batch: dict[str, torch.Tensor]) -> float:
    task.eval()
    with torch.no_grad():
        out = task({k: batch[k] for k in ("continuous", "categorical")}, batch["mask"])
        loss = pointer_loss(out.pointer_logits, batch["target"])
        loss = loss + torch.nn.functional.cross_entropy(out.set_logits, batch["winner"])
    task.train()
    return float(loss)


@pytest.mark.parametrize("kind", ["perceiver", "transformer"])
def test_a_few_training_steps_lower_the_loss(kind, tmp_path):
    pl.seed_everything(0)
    name, extra = PRESETS[kind]
    data = UnitSetsDataModule(min_units=8, max_units=24, batch_size=16, num_train=16 * 40, num_val=64, seed=0)
    data.setup("fit")
    task = UnitSetTask(preset=name, overrides={**SMALL, **extra, "max_units": 24}, optimizer="adamw", lr=3e-3,
                       weight_decay=0.0, schedule="constant", max_grad_norm=1.0)
    batch = next(iter(data.val_dataloader()))
    before = _val_loss(task, batch)
    pl.Trainer(accelerator="cpu", max_steps=40, logger=False, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False, limit_val_batches=0, default_root_dir=str(tmp_path)).fit(task, datamodule=data)
    assert _val_loss(task, batch) < 0.85 * before


def test_task_refuses_data_that_does_not_fit_the_model(tmp_path):
    task = UnitSetTask(preset="unit_sets", overrides={**SMALL, **PRESETS["perceiver"][1], "max_units": 16})
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="sets of up to 32 units, the model takes at most 16"):
        trainer.fit(task, datamodule=UnitSetsDataModule(min_units=8, max_units=32, num_train=32, num_val=8))
    with pytest.raises(ValueError, match="only for Perceiver IO models"):
        UnitSetTask(preset="unit_sets_transformer", overrides=SMALL, activation_checkpointing=True)


@pytest.mark.parametrize("config", ["perceiver.yaml", "transformer.yaml"])
def test_cli_fit_test_and_export(config, tmp_path):
    run = tmp_path / "run"
    base = ["--config", str(CONFIGS / config), "--trainer.default_root_dir", str(run), *QUIET,
            "--data.init_args.num_train", "128", "--data.init_args.num_val", "32", "--data.init_args.num_test", "32",
            "--trainer.val_check_interval", "2"]
    assert main(["unit-sets", "fit", *base, "--trainer.max_steps", "3"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 3
    assert main(["unit-sets", "validate", *base, "--ckpt_path", str(last)]) == 0
    assert main(["unit-sets", "test", *base, "--ckpt_path", str(last)]) == 0
    logged = "".join(p.read_text() for p in run.rglob("metrics.csv"))
    assert "val/pointer_acc" in logged and "test/pointer_acc" in logged and "test/set_acc" in logged
    assert main(["unit-sets", "predict", *base, "--ckpt_path", "last"]) == 0
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    assert len(rows) == 32 and list(rows[0]) == ["id", "winner", "targets"]
    assert [r["id"] for r in rows] == [str(i) for i in range(32)]
    assert all(r["winner"] in ("0", "1") and all(t.isdigit() for t in r["targets"].split()) for r in rows)
    assert main(["export", str(last), str(tmp_path / "model")]) == 0
    expected = SetPerceiverIO if config == "perceiver.yaml" else SetTransformerBaseline
    assert type(from_pretrained(tmp_path / "model")) is expected
