"""Image classification training: cross-entropy with label smoothing, accuracy with torchmetrics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics

from ..models.image import ImageClassifier
from .task import PerceiverTask


class ImageClassificationTask(PerceiverTask):
    """Trains an :class:`~perceiver_io.models.ImageClassifier`.

    Batches are ``(pixel_values [B, C, H, W], labels)`` with ``labels`` class ids ``[B]`` or soft
    targets ``[B, K]`` (MixUp/CutMix). ``label_smoothing`` as in the official recipe (0.1).
    All other arguments: :class:`~perceiver_io.training.task.PerceiverTask`.
    """

    model_class = ImageClassifier

    def __init__(self, *args: Any, label_smoothing: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing
        num_classes = self.model.output_adapter.config.num_classes
        self.train_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.val_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.test_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        adapter = self.model.input_adapter.config
        classes = self.model.output_adapter.config.num_classes
        shape = tuple(getattr(data, "image_shape", adapter.image_shape))
        # Fourier-position models take any image size; channels must match, and a learned position
        # table its own size unless it interpolates.
        fixed_size = adapter.position_encoding.kind == "trainable" and not adapter.interpolate_pos_encoding
        expected = adapter.image_shape if fixed_size else (adapter.image_shape[0], "H", "W")
        if shape[0] != adapter.image_shape[0] or (fixed_size and shape != adapter.image_shape):
            raise ValueError(f"data: the model takes images of shape {expected}, the data gives {shape}")
        if getattr(data, "num_classes", classes) != classes:
            raise ValueError(f"data: the model has {classes} classes, the data has {data.num_classes}")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_model(pixel_values)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self._loss(logits, labels)
        hard = labels.argmax(-1) if labels.dim() == 2 else labels
        self.train_accuracy(logits, hard)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_accuracy, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, labels = batch
        logits = self(images)
        metric = self.val_accuracy if stage == "val" else self.test_accuracy
        metric(logits, labels)
        self.log(f"{stage}/loss", F.cross_entropy(logits.float(), labels), sync_dist=True)
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).argmax(-1)
