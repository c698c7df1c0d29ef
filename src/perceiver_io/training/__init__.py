"""Training with PyTorch Lightning: task modules, data, checkpoints loaded without running code.

``TASKS`` names each trainable task (the ``perceiver-io <task>`` command) and its LightningModule;
this module imports nothing heavy, so the command line can list the tasks without Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

# command name -> "module.Class" of its LightningModule
TASKS: dict[str, str] = {
    "image-classifier": "perceiver_io.training.image.ImageClassificationTask",
    "mlm": "perceiver_io.training.mlm.MaskedLanguageModelingTask",
    "multimodal-autoencoder": "perceiver_io.training.multimodal.MultimodalAutoencodingTask",
    "optical-flow": "perceiver_io.training.flow.OpticalFlowTask",
    "text-classifier": "perceiver_io.training.text.TextClassificationTask",
    "unit-sets": "perceiver_io.training.unit_sets.UnitSetTask",
}

# command name -> one line for `perceiver-io --help`
TASK_HELP: dict[str, str] = {
    "image-classifier": "train, evaluate and predict image classifiers (ImageNet presets, image folders, digits)",
    "mlm": "masked language modelling on UTF-8 bytes or SentencePiece tokens",
    "multimodal-autoencoder": "autoencode video + audio + label (Kinetics layout, generated clips)",
    "optical-flow": "optical flow from frame pairs (Sintel, KITTI, FlyingChairs, ...; generated pairs)",
    "text-classifier": "GLUE fine-tuning, single task or multi-task queries",
    "unit-sets": "per-entity and per-set predictions on StarCraft-like unit sets",
}


def task_class(name: str) -> Any:
    """The LightningModule class of task ``name`` (a key of ``TASKS``)."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; known tasks are {sorted(TASKS)}")
    module, _, cls = TASKS[name].rpartition(".")
    return getattr(importlib.import_module(module), cls)
