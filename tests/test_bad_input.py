"""Bad input raises a ValueError/TypeError naming the argument, the expected and the received shape,
before any computation (attention is patched to fail if it is ever reached)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import small_image_classifier_config

from perceiver_io import (
    DecoderConfig,
    EncoderConfig,
    ImageInputAdapter,
    ImageInputAdapterConfig,
    PerceiverDecoder,
    PerceiverEncoder,
    PerceiverIO,
    PositionEncodingConfig,
    TextInputAdapter,
    TextInputAdapterConfig,
)


@pytest.fixture(autouse=True)
def no_attention(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("computation started before the input was checked")

    monkeypatch.setattr(F, "scaled_dot_product_attention", fail)


@pytest.fixture
def encoder() -> PerceiverEncoder:
    return PerceiverEncoder(EncoderConfig(num_input_channels=5, num_latents=4, num_latent_channels=8,
                                          num_blocks=1, num_self_attends_per_block=1, num_self_attend_heads=2))


@pytest.fixture
def decoder() -> PerceiverDecoder:
    q = PositionEncodingConfig("fourier", (4, 5), num_bands=2)
    return PerceiverDecoder(DecoderConfig(8, query=q, num_output_channels=3))


@pytest.mark.parametrize(
    "inputs,mask,error,pattern",
    [
        (torch.randn(2, 7), None, ValueError, r"inputs: expected shape \[B, M, 5\], got \[2, 7\]"),
        (torch.randn(2, 7, 6), None, ValueError, r"inputs: expected shape \[B, M, 5\], got \[2, 7, 6\]"),
        (torch.randint(0, 3, (2, 7, 5)), None, TypeError, r"inputs: expected a floating-point tensor, got dtype torch.int64"),
        ([[0.0] * 5], None, TypeError, r"inputs: expected a torch.Tensor of shape \[B, M, 5\], got list"),
        (torch.randn(2, 7, 5), torch.ones(2, 6, dtype=torch.bool), ValueError, r"input_mask: expected shape \[2, 7\], got \[2, 6\]"),
        (torch.randn(2, 7, 5), torch.ones(7, dtype=torch.bool), ValueError, r"input_mask: expected shape \[2, 7\], got \[7\]"),
        (torch.randn(2, 7, 5), torch.ones(2, 7), TypeError, r"input_mask: expected a bool or integer"),
    ],
)
def test_encoder_bad_input(encoder, inputs, mask, error, pattern):
    with pytest.raises(error, match=pattern):
        encoder(inputs, mask)


def test_decoder_bad_input(decoder):
    z = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match=r"latents: expected shape \[B, N, 8\], got \[2, 4, 9\]"):
        decoder(torch.randn(2, 4, 9))
    with pytest.raises(ValueError, match=r"subsampled_output_points: expected indices in \[0, 20\), got values in \[0, 20\]"):
        decoder(z, subsampled_output_points=torch.tensor([0, 20]))
    with pytest.raises(TypeError, match="subsampled_output_points: expected an integer tensor, got dtype torch.float32"):
        decoder(z, subsampled_output_points=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"subsampled_output_points: expected shape \[n\], got \[1, 2\]"):
        decoder(z, subsampled_output_points=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="chunk_size: expected a positive int, got 0"):
        decoder(z, chunk_size=0)
    with pytest.raises(ValueError, match=r"queries: expected shape \[2, O, 10\], got \[2, 3, 4\]"):
        decoder(z, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"query_mask: expected shape \[2, 20\], got \[2, 19\]"):
        decoder(z, query_mask=torch.ones(2, 19, dtype=torch.bool))
    given = PerceiverDecoder(DecoderConfig(8, query=None, num_query_channels=6))
    with pytest.raises(ValueError, match="queries: this decoder has no query provider"):
        given(z)


def test_adapter_bad_input():
    image = ImageInputAdapter(ImageInputAdapterConfig((3, 8, 10), position_encoding=PositionEncodingConfig("fourier", (8, 10), num_bands=2)))
    with pytest.raises(ValueError, match=r"pixel_values: expected shape \[B, 3, H, W\], got \[2, 8, 10, 3\]"):
        image(torch.randn(2, 8, 10, 3))
    learned = ImageInputAdapter(ImageInputAdapterConfig((3, 8, 10), prep_type="conv1x1", num_conv_channels=4,
                                                        position_encoding=PositionEncodingConfig("trainable", num_channels=4)))
    with pytest.raises(ValueError, match=r"pixel_values: expected images of 8x10 pixels .* got 10x8; .*interpolate_pos_encoding=True"):
        learned(torch.randn(1, 3, 10, 8))
    conv = ImageInputAdapter(ImageInputAdapterConfig((3, 8, 8), prep_type="conv", conv_padding="transformers"))
    with pytest.raises(ValueError, match=r"pixel_values: an image of \[2, 2\] pixels is too small for prep_type='conv'"):
        conv(torch.randn(1, 3, 2, 2))
    with pytest.raises(TypeError, match="pixel_values: expected a floating-point tensor, got dtype torch.uint8"):
        image(torch.zeros(2, 3, 8, 10, dtype=torch.uint8))
    text = TextInputAdapter(TextInputAdapterConfig(vocab_size=262, max_seq_len=8, num_channels=4))
    with pytest.raises(ValueError, match="input_ids: expected at most max_seq_len=8 tokens, got 9"):
        text(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids: expected ids in \[0, 262\), got values in \[0, 262\]"):
        text(torch.tensor([[0, 262]]))
    with pytest.raises(TypeError, match="input_ids: expected an integer tensor, got dtype torch.float32"):
        text(torch.zeros(1, 3))


def test_model_bad_input_and_composition():
    model = PerceiverIO.from_config(small_image_classifier_config())
    with pytest.raises(ValueError, match=r"pixel_values: expected shape \[B, 3, H, W\], got \[1, 4, 10, 8\]"):
        model(torch.randn(1, 4, 10, 8))
    with pytest.raises(ValueError, match="output_chunk_size: expected a positive int, got 0"):
        model(torch.randn(1, 3, 8, 10), output_chunk_size=0)
    cfg = small_image_classifier_config()
    with pytest.raises(ValueError, match="encoder.num_input_channels: 99 was given, but the adjacent parts produce 21"):
        PerceiverIO.from_config(cfg.replace(encoder=cfg.encoder.replace(num_input_channels=99)))
    with pytest.raises(ValueError, match="decoder.num_latent_channels: 12 was given, but the adjacent parts produce 24"):
        PerceiverIO.from_config(cfg.replace(decoder=cfg.decoder.replace(num_latent_channels=12)))
    # modules built for other sizes are refused when composed
    other = PerceiverIO.from_config(small_image_classifier_config(image_shape=(2, 8, 10), num_cross_attend_heads=2))
    with pytest.raises(ValueError, match="encoder.num_input_channels: 20 was given, but the adjacent parts produce 21"):
        PerceiverIO(model.input_adapter, other.encoder, model.decoder, model.output_adapter)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(num_latents=0), "num_latents: expected a positive int, got 0"),
        (dict(num_self_attend_heads=3), r"qk_channels: 8 channels must be divisible by num_heads=3"),
        (dict(activation="swish"), r"activation: expected one of \['gelu_tanh', 'gelu'\], got 'swish'"),
        (dict(cross_attention_shape_for_attn="k"), "cross_attention_shape_for_attn"),
    ],
)
def test_bad_encoder_config(kwargs, pattern):
    cfg = dict(num_input_channels=5, num_latents=4, num_latent_channels=8, num_blocks=1,
               num_self_attends_per_block=1, num_self_attend_heads=2)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        PerceiverEncoder(EncoderConfig(**cfg))


def test_bad_decoder_config():
    q = PositionEncodingConfig("fourier", (4, 5), num_bands=2)
    with pytest.raises(ValueError, match="num_query_channels: the query encoding makes 10 channels, got num_query_channels=7"):
        DecoderConfig(8, query=q, num_query_channels=7)
    with pytest.raises(ValueError, match="num_query_channels: required to build a decoder on its own"):
        PerceiverDecoder(DecoderConfig(8, query=None))
    with pytest.raises(ValueError, match=r"query: index_dims \(the output grid\) is required"):
        DecoderConfig(8, query=PositionEncodingConfig("trainable", num_channels=4))
