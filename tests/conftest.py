from __future__ import annotations

import pytest
import torch

from perceiver_io import (
    ClassificationOutputAdapterConfig,
    DecoderConfig,
    EncoderConfig,
    ImageInputAdapterConfig,
    PerceiverIO,
    PerceiverIOConfig,
    PositionEncodingConfig,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def small_image_classifier_config(image_shape=(3, 8, 10), num_classes=7, **encoder_overrides) -> PerceiverIOConfig:
    c, h, w = image_shape
    encoder = dict(
        num_latents=6,
        num_latent_channels=24,
        num_blocks=2,
        num_self_attends_per_block=2,
        num_cross_attend_heads=3,
        num_self_attend_heads=3,
    )
    encoder.update(encoder_overrides)
    return PerceiverIOConfig(
        ImageInputAdapterConfig(image_shape, position_encoding=PositionEncodingConfig("fourier", num_bands=4)),
        EncoderConfig(**encoder),
        DecoderConfig(
            query=PositionEncodingConfig("trainable", (1,), num_channels=24),
            num_output_channels=num_classes,
            use_query_residual=True,
        ),
        ClassificationOutputAdapterConfig(num_classes),
    )


@pytest.fixture
def image_classifier() -> PerceiverIO:
    return PerceiverIO.from_config(small_image_classifier_config()).eval()
