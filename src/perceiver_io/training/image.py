"""Image classification training: cross-entropy with label smoothing, accuracy with torchmetrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics

from ..models.image import ImageClassifier
from ..core.validation import check_number
from .predictions import classification_records
from .task import PerceiverTask


class ImageClassificationTask(PerceiverTask):
    """Trains an :class:`~perceiver_io.models.ImageClassifier`.

    Batches are ``(pixel_values [B, C, H, W], labels)`` with ``labels`` class ids ``[B]`` or soft
    targets ``[B, K]`` (MixUp/CutMix). ``label_smoothing`` as in the official recipe (0.1).
    All other arguments: :class:`~perceiver_io.training.task.PerceiverTask`.
    """

    model_class = ImageClassifier

    def __init__(self, *args: Any, label_smoothing: float = 0.1, **kwargs: Any) -> None:
        check_number("label_smoothing", label_smoothing, 0, 1)
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
        found = getattr(data, "num_classes", None)
        if found is not None and found != classes:
            raise ValueError(f"data: the model has {classes} classes, the data has {found} (with a preset: "
                             f"--model.overrides.num_classes {found}, and --model.init_from to start from trained "
                             "weights)")
        self.adopt_class_names(data)

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

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"probabilities": [B, K]}`` of a batch of images (a tensor, a tuple whose first entry is the images, or
        a dict with ``pixel_values``, as :class:`~perceiver_io.data.ImageFolderDataModule` gives for predict)."""
        if isinstance(batch, dict):
            images = batch["pixel_values"]
        else:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return {"probabilities": self(images).float().softmax(-1)}

    def prediction_records(
        self, outputs: dict[str, torch.Tensor], batch: Any, identifiers: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        """One row per image: its id, known label, top-k classes with probabilities (and why it was unreadable)."""
        targets = errors = None
        if isinstance(batch, dict):
            targets, errors = batch.get("target"), batch.get("error")
        elif isinstance(batch, (tuple, list)) and len(batch) > 1:
            targets = batch[1] if batch[1].dim() == 1 else None
        return classification_records(outputs["probabilities"], identifiers, top_k, self.class_names, targets, errors)
