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


@pytest.fixture
def recompute_every_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recompute marked activations of any size: the tests' layers are far below the size from which the library
    recomputes them (``core.recompute.MIN_ELEMENTS``), and these tests are about the recomputation itself."""
    from perceiver_io.core import recompute

    monkeypatch.setattr(recompute, "MIN_ELEMENTS", 0)


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


def attention_layers() -> dict[str, torch.nn.Module]:
    """One small layer of each kind (seeded): self-attention, cross-attention over inputs narrower than its one head
    (the absorbed path in full precision), with several heads, and without the query residual."""
    from perceiver_io.core import CrossAttentionLayer, SelfAttentionLayer

    torch.manual_seed(0)
    return {
        "self": SelfAttentionLayer(16, num_heads=2),
        "cross, absorbed": CrossAttentionLayer(16, 5, num_heads=1, qk_channels=16),
        "cross, projected": CrossAttentionLayer(16, 12, num_heads=4, qk_channels=8),
        "cross, no query residual": CrossAttentionLayer(16, 12, num_heads=2, use_query_residual=False),
    }


def attention_layer_inputs(layer: torch.nn.Module, masked: bool, num_queries: int = 6):
    """Seeded ``x_q [2, num_queries, 16]``, ``x_kv [2, 30, C]`` (the layer's kv channels) and, if ``masked``, a key
    mask (a query mask for self-attention)."""
    g = torch.Generator().manual_seed(1)
    cross = hasattr(layer, "kv_norm")
    x_q = torch.randn(2, num_queries, 16, generator=g)
    x_kv = torch.randn(2, 30, layer.kv_norm.normalized_shape[0] if cross else 16, generator=g)
    mask = (torch.rand(2, 30 if cross else num_queries, generator=g) > 0.3) if masked else None
    return x_q, x_kv, mask


def attention_layer_step(layer, x_q, x_kv, mask=None, backward: int = 1, autocast: bool = False, after_forward=None):
    """Output and every gradient (inputs', then parameters'; None for a self-attention layer's x_kv) of one forward
    of ``layer`` (under bf16 autocast if ``autocast``) and ``backward`` backward passes through it (a retained
    graph); ``after_forward()`` runs between the two."""
    from perceiver_io.core import SelfAttentionLayer

    self_attention = isinstance(layer, SelfAttentionLayer)
    x_q, x_kv = x_q.clone().requires_grad_(), x_kv.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = layer(x_q, mask) if self_attention else layer(x_q, x_kv, mask)
    if after_forward is not None:
        after_forward()
    for i in range(backward):
        out.float().pow(2).sum().backward(retain_graph=i + 1 < backward)
    grads = [x_q.grad, None if self_attention else x_kv.grad, *(p.grad for p in layer.parameters())]
    layer.zero_grad(set_to_none=True)
    return out.detach(), grads


def assert_bitwise_equal(got, expected) -> None:
    """Outputs and gradient lists of two :func:`attention_layer_step` runs are the same bits (None where None)."""
    assert got[0].dtype == expected[0].dtype and torch.equal(got[0], expected[0])
    for a, b in zip(got[1], expected[1], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
