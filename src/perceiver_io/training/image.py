"""Image classification training: cross-entropy with label smoothing, accuracy with torchmetrics, and
test-time augmentation (:func:`augmented_probabilities`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics

from ..models.image import ImageClassifier
from ..core.validation import check_number, check_positive
from .predictions import classification_records
from .task import PerceiverTask


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``augment(images [B, C, H, W], generator) -> images [B, C, H, W]``: one random warp per image, drawn from
``generator`` (e.g. :meth:`perceiver_io.data.DigitsDataModule.augment`)."""


def augmented_probabilities(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, augment: Augment, views: int, seed: int = 0
) -> torch.Tensor:
    """Test-time augmentation: the class probabilities ``[B, K]`` of ``images [B, C, H, W]``, averaged over the
    images themselves and ``views`` randomly warped copies (``augment``, drawing from a generator seeded with
    ``seed``, so the same call gives the same views). ``views=0`` is the model's own softmax. Probabilities are
    float32 whatever the model's dtype. Runs under the caller's grad mode (wrap it in ``torch.no_grad()``)."""
    check_positive("views", views, allow_zero=True)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    total = model(images).float().softmax(-1)
    for _ in range(views):
        total = total + model(augment(images, generator)).float().softmax(-1)
    return total / (views + 1)


class ImageClassificationTask(PerceiverTask):
    """Trains an :class:`~perceiver_io.models.ImageClassifier`.

    Batches are ``(pixel_values [B, C, H, W], labels)`` with ``labels`` class ids ``[B]`` or soft
    targets ``[B, K]`` (MixUp/CutMix). ``label_smoothing`` as in the official recipe (0.1).
    ``test_views``: test-time augmentation in ``test`` (not in validation, which runs every epoch): each
    test image's class probabilities are averaged with those of ``test_views`` copies warped by the data
    module's ``augment`` (:func:`augmented_probabilities`; the views of batch ``i`` are drawn with seed ``i``).
    0 (the default): the images alone. All other arguments: :class:`~perceiver_io.training.task.PerceiverTask`.
    """

    model_class = ImageClassifier

    def __init__(self, *args: Any, label_smoothing: float = 0.1, test_views: int = 0, **kwargs: Any) -> None:
        check_number("label_smoothing", label_smoothing, 0, 1)
        check_positive("test_views", test_views, allow_zero=True)
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing
        self.test_views = test_views
        num_classes = self.model.output_adapter.config.num_classes
        self.train_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.val_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.test_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            if self.test_views and stage == "test":  # the views come from the data module's augment
                raise ValueError("test_views: expected a data module with an augment(images, generator) method "
                                 "for test-time augmentation, got plain dataloaders; set test_views=0")
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
        if self.test_views and not callable(getattr(data, "augment", None)):
            raise ValueError(f"test_views: expected a data module with an augment(images, generator) method for "
                             f"test-time augmentation, got {type(data).__name__}; set test_views=0")
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

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> None:
        images, labels = batch
        metric = self.val_accuracy if stage == "val" else self.test_accuracy
        if stage == "test" and self.test_views:
            augment = self.trainer.datamodule.augment  # type: ignore[attr-defined]
            probabilities = augmented_probabilities(self, images, augment, self.test_views, seed=batch_idx)
            metric(probabilities, labels)
            loss = F.nll_loss(probabilities.clamp_min(torch.finfo(torch.float32).tiny).log(), labels)
        else:
            logits = self(images)
            metric(logits, labels)
            loss = F.cross_entropy(logits.float(), labels)
        self.log(f"{stage}/loss", loss, sync_dist=True)
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

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
