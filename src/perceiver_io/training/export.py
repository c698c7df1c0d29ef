"""Export a training checkpoint to the ``save_pretrained`` format (config.json + model.safetensors)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.perceiver import PerceiverIO, PerceiverIOConfig
from ..serialization import _MODEL_TYPES
from .checkpoint_io import read_checkpoint

TASK_KEY = "perceiver_io_task"
MODEL_TYPE_KEY = "perceiver_io_model_type"
MODEL_CONFIG_KEY = "perceiver_io_model_config"


def export_checkpoint(checkpoint: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> PerceiverIO:
    """Rebuild the trained model from a checkpoint (no pickle) and ``save_pretrained`` it."""
    path = Path(checkpoint)
    data = read_checkpoint(path)
    if MODEL_TYPE_KEY not in data or MODEL_CONFIG_KEY not in data:
        raise ValueError(f"{path}: not a perceiver-io training checkpoint (no model config inside)")
    cls = _MODEL_TYPES.get(data[MODEL_TYPE_KEY])
    if cls is None:
        raise ValueError(f"{path}: unknown model type {data[MODEL_TYPE_KEY]!r}")
    model = cls.from_config(PerceiverIOConfig.from_dict(data[MODEL_CONFIG_KEY]))
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    model.save_pretrained(output_dir)
    return model.eval()


def load_task(checkpoint: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
    """Rebuild the training task (LightningModule) of a checkpoint with its weights.

    Use this instead of ``LightningModule.load_from_checkpoint``, which reads pickles only.
    """
    from .cli import TASKS, task_class

    path = Path(checkpoint)
    data = read_checkpoint(path)
    name = data.get(TASK_KEY)
    classes = {task_class(t).__name__: task_class(t) for t in TASKS}
    if name not in classes:
        raise ValueError(f"{path}: not a perceiver-io training checkpoint (task {name!r})")
    hparams = {k: v for k, v in data.get("hyper_parameters", {}).items() if not k.startswith("_")}
    task = classes[name](**hparams)
    task.load_state_dict(data["state_dict"], strict=True)
    return task
