"""The paper's released models, configured exactly as the official code builds them.

Each preset returns a freshly initialised task model (official initialisers, tanh GELU); load
official weights with :func:`perceiver_io.convert.from_haiku`. Parameter counts equal the
official models' (checked by the tests).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..adapters.classification import ClassificationOutputAdapterConfig
from ..adapters.flow import FlowInputAdapterConfig, FlowOutputAdapterConfig
from ..adapters.image import ImageInputAdapterConfig
from ..adapters.text import TextInputAdapterConfig, TiedEmbeddingOutputAdapterConfig
from ..core.decoder import DecoderConfig
from ..core.encoder import EncoderConfig
from ..core.perceiver import PerceiverIOConfig
from ..core.position import PositionEncodingConfig
from ..adapters.multimodal import MultimodalInputAdapterConfig, MultimodalOutputAdapterConfig, MultimodalShape
from .flow import OpticalFlow
from .multimodal import MultimodalAutoencoder
from .image import ImageClassifier
from .language import MaskedLanguageModel


def language_perceiver_bytes_config(max_seq_len: int = 2048, vocab_size: int = 262) -> PerceiverIOConfig:
    """The byte-level MLM: 2048 bytes, 256 x 1280 latents, 26 self-attends, 201,108,230 parameters."""
    return PerceiverIOConfig(
        TextInputAdapterConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, num_channels=768),
        EncoderConfig(
            num_input_channels=768, num_latents=256, num_latent_channels=1280, num_blocks=1,
            num_self_attends_per_block=26, num_cross_attend_heads=8, num_self_attend_heads=8,
            qk_channels=8 * 32, v_channels=1280, use_query_residual=True,
        ),
        DecoderConfig(
            1280, query=PositionEncodingConfig("trainable", (max_seq_len,), num_channels=768),
            num_output_channels=None, num_heads=8, qk_channels=8 * 32, v_channels=768, use_query_residual=False,
        ),
        TiedEmbeddingOutputAdapterConfig(vocab_size=vocab_size),
    )


def _imagenet_encoder(num_input_channels: int) -> EncoderConfig:
    return EncoderConfig(
        num_input_channels=num_input_channels, num_latents=512, num_latent_channels=1024, num_blocks=8,
        num_self_attends_per_block=6, num_cross_attend_heads=1, num_self_attend_heads=8,
    )


def _class_query_decoder(num_classes: int, use_query_residual: bool = True) -> DecoderConfig:
    return DecoderConfig(
        1024, query=PositionEncodingConfig("trainable", (1,), num_channels=1024), num_output_channels=num_classes,
        num_heads=1, use_query_residual=use_query_residual,
    )


def imagenet_fourier_config(num_classes: int = 1000) -> PerceiverIOConfig:
    """Raw pixels + 2D Fourier features (64 bands): 50176 x 261 inputs, 48,440,627 parameters."""
    adapter = ImageInputAdapterConfig((3, 224, 224), prep_type="pixels")
    return PerceiverIOConfig(adapter, _imagenet_encoder(261), _class_query_decoder(num_classes),
                             ClassificationOutputAdapterConfig(num_classes))


def imagenet_conv_config(num_classes: int = 1000) -> PerceiverIOConfig:
    """Conv + maxpool to 56 x 56 x 64 + Fourier features (max resolution 56): 48,646,522 parameters."""
    adapter = ImageInputAdapterConfig(
        (3, 224, 224), prep_type="conv", num_conv_channels=64,
        position_encoding=PositionEncodingConfig("fourier", (56, 56), num_bands=64, max_resolution=(56, 56)),
    )
    return PerceiverIOConfig(adapter, _imagenet_encoder(322), _class_query_decoder(num_classes),
                             ClassificationOutputAdapterConfig(num_classes))


def imagenet_learned_config(num_classes: int = 1000) -> PerceiverIOConfig:
    """Conv1x1 to 256 + learned positions (projected to 256): 50176 x 512 inputs, 62,255,848 parameters."""
    adapter = ImageInputAdapterConfig(
        (3, 224, 224), prep_type="conv1x1", num_conv_channels=256,
        position_encoding=PositionEncodingConfig("trainable", (224, 224), num_channels=256, project_pos_dim=256),
    )
    return PerceiverIOConfig(adapter, _imagenet_encoder(512), _class_query_decoder(num_classes, False),
                             ClassificationOutputAdapterConfig(num_classes))


def optical_flow_config(train_size: tuple[int, int] = (368, 496)) -> PerceiverIOConfig:
    """3x3 patches of two frames + Fourier features -> 182528 x 322; 2048 x 512 latents; 41,057,134 parameters."""
    h, w = train_size
    return PerceiverIOConfig(
        FlowInputAdapterConfig((3, h, w), num_patch_channels=64, num_bands=64, max_resolution=(h, w)),
        EncoderConfig(
            num_input_channels=322, num_latents=2048, num_latent_channels=512, num_blocks=1,
            num_self_attends_per_block=24, num_cross_attend_heads=1, num_self_attend_heads=16,
        ),
        DecoderConfig(512, query=None, num_query_channels=322, num_output_channels=2, num_heads=1,
                      use_query_residual=False),
        FlowOutputAdapterConfig((h, w), rescale_factor=100.0, flow_scale_factor=20.0),
    )


def multimodal_autoencoding_config(
    num_frames: int = 16, image_size: int = 224, audio_samples_per_frame: int = 1920, num_classes: int = 700
) -> PerceiverIOConfig:
    """Kinetics-700 autoencoding: 16 x 224 x 224 video, 30720 audio samples, 700 labels; 19,858,855 parameters."""
    shape = MultimodalShape((num_frames, 3, image_size, image_size), num_frames * audio_samples_per_frame, num_classes)
    inputs = MultimodalInputAdapterConfig(shape, image_num_bands=32, audio_num_bands=192, min_padding_size=4)
    outputs = MultimodalOutputAdapterConfig(shape, image_num_bands=32, audio_num_bands=192, label_query_channels=1024,
                                            min_padding_size=2, num_decoder_channels=512)
    input_channels = max(16 + 1 + 2 * 192, 48 + 3 * (1 + 2 * 32), num_classes) + 4
    query_channels = max(1 + 2 * 192, 3 * (1 + 2 * 32), 1024) + 2
    return PerceiverIOConfig(
        inputs,
        EncoderConfig(
            num_input_channels=input_channels, num_latents=28 * 28, num_latent_channels=512, num_blocks=1,
            num_self_attends_per_block=8, num_cross_attend_heads=1, num_self_attend_heads=8,
        ),
        DecoderConfig(512, query=None, num_query_channels=query_channels, num_output_channels=512, num_heads=1,
                      use_query_residual=False),
        outputs,
    )


def digits_fourier_config() -> PerceiverIOConfig:
    """A small Perceiver IO for scikit-learn's 8x8 digits: raw pixels + 2D Fourier features, no convolutions.

    64 tokens of 1 + 2 + 4 * 16 = 67 channels, 32 latents x 96, 4 self-attends, 4 cross-attention
    heads (one head, as the ImageNet model has, learns far worse on this little data).
    """
    adapter = ImageInputAdapterConfig(
        (1, 8, 8), prep_type="pixels",
        position_encoding=PositionEncodingConfig("fourier", (8, 8), num_bands=16, max_resolution=(8, 8)),
    )
    encoder = EncoderConfig(
        num_input_channels=67, num_latents=32, num_latent_channels=96, num_blocks=1, num_self_attends_per_block=4,
        num_cross_attend_heads=4, num_self_attend_heads=4, qk_channels=96, v_channels=96,
        cross_attend_widening_factor=2, self_attend_widening_factor=2,
    )
    return PerceiverIOConfig(adapter, encoder, _class_query_decoder_small(96, 10), ClassificationOutputAdapterConfig(10))


def _class_query_decoder_small(channels: int, num_classes: int) -> DecoderConfig:
    return DecoderConfig(
        channels, query=PositionEncodingConfig("trainable", (1,), num_channels=channels),
        num_output_channels=num_classes, num_heads=1, use_query_residual=True,
    )


def language_perceiver_bytes(**kwargs) -> MaskedLanguageModel:  # type: ignore[no-untyped-def]
    return MaskedLanguageModel.from_config(language_perceiver_bytes_config(**kwargs))


def imagenet_fourier(**kwargs) -> ImageClassifier:  # type: ignore[no-untyped-def]
    return ImageClassifier.from_config(imagenet_fourier_config(**kwargs))


def imagenet_conv(**kwargs) -> ImageClassifier:  # type: ignore[no-untyped-def]
    return ImageClassifier.from_config(imagenet_conv_config(**kwargs))


def imagenet_learned(**kwargs) -> ImageClassifier:  # type: ignore[no-untyped-def]
    return ImageClassifier.from_config(imagenet_learned_config(**kwargs))


def optical_flow(**kwargs) -> OpticalFlow:  # type: ignore[no-untyped-def]
    model = OpticalFlow.from_config(optical_flow_config(**kwargs))
    with torch.no_grad():  # the official flow head starts at zero
        model.decoder.output.weight.zero_()
        model.decoder.output.bias.zero_()
    return model


def multimodal_autoencoding(**kwargs) -> MultimodalAutoencoder:  # type: ignore[no-untyped-def]
    return MultimodalAutoencoder.from_config(multimodal_autoencoding_config(**kwargs))


def digits_fourier(**kwargs) -> ImageClassifier:  # type: ignore[no-untyped-def]
    return ImageClassifier.from_config(digits_fourier_config(**kwargs))


PRESETS: dict[str, Callable[..., torch.nn.Module]] = {
    "language_perceiver_bytes": language_perceiver_bytes,
    "imagenet_fourier": imagenet_fourier,
    "imagenet_conv": imagenet_conv,
    "imagenet_learned": imagenet_learned,
    "optical_flow": optical_flow,
    "multimodal_autoencoding": multimodal_autoencoding,
    "digits_fourier": digits_fourier,  # not from the paper: the demo's small model
}
