"""``perceiver-io <task> {fit,validate,test,predict} --config FILE.yaml``: LightningCLI per task.

Every run checkpoints every ``checkpoint.every_n_train_steps`` steps and at the end (``last.ckpt``),
and on an exception or Ctrl-C: standard Lightning ``.ckpt`` files, written atomically and read only
with ``torch.load(weights_only=True)`` (:class:`SafeCheckpointIO`); ``--ckpt_path last`` resumes.
CSV logging by default (``--trainer.logger`` switches to TensorBoard).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from . import task_class
from .checkpoint_io import SafeCheckpointIO, load_checkpoint, task_hyperparameters


class InterruptCheckpoint(pl.Callback):
    """Checkpoints a run that stops abnormally, next to its other checkpoints.

    Ctrl-C (``KeyboardInterrupt``) writes ``last.ckpt``, so ``--ckpt_path last`` resumes from the
    interrupted step; any other exception writes ``on_exception.ckpt`` and leaves ``last.ckpt``
    (the last good state) alone. Writes go through the trainer's checkpoint IO (atomic).
    Lightning's ``OnExceptionCheckpoint`` is not used: its file is deleted again when a later run
    finishes, and its presence makes every ``fit`` resume implicitly.
    """

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None) or str(Path(trainer.default_root_dir) / "checkpoints")
        name = "last.ckpt" if isinstance(exception, KeyboardInterrupt) else "on_exception.ckpt"
        path = Path(dirpath) / name
        trainer.save_checkpoint(str(path))
        rank_zero_info(f"checkpoint written on {type(exception).__name__}: {path}")


class PerceiverCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.save_last": True,
            "checkpoint.every_n_train_steps": 200,
            "checkpoint.save_top_k": -1,
            "checkpoint.filename": "step-{step}",
        })

    def _parse_ckpt_path(self) -> None:
        # Lightning's own reads the checkpoint safely (torch.load(weights_only=True)) but gives its
        # hyper-parameters to jsonargparse unchecked, which instantiates any {"class_path": ...} in an
        # Any-typed argument (our `model: dict[str, Any]`), os.system included: code from plain data.
        # task_hyperparameters refuses such values; load_checkpoint names the file in its errors.
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = task_hyperparameters(load_checkpoint(ckpt_path, map_location="meta"), ckpt_path)
        if hparams:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        # CSV logs by default, under the run's own directory (Lightning would pick TensorBoard).
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.get("default_root_dir") or "."
        if config.get("checkpoint") is not None and not config.checkpoint.get("dirpath"):
            # One checkpoint folder per run directory (not per logger version), so that a later
            # `--ckpt_path last` finds the previous invocation's last.ckpt.
            config.checkpoint.dirpath = str(Path(root) / "checkpoints")
        if config.trainer.get("logger") in (None, True):
            config.trainer.logger = {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": root},
            }


def run_task_cli(task: str, argv: list[str]) -> int:
    """Run ``perceiver-io <task> ...``; returns the exit code. Errors end with one line on stderr."""
    import warnings

    from jsonargparse import ArgumentError

    # The default plugin and interrupt callback are fixed parts of every run, not config entries.
    warnings.filterwarnings("ignore", message=r"(?s).*Unable to serialize instance")

    try:
        PerceiverCLI(
            task_class(task),
            pl.LightningDataModule,
            subclass_mode_data=True,
            args=argv,
            trainer_defaults={"plugins": [SafeCheckpointIO()], "callbacks": [InterruptCheckpoint()]},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False} if argv and argv[0] not in ("-h", "--help") else None,
        )
    except ArgumentError as e:
        print(f"perceiver-io {task}: config error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"perceiver-io {task}: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    return 0


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines)
