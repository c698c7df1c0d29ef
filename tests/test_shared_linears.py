"""Weight gradients of Linears shared across blocks summed inside their products (core/shared_linears.py): the same
forward and input gradients, the weight gradients equal up to rounding, and no separate sum of per-use products."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from perceiver_io import PerceiverIO
from perceiver_io.core.shared_linears import apply_linear, summing_weight_gradients

from conftest import small_image_classifier_config


def classifier(num_blocks: int = 3, **encoder) -> PerceiverIO:
    torch.manual_seed(0)
    return PerceiverIO.from_config(small_image_classifier_config(num_blocks=num_blocks, **encoder)).train()


# The latent stack shared across blocks; the original Perceiver's form, which also shares one cross-attention
# across the blocks after the first (6 Linears each: q, k, v, out and the MLP's two).
ENCODERS = {"blocks": ({}, 2 * 6), "iterative": (dict(cross_attend_every_block=True), 3 * 6)}


def chained(model: PerceiverIO) -> set[str]:
    """Names of the weights whose gradient sums the switch changes."""
    ids = {id(m.weight) for m in model.encoder.shared_linears()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def training_step(model: PerceiverIO, fused: bool, autocast: bool = False, backward: int = 1):
    """Logits and every parameter's and the input's gradient of one step (the loss: a fixed projection of the
    logits, so that every gradient is generic)."""
    model.encoder.fused_gradient_accumulation = fused
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(1)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    for i in range(backward):
        (logits.float() * weights).sum().backward(retain_graph=i + 1 < backward)
    return logits.detach(), {"input": x.grad, **{n: p.grad.clone() for n, p in model.named_parameters()}}


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_same_outputs_and_input_gradients_and_weight_gradients_up_to_rounding(autocast, encoder):
    overrides, num_shared = ENCODERS[encoder]
    model = classifier(**overrides)
    logits, grads = training_step(model, fused=True, autocast=autocast)
    ref_logits, ref_grads = training_step(model, fused=False, autocast=autocast)
    names = chained(model)
    assert len(names) == num_shared
    assert torch.equal(logits, ref_logits)
    for name, grad in grads.items():
        if name in names:  # the only sums that change: within rounding of the per-use products' sum
            tol = 2e-2 if autocast else 1e-5
            assert (grad - ref_grads[name]).norm() <= tol * ref_grads[name].norm(), name
        else:  # biases, LayerNorms, the cross-attention, the input: bitwise
            assert torch.equal(grad, ref_grads[name]), name


class AddCounter(TorchDispatchMode):
    """Counts in-place sums and fresh products that produce a tensor of one of ``shapes``."""

    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes, self.adds, self.products, self.accumulating_products = shapes, 0, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and tuple(out.shape) in self.shapes:
            if func in (torch.ops.aten.add_.Tensor, torch.ops.aten.add.Tensor):
                self.adds += 1
            elif func is torch.ops.aten.mm.default:
                self.products += 1
            elif func is torch.ops.aten.addmm_.default:
                self.accumulating_products += 1
        return out


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_each_use_adds_its_product_into_the_sum_instead_of_a_separate_add(autocast):
    num_blocks = 3
    model = classifier(num_blocks)
    shapes = {tuple(m.weight.shape) for m in model.encoder.shared_linears()}
    counts = {}
    for fused in (False, True):
        counter = AddCounter(shapes)
        model.encoder.fused_gradient_accumulation = fused
        model.zero_grad(set_to_none=True)  # no .grad to add into
        x = torch.randn(2, 3, 8, 10)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        with counter:
            logits.float().sum().backward()
        counts[fused] = counter
    linears = len(model.encoder.shared_linears())
    # The plain path sums num_blocks products per weight with num_blocks - 1 adds; the chained one writes the last
    # use's product and accumulates the others into it.
    assert counts[False].adds == linears * (num_blocks - 1) and counts[False].accumulating_products == 0
    assert counts[True].adds == 0
    assert counts[True].accumulating_products == linears * (num_blocks - 1)


def test_two_backward_passes_through_a_retained_graph_accumulate_twice():
    model = classifier()
    _, once = training_step(model, fused=True)
    _, twice = training_step(model, fused=True, backward=2)
    for name, grad in twice.items():
        torch.testing.assert_close(grad, 2 * once[name], msg=name)


def test_off_with_one_block_with_checkpointing_and_without_gradients():
    assert classifier(num_blocks=1).encoder.shared_linears() == []
    model = classifier()
    model.encoder.gradient_checkpointing = True  # the chains would not survive the backward's re-run of a layer
    logits, grads = training_step(model, fused=True)
    ref_logits, ref_grads = training_step(model, fused=False)
    assert torch.equal(logits, ref_logits)
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name
    with torch.no_grad():
        assert torch.equal(model(torch.ones(1, 3, 8, 10)), model.eval()(torch.ones(1, 3, 8, 10)))


def test_a_use_whose_output_is_unused_adds_nothing_and_frozen_weights_stay_frozen():
    linear = nn.Linear(4, 3)
    x1, x2 = torch.randn(5, 4), torch.randn(5, 4)
    with summing_weight_gradients([linear]):
        used = apply_linear(linear, x1)
        apply_linear(linear, x2)  # the last use: its output never reaches the loss
    used.sum().backward()
    torch.testing.assert_close(linear.weight.grad, torch.ones(5, 3).t() @ x1)
    torch.testing.assert_close(linear.bias.grad, torch.full((3,), 5.0))

    linear.zero_grad(set_to_none=True)
    linear.weight.requires_grad_(False)
    with summing_weight_gradients([linear]):
        out = apply_linear(linear, x1) + apply_linear(linear, x2)
    out.sum().backward()
    assert linear.weight.grad is None and linear.bias.grad is not None


def test_summing_inside_the_product_rounds_once_per_use():
    """In bf16 the chained sum is closer to the exact sum of the per-use products than products summed afterwards
    (each rounded once, not twice)."""
    g = torch.Generator().manual_seed(0)
    uses = [(torch.randn(64, 32, generator=g).bfloat16(), torch.randn(64, 48, generator=g).bfloat16())
            for _ in range(8)]
    exact = sum(grad.double().t() @ x.double() for grad, x in uses)
    plain = uses[-1][0].t().mm(uses[-1][1])
    for grad, x in reversed(uses[:-1]):  # autograd's order: the last use's product first
        plain = plain + grad.t().mm(x)
    linear = nn.Linear(48, 32).bfloat16()
    with summing_weight_gradients([linear]):
        outs = [apply_linear(linear, x) for _, x in uses]
    torch.autograd.backward(outs, [grad for grad, _ in uses])
    chained_error = (linear.weight.grad.double() - exact).norm()
    plain_error = (plain.double() - exact).norm()
    assert chained_error < plain_error


def test_gradients_of_gradients_raise_in_a_chain_and_work_outside_one():
    linear, x = nn.Linear(4, 4), torch.randn(5, 4, requires_grad=True)
    for chained in (True, False):
        with summing_weight_gradients([linear], enabled=chained):
            out = apply_linear(linear, apply_linear(linear, x).tanh())
        (grad,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        if chained:
            with pytest.raises(RuntimeError, match="differentiate twice"):
                grad.sum().backward()
        else:
            grad.sum().backward()
            assert linear.weight.grad is not None
