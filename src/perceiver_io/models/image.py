"""Image classification: the paper's three preprocessings and two decoders."""

from __future__ import annotations

import torch

from ..adapters.classification import ClassificationOutputAdapter
from ..adapters.image import ImageInputAdapter
from ..core.perceiver import PerceiverIO
from ..serialization import register_model
from .base import require


@register_model
class ImageClassifier(PerceiverIO):
    """Images ``[B, C, H, W]`` -> logits ``[B, num_classes]``.

    Preprocessing (``input_adapter.config.prep_type``): ``pixels`` + 2D Fourier features,
    ``conv1x1`` + learned positions, or ``conv`` + maxpool + Fourier features. Decoder: the
    Perceiver IO class query (``DecoderConfig``) or the original Perceiver's average-and-project
    (``AverageDecoderConfig``).
    """

    def __init__(self, input_adapter, encoder, decoder, output_adapter) -> None:  # type: ignore[no-untyped-def]
        require(self, "input_adapter", input_adapter, ImageInputAdapter)
        require(self, "output_adapter", output_adapter, ClassificationOutputAdapter)
        super().__init__(input_adapter, encoder, decoder, output_adapter)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``pixel_values [B, C, H, W]`` -> logits ``[B, num_classes]``."""
        return super().forward(pixel_values)
