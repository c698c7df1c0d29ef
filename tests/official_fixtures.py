"""Configs matching the small models in tests/fixtures/official, built and run with the official
JAX/haiku code (tests/fixtures/official/README.md says how). Channel widths are derived, as in the presets."""

from __future__ import annotations

from pathlib import Path

from perceiver_io import PerceiverIOConfig
from perceiver_io.adapters import (
    AudioInputAdapterConfig,
    AudioOutputAdapterConfig,
    ClassificationOutputAdapterConfig,
    FlowInputAdapterConfig,
    FlowOutputAdapterConfig,
    ImageInputAdapterConfig,
    LabelInputAdapterConfig,
    MultimodalInputAdapterConfig,
    MultimodalOutputAdapterConfig,
    TextInputAdapterConfig,
    TiedEmbeddingOutputAdapterConfig,
    VideoInputAdapterConfig,
    VideoOutputAdapterConfig,
)
from perceiver_io.core import DecoderConfig, EncoderConfig, PositionEncodingConfig
from perceiver_io.models import ImageClassifier, MaskedLanguageModel, MultimodalAutoencoder, OpticalFlow

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"


def _image_encoder() -> EncoderConfig:
    return EncoderConfig(num_latents=16, num_latent_channels=32, num_blocks=2,
                         num_self_attends_per_block=2, num_cross_attend_heads=1, num_self_attend_heads=4)


def _class_decoder(residual: bool) -> DecoderConfig:
    return DecoderConfig(query=PositionEncodingConfig("trainable", (1,), num_channels=32), num_output_channels=10,
                         num_heads=1, use_query_residual=residual)


def mlm() -> tuple[type, PerceiverIOConfig]:
    return MaskedLanguageModel, PerceiverIOConfig(
        TextInputAdapterConfig(vocab_size=262, max_seq_len=64, num_channels=32),
        EncoderConfig(num_latents=16, num_latent_channels=48, num_blocks=1,
                      num_self_attends_per_block=3, num_cross_attend_heads=4, num_self_attend_heads=4,
                      qk_channels=16, v_channels=48),
        DecoderConfig(query=PositionEncodingConfig("trainable", (64,), num_channels=32), num_heads=4, qk_channels=16, v_channels=32, use_query_residual=False),
        TiedEmbeddingOutputAdapterConfig(),
    )


def image_fourier() -> tuple[type, PerceiverIOConfig]:
    adapter = ImageInputAdapterConfig((3, 16, 20), prep_type="pixels", position_encoding=PositionEncodingConfig(
        "fourier", (16, 20), num_bands=8, max_resolution=(16, 16)))
    return ImageClassifier, PerceiverIOConfig(adapter, _image_encoder(), _class_decoder(True),
                                              ClassificationOutputAdapterConfig(10))


def image_conv() -> tuple[type, PerceiverIOConfig]:
    adapter = ImageInputAdapterConfig((3, 32, 32), prep_type="conv", num_conv_channels=64, position_encoding=(
        PositionEncodingConfig("fourier", (8, 8), num_bands=8, max_resolution=(8, 8))))
    return ImageClassifier, PerceiverIOConfig(adapter, _image_encoder(), _class_decoder(True),
                                              ClassificationOutputAdapterConfig(10))


def image_learned() -> tuple[type, PerceiverIOConfig]:
    adapter = ImageInputAdapterConfig((3, 12, 12), prep_type="conv1x1", num_conv_channels=16, position_encoding=(
        PositionEncodingConfig("trainable", (12, 12), num_channels=16, project_pos_dim=16)))
    return ImageClassifier, PerceiverIOConfig(adapter, _image_encoder(), _class_decoder(False),
                                              ClassificationOutputAdapterConfig(10))


def optical_flow() -> tuple[type, PerceiverIOConfig]:
    return OpticalFlow, PerceiverIOConfig(
        FlowInputAdapterConfig((3, 16, 24), num_patch_channels=64, num_bands=8, max_resolution=(16, 24)),
        EncoderConfig(num_latents=24, num_latent_channels=32, num_blocks=1,
                      num_self_attends_per_block=3, num_cross_attend_heads=1, num_self_attend_heads=4),
        DecoderConfig(num_output_channels=2, use_query_residual=False),
        FlowOutputAdapterConfig(),
    )


def multimodal() -> tuple[type, PerceiverIOConfig]:
    video_resolution, audio_resolution = (4, 4, 4), (4 * 64,)  # (frames, H/4, W/4), samples
    return MultimodalAutoencoder, PerceiverIOConfig(
        MultimodalInputAdapterConfig({
            "audio": AudioInputAdapterConfig(16, num_bands=16, max_resolution=audio_resolution),
            "image": VideoInputAdapterConfig(3, patch_size=4, num_bands=8, max_resolution=video_resolution),
            "label": LabelInputAdapterConfig(5),
        }, mask_probs={"audio": 0.0, "image": 0.0, "label": 1.0}, min_padding_size=4),
        EncoderConfig(num_latents=20, num_latent_channels=32, num_blocks=1,
                      num_self_attends_per_block=2, num_cross_attend_heads=1, num_self_attend_heads=4),
        DecoderConfig(num_output_channels=24, use_query_residual=False),
        MultimodalOutputAdapterConfig({
            "audio": AudioOutputAdapterConfig(16, num_bands=16, max_resolution=audio_resolution),
            "image": VideoOutputAdapterConfig(3, num_bands=8, max_resolution=video_resolution),
            "label": ClassificationOutputAdapterConfig(5, query=PositionEncodingConfig("trainable", (1,), num_channels=40)),
        }, min_padding_size=2),
    )


FAMILIES = {f.__name__: f for f in (mlm, image_fourier, image_conv, image_learned, optical_flow, multimodal)}
