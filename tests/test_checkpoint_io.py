"""Checkpoints are Lightning's standard ``.ckpt`` files, read only with ``torch.load(weights_only=True)``:
a crafted checkpoint runs no code through any loading path, a bad file fails with an error naming it,
a checkpoint resumes with identical optimizer and scheduler state, and a write interrupted at any
moment (an exception, or SIGKILL) leaves the previous checkpoint intact and resumable."""

from __future__ import annotations

import copy
import os
import random
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from lightning_helpers import trainer
from perceiver_io.cli import main
from perceiver_io.data import DigitsDataModule
from perceiver_io.training import checkpoint_io
from perceiver_io.training.checkpoint_io import SafeCheckpointIO, load_checkpoint
from perceiver_io.training.export import load_task
from perceiver_io.training.image import ImageClassificationTask

DIGITS = Path(__file__).resolve().parents[1] / "configs" / "image_classifier" / "digits.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def tiny_task(**kwargs) -> ImageClassificationTask:
    return ImageClassificationTask(**{"preset": "digits_fourier", "optimizer": "lamb", "lr": 2e-3,
                                      "schedule": "constant_cosine", **kwargs})


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A checkpoint after 3 LAMB steps with a LambdaLR schedule."""
    root = tmp_path_factory.mktemp("good")
    pl.seed_everything(0)
    t = trainer(root, max_steps=3)
    t.fit(tiny_task(), datamodule=DigitsDataModule(batch_size=16))
    t.save_checkpoint(root / "good.ckpt")
    return root / "good.ckpt"


def last_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize("compile", [False, True])
def test_state_dict_holds_each_weight_once(compile):
    task = tiny_task(compile=compile)
    assert (task.forward_model is task.model) != compile
    assert list(task.state_dict()) == [f"model.{k}" for k in task.model.state_dict()]


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_is_refused_by_every_loading_path(tmp_path, good, capsys):
    marker = tmp_path / "code-ran"
    checkpoint = load_checkpoint(good)
    checkpoint["callbacks"]["x"] = RunsCode(marker)
    evil = tmp_path / "checkpoints" / "last.ckpt"
    evil.parent.mkdir()
    torch.save(checkpoint, evil)

    named = re.escape(f"cannot load checkpoint {evil}: refused by the weights-only unpickler")
    with pytest.raises(ValueError, match=named + ".*posix.system"):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match=named):
        load_task(evil)
    with pytest.raises(ValueError, match=named):
        trainer(tmp_path, max_steps=4).fit(tiny_task(), datamodule=DigitsDataModule(batch_size=16), ckpt_path=evil)
    with pytest.raises(Exception, match="posix.system"):  # Lightning's own, when told weights_only=True
        ImageClassificationTask.load_from_checkpoint(evil, weights_only=True)
    # A file path is first read by the CLI for its hyper-parameters; "last" is found and read by the Trainer.
    for command, ckpt_path in (("fit", str(evil)), ("validate", "last")):
        assert main(["image-classifier", command, "--config", str(DIGITS), "--trainer.default_root_dir",
                     str(tmp_path), "--ckpt_path", ckpt_path, *QUIET]) == 1
        assert f"cannot load checkpoint {evil}: refused" in last_line(capsys)
    assert main(["export", str(evil), str(tmp_path / "out")]) == 1
    assert str(evil) in last_line(capsys)
    assert not marker.exists()


@pytest.mark.parametrize("as_yaml_string", [False, True])
def test_crafted_hyperparameters_are_refused(tmp_path, good, capsys, as_yaml_string):
    # Plain data, no pickle: jsonargparse would instantiate it (LightningCLI, and load_from_checkpoint
    # of a CLI-trained task) because the task's `model` argument is a dict[str, Any].
    marker = tmp_path / "code-ran"
    spec = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    checkpoint = load_checkpoint(good)
    checkpoint["hyper_parameters"]["model"] = {"x": yaml.safe_dump(spec) if as_yaml_string else spec}
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    assert main(["image-classifier", "validate", "--config", str(DIGITS), "--trainer.default_root_dir",
                 str(tmp_path), "--ckpt_path", str(evil), *QUIET]) == 1
    assert f"{evil}: refusing hyper-parameter model['x']" in last_line(capsys)
    with pytest.raises(ValueError, match="refusing hyper-parameter"):
        load_task(evil)
    assert not marker.exists()


def _bad_files(good: Path, directory: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 2], "random": random.Random(0).randbytes(4096), "empty": b""}
    paths = {}
    for name, content in files.items():
        paths[name] = directory / f"{name}.ckpt"
        paths[name].write_bytes(content)
    paths["zip"] = directory / "zip.ckpt"
    with zipfile.ZipFile(paths["zip"], "w") as z:
        z.writestr("notes/readme.txt", "not a checkpoint")
    paths["list"] = directory / "list.ckpt"
    torch.save([1, 2, 3], paths["list"])
    return paths


def test_bad_files_give_an_error_naming_the_file(tmp_path, good, capsys):
    for kind, path in _bad_files(good, tmp_path).items():
        with pytest.raises(ValueError, match=re.escape(f"cannot load checkpoint {path}: ")) as error:
            load_checkpoint(path)
        assert "\n" not in str(error.value) and len(str(error.value)) < 400, (kind, str(error.value))
        assert main(["export", str(path), str(tmp_path / "out")]) == 1
        assert str(path) in last_line(capsys), kind
    path = tmp_path / "truncated.ckpt"
    assert main(["image-classifier", "test", "--config", str(DIGITS), "--trainer.default_root_dir", str(tmp_path),
                 "--ckpt_path", str(path), *QUIET]) == 1
    assert f"cannot load checkpoint {path}" in last_line(capsys)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_a_checkpoint_resumes_with_identical_optimizer_and_scheduler_state(tmp_path, good):
    saved = load_checkpoint(good)

    class Capture(pl.Callback):
        def on_train_start(self, trainer, pl_module):  # deep copies: the live tensors change later
            self.step = trainer.global_step
            self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
            self.scheduler = copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict())
            self.weights = copy.deepcopy(pl_module.state_dict())

    capture = Capture()
    trainer(tmp_path, max_steps=4, callbacks=[capture]).fit(
        load_task(good), datamodule=DigitsDataModule(batch_size=16), ckpt_path=good)
    assert capture.step == saved["global_step"] == 3
    assert capture.scheduler == saved["lr_schedulers"][0]
    assert capture.optimizer["param_groups"] == saved["optimizer_states"][0]["param_groups"]
    for pid, state in saved["optimizer_states"][0]["state"].items():
        assert state.keys() == capture.optimizer["state"][pid].keys()
        assert all(torch.equal(capture.optimizer["state"][pid][k], v) for k, v in state.items())
    assert all(torch.equal(capture.weights[k], v) for k, v in saved["state_dict"].items())


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_write_leaves_the_previous_checkpoint(tmp_path, good, monkeypatch, interruption):
    target = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint(load_checkpoint(good), target)

    def half_then_fail(obj, f, *args, **kwargs):
        f.write(good.read_bytes()[:1000])
        raise interruption

    monkeypatch.setattr(checkpoint_io.torch, "save", half_then_fail)
    newer = {**load_checkpoint(good), "global_step": 99}
    with pytest.raises(type(interruption)):
        SafeCheckpointIO().save_checkpoint(newer, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left
    SafeCheckpointIO().save_checkpoint(newer, target)
    assert load_checkpoint(target)["global_step"] == 99


KILLED_DURING_WRITE = """
import io, sys, time, torch
from perceiver_io.cli import main
real_save = torch.save

def save(obj, f, *args, **kwargs):  # the step-4 last.ckpt: half written, then the process is killed
    if "last.ckpt" in str(getattr(f, "name", f)) and obj["global_step"] == 4:
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        open(sys.argv[1], "w").close()
        time.sleep(600)
    real_save(obj, f, *args, **kwargs)

torch.save = save
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_during_a_checkpoint_write_resumes_from_the_previous_one(tmp_path):
    run, flag = tmp_path / "run", tmp_path / "writing"
    script = tmp_path / "killed.py"
    script.write_text(KILLED_DURING_WRITE)
    base = ["image-classifier", "fit", "--config", str(DIGITS), "--trainer.default_root_dir", str(run),
            "--checkpoint.every_n_train_steps", "2", *QUIET]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(flag), *base, "--trainer.max_steps", "100"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not flag.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert flag.exists(), "the subprocess never reached the step-4 checkpoint write"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 2  # the previous checkpoint, intact
    assert [p.name for p in last.parent.glob(".last.ckpt.*.tmp")]  # the half-written file, never renamed
    assert main(base + ["--trainer.max_steps", "6", "--ckpt_path", "last"]) == 0
    assert load_checkpoint(last)["global_step"] == 6


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_writes_leftover_is_removed_by_the_next_write_and_a_running_writers_kept(tmp_path):
    target = tmp_path / "last.ckpt"
    stale = tmp_path / f".last.ckpt.{_dead_pid()}.0badc0de.tmp"
    running = tmp_path / f".last.ckpt.{os.getppid()}.0badc0de.tmp"  # a live process: a write in progress
    other = tmp_path / f".epoch=1.ckpt.{_dead_pid()}.0badc0de.tmp"  # another file's: not this write's business
    for path in (stale, running, other):
        path.write_bytes(b"half a checkpoint")
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
    assert not stale.exists() and running.exists() and other.exists()
    assert torch.equal(load_checkpoint(target)["state_dict"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, running.name, other.name])
