"""Input checks that fail before any computation, with messages that name the argument,
the expected shape and the shape received."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Dim = int | str | None
"""One expected dimension: an int must match exactly, a str or None is a free symbol (only shown)."""


def _fmt(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_tensor(
    name: str,
    value: object,
    shape: Sequence[Dim],
    *,
    floating: bool | None = None,
    integer: bool = False,
    boolean_or_integer: bool = False,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of ``len(shape)`` dims whose int entries match.

    Raises ``TypeError`` for a non-tensor or a wrong dtype kind, ``ValueError`` for a wrong rank
    or size; both messages name ``name``, the expected shape and the one received.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {_fmt(shape)}, got {type(value).__name__}")
    if value.dim() != len(shape) or any(
        isinstance(want, int) and want != got for want, got in zip(shape, value.shape)
    ):
        raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {list(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    if integer and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer tensor, got dtype {value.dtype}")
    if boolean_or_integer and (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name}: expected a bool or integer (0/1) tensor, got dtype {value.dtype}")
    return value


def check_mask(name: str, mask: torch.Tensor | None, shape: Sequence[Dim]) -> torch.Tensor | None:
    """Check an attention/padding mask (True or 1 = keep) and return it as bool."""
    if mask is None:
        return None
    check_tensor(name, mask, shape, boolean_or_integer=True)
    return mask if mask.dtype == torch.bool else mask != 0


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive int (or zero if allowed)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} int, got {value!r}")


def check_divisible(name: str, channels: int, num_heads: int) -> None:
    if channels % num_heads:
        raise ValueError(f"{name}: {channels} channels must be divisible by num_heads={num_heads}")


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
