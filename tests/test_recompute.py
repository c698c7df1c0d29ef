"""Cheap activations recomputed in the backward (core/recompute.py): the same gradients bit for bit, LayerNorm and
GELU outputs not kept by the graph, and the hooks stepping aside where others are installed."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

from perceiver_io.core import (
    CrossAttentionLayer, EncoderConfig, PerceiverEncoder, SelfAttentionLayer, set_recompute_activations,
)
from perceiver_io.core import recompute
from perceiver_io.core.recompute import recomputable, recomputing_cheap_activations

from conftest import assert_bitwise_equal, attention_layer_inputs, attention_layer_step, attention_layers

pytestmark = pytest.mark.usefixtures("recompute_every_activation")
LIBRARY_MIN_ELEMENTS = recompute.MIN_ELEMENTS  # read before the fixture lowers it


@pytest.mark.parametrize("name", list(attention_layers()))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("backward", [1, 2])  # 2: twice through a retained graph, every saved tensor unpacked again
def test_recomputed_activations_give_bitwise_the_same_output_and_gradients(name, masked, backward):
    layer = attention_layers()[name]
    inputs = attention_layer_inputs(layer, masked)
    results = {}
    for on in (False, True):
        assert set_recompute_activations(layer, on) == 1
        results[on] = attention_layer_step(layer, *inputs, backward=backward)
    assert_bitwise_equal(results[True], results[False])


def outputs_alive_after_forward(layer: nn.Module, x: torch.Tensor) -> dict[str, bool]:
    """Which of the LayerNorm and GELU outputs of one training forward the graph still holds."""
    refs: dict[str, weakref.ref] = {}
    for name, module in layer.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GELU)):
            module.register_forward_hook(lambda m, i, o, name=name: refs.__setitem__(name, weakref.ref(o)))
    out = layer(x.requires_grad_())
    gc.collect()
    alive = {name: ref() is not None for name, ref in refs.items()}
    out.sum().backward()
    return alive


def test_layer_norm_and_gelu_outputs_are_not_kept_for_the_backward():
    layer = SelfAttentionLayer(16, num_heads=2)
    assert outputs_alive_after_forward(layer, torch.randn(2, 6, 16)) == {"norm": False, "mlp_norm": False,
                                                                         "mlp.1": False}
    set_recompute_activations(layer, False)
    assert all(outputs_alive_after_forward(layer, torch.randn(2, 6, 16)).values())


def test_activations_below_the_size_threshold_are_kept_and_those_above_recomputed(monkeypatch):
    """With the library's threshold (not this file's 0): a small layer keeps its activations (recomputing them would
    save next to nothing and cost a share of a small model's step), one whose activations reach the threshold does
    not, and one element under it keeps them again. The paper-size image latents (512 x 1024) are above it."""
    assert 512 * 1024 >= LIBRARY_MIN_ELEMENTS and LIBRARY_MIN_ELEMENTS % 64 == 0
    monkeypatch.setattr(recompute, "MIN_ELEMENTS", LIBRARY_MIN_ELEMENTS)
    layer = SelfAttentionLayer(16, num_heads=2)
    assert all(outputs_alive_after_forward(layer, torch.randn(2, 6, 16)).values())
    at_threshold = torch.randn(LIBRARY_MIN_ELEMENTS // 64, 4, 16)  # many short sets: a cheap attention
    assert outputs_alive_after_forward(layer, at_threshold) == {"norm": False, "mlp_norm": False, "mlp.1": False}
    monkeypatch.setattr(recompute, "MIN_ELEMENTS", LIBRARY_MIN_ELEMENTS + 1)
    assert all(outputs_alive_after_forward(layer, at_threshold).values())


def test_other_saved_tensor_hooks_take_precedence_and_checkpointing_keeps_the_gradients():
    layer = SelfAttentionLayer(16, num_heads=2)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):  # e.g. offloading: it sees every tensor
        assert all(outputs_alive_after_forward(layer, torch.randn(2, 6, 16)).values())
    encoder = PerceiverEncoder(EncoderConfig(num_input_channels=5, num_latents=4, num_latent_channels=16,
                                             num_blocks=2, num_self_attends_per_block=2, num_self_attend_heads=2))
    x = torch.randn(2, 9, 5)
    grads = {}
    for checkpointing in (False, True):
        encoder.gradient_checkpointing = checkpointing
        encoder.train()(x).pow(2).sum().backward()
        grads[checkpointing] = [p.grad.clone() for p in encoder.parameters()]
        encoder.zero_grad(set_to_none=True)
    for plain, checkpointed in zip(grads[False], grads[True]):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-6, atol=1e-7)


def test_marks_are_ignored_outside_a_context_and_without_gradients():
    x = torch.randn(3, requires_grad=True)
    y = recomputable(x.sin(), torch.sin, x)  # no context: nothing to do
    with recomputing_cheap_activations(), torch.no_grad():
        assert torch.equal(recomputable(x.sin(), torch.sin, x), y.detach())
    with recomputing_cheap_activations():
        z = recomputable(x.sin(), torch.sin, x)
        w = (z * z).sum()  # mul saves z twice: one recomputation shared by both unpacks
    w.backward()
    torch.testing.assert_close(x.grad, 2 * x.sin().detach() * x.cos().detach())


def test_a_recipe_that_does_not_reproduce_the_layout_is_an_error():
    x = torch.randn(4, 3, requires_grad=True)
    with recomputing_cheap_activations():
        y = recomputable(x.exp(), lambda t: t.exp().t().contiguous().t(), x)  # same values, transposed strides
        loss = (y * 2).sum() + (y * y).sum()
    with pytest.raises(RuntimeError, match="recomputed activation: expected shape"):
        loss.backward()


@pytest.mark.parametrize("autocast", [False, True])
def test_recompute_attention_also_recomputes_narrow_keys_and_values_bitwise(autocast, monkeypatch):
    from perceiver_io.core import MultiHeadAttention, set_recompute_probabilities

    torch.manual_seed(0)
    layer = CrossAttentionLayer(16, 5, num_heads=1, qk_channels=16)  # 5 input channels < 8 queries
    layer.attention.absorb_projections = False
    set_recompute_probabilities(layer)
    x_q, x_kv, _ = attention_layer_inputs(layer, masked=False, num_queries=8)
    kept: dict[str, StorageWeakRef] = {}  # the projections' storage (the attention keeps views of it)
    for name in ("k", "v"):
        getattr(layer.attention, name).register_forward_hook(
            lambda m, i, o, name=name: kept.__setitem__(name, StorageWeakRef(o.untyped_storage())))
    alive: dict[str, bool] = {}

    def step():
        def record() -> None:
            gc.collect()
            alive.update({name: not ref.expired() for name, ref in kept.items()})
        return attention_layer_step(layer, x_q, x_kv, autocast=autocast, after_forward=record)

    rule = layer.attention.recomputes_keys_and_values
    assert rule(x_kv, 8) and not rule(x_kv, 5)
    recomputed = step()
    assert alive == {"k": False, "v": False}
    monkeypatch.setattr(MultiHeadAttention, "recomputes_keys_and_values", lambda self, x_kv, n: False)
    reference = step()
    assert alive == {"k": True, "v": True}
    assert_bitwise_equal(recomputed, reference)
