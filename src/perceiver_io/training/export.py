"""Export a training checkpoint to the ``save_pretrained`` format (config.json + model.safetensors)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..serialization import model_component
from .checkpoint_io import (  # noqa: F401 (the keys' historical home)
    CLASS_NAMES_KEY,
    MODEL_CONFIG_KEY,
    MODEL_TYPE_KEY,
    TASK_KEY,
    load_checkpoint,
    task_hyperparameters,
)


def export_checkpoint(checkpoint: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the trained model from a checkpoint (read with ``weights_only=True``) and ``save_pretrained`` it."""
    path = Path(checkpoint)
    data = load_checkpoint(path)
    if MODEL_TYPE_KEY not in data or MODEL_CONFIG_KEY not in data:
        raise ValueError(f"{path}: not a perceiver-io training checkpoint (no model config inside)")
    try:
        entry = model_component(data[MODEL_TYPE_KEY])
    except ValueError as e:
        raise ValueError(f"{path}: model type: {e}") from None
    model = entry.module_class.from_config(entry.config_class.from_dict(data[MODEL_CONFIG_KEY]))
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    model.save_pretrained(output_dir)
    return model.eval()


def load_task(checkpoint: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
    """Rebuild the training task (LightningModule) of a checkpoint with its weights, running no code from it.

    Like ``Task.load_from_checkpoint(path, weights_only=True)``, but it picks the task class from the
    checkpoint and calls it with the saved hyper-parameters itself: ``load_from_checkpoint`` passes
    those of a CLI-trained task through jsonargparse, which instantiates ``class_path`` values.
    """
    from . import TASKS, task_class

    path = Path(checkpoint)
    data = load_checkpoint(path)
    name = data.get(TASK_KEY)
    classes = {task_class(t).__name__: task_class(t) for t in TASKS}
    if name not in classes:
        raise ValueError(f"{path}: not a perceiver-io training checkpoint (task {name!r})")
    task = classes[name](**task_hyperparameters(data, path))
    task.load_state_dict(data["state_dict"], strict=True)
    task.on_load_checkpoint(data)
    return task
