"""Label input adapter: a class label (one-hot or logits ``[B, K]``) as one token (official ``OneHotPreprocessor``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.registry import register
from ..core.validation import check_model_input, check_positive, check_tensor
from .base import InputAdapter, InputAdapterConfig


@dataclass
class LabelInputAdapterConfig(InputAdapterConfig):
    """``[B, num_classes]`` -> one token ``[B, 1, num_classes]``."""

    num_classes: int

    def __post_init__(self) -> None:
        check_positive("num_classes", self.num_classes)

    @property
    def num_input_channels(self) -> int:
        return self.num_classes


@register("label_input", LabelInputAdapterConfig)
class LabelInputAdapter(InputAdapter):
    def __init__(self, config: LabelInputAdapterConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_tensor("label", inputs, ("B", self.config.num_classes), floating=True)
        return check_model_input("label", inputs, self)[:, None, :]
