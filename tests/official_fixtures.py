"""Configs matching the small models in ../shared/fixtures/official (built with the official code)."""

from __future__ import annotations

import os
from pathlib import Path

from perceiver_io.adapters import (
    ClassificationOutputAdapterConfig,
    FlowInputAdapterConfig,
    FlowOutputAdapterConfig,
    ImageInputAdapterConfig,
    TextInputAdapterConfig,
    TiedEmbeddingOutputAdapterConfig,
)
from perceiver_io.adapters.multimodal import MultimodalInputAdapterConfig, MultimodalOutputAdapterConfig, MultimodalShape
from perceiver_io.core import DecoderConfig, EncoderConfig, PositionEncodingConfig
from perceiver_io.core.perceiver import PerceiverIOConfig
from perceiver_io.models import ImageClassifier, MaskedLanguageModel, MultimodalAutoencoder, OpticalFlow

FIXTURES = Path(os.environ.get("PERCEIVER_IO_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official"))


def _image_encoder(num_input_channels: int) -> EncoderConfig:
    return EncoderConfig(num_input_channels=num_input_channels, num_latents=16, num_latent_channels=32, num_blocks=2,
                         num_self_attends_per_block=2, num_cross_attend_heads=1, num_self_attend_heads=4)


def _class_decoder(residual: bool) -> DecoderConfig:
    return DecoderConfig(32, query=PositionEncodingConfig("trainable", (1,), num_channels=32), num_output_channels=10,
                         num_heads=1, use_query_residual=residual)


def mlm() -> tuple[type, PerceiverIOConfig]:
    return MaskedLanguageModel, PerceiverIOConfig(
        TextInputAdapterConfig(vocab_size=262, max_seq_len=64, num_channels=32),
        EncoderConfig(num_input_channels=32, num_latents=16, num_latent_channels=48, num_blocks=1,
                      num_self_attends_per_block=3, num_cross_attend_heads=4, num_self_attend_heads=4,
                      qk_channels=16, v_channels=48),
        DecoderConfig(48, query=PositionEncodingConfig("trainable", (64,), num_channels=32), num_output_channels=None,
                      num_heads=4, qk_channels=16, v_channels=32, use_query_residual=False),
        TiedEmbeddingOutputAdapterConfig(262),
    )


def image_fourier() -> tuple[type, PerceiverIOConfig]:
    adapter = ImageInputAdapterConfig((3, 16, 20), prep_type="pixels", position_encoding=PositionEncodingConfig(
        "fourier", (16, 20), num_bands=8, max_resolution=(16, 16)))
    return ImageClassifier, PerceiverIOConfig(adapter, _image_encoder(37), _class_decoder(True),
                                              ClassificationOutputAdapterConfig(10))


def image_conv() -> tuple[type, PerceiverIOConfig]:
    adapter = ImageInputAdapterConfig((3, 32, 32), prep_type="conv", num_conv_channels=64, position_encoding=(
        PositionEncodingConfig("fourier", (8, 8), num_bands=8, max_resolution=(8, 8))))
    return ImageClassifier, PerceiverIOConfig(adapter, _image_encoder(98), _class_decoder(True),
                                              ClassificationOutputAdapterConfig(10))


def image_learned() -> tuple[type, PerceiverIOConfig]:
    adapter = ImageInputAdapterConfig((3, 12, 12), prep_type="conv1x1", num_conv_channels=16, position_encoding=(
        PositionEncodingConfig("trainable", (12, 12), num_channels=16, project_pos_dim=16)))
    return ImageClassifier, PerceiverIOConfig(adapter, _image_encoder(32), _class_decoder(False),
                                              ClassificationOutputAdapterConfig(10))


def optical_flow() -> tuple[type, PerceiverIOConfig]:
    return OpticalFlow, PerceiverIOConfig(
        FlowInputAdapterConfig((3, 16, 24), num_patch_channels=64, num_bands=8, max_resolution=(16, 24)),
        EncoderConfig(num_input_channels=98, num_latents=24, num_latent_channels=32, num_blocks=1,
                      num_self_attends_per_block=3, num_cross_attend_heads=1, num_self_attend_heads=4),
        DecoderConfig(32, query=None, num_query_channels=98, num_output_channels=2, use_query_residual=False),
        FlowOutputAdapterConfig((16, 24)),
    )


def multimodal() -> tuple[type, PerceiverIOConfig]:
    shape = MultimodalShape((4, 3, 16, 16), num_audio_samples=4 * 64, num_classes=5)
    return MultimodalAutoencoder, PerceiverIOConfig(
        MultimodalInputAdapterConfig(shape, image_num_bands=8, audio_num_bands=16, min_padding_size=4),
        EncoderConfig(num_input_channels=103, num_latents=20, num_latent_channels=32, num_blocks=1,
                      num_self_attends_per_block=2, num_cross_attend_heads=1, num_self_attend_heads=4),
        DecoderConfig(32, query=None, num_query_channels=53, num_output_channels=24, use_query_residual=False),
        MultimodalOutputAdapterConfig(shape, image_num_bands=8, audio_num_bands=16, label_query_channels=40,
                                      min_padding_size=2, num_decoder_channels=24),
    )


FAMILIES = {f.__name__: f for f in (mlm, image_fourier, image_conv, image_learned, optical_flow, multimodal)}
