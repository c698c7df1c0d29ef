"""Adapters turn a modality into the encoder's input array and the decoder's output into task outputs.

A new modality is a new pair of adapters and nothing else. Each adapter takes one config dataclass
(a :class:`~perceiver_io.core.config.ComponentConfig` with a unique ``component_type``) so that a
composed model serialises to JSON.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn

from ..core.config import ComponentConfig

_MODULES: dict[type[ComponentConfig], type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def adapter(config_class: type[ComponentConfig]) -> Callable[[M], M]:
    """Class decorator: the module that ``config_class`` builds."""

    def register(module_class: M) -> M:
        _MODULES[config_class] = module_class
        module_class.config_class = config_class  # type: ignore[attr-defined]
        return module_class

    return register


def build_adapter(config: ComponentConfig) -> nn.Module:
    """Instantiate the adapter registered for ``type(config)``."""
    if type(config) not in _MODULES:
        raise ValueError(f"no adapter is registered for config type {type(config).__name__}")
    return _MODULES[type(config)](config)


class InputAdapter(nn.Module):
    """Maps raw inputs to the encoder's input array ``[B, M, num_input_channels]``."""

    config: ComponentConfig

    @property
    def num_input_channels(self) -> int:
        raise NotImplementedError

    def forward(self, inputs: Any) -> torch.Tensor:
        raise NotImplementedError


class OutputAdapter(nn.Module):
    """Maps decoder outputs ``[B, O, C]`` to task outputs."""

    config: ComponentConfig

    def forward(self, outputs: torch.Tensor) -> Any:
        raise NotImplementedError
