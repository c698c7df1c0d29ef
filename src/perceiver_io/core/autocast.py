"""One autocast cast per layer input, however many Linears read it.

Under ``torch.autocast`` every Linear casts its fp32 input to the autocast dtype itself: self-attention's q, k and v
projections make three bf16 copies of the same LayerNorm output (three elementwise passes) and autograd keeps all
three for the weight gradients. :func:`cast_for_readers` casts once and hands each reader its own graph node over
that one copy, whose backward converts its gradient back as autocast's cast would: forward values and every
gradient are bitwise autocast's own (the fp32 gradients are summed in the same order), for one copy instead of
three. In training the copy is also marked :func:`~perceiver_io.core.recompute.recomputable` (its recipe: the
LayerNorm output's own recipe, then the cast), so where recomputation is on no copy is kept at all.
"""

from __future__ import annotations

import torch

from .recompute import recomputable
from .validation import _autocast_dtype, capturing_graph


class _CastRead(torch.autograd.Function):
    """One reader's use of ``cast``, the autocast-dtype copy of ``x`` made once: forward a view of ``cast``,
    backward the gradient converted to ``x``'s dtype (what autocast's per-call cast, ``ToCopyBackward``, does)."""

    @staticmethod
    def forward(ctx, x, cast):  # type: ignore[no-untyped-def,override]
        ctx.dtype = x.dtype
        return cast.view_as(cast)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def,override]
        return grad.to(ctx.dtype), None


def _to_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x.to(dtype)`` (the recipe of a marked cast)."""
    return x.to(dtype)


def autocast_target(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast ``x`` to before a Linear, or None where it would not cast it (autocast off,
    ``x`` not floating point, float64, or already in that dtype)."""
    dtype = _autocast_dtype(x.device.type)
    if dtype is None or not x.is_floating_point() or x.dtype in (torch.float64, dtype):
        return None
    return dtype


def cast_for_readers(x: torch.Tensor, readers: int) -> list[torch.Tensor]:
    """``x [...]`` as ``readers`` tensors for ``readers`` Linears: under autocast one cast to its dtype shared by
    all of them (see the module docstring); elsewhere ``x`` itself. Eager only: under ``torch.compile``, tracing
    or export ``x`` is returned as it is and autocast casts per call, as without this function."""
    dtype = autocast_target(x)
    if dtype is None or capturing_graph():
        return [x] * readers
    if readers == 1 or not (torch.is_grad_enabled() and x.requires_grad):
        cast = x.to(dtype)  # one reader: autocast's own cast, made here so that it can be marked
        return [recomputable(cast, _to_dtype, x, dtype)] * readers
    with torch.no_grad():
        cast = x.to(dtype)
    uses = [_CastRead.apply(x, cast) for _ in range(readers)]
    del cast  # the views hold its storage
    recomputable(uses[0], _to_dtype, x, dtype)  # marks the storage: every reader's saved view is the recipe
    return uses
