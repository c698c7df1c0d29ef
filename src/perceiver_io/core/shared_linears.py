"""Linears used more than once per forward: their weight gradients summed inside the weight-gradient products.

The image encoders run one block of self-attention layers ``num_blocks`` times with the same weights (8 x 6 layers in
the ImageNet models: every latent Linear's weight is used 8 times). Autograd gives each use its own weight-gradient
product ``g^T x`` and sums the products afterwards, one ``add_`` over the whole weight per use: in the paper-size image
step 7 of them for each of 36 weights of 1024 x 1024, reading and writing memory the products have just left cold.

Inside :func:`summing_weight_gradients` each use of a listed Linear runs as one graph node that also hands the weight
on to the next use (an alias of it, a second output of the node). In the backward, which meets the uses in reverse,
a node therefore receives the summed weight gradient of all later uses and adds its own product into it in place
(``addmm_``, beta 1, the sum carried through the GEMM's accumulator) instead of writing a fresh product for a
separate ``add_``. The input gradients and the forward are bitwise those of the Linear's own ops; the weight
gradients are summed in the same order but rounded once per use instead of twice (the product, then the sum), so
they differ by rounding (in bf16 they are closer to the exact sum). Under autocast the weight and the bias are cast
once per forward, as autocast's own cast cache does, and each use reads those casts.

Gradients of gradients are not supported (differentiating a gradient taken with ``create_graph=True`` through a
chained use raises); turn the switch that enters the context off for them
(``PerceiverEncoder.fused_gradient_accumulation``).

Eager training only: without gradients, under ``torch.compile``, tracing or export, for a Linear that is not a plain
``nn.Linear`` (quantized, replaced) or whose weight needs no gradient, and for an input that autocast would not cast
to its dtype, :func:`apply_linear` calls the Linear as it is.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .validation import _autocast_dtype, capturing_graph

_active = threading.local()  # the chains of the contexts entered on this thread, innermost last


class _LinearPassingWeight(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` that also returns ``weight`` (an alias) for the next use; the backward adds this
    use's weight gradient into the one the next use passed back (``None`` for the last use)."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[no-untyped-def,override]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        with torch.autocast(x.device.type, enabled=False):  # the caller cast every operand as autocast would
            out = F.linear(x, weight, bias)
        return out, weight.view_as(weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_weight_later):  # type: ignore[no-untyped-def,override]
        x, weight = ctx.saved_tensors
        if grad_out is None:  # this use's output did not reach the loss
            return None, grad_weight_later, None
        # Linear's own backward ops over the flattened rows: g W for the input, g^T x for the weight, the sum of the
        # rows of g for the bias.
        g = grad_out.reshape(-1, grad_out.shape[-1])
        rows = x.reshape(-1, x.shape[-1])
        grad_x = g.mm(weight).view(x.shape) if ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]:
            grad_weight = None
        elif grad_weight_later is None:
            grad_weight = g.t().mm(rows)
        else:  # the later uses' sum, a tensor only this chain holds: accumulate into it
            grad_weight = grad_weight_later.addmm_(g.t(), rows)
        grad_bias = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class _Chain:
    """One Linear's state within a context: the weight as the next use reads it (the previous use's alias, or at
    first the weight or its autocast cast) and the bias cast, both made at the first use."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias


class _Chains:
    """The chains of the Linears listed for one context, by module identity."""

    def __init__(self, linears: Iterable[nn.Module]) -> None:
        self.listed = {id(m) for m in linears}
        self.chains: dict[int, _Chain] = {}

    def apply(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor | None:
        """``linear(x)`` through the chain, or None where this use must run as the Linear itself."""
        dtype = _autocast_dtype(x.device.type)
        weight, bias = linear.weight, linear.bias
        if dtype is not None:
            if x.dtype not in (torch.float32, dtype) or weight.dtype != torch.float32:
                return None  # autocast would not cast these operands to one dtype
            x = x.to(dtype)
        elif x.dtype != weight.dtype:
            return None  # let the Linear raise its own error
        chain = self.chains.get(id(linear))
        if chain is None:
            if dtype is not None:
                weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
            chain = self.chains[id(linear)] = _Chain(weight, bias)
        elif chain.weight.dtype != x.dtype:
            return None  # autocast switched within the context: this use casts its own weight
        out, chain.weight = _LinearPassingWeight.apply(x, chain.weight, chain.bias)
        return out


def apply_linear(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``; for a Linear listed in the innermost active :func:`summing_weight_gradients`, run so that its
    weight gradients are summed inside the products (the module docstring)."""
    if capturing_graph():  # first: the compiler never reads the thread-local state below
        return linear(x)
    stack = getattr(_active, "chains", None)
    if not stack or id(linear) not in stack[-1].listed or type(linear) is not nn.Linear \
            or not (torch.is_grad_enabled() and linear.weight.requires_grad):
        return linear(x)
    out = stack[-1].apply(linear, x)
    return linear(x) if out is None else out


@contextlib.contextmanager
def summing_weight_gradients(linears: Iterable[nn.Module], enabled: bool = True) -> Iterator[None]:
    """Inside, every use of a Linear in ``linears`` through :func:`apply_linear` joins that Linear's chain (the
    module docstring); a no-op when not ``enabled``, without gradients and under ``torch.compile``, tracing or
    export. Each context starts new chains, so a forward run in one context is one chain per Linear."""
    if not enabled or capturing_graph() or not torch.is_grad_enabled():
        yield
        return
    stack = _active.__dict__.setdefault("chains", [])
    stack.append(_Chains(linears))
    try:
        yield
    finally:
        stack.pop()
