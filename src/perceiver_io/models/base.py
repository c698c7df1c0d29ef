"""Shared helpers of the task models."""

from __future__ import annotations

from torch import nn


def require(model: object, name: str, part: object, expected: type[nn.Module]) -> None:
    """A task model's part must be of the expected kind (a clear error for a mismatched config)."""
    if not isinstance(part, expected):
        raise ValueError(
            f"{name}: {type(model).__name__} needs a {expected.__name__}, got {type(part).__name__}"
        )
