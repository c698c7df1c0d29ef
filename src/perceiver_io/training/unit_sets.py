"""Unit-set training: a pointer loss over the entities plus a set-level cross-entropy, for both set models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics

from ..adapters.sets import SetOutputs
from ..data.unit_sets import IGNORE_INDEX  # the pointer target of a padding entity (cross-entropy's ignore index)
from ..models.sets import SetPerceiverIO, SetTransformerBaseline
from .task import PerceiverTask


def set_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model inputs of a collated unit-set batch (``continuous`` and ``categorical``)."""
    return {key: batch[key] for key in ("continuous", "categorical") if key in batch}


def pointer_loss(pointer_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``pointer_logits [B, M, M]`` against target indices ``[B, M]`` over the
    real entities (target ``-100`` = padding, ignored)."""
    return F.cross_entropy(pointer_logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)


def pointer_hits(pointer_logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, counted)``: how many real entities point at their target, and how many real entities."""
    real = target != IGNORE_INDEX
    correct = (pointer_logits.argmax(-1) == target) & real
    return correct.sum(), real.sum()


class UnitSetTask(PerceiverTask):
    """Trains a :class:`~perceiver_io.models.SetPerceiverIO` or its Transformer baseline
    (:class:`~perceiver_io.models.SetTransformerBaseline`): presets ``unit_sets`` and ``unit_sets_transformer``.

    Batches are the dicts of :func:`perceiver_io.data.unit_sets.collate_unit_sets`: ``continuous [B, M, F]``,
    ``categorical [B, M, K]``, ``mask [B, M]``, ``target [B, M]`` (the pointer target of each entity, -100 for
    padding) and ``winner [B]`` (the set-level class). Loss: ``pointer_weight`` x pointer cross-entropy over the
    real entities + ``set_weight`` x set-level cross-entropy. Logged: ``{stage}/pointer_acc`` (share of real
    entities whose highest-scoring entity is their target) and ``{stage}/set_acc``.
    All other arguments: :class:`~perceiver_io.training.task.PerceiverTask`.
    """


    model_class = (SetPerceiverIO, SetTransformerBaseline)

    def __init__(self, *args: Any, pointer_weight: float = 1.0, set_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("pointer_weight", pointer_weight), ("set_weight", set_weight)):
            if not value >= 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {value!r}")
        self.pointer_weight, self.set_weight = pointer_weight, set_weight
        classes = self.model.output_adapter.config.num_classes
        # Keyed "<stage>_": a ModuleDict key "train" would shadow nn.Module.train.
        self.pointer_accuracy = torch.nn.ModuleDict({f"{s}_": torchmetrics.MeanMetric() for s in ("train", "val", "test")})
        self.set_accuracy = torch.nn.ModuleDict(
            {f"{s}_": torchmetrics.Accuracy(task="multiclass", num_classes=classes) for s in ("train", "val", "test")}
        )

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        adapter = self.model.input_adapter.config
        for name, expected in (("num_continuous", adapter.num_continuous), ("categories", tuple(adapter.categories))):
            found = getattr(data, name, expected)
            if (tuple(found) if isinstance(found, (list, tuple)) else found) != expected:
                raise ValueError(f"data: the model takes {name}={expected}, the data gives {found}")
        max_units = getattr(data, "max_units", adapter.max_set_size)
        if max_units > adapter.max_set_size:
            raise ValueError(f"data: sets of up to {max_units} units, the model takes at most {adapter.max_set_size}")

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> SetOutputs:
        return self.forward_model(inputs, mask)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self(set_inputs(batch), batch["mask"])
        pointer = pointer_loss(out.pointer_logits, batch["target"])
        winner = F.cross_entropy(out.set_logits.float(), batch["winner"])
        loss = self.pointer_weight * pointer + self.set_weight * winner
        correct, counted = pointer_hits(out.pointer_logits, batch["target"])
        pointer_accuracy, set_accuracy = self.pointer_accuracy[f"{stage}_"], self.set_accuracy[f"{stage}_"]
        pointer_accuracy.update(correct / counted.clamp(min=1), counted)
        set_accuracy(out.set_logits, batch["winner"])
        train = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=train, batch_size=len(batch["winner"]))
        self.log(f"{stage}/pointer_loss", pointer, batch_size=len(batch["winner"]))
        self.log(f"{stage}/set_loss", winner, batch_size=len(batch["winner"]))
        self.log(f"{stage}/pointer_acc", pointer_accuracy, on_step=False, on_epoch=True, prog_bar=not train)
        self.log(f"{stage}/set_acc", set_accuracy, on_step=False, on_epoch=True, prog_bar=not train)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"target": [B, M]`` (each entity's chosen entity, -100 for padding), ``"winner": [B]}``."""
        out = self(set_inputs(batch), batch["mask"])
        chosen = out.pointer_logits.argmax(-1).masked_fill(~batch["mask"], IGNORE_INDEX)
        return {"target": chosen, "winner": out.set_logits.argmax(-1)}

    def prediction_records(self, outputs: dict[str, torch.Tensor], batch: Any, identifiers: Sequence[str],
                           top_k: int) -> list[dict[str, Any]]:
        """One row per set: ``id``, ``winner`` (the predicted set class) and ``targets`` (each entity's chosen
        entity, in entity order, padding left out, as a space-separated list)."""
        records = []
        for identifier, winner, chosen in zip(identifiers, outputs["winner"].tolist(), outputs["target"].tolist()):
            targets = " ".join(str(t) for t in chosen if t != IGNORE_INDEX)
            records.append({"id": identifier, "winner": winner, "targets": targets})
        return records
