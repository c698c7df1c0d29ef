"""The training system: loss goes down, checkpoints resume exactly (also after SIGKILL and Ctrl-C),
2-process DDP ends with identical weights, switches work, and errors are one clear line."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_helpers import trainer
from perceiver_io import from_pretrained
from perceiver_io.cli import main
from perceiver_io.data import DigitsDataModule
from perceiver_io.training.checkpoint_io import load_checkpoint
from perceiver_io.training.export import export_checkpoint
from perceiver_io.training.image import ImageClassificationTask

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "image_classifier" / "digits.yaml"
CLI = [sys.executable, "-m", "perceiver_io.cli"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def tiny_task(**kwargs) -> ImageClassificationTask:
    defaults = dict(preset="digits_fourier", optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="constant",
                    max_grad_norm=1.0, label_smoothing=0.0)
    defaults.update(kwargs)
    return ImageClassificationTask(**defaults)


def batch_loss(task: ImageClassificationTask, data: DigitsDataModule) -> float:
    images, labels = next(iter(data.val_dataloader()))
    task.eval()
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(task(images), labels))
    task.train()
    return loss


@pytest.mark.parametrize("optimizer", ["lamb", "adamw"])
def test_a_few_steps_lower_the_loss(tmp_path, optimizer):
    pl.seed_everything(0)
    data = DigitsDataModule(batch_size=32)
    data.setup("fit")
    task = tiny_task(optimizer=optimizer, lr=2e-3 if optimizer == "adamw" else 5e-3, max_grad_norm=10.0)
    before = batch_loss(task, data)
    trainer(tmp_path, max_steps=30).fit(task, datamodule=data)
    assert batch_loss(task, data) < 0.9 * before


def test_bf16_autocast_and_activation_checkpointing_switches(tmp_path):
    pl.seed_everything(0)
    data = DigitsDataModule(batch_size=16)
    task = tiny_task(activation_checkpointing=True)
    assert task.model.encoder.gradient_checkpointing
    trainer(tmp_path, max_steps=3, precision="bf16-mixed").fit(task, datamodule=data)
    assert all(torch.isfinite(p).all() for p in task.parameters())


def _checkpoint_steps(directory: Path) -> list[int]:
    return sorted(load_checkpoint(p)["global_step"] for p in directory.rglob("step-*.ckpt"))


def test_resume_after_sigkill_continues_from_the_saved_step(tmp_path):
    run = tmp_path / "run"
    cmd = CLI + ["image-classifier", "fit", "--config", str(DIGITS), "--trainer.default_root_dir", str(run),
                 "--trainer.max_steps", "100000", "--checkpoint.every_n_train_steps", "5", *QUIET]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not [s for s in _checkpoint_steps(run) if s >= 10]:
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait()
    ckpts = sorted(run.rglob("*.ckpt"))
    assert ckpts, "no checkpoint was written before the kill"
    for path in ckpts:  # every file left behind is complete and readable
        load_checkpoint(path)
    last = max(ckpts, key=lambda p: load_checkpoint(p)["global_step"])
    saved = load_checkpoint(last)

    class Capture(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step
            self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())  # live tensors change later
            self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}

    capture = Capture()
    task = ImageClassificationTask(**{k: v for k, v in saved["hyper_parameters"].items() if not k.startswith("_")})
    t = trainer(tmp_path, max_steps=saved["global_step"] + 2, callbacks=[capture])
    t.fit(task, datamodule=DigitsDataModule(batch_size=32), ckpt_path=str(last))
    assert capture.step == saved["global_step"] >= 10
    for key, value in saved["state_dict"].items():
        assert torch.equal(capture.weights[key], value)
    for pid, state in saved["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(capture.optimizer["state"][pid][name], value), (pid, name)


def test_keyboard_interrupt_leaves_a_resumable_checkpoint(tmp_path):
    from perceiver_io.training.cli import InterruptCheckpoint

    class Interrupt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 4:
                raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    data = DigitsDataModule(batch_size=32)
    task = tiny_task()
    t = trainer(tmp_path, max_steps=50, callbacks=[Interrupt(), InterruptCheckpoint()], enable_checkpointing=True)
    try:
        with pytest.raises(SystemExit):
            t.fit(task, datamodule=data)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt
    path = next(tmp_path.rglob("last.ckpt"))
    saved = load_checkpoint(path)
    assert saved["global_step"] == 4
    resumed = tiny_task()
    trainer(tmp_path, max_steps=6).fit(resumed, datamodule=data, ckpt_path=str(path))


def test_cli_fit_resume_last_test_and_export(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["image-classifier", "fit", "--config", str(DIGITS), "--trainer.default_root_dir", str(run),
            "--checkpoint.every_n_train_steps", "4", *QUIET]
    assert main(base + ["--trainer.max_steps", "4"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 4
    assert next(run.rglob("metrics.csv")).is_file()  # CSV logging by default
    # a new invocation with --ckpt_path last continues from step 4
    assert main(base + ["--trainer.max_steps", "8", "--ckpt_path", "last"]) == 0
    assert load_checkpoint(last)["global_step"] == 8
    assert sorted(_checkpoint_steps(run)) == [4, 8]
    assert main(["image-classifier", "test", "--config", str(DIGITS), "--trainer.default_root_dir", str(run),
                 "--ckpt_path", str(last), *QUIET]) == 0
    assert main(["export", str(last), str(tmp_path / "exported")]) == 0
    model = from_pretrained(tmp_path / "exported")
    saved = load_checkpoint(last)
    state = {k.removeprefix("model."): v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert export_checkpoint(last, tmp_path / "again").config == model.config


@pytest.mark.parametrize("config", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_parses(config, capsys):
    task = config.parent.name.replace("_", "-")  # configs/<task>/: image_classifier, unit_sets
    with pytest.raises(SystemExit) as exit_info:
        main([task, "fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "model:" in capsys.readouterr().out


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    def run(*args: str) -> tuple[int, str]:
        code = main(["image-classifier", *args])
        err = capsys.readouterr().err.strip().splitlines()
        return code, err[-1] if err else ""

    code, line = run("fit", "--config", str(DIGITS), "--model.lerning_rate", "3")
    assert code == 2 and "lerning_rate" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text(DIGITS.read_text().replace("  optimizer: adamw", "  optimizr: adamw"))
    code, line = run("fit", "--config", str(bad))
    assert code == 2 and "optimizr" in line
    code, line = run("fit", "--config", str(DIGITS), "--data.class_path", "perceiver_io.data.ImageFolderDataModule",
                     "--data.init_args.root", str(tmp_path / "missing"))
    assert code in (1, 2) and "missing" in line
    # a checkpoint from another task
    other = tmp_path / "other.ckpt"
    task = tiny_task()
    t = trainer(tmp_path, max_steps=1)
    t.fit(task, datamodule=DigitsDataModule(batch_size=8))
    t.save_checkpoint(other)
    data = load_checkpoint(other)
    data["perceiver_io_task"] = "MaskedLanguageModelingTask"
    torch.save(data, other)
    code, line = run("fit", "--config", str(DIGITS), "--trainer.default_root_dir", str(tmp_path / "r"),
                     "--ckpt_path", str(other), *QUIET)
    assert code == 1 and "checkpoint is from a MaskedLanguageModelingTask run" in line


def test_ddp_two_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(f'''
import sys, torch, lightning.pytorch as pl
torch.set_num_threads(1)  # two processes on two cores
from perceiver_io.data import DigitsDataModule
from perceiver_io.training.checkpoint_io import SafeCheckpointIO
from perceiver_io.training.image import ImageClassificationTask

class Dump(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        torch.save({{"weights": pl_module.state_dict()}}, r"{tmp_path}/init%d.ckpt" % trainer.global_rank)

    def on_fit_end(self, trainer, pl_module):
        torch.save({{"weights": pl_module.state_dict()}}, r"{tmp_path}/rank%d.ckpt" % trainer.global_rank)

pl.seed_everything(trainer_seed := 0)
task = ImageClassificationTask(preset="digits_fourier", optimizer="lamb", lr=5e-3, schedule="constant")
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=4, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, plugins=[SafeCheckpointIO()], callbacks=[Dump()],
                     default_root_dir=r"{tmp_path}")
trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
''')
    env = {**os.environ, "PL_DISABLE_FORK": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    w0, w1 = load_checkpoint(tmp_path / "rank0.ckpt")["weights"], load_checkpoint(tmp_path / "rank1.ckpt")["weights"]
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    initial = load_checkpoint(tmp_path / "init0.ckpt")["weights"]
    assert not torch.equal(w0["model.encoder.latents"], initial["model.encoder.latents"])  # it did train


def test_tensorboard_logger_is_a_config_switch(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert main(["image-classifier", "fit", "--config", str(DIGITS), "--trainer.default_root_dir", str(run),
                 "--trainer.max_steps", "2", "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger",
                 "--trainer.logger.init_args.save_dir", str(run), *QUIET]) == 0
    assert list(run.rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_torch_compile_switch_trains(tmp_path):
    pl.seed_everything(0)
    task = tiny_task(compile=True)
    assert task.forward_model is not task.model
    trainer(tmp_path, max_steps=3).fit(task, datamodule=DigitsDataModule(batch_size=16))
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_compiled_mlm_is_one_graph_and_still_rejects_positions_out_of_range():
    """The range check of subsampled output points reads values: eager runs it, torch.compile skips it rather
    than break its graph there, and the compiled gather still refuses an index out of range."""
    from perceiver_io import create_model

    torch.manual_seed(0)
    model = create_model("language_bytes_small", max_seq_len=16, num_self_attends=1, num_channels=16, num_heads=2,
                         num_latents=4, num_latent_channels=16)
    ids, mask = torch.randint(0, 262, (2, 10)), torch.ones(2, 10, dtype=torch.bool)
    positions = torch.tensor([1, 4, 9])
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(ids, mask, subsampled_output_points=positions)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(ids, mask, subsampled_output_points=positions),
                               model(ids, mask, subsampled_output_points=positions))
    with pytest.raises(ValueError, match=r"expected indices in \[0, 10\), got values in \[1, 10\]"):
        model(ids, mask, subsampled_output_points=torch.tensor([1, 10]))  # eager: the clear error
    with pytest.raises((IndexError, RuntimeError)):
        compiled(ids, mask, subsampled_output_points=torch.tensor([1, 10]))


def test_data_shape_check_allows_any_size_for_fourier_models():
    from types import SimpleNamespace

    from perceiver_io.training.image import ImageClassificationTask

    task = ImageClassificationTask(preset="digits_fourier")

    def setup_with(shape, classes=10):
        task._trainer = SimpleNamespace(datamodule=SimpleNamespace(image_shape=shape, num_classes=classes))
        try:
            task.setup("fit")
        finally:
            task._trainer = None

    setup_with((1, 12, 16))  # Fourier positions follow the image: any size trains
    with pytest.raises(ValueError, match=r"data: the model takes images of shape \(1, 'H', 'W'\), the data gives \(3, 8, 8\)"):
        setup_with((3, 8, 8))
    with pytest.raises(ValueError, match="data: the model has 10 classes, the data has 4"):
        setup_with((1, 8, 8), classes=4)


def test_augmented_probabilities_average_the_image_and_its_seeded_views():
    from perceiver_io.training.image import augmented_probabilities

    torch.manual_seed(0)
    model = ImageClassificationTask(preset="digits_fourier").model.eval()
    data = DigitsDataModule(rotate=6.0, scale=0.05, translate=0.5)
    data.setup()
    images = data.datasets["test"].tensors[0][:12]
    with torch.no_grad():
        alone = augmented_probabilities(model, images, data.augment, 0)
        torch.testing.assert_close(alone, model(images).softmax(-1), rtol=0, atol=0)
        mean = augmented_probabilities(model, images, data.augment, 3, seed=5)
        generator = torch.Generator().manual_seed(5)
        views = [images] + [data.augment(images, generator) for _ in range(3)]
        expected = torch.stack([model(v).softmax(-1) for v in views]).mean(0)
        torch.testing.assert_close(mean, expected)
        assert not torch.allclose(mean, alone)  # the warped views change the probabilities
        torch.testing.assert_close(augmented_probabilities(model, images, data.augment, 3, seed=5), mean,
                                   rtol=0, atol=0)  # seeded: the same views on every call
        assert not torch.equal(augmented_probabilities(model, images, data.augment, 3, seed=6), mean)
    torch.testing.assert_close(mean.sum(-1), torch.ones(12))
    with pytest.raises(ValueError, match=r"views: expected a non-negative int, got -1"):
        augmented_probabilities(model, images, data.augment, -1)


def test_digits_augment_is_the_training_warp_or_nothing():
    plain = DigitsDataModule()
    plain.setup()
    images = plain.datasets["test"].tensors[0][:8]
    assert plain.augment(images) is images  # no augmentation configured: nothing to warp
    warped = DigitsDataModule(rotate=6.0, translate=0.5).augment(images, torch.Generator().manual_seed(0))
    assert warped.shape == images.shape and not torch.equal(warped, images)


def test_test_views_run_test_time_augmentation_in_test_only(tmp_path):
    from perceiver_io.training.image import augmented_probabilities

    pl.seed_everything(0)
    data = DigitsDataModule(batch_size=64, rotate=6.0, scale=0.05, translate=0.5)
    task = tiny_task(test_views=4)
    trainer(tmp_path, max_steps=60).fit(task, datamodule=data)
    [result] = trainer(tmp_path).test(task, datamodule=data, verbose=False)
    correct, nll, single_nll = 0, 0.0, 0.0
    task.eval()
    with torch.no_grad():
        for i, (images, labels) in enumerate(data.test_dataloader()):  # batch i's views: seed i
            probabilities = augmented_probabilities(task.model, images, data.augment, 4, seed=i)
            correct += int((probabilities.argmax(-1) == labels).sum())
            nll += float(torch.nn.functional.nll_loss(probabilities.log(), labels, reduction="sum"))
            single_nll += float(torch.nn.functional.cross_entropy(task.model(images), labels, reduction="sum"))
    assert result["test/acc"] == pytest.approx(correct / 360, abs=1e-6)
    assert result["test/loss"] == pytest.approx(nll / 360, rel=1e-5)
    assert abs(nll - single_nll) / 360 > 1e-3  # the views changed what was measured

    with pytest.raises(ValueError, match=r"test_views: expected a non-negative int, got 1.5"):
        tiny_task(test_views=1.5)
    from types import SimpleNamespace

    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(image_shape=(1, 8, 8), num_classes=10))
    with pytest.raises(ValueError, match=r"test_views: expected a data module with an augment\(images, generator\)"):
        task.setup("test")
    with pytest.raises(ValueError, match=r"test_views: .* got plain dataloaders"):
        trainer(tmp_path).test(task, dataloaders=data.test_dataloader(), verbose=False)
    task._trainer = None
