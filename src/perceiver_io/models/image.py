"""Image classification: the paper's three preprocessings and two decoders."""

from __future__ import annotations

import torch

from ..adapters.classification import ClassificationOutputAdapter
from ..adapters.image import ImageInputAdapter
from ..core.registry import register
from ..perceiver import PerceiverIO, PerceiverIOConfig


@register("image_classifier", PerceiverIOConfig)
class ImageClassifier(PerceiverIO):
    """Images ``[B, C, H, W]`` -> logits ``[B, num_classes]``.

    Preprocessing (``input_adapter.config.prep_type``): ``pixels`` + 2D Fourier features,
    ``conv1x1`` + learned positions, or ``conv`` + maxpool + Fourier features. Fourier models take
    any image size (positions follow the input's grid, as the official code computes them); a
    learned-position model takes its training size, or any size with ``interpolate_pos_encoding``.
    Decoder: the Perceiver IO class query (``DecoderConfig``) or the original Perceiver's
    average-and-project (``AverageDecoderConfig``).
    """

    input_adapter_type = ImageInputAdapter
    output_adapter_type = ClassificationOutputAdapter

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``pixel_values [B, C, H, W]`` -> logits ``[B, num_classes]``."""
        return super().forward(pixel_values)
