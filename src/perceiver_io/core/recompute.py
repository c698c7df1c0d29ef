"""Cheap activations recomputed in the backward instead of kept: LayerNorm and GELU outputs.

Autograd keeps the input of every Linear for its weight gradient. In a Perceiver layer those inputs are LayerNorm
and GELU outputs, each as large as the layer's activations, while the LayerNorm's and the GELU's own inputs are kept
anyway (their backward needs them). :func:`recomputing_cheap_activations` installs ``saved_tensors_hooks`` that
save a tensor marked with :func:`recomputable` as the recipe that made it; its first unpack in the backward runs
the recipe again on the kept inputs (one elementwise pass) and shares the result with the other unpacks of the same
tensor. The recipes are the forward's own functional ops on the same inputs, so the recomputed values are bitwise
the kept ones and every gradient is unchanged.

Under autocast the layers also mark the one bf16 cast of each LayerNorm output (:mod:`~perceiver_io.core.autocast`)
and the residual sum ``x + a`` of an fp32 stream ``x`` and a bf16 attention output ``a`` (kept: ``a``, half the
size); ``benchmarks/step_memory.py`` measures what they save on the paper-size image step.

Only tensors of at least :data:`MIN_ELEMENTS` elements are marked: recomputing a small one saves next to no memory
and costs a Python call and a small op in the backward, which in a small model is a large share of the step (the
digits demo's training step took 12% longer with every activation recomputed, a stack of four 256-channel
self-attention layers 15-18% at 16-32 k elements per activation; measured with one-off scripts, 2026-12-03).
The paper-size models' layer activations are above it (the image latents ``512 x 1024`` are ``2**19`` elements);
a class query's one row (``1 x 1024``) is not, and stays kept (4 KiB).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

import torch

from .validation import capturing_graph

MIN_ELEMENTS = 2**18  # 1 MiB in float32: smaller tensors are kept (read at each call: tests lower it)
_active = threading.local()  # the registries of the contexts entered on this thread, innermost last


class _Recipe:
    """How to make one marked tensor again: ``fn(*args)``; ``args`` may be other recipes (a tensor made from a
    marked tensor keeps no reference to it). ``pending``: unpacks still to come, which share a cached value."""

    __slots__ = ("fn", "args", "shape", "stride", "pending", "cached")

    def __init__(self, fn: Callable[..., torch.Tensor], args: tuple[Any, ...], like: torch.Tensor) -> None:
        self.fn, self.args, self.shape, self.stride = fn, args, tuple(like.shape), like.stride()
        self.pending, self.cached = 0, None

    def value(self) -> torch.Tensor:
        if self.cached is not None:
            return self.cached
        with torch.no_grad():
            out = self.fn(*[a.value() if isinstance(a, _Recipe) else a for a in self.args])
        if tuple(out.shape) != self.shape or out.stride() != self.stride:
            raise RuntimeError(f"recomputed activation: expected shape {self.shape} and strides {self.stride}, got "
                               f"{tuple(out.shape)} and {out.stride()}")
        if self.pending > 0:
            self.cached = out
        return out


class _SavedView:
    """What a hook saves in place of a marked tensor (or a view of it): its recipe and the view's geometry."""

    __slots__ = ("recipe", "shape", "stride", "offset")

    def __init__(self, recipe: _Recipe, t: torch.Tensor) -> None:
        self.recipe, self.shape, self.stride, self.offset = recipe, tuple(t.shape), t.stride(), t.storage_offset()


class _Registry:
    """The tensors marked inside one context, by storage address (alive while the context is: no address reuse)."""

    def __init__(self) -> None:
        self.marked: dict[int, tuple[torch.Tensor, _Recipe]] = {}

    def mark(self, tensor: torch.Tensor, fn: Callable[..., torch.Tensor], args: tuple[Any, ...]) -> None:
        args = tuple(self.recipe_of(a) or a if isinstance(a, torch.Tensor) else a for a in args)
        self.marked[tensor.untyped_storage().data_ptr()] = (tensor, _Recipe(fn, args, tensor))

    def recipe_of(self, t: torch.Tensor) -> _Recipe | None:
        if t.numel() == 0:
            return None
        entry = self.marked.get(t.untyped_storage().data_ptr())
        return entry[1] if entry is not None else None

    def pack(self, t: torch.Tensor) -> Any:
        recipe = self.recipe_of(t)
        if recipe is None:
            return t
        recipe.pending += 1
        return _SavedView(recipe, t)

    @staticmethod
    def unpack(saved: Any) -> torch.Tensor:
        if not isinstance(saved, _SavedView):
            return saved
        recipe = saved.recipe
        base = recipe.value()
        recipe.pending -= 1
        if recipe.pending <= 0:
            recipe.cached = None
        return base.as_strided(saved.shape, saved.stride, saved.offset)


def _other_hooks_active() -> bool:
    """Whether saved-tensor hooks are already installed (activation checkpointing, offloading): those see every
    saved tensor, so this module steps aside."""
    try:
        return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None
    except (AttributeError, RuntimeError):
        return True


@contextlib.contextmanager
def recomputing_cheap_activations(enabled: bool = True) -> Iterator[None]:
    """Inside, tensors marked with :func:`recomputable` are saved for the backward as their recipes. A no-op
    (marks ignored) when not ``enabled``, without gradients, under ``torch.compile``, tracing or export (inductor
    chooses what to recompute itself) and inside other saved-tensor hooks (activation checkpointing)."""
    if not enabled or not torch.is_grad_enabled() or capturing_graph() or _other_hooks_active():
        yield
        return
    registry = _Registry()
    stack = _active.__dict__.setdefault("registries", [])
    stack.append(registry)
    try:
        with torch.autograd.graph.saved_tensors_hooks(registry.pack, registry.unpack):
            yield
    finally:
        stack.pop()
        registry.marked.clear()  # the saved views keep their recipes; the marked tensors themselves are released


def recomputable(tensor: torch.Tensor, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """Mark ``tensor``, which ``fn(*args)`` made, for recomputation in the innermost active context (a no-op
    outside one, and for a tensor of fewer than :data:`MIN_ELEMENTS` elements, which stays kept); returns
    ``tensor``. ``fn`` must be a pure function of ``args`` (no in-place op, no randomness) whose inputs the backward
    keeps anyway."""
    stack = getattr(_active, "registries", None)
    if stack and tensor.requires_grad and tensor.numel() >= MIN_ELEMENTS:
        stack[-1].mark(tensor, fn, args)
    return tensor
