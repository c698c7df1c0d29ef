"""Shared by the training tests: a quiet single-process CPU Trainer."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from perceiver_io.training.checkpoint_io import SafeCheckpointIO


def trainer(root: Path, **kwargs) -> pl.Trainer:
    """A CPU Trainer without logger, progress bar, summary, validation or checkpoint callback (``kwargs`` override),
    reading and writing checkpoints through :class:`SafeCheckpointIO`."""
    options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
               "enable_model_summary": False, "default_root_dir": str(root), "limit_val_batches": 0,
               "enable_checkpointing": False, "plugins": [SafeCheckpointIO()]}
    return pl.Trainer(**{**options, **kwargs})
