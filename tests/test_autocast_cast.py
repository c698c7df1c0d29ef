"""Under autocast each layer input is cast once for all its Linears (core/autocast.py), and the bf16 attention output
added to the fp32 residual stream stands in for the sum (attention.residual_add): bitwise autocast's own results,
fewer casts, and neither the casts nor the sums kept for the backward."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from perceiver_io.core import SelfAttentionLayer, attention, set_recompute_activations
from perceiver_io.core.autocast import autocast_target, cast_for_readers

from conftest import assert_bitwise_equal, attention_layer_inputs, attention_layer_step, attention_layers

pytestmark = pytest.mark.usefixtures("recompute_every_activation")


def autocasts_own_casts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference: every Linear casts its input itself, the residual sum is plain and kept."""
    monkeypatch.setattr(attention, "cast_for_readers", lambda x, readers: [x] * readers)
    monkeypatch.setattr(attention, "residual_add", lambda x, a: x + a)


@pytest.mark.parametrize("name", list(attention_layers()))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_one_cast_per_input_gives_bitwise_autocasts_output_and_gradients(name, masked, recompute, monkeypatch):
    layer = attention_layers()[name]
    set_recompute_activations(layer, recompute)
    inputs = attention_layer_inputs(layer, masked)
    ours = attention_layer_step(layer, *inputs, autocast=True)
    autocasts_own_casts(monkeypatch)
    assert_bitwise_equal(ours, attention_layer_step(layer, *inputs, autocast=True))


class Recorder(TorchDispatchMode):
    """Weak references to the activation casts (``[B, N, C]`` to bf16) and the mixed-precision sums (an fp32 plus
    a bf16 tensor) that one forward makes."""

    def __init__(self) -> None:
        super().__init__()
        self.casts: list[weakref.ref] = []
        self.sums: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and out.dtype == torch.bfloat16 and out.dim() == 3:
            self.casts.append(weakref.ref(out))
        if func is torch.ops.aten.add.Tensor and {a.dtype for a in args[:2]} == {torch.float32, torch.bfloat16}:
            self.sums.append(weakref.ref(out))
        return out


def record_forward(layer: nn.Module, x: torch.Tensor) -> tuple[int, int, int]:
    """One bf16-autocast training forward of a self-attention layer: (activation casts made, casts the graph
    still holds, mixed-precision sums it still holds)."""
    recorder = Recorder()
    with recorder, torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.clone().requires_grad_())
    gc.collect()
    alive = (sum(r() is not None for r in recorder.casts), sum(r() is not None for r in recorder.sums))
    out.float().sum().backward()
    return len(recorder.casts), *alive


def test_self_attention_casts_its_layer_norm_output_once_and_keeps_no_cast(monkeypatch):
    layer, x = SelfAttentionLayer(16, num_heads=2), torch.randn(2, 6, 16)
    # Two mixed sums: the residual after the attention and the layer's output (held here by the caller).
    # LayerNorm outputs cast once for q, k and v and once for the MLP; both casts recomputed in the backward, as is
    # the residual sum that the MLP's LayerNorm reads (from the kept layer input and the bf16 attention output)
    assert record_forward(layer, x) == (2, 0, 1)
    set_recompute_activations(layer, False)
    assert record_forward(layer, x) == (2, 2, 2)
    autocasts_own_casts(monkeypatch)
    assert record_forward(layer, x) == (4, 4, 2)  # autocast alone: one cast per Linear, each kept


def test_cast_for_readers_casts_only_where_autocast_would():
    x = torch.randn(2, 3, requires_grad=True)
    assert cast_for_readers(x, 2) == [x, x]  # autocast off
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_target(x) == torch.bfloat16
        for skipped in (x.double(), x.bfloat16(), torch.ones(2, 3, dtype=torch.long)):
            assert autocast_target(skipped) is None and cast_for_readers(skipped, 1)[0] is skipped
        uses = cast_for_readers(x, 3)
        with torch.no_grad():
            plain = cast_for_readers(x, 2)
    assert [u.dtype for u in uses + plain] == [torch.bfloat16] * 5
    assert len({u.untyped_storage().data_ptr() for u in uses}) == 1 and plain[0] is plain[1]
    assert all(u.grad_fn is not None for u in uses) and plain[0].grad_fn is None
    sum(u.float() * (i + 1) for i, u in enumerate(uses)).sum().backward()
    assert x.grad.dtype == torch.float32 and torch.equal(x.grad, torch.full_like(x, 6.0))


def test_checkpointed_encoder_under_autocast_gives_the_same_gradients():
    from perceiver_io.core import EncoderConfig, PerceiverEncoder

    torch.manual_seed(0)
    encoder = PerceiverEncoder(EncoderConfig(num_input_channels=5, num_latents=4, num_latent_channels=16,
                                             num_blocks=2, num_self_attends_per_block=2, num_self_attend_heads=2))
    encoder.fused_gradient_accumulation = False  # off under checkpointing anyway; in bf16 its sums round differently
    x = torch.randn(2, 9, 5)
    grads = {}
    for checkpointing in (False, True):  # checkpointing's own saved-tensor hooks: no recipes, casts replayed
        encoder.gradient_checkpointing = checkpointing
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = encoder.train()(x)
        out.float().pow(2).sum().backward()
        grads[checkpointing] = [p.grad.clone() for p in encoder.parameters()]
        encoder.zero_grad(set_to_none=True)
    for plain, checkpointed in zip(grads[False], grads[True]):
        assert torch.equal(checkpointed, plain)


def test_in_inference_a_cast_lives_no_longer_than_the_linears_that_read_it():
    layer, recorder, alive = SelfAttentionLayer(16, num_heads=2).eval(), Recorder(), {}

    def count_alive(name: str):  # a pre-hook on a Linear after the one(s) that read the cast
        def hook(module, args):
            gc.collect()
            alive[name] = sum(r() is not None for r in recorder.casts)
        return hook

    layer.attention.out.register_forward_pre_hook(count_alive("output projection"))
    layer.mlp[2].register_forward_pre_hook(count_alive("second MLP Linear"))
    with torch.no_grad(), recorder, torch.autocast("cpu", dtype=torch.bfloat16):
        layer(torch.randn(2, 6, 16))
    assert len(recorder.casts) == 2 and alive == {"output projection": 0, "second MLP Linear": 0}
