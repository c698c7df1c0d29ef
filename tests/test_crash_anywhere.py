"""Same seed, same result; and a training run killed anywhere, resumed, ends as if it had never stopped.

Runs of the digits config, shrunk (12 steps of 256 images: 5 steps an epoch, so epochs end and validate inside
the run; a checkpoint every 2 steps), in deterministic mode. A trial kills runs (SIGKILL, or SIGINT: Ctrl-C) at
moments drawn from a seeded random number generator over a run's measured duration, or at forced moments: in the
middle of writing ``last.ckpt`` and while a resumed run restores its checkpoint. After each kill the next run resumes
with ``--ckpt_path last`` if a ``last.ckpt`` exists, else starts again; the last one runs to the end. Every trial
must end with the weights, optimiser and schedule of an uninterrupted run, bit for bit, and no checkpoint file may
ever go back to an older step, hold an untrained state (step 0), or disappear.

The default part (``make test``) runs two trials of two kills each (SIGKILL in a write then in a restore; Ctrl-C
twice in a write, then once at a drawn moment of training); the ``slow`` part (``make test-slow``) runs
``PERCEIVER_CRASH_TRIALS`` (default 20) trials of 1 to 3 kills of drawn kinds and prints what it did. Bit-identical
resumption holds for single-process runs without loader workers (``num_workers=0``), as here.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from perceiver_io.cli import main
from perceiver_io.data.generated import ResumableDataLoader
from perceiver_io.training.checkpoint_io import load_checkpoint
from perceiver_io.training.resume import capture_random_state, restore_random_state

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "image_classifier" / "digits.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
MAX_STEPS = 12
EVERY = 2  # checkpoint.every_n_train_steps
SMALL = ["--trainer.max_steps", str(MAX_STEPS), "--trainer.deterministic", "true",
         "--checkpoint.every_n_train_steps", str(EVERY), "--trainer.limit_val_batches", "1",
         "--trainer.log_every_n_steps", "1", "--data.init_args.batch_size", "256", "--data.init_args.num_workers", "0",
         "--model.overrides.encoder.num_self_attends_per_block", "1", "--model.overrides.encoder.num_latents", "16",
         *QUIET]
"""The digits config, shrunk: 1,257 training images in batches of 256 (epochs of 5 steps, each ending with one
validation batch: checkpoints inside epochs and at the end of one), a smaller latent stack, 12 steps."""
WAIT_S = 240  # longest wait for one run (a 2-core machine shared with other jobs)

# Runs the CLI. With CRASH_STALL_WRITE=N the write of step N's last.ckpt stops half way (the rest of the file
# unwritten), with CRASH_STALL_RESTORE=1 a resumed run stops right after reading its checkpoint; both touch
# CRASH_FLAG and wait to be killed. CRASH_MARKS=DIR: touch DIR/train_started.<pid> when training starts.
WRAPPER = """
import io, os, sys, time
import torch
from perceiver_io.cli import main
from perceiver_io.training import checkpoint_io, resume

stall_write = int(os.environ.get("CRASH_STALL_WRITE", "-1"))
stall_restore = os.environ.get("CRASH_STALL_RESTORE") == "1"
marks = os.environ.get("CRASH_MARKS")

def stall():
    open(os.environ["CRASH_FLAG"], "w").close()
    time.sleep(600)

real_save = torch.save

def save(obj, f, *args, **kwargs):
    global stall_write
    if isinstance(obj, dict) and obj.get("global_step") == stall_write and "last.ckpt" in str(getattr(f, "name", "")):
        stall_write = -1  # once: a Ctrl-C checkpoint that follows is written in full
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        stall()
    real_save(obj, f, *args, **kwargs)

torch.save = save
real_load = checkpoint_io.SafeCheckpointIO.load_checkpoint

def load(self, path, map_location=None, weights_only=None):
    checkpoint = real_load(self, path, map_location, weights_only)
    if stall_restore and map_location != "meta":  # the trainer's restore, not the CLI's look at the hyper-parameters
        stall()
    return checkpoint

checkpoint_io.SafeCheckpointIO.load_checkpoint = load
if marks:
    real_start = resume.ExactResume.on_train_start

    def on_train_start(self, trainer, pl_module):
        real_start(self, trainer, pl_module)
        open(os.path.join(marks, "train_started.%d" % os.getpid()), "w").close()

    resume.ExactResume.on_train_start = on_train_start
sys.exit(main(sys.argv[1:]))
"""


# --------------------------------------------------------------------------------------------- same seed, same result


def test_same_seed_in_deterministic_mode_gives_bit_identical_weights_and_metrics(tmp_path):
    def fit(name: str, seed: int) -> Path:
        run = tmp_path / name
        assert main(["image-classifier", "fit", "--config", str(DIGITS), "--trainer.default_root_dir", str(run),
                     "--seed_everything", str(seed), "--trainer.max_steps", "6", "--trainer.val_check_interval", "3",
                     "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "1",
                     "--trainer.deterministic", "true", *QUIET]) == 0
        return run

    handler, deterministic = signal.getsignal(signal.SIGINT), torch.are_deterministic_algorithms_enabled()
    try:
        first, second, other = fit("first", 0), fit("second", 0), fit("other", 1)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert signal.getsignal(signal.SIGINT) is handler  # the fit's Ctrl-C handler is gone again
    a, b = (load_checkpoint(run / "checkpoints" / "last.ckpt") for run in (first, second))
    assert a["global_step"] == b["global_step"] == 6
    assert_same_training_state(a, b)
    metrics = [(run / "lightning_logs" / "version_0" / "metrics.csv").read_text() for run in (first, second)]
    assert "val/acc" in metrics[0] and len(metrics[0].splitlines()) > 6  # a row per step, and validations
    assert metrics[0] == metrics[1]
    c = load_checkpoint(other / "checkpoints" / "last.ckpt")
    assert not torch.equal(a["state_dict"]["model.encoder.latents"], c["state_dict"]["model.encoder.latents"])


def assert_same_training_state(a: dict, b: dict) -> None:
    """Weights, optimiser state and schedules of two checkpoints equal bit for bit (names the first difference)."""
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"weight {key} differs"
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        assert opt_a["param_groups"] == opt_b["param_groups"]
        for pid, state in opt_a["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_b["state"][pid][name]), f"optimizer state {pid}.{name} differs"
    assert a["lr_schedulers"] == b["lr_schedulers"]


# ----------------------------------------------------------------------------------------------------- the pieces


def _epochs(loader, epochs: range, iterator=None) -> list[list[list[int]]]:
    """The batches of ``epochs`` as Lightning draws them: ``set_epoch``, then a pass (``iterator``: the first pass's,
    created earlier)."""
    out = []
    for epoch in epochs:
        getattr(loader.sampler, "set_epoch", lambda epoch: None)(epoch)
        out.append([batch[0].tolist() for batch in (iterator if iterator is not None else iter(loader))])
        iterator = None
    return out


def test_the_resumable_loader_keeps_torch_order_and_resumes_inside_and_after_an_epoch(tmp_path):
    data = TensorDataset(torch.arange(50))  # 7 batches of 8 an epoch, the last one of 2

    def resumable(**kwargs) -> ResumableDataLoader:
        return ResumableDataLoader(data, batch_size=8, generator=torch.Generator().manual_seed(3), **kwargs)

    plain = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
    expected = _epochs(plain, range(3))  # torch's order: what every run drew before the loader was resumable
    assert _epochs(resumable(), range(3)) == expected
    for epoch, done in ((1, 3), (0, 7), (1, 7)):  # stopped inside epoch 1, and at the ends of epochs 0 and 1
        first = resumable()
        _epochs(first, range(epoch))
        first.sampler.set_epoch(epoch)
        assert [b[0].tolist() for b in itertools.islice(first, done)] == expected[epoch][:done]
        torch.save(first.state_dict(), tmp_path / "state.pt")
        state = torch.load(tmp_path / "state.pt", weights_only=True)  # as a checkpoint holds it
        for early in (False, True):  # Lightning may create the first iterator before it restores the state
            second = resumable()
            iterator = iter(second) if early else None
            second.load_state_dict(state)
            following = epoch if done < 7 else epoch + 1  # at an epoch's end Lightning starts the next one
            resumed = _epochs(second, range(following, following + 1), iterator)[0]
            assert expected[following] == (expected[epoch][:done] if done < 7 else []) + resumed, (epoch, done, early)
            assert second.state_dict()["batches"] == 7  # counted from the epoch's start, skipped batches included
            assert _epochs(second, range(following + 1, 3)) == expected[following + 1:]


def test_random_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(capture_random_state(), tmp_path / "state.pt")
    draws = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_random_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1)) == draws


# ------------------------------------------------------------------------------------------------- crash anywhere


@dataclass
class Kill:
    """One interruption: ``signal`` (SIGKILL / SIGINT) at ``when``: ``"random"`` (a drawn moment of the whole run,
    startup and restore included), ``"training"`` (a drawn moment once training runs), ``"write"`` (half way
    through writing last.ckpt: forced) or ``"restore"`` (a resumed run reading its checkpoint: forced)."""

    signal: signal.Signals
    when: str
    step: int | None = None
    """For ``"write"``: the step whose last.ckpt write is cut short (None: drawn from those still to come)."""


@dataclass
class Record:
    """What the trials did, for the slow test's summary."""

    trials: int = 0
    runs: int = 0
    kills: Counter = field(default_factory=Counter)
    observations: int = 0


class CheckpointWatch:
    """Reads the step of every checkpoint file in ``directory`` each time it is called: no file may go back to an
    older step, hold step 0, or disappear once seen."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.steps, self.observations = directory, {}, 0
        self.read: dict[tuple[int, ...], int] = {}  # a file is replaced, never rewritten: its step by identity

    def step(self, path: Path) -> int:
        with path.open("rb") as f:  # the file now at `path`, even if it is replaced while being read
            stat = os.fstat(f.fileno())
            identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)  # inodes are reused
            if identity not in self.read:
                self.read[identity] = torch.load(f, map_location="cpu", weights_only=True)["global_step"]
            return self.read[identity]

    def __call__(self) -> None:
        current = {}
        for path in self.directory.glob("*.ckpt") if self.directory.is_dir() else []:
            try:
                current[path.name] = self.step(path)
            except FileNotFoundError:
                continue  # caught below if it stays away
        self.observations += 1
        for name, step in self.steps.items():
            assert name in current, f"{name} (step {step}) disappeared"
            assert current[name] >= step, f"{name} went back from step {step} to step {current[name]}"
        assert all(step > 0 for step in current.values()), f"an untrained checkpoint: {current}"
        self.steps = current


class Trial:
    """One run directory, driven through kills and resumes."""

    def __init__(self, root: Path, rng: random.Random, durations: tuple[float, float], record: Record) -> None:
        self.run, self.rng, self.record = root / "run", rng, record
        self.duration, self.step_time = durations  # an uninterrupted run's: in all, and per training step
        self.marks = root / "marks"
        self.marks.mkdir(parents=True)
        self.flag = root / "flag"
        self.script = root / "wrapper.py"
        self.script.write_text(WRAPPER)
        self.watch = CheckpointWatch(self.run / "checkpoints")
        self.log = root / "runs.log"

    @property
    def last(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"

    def held_step(self) -> int:
        return load_checkpoint(self.last)["global_step"] if self.last.is_file() else 0

    def start(self, **env: str) -> subprocess.Popen:
        argv = ["image-classifier", "fit", "--config", str(DIGITS), "--trainer.default_root_dir", str(self.run),
                *SMALL, *(["--ckpt_path", "last"] if self.last.is_file() else [])]
        environ = {**os.environ, "OMP_NUM_THREADS": "1", "CRASH_FLAG": str(self.flag),
                   "CRASH_MARKS": str(self.marks), **env}
        self.flag.unlink(missing_ok=True)
        self.record.runs += 1
        with self.log.open("a") as log:
            log.write(f"\n=== {' '.join(argv[-2:])} {env}\n")
            log.flush()
            return subprocess.Popen([sys.executable, str(self.script), *argv], cwd=self.run.parent, env=environ,
                                    stdout=subprocess.DEVNULL, stderr=log)

    def wait_until(self, proc: subprocess.Popen, condition, what: str) -> bool:
        """Watch the checkpoints until ``condition()`` holds (True) or the run ends (False)."""
        deadline = time.monotonic() + WAIT_S
        while not condition():
            if proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"timed out waiting for {what}; see {self.log}"
            self.watch()
            time.sleep(0.25)
        return True

    def finish(self, proc: subprocess.Popen) -> int:
        try:
            self.wait_until(proc, lambda: False, "the run to end")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.watch()
        return proc.returncode

    def interrupt(self, kill: Kill) -> None:
        """Start a run and interrupt it as ``kill`` says (a forced kill the run cannot reach is skipped)."""
        held, resumed = self.held_step(), self.last.is_file()
        env: dict[str, str] = {}
        if kill.when == "write":
            if held >= MAX_STEPS:
                return
            stall_step = kill.step or self.rng.randrange(held + EVERY, MAX_STEPS + 1, EVERY)
            assert stall_step > held and stall_step % EVERY == 0
            env["CRASH_STALL_WRITE"] = str(stall_step)
        elif kill.when == "restore":
            if not resumed:
                return
            env["CRASH_STALL_RESTORE"] = "1"
        temporary = set(self.last.parent.glob(".*.tmp"))
        notices = self.log.read_text().count("Ctrl-C: stopping") if self.log.is_file() else 0
        proc = self.start(**env)
        training = lambda: any(self.marks.glob(f"train_started.{proc.pid}"))
        sent = False
        try:
            if kill.when in ("write", "restore"):
                reached = self.wait_until(proc, self.flag.exists, f"the forced {kill.when} stall")
                assert reached, f"the run ended before its forced {kill.when} stall; see {self.log}"
            else:
                if kill.when == "training" and not self.wait_until(proc, training, "training to start"):
                    return  # it finished first
                span = (MAX_STEPS - held) * self.step_time if kill.when == "training" else self.duration
                moment = time.monotonic() + self.rng.uniform(0, span)
                self.wait_until(proc, lambda: time.monotonic() > moment, "the kill time")
            if proc.poll() is not None:
                return  # ended before the kill
            os.kill(proc.pid, kill.signal)
            sent = True
            if kill.signal == signal.SIGINT and kill.when == "write":
                # The first Ctrl-C waits for the end of the step, which the stalled write never reaches; the
                # second stops at once. Sent once the first has been handled: two pending SIGINTs count as one.
                self.wait_until(proc, lambda: self.log.read_text().count("Ctrl-C: stopping") > notices,
                                "the first Ctrl-C")
                os.kill(proc.pid, signal.SIGINT)
        finally:
            code = self.finish(proc)
        if not sent:
            return
        if kill.signal == signal.SIGKILL:
            assert code == -signal.SIGKILL
        wrote = bool(set(self.last.parent.glob(".*.tmp")) - temporary)  # SIGKILL in a write leaves its temporary
        if kill.when == "write" and kill.signal == signal.SIGKILL:  # the half-written file was never renamed
            assert wrote, "no temporary file of the killed write"
            assert self.held_step() == stall_step - EVERY  # the previous last.ckpt is intact (0: none yet)
        elif kill.when == "write":  # Ctrl-C twice: the interrupted write's state, written again in full
            assert self.held_step() == stall_step
        phase = kill.when if kill.when in ("write", "restore") else "in a write" if wrote else \
            "while training" if training() else "while restoring" if resumed else "while starting"
        self.record.kills[kill.signal.name, ("forced " if kill.when in ("write", "restore") else "") + phase] += 1

    def complete(self) -> dict:
        """Run (resume) to the end; the final checkpoint."""
        assert self.finish(self.start()) == 0, f"the final run failed; see {self.log}"
        final = load_checkpoint(self.last)
        assert final["global_step"] == MAX_STEPS
        return final


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, tuple[float, float]]:
    """The uninterrupted run's final checkpoint and its wall-clock durations: in all (process start to end) and
    per training step (from the start of training to the last checkpoint)."""
    trial = Trial(tmp_path_factory.mktemp("reference"), random.Random(0), (0.0, 0.0), Record())
    start = time.monotonic()
    final = trial.complete()
    total = time.monotonic() - start
    training = trial.last.stat().st_mtime - next(trial.marks.glob("train_started.*")).stat().st_mtime
    return final, (total, training / MAX_STEPS)


def run_trial(root: Path, kills: list[Kill], reference: tuple[dict, tuple[float, float]], rng: random.Random,
              record: Record) -> None:
    final_expected, durations = reference
    trial = Trial(root, rng, durations, record)
    for kill in kills:
        trial.interrupt(kill)
    assert_same_training_state(trial.complete(), final_expected)
    record.trials += 1
    record.observations += trial.watch.observations


@pytest.mark.parametrize("kills", [
    # the write of the last checkpoint (step 12), then the run resuming from step 10: an epoch's last step, so the
    # resumed run starts the next epoch (in the order the uninterrupted run draws)
    pytest.param([Kill(signal.SIGKILL, "write", 12), Kill(signal.SIGKILL, "restore")],
                 id="sigkill-in-write-then-in-restore"),
    # Ctrl-C twice in a write (the step-4 state is written again in full; the resumed run continues inside epoch 0),
    # then once while the resumed run trains
    pytest.param([Kill(signal.SIGINT, "write", 4), Kill(signal.SIGINT, "training")],
                 id="ctrl-c-twice-in-write-then-while-training"),
])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, reference, kills):
    run_trial(tmp_path, kills, reference, random.Random(0), Record())


@pytest.mark.slow
def test_killed_anywhere_many_times_training_resumes_to_the_uninterrupted_result(tmp_path, reference):
    trials = int(os.environ.get("PERCEIVER_CRASH_TRIALS", "20"))
    rng = random.Random(2024)
    record = Record()
    kill, ctrl_c = signal.SIGKILL, signal.SIGINT
    modes = [(kill, "random")] * 3 + [(ctrl_c, "random")] * 2 + [(kill, "training")] * 2 + [
        (ctrl_c, "training"), (kill, "write"), (ctrl_c, "write"), (kill, "restore"), (ctrl_c, "restore")]
    start = time.monotonic()
    for i in range(trials):
        kills = [Kill(*rng.choice(modes)) for _ in range(rng.randint(1, 3))]
        run_trial(tmp_path / f"trial{i}", kills, reference, rng, record)
    kills = ", ".join(f"{n} {sig} {phase}" for (sig, phase), n in sorted(record.kills.items()))
    print(f"\ncrash trials: {record.trials} trials, {record.runs} runs, {sum(record.kills.values())} kills ({kills}), "
          f"{record.observations} checkpoint observations, all bit-identical to the uninterrupted run; "
          f"{time.monotonic() - start:.0f} s (an uninterrupted run: {reference[1][0]:.1f} s, "
          f"{reference[1][1]:.2f} s a training step)")
