"""``perceiver-io <task> {fit,validate,test,predict} --config FILE.yaml``: LightningCLI per task.

Every run checkpoints every ``checkpoint.every_n_train_steps`` steps and at the end (``last.ckpt``),
and on an exception or Ctrl-C: standard Lightning ``.ckpt`` files, written atomically and read only
with ``torch.load(weights_only=True)`` (:class:`SafeCheckpointIO`); ``--ckpt_path last`` resumes, with the
random generators' states (:class:`~perceiver_io.training.resume.ExactResume`) and the position in the epoch
(:class:`~perceiver_io.data.generated.ResumableDataLoader`): a single-process run without loader workers, killed
(SIGKILL, Ctrl-C) and resumed any number of times, ends with the weights of one never interrupted, bit for bit.
CSV logging by default (``--trainer.logger`` switches to TensorBoard).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
import torch
import yaml

from . import TASK_HELP, task_class
from .checkpoint_io import SafeCheckpointIO, load_checkpoint, task_hyperparameters
from .predictions import PredictionWriter
from .resume import ExactResume


class InterruptCheckpoint(pl.Callback):
    """Checkpoints a training run that stops abnormally, next to its other checkpoints.

    Ctrl-C (``KeyboardInterrupt``) writes ``last.ckpt``, so ``--ckpt_path last`` resumes from the
    interrupted step; any other exception writes ``on_exception.ckpt`` and leaves ``last.ckpt``
    (the last good state) alone. Writes go through the trainer's checkpoint IO (atomic).

    During a single-process ``fit``, Ctrl-C (SIGINT) stops the run at the end of the training step under way, not in
    the middle of it: an optimiser step cut short leaves some weights updated and others not, and a step half done
    has drawn random numbers and a batch that its checkpoint would not account for. At a step's end, the checkpoint
    is exactly what every ``checkpoint.every_n_train_steps`` checkpoint is, and resuming from it continues the run
    as if it had not stopped (with :class:`~perceiver_io.training.resume.ExactResume` and a
    :class:`~perceiver_io.data.generated.ResumableDataLoader`). A second Ctrl-C stops at once; its ``last.ckpt`` is
    written unless it falls inside a training step (forward, backward, optimiser step), and resuming from it need
    not be exact.

    Nothing is written unless the run is a ``fit`` that has made at least one optimiser step, and
    ``last.ckpt`` is only replaced by a newer state (a larger step than the one it holds): an
    interrupted ``validate``/``test``/``predict``, a run stopped by a configuration or data error
    before its first step, or a Ctrl-C while a resumed run is still restoring its checkpoint leave
    every checkpoint as it was.
    Lightning's ``OnExceptionCheckpoint`` is not used: its file is deleted again when a later run
    finishes, and its presence makes every ``fit`` resume implicitly.
    """

    def __init__(self) -> None:
        self._previous_handler: Any = None
        self._stop_requested = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only the main thread may set signal handlers; DDP ranks would stop at different steps and wait for each
        # other forever, so they keep Python's (immediate) KeyboardInterrupt.
        self._stop_requested = False
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._request_stop)

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        print("\nCtrl-C: stopping at the end of this training step (Ctrl-C again stops at once)", file=sys.stderr,
              flush=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handler()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        # Only our own: after a KeyboardInterrupt Lightning ignores SIGINT while it shuts down.
        if self._previous_handler is not None and signal.getsignal(signal.SIGINT) == self._request_stop:
            signal.signal(signal.SIGINT, self._previous_handler)
        self._previous_handler = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.global_step == 0:
            return
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None) or str(Path(trainer.default_root_dir) / "checkpoints")
        name = "last.ckpt" if isinstance(exception, KeyboardInterrupt) else "on_exception.ckpt"
        path = Path(dirpath) / name
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if isinstance(exception, KeyboardInterrupt) and progress.started > progress.processed:
            # a forced stop inside forward/backward/optimiser step: the weights may be half updated, and last.ckpt
            # is what --ckpt_path last resumes (on_exception.ckpt, for a look at a failure, is written regardless)
            rank_zero_info(f"{type(exception).__name__} inside a training step: {path} not written")
            return
        held = _saved_step(path)
        if held is not None and held >= trainer.global_step:
            rank_zero_info(f"{type(exception).__name__}: {path} (step {held}) is up to date; not replaced")
            return
        trainer.save_checkpoint(str(path), weights_only=False)
        rank_zero_info(f"checkpoint written on {type(exception).__name__}: {path} (step {trainer.global_step})")


def _saved_step(path: Path) -> int | None:
    """The ``global_step`` a checkpoint file holds, or None when there is no readable one."""
    if not path.is_file():
        return None
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    except Exception:  # a broken file is no state to protect
        return None
    return step if isinstance(step, int) else None


class PerceiverCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.save_last": True,
            "checkpoint.every_n_train_steps": 200,
            "checkpoint.save_top_k": -1,
            "checkpoint.filename": "step-{step}",
        })
        # predict writes its rows to a file (--predictions.path, .format, .top_k); fit/validate/test ignore it.
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def predict(self, model: pl.LightningModule, **kwargs: Any) -> None:
        """``trainer.predict`` without keeping the outputs in memory: the :class:`PredictionWriter` has them."""
        if kwargs.get("return_predictions") is None:
            kwargs["return_predictions"] = False
        self.trainer.predict(model, **kwargs)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        # LightningCLI warns whenever sys.argv holds arguments besides `args`, as it always does here: `args` are
        # the command line's own arguments after the task name. Parsing is otherwise LightningCLI's.
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)

    def _parse_ckpt_path(self) -> None:
        # Lightning's own reads the checkpoint safely (torch.load(weights_only=True)) but gives its
        # hyper-parameters to jsonargparse unchecked, which instantiates any {"class_path": ...} in an
        # Any-typed argument (our `model: dict[str, Any]`), os.system included: code from plain data.
        # task_hyperparameters refuses such values; load_checkpoint names the file in its errors.
        if not self.config.get("subcommand"):
            return
        config = self.config[self.config.subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":  # Lightning resolves it later; the model arguments are needed now
            ckpt_path = str(self._checkpoint_dir(config) / "last.ckpt")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = task_hyperparameters(load_checkpoint(ckpt_path, map_location="meta"), ckpt_path)
        if hparams:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

    @staticmethod
    def _checkpoint_dir(config: Any) -> Path:
        # One checkpoint folder per run directory (not per logger version), so that a later
        # `--ckpt_path last` finds the previous invocation's last.ckpt.
        dirpath = config.get("checkpoint") is not None and config.checkpoint.get("dirpath")
        return Path(dirpath or Path(config.trainer.get("default_root_dir") or ".") / "checkpoints")

    def before_instantiate_classes(self) -> None:
        # CSV logs by default, under the run's own directory (Lightning would pick TensorBoard).
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.get("default_root_dir") or "."
        if config.get("checkpoint") is not None and not config.checkpoint.get("dirpath"):
            config.checkpoint.dirpath = str(self._checkpoint_dir(config))
        if config.trainer.get("logger") in (None, True):
            config.trainer.logger = {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": root},
            }


def run_task_cli(task: str, argv: list[str]) -> int:
    """Run ``perceiver-io <task> ...``; returns the exit code. Errors end with one line on stderr."""
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    quiet_known_notices()
    try:
        argv = merge_nested_overrides(argv)
        PerceiverCLI(
            task_class(task),
            pl.LightningDataModule,
            subclass_mode_data=True,
            args=argv,
            trainer_defaults={"plugins": [SafeCheckpointIO()],
                              "callbacks": [InterruptCheckpoint(), ExactResume()]},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"perceiver-io {task}", "description": TASK_HELP[task][0].upper() + TASK_HELP[task][1:],
                           **({"exit_on_error": False} if argv and argv[0] not in ("-h", "--help") else {})},
        )
    except ArgumentError as e:
        print(f"perceiver-io {task}: config error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, TypeError, MisconfigurationException, ImportError) as e:
        # MisconfigurationException: a Lightning argument out of range (--trainer.max_epochs -5); ImportError: an
        # option that needs a package not installed (--trainer.accelerator tpu)
        print(f"perceiver-io {task}: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"perceiver-io {task}: error: out of memory building the run (a size too large?): {_one_line(str(e))}",
              file=sys.stderr)
        return 1
    return 0


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (an override such as ``num_classes 10**9``)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


_OVERRIDE = re.compile(r"^--model\.overrides\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z0-9_.]+)(?:=(.*))?$", re.DOTALL)


def merge_nested_overrides(argv: list[str]) -> list[str]:
    """``--model.overrides.encoder.num_latents 64 --model.overrides.encoder.dropout 0.1`` as one argument per part
    (``--model.overrides.encoder '{"num_latents": 64, "dropout": 0.1}'``).

    jsonargparse reads a dotted argument below a dict-typed one as a whole new dict for its first key, so the
    second argument above would drop the first. Values are read as YAML, as jsonargparse reads them.
    """
    parts: dict[str, dict[str, Any]] = {}
    out: list[str] = []
    i = 0
    while i < len(argv):
        match = _OVERRIDE.match(argv[i])
        if match is None:
            out.append(argv[i])
            i += 1
            continue
        part, field, value = match.groups()
        if value is None:
            if i + 1 >= len(argv):
                raise ValueError(f"{argv[i]}: expected a value")
            value, i = argv[i + 1], i + 1
        i += 1
        if part not in parts:
            parts[part] = {}
            out += [f"--model.overrides.{part}", ""]  # filled in below, at the first mention's place
        node = parts[part]
        *path, leaf = field.split(".")
        for key in path:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--model.overrides.{part}.{field}: {key} is set to a value, not to fields, by an "
                                 "earlier argument")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"--model.overrides.{part}.{field}: not a YAML value: {value!r} ({_one_line(str(e))})") \
                from None
    for part, fields in parts.items():
        out[out.index(f"--model.overrides.{part}") + 1] = json.dumps(fields)
    return out


class _DropNotices(logging.Filter):
    """Drops Lightning's advertising tips (``💡 Tip: ...``), which are not about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_known_notices() -> None:
    """Silence the known-benign notices of the training commands, each by its exact source and text.

    * Lightning's tips to install its cloud products (logged at INFO by its rank-zero logger);
    * Lightning's own use of a deprecated torch pytree API (``isinstance(treespec, LeafSpec)``), which it must
      fix, not the user;
    * LightningCLI's "Unable to serialize instance" for the fixed plugin and callback every run gets;
    * the model summary's note that it counts bf16 weights as 32-bit (only its size estimate is affected).
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"lightning\.pytorch\.utilities\._pytree")
    warnings.filterwarnings("ignore", message=r"(?s).*Unable to serialize instance", module=r"jsonargparse")
    warnings.filterwarnings("ignore", message=r"Precision \S+ is not supported by the model summary",
                            module=r"lightning\.pytorch\.utilities\.model_summary")


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines)
