"""Task pipelines: a model and a task in, ordinary inputs to plain Python results.

::

    import perceiver_io

    classify = perceiver_io.pipeline("image-classification", model="deepmind/vision-perceiver-conv")
    classify("photo.jpg")          # [{"label": "tabby", "score": 0.61}, ...]: the top 5
    classify(["a.jpg", "b.jpg"])   # one such list per image

==========================  =========================================  ==============================================
task                        inputs (one, or a list of them)             result (per input)
==========================  =========================================  ==============================================
``fill-mask``               text with ``[MASK]`` / ``[MASK*n]`` spans  ``{"filled_text", "spans": [candidates...]}``
``image-classification``    PIL image, image file, ``[C, H, W]``       ``[{"label", "score"}, ...]`` (top k)
``optical-flow``            a pair ``(frame1, frame2)`` of frames      ``{"flow": [H, W, 2], "image": PIL.Image}``
``multimodal-autoencoding`` video file, or ``{"image", "audio"}``      ``{"video", "audio", "label": top k, ...}``
==========================  =========================================  ==============================================

``model`` is the task's model object or a name or path that :func:`perceiver_io.from_pretrained` reads; a model of
another task is an error that names the task it fits. ``perceiver-io predict TASK --model NAME INPUTS...`` runs a
pipeline from the command line (:mod:`perceiver_io.pipelines.command`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .base import ModelLike, Pipeline
from .fill_mask import FillMaskPipeline
from .image_classification import ImageClassificationPipeline
from .multimodal import MultimodalAutoencodingPipeline
from .optical_flow import OpticalFlowPipeline

PIPELINES: dict[str, type[Pipeline]] = {
    p.task: p for p in (FillMaskPipeline, ImageClassificationPipeline, OpticalFlowPipeline,
                        MultimodalAutoencodingPipeline)
}
"""Task name -> pipeline class. Add a task: a :class:`Pipeline` subclass with its ``task`` name, listed here."""

__all__ = ["PIPELINES", "FillMaskPipeline", "ImageClassificationPipeline", "MultimodalAutoencodingPipeline",
           "OpticalFlowPipeline", "Pipeline", "check_task", "pipeline", "tasks_for"]


def check_task(task: object, name: str = "task") -> type[Pipeline]:
    """The pipeline class of ``task``; a ``ValueError`` naming ``name`` and listing the known tasks otherwise."""
    if not isinstance(task, str) or task not in PIPELINES:
        raise ValueError(f"{name}: unknown task {task!r}; known tasks: {', '.join(PIPELINES)}")
    return PIPELINES[task]


def tasks_for(model: nn.Module) -> list[str]:
    """The tasks whose pipeline takes ``model``."""
    return [task for task, cls in PIPELINES.items() if isinstance(model, cls.model_types())]


def pipeline(task: str, model: ModelLike, *, device: str | torch.device | None = None, **options: Any) -> Pipeline:
    """The pipeline for ``task`` running ``model``.

    Args:
        task: ``"fill-mask"``, ``"image-classification"``, ``"optical-flow"`` or ``"multimodal-autoencoding"``.
        model: the task's model (an ``nn.Module``: it is put in eval mode), or a name or path handed to
            :func:`perceiver_io.from_pretrained`.
        device: where the model runs (default: where it is; a loaded model: the CPU).
        options: the task's own options (``top_k``, ``class_names``, ``batch_size``, ...): see
            :class:`FillMaskPipeline`, :class:`ImageClassificationPipeline`, :class:`OpticalFlowPipeline`,
            :class:`MultimodalAutoencodingPipeline`.

    Raises:
        ValueError: an unknown task (the known ones listed); a model that cannot be loaded, or that loads as a model
            of another task (naming the task it fits).
        FileNotFoundError: nothing found at the path ``model``.
        TypeError: a model object of the wrong class; an option the task does not have.
    """
    cls = check_task(task)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model", "device")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{task}: unknown option(s) {unknown}; the {task!r} pipeline takes {accepted}")
    return cls(model, device=device, **options)
