"""Classification output adapter: the single class query's output ``[B, 1, K]`` -> logits ``[B, K]``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.config import ComponentConfig
from ..core.validation import check_tensor
from .base import OutputAdapter, adapter


@dataclass
class ClassificationOutputAdapterConfig(ComponentConfig):
    component_type = "classification_output"
    num_classes: int


@adapter(ClassificationOutputAdapterConfig)
class ClassificationOutputAdapter(OutputAdapter):
    def __init__(self, config: ClassificationOutputAdapterConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        check_tensor("outputs", outputs, ("B", 1, self.config.num_classes))
        return outputs[:, 0]
