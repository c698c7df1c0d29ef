"""The one registry: a component type name -> its config class and its module class.

Every buildable part (adapters, decoders, task models) registers here under a unique name with
:func:`register`. A config serialises its type name (``{"type": "image_input", ...}`` for a
component, ``"model_type"`` in a model's ``config.json``), and :func:`build` turns a config back
into its module. The registry knows no modality: the layers above fill it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

M = TypeVar("M", bound=type)


@dataclass(frozen=True)
class Component:
    """One registry entry: ``name`` builds ``module_class(config)`` from a ``config_class`` instance."""

    name: str
    config_class: type
    module_class: type


_COMPONENTS: dict[str, Component] = {}


def register(name: str, config_class: type) -> Callable[[M], M]:
    """Class decorator: register a module class under ``name``, built from ``config_class``.

    A :class:`~perceiver_io.core.config.ComponentConfig` class learns its ``component_type`` here,
    so its JSON carries the name. Registering a name twice is an error (two parts would be
    indistinguishable in a saved file).
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"name: expected a non-empty string, got {name!r}")

    def decorate(module_class: M) -> M:
        existing = _COMPONENTS.get(name)
        if existing is not None and existing.module_class.__qualname__ != module_class.__qualname__:
            raise ValueError(f"component type {name!r} is already registered for {existing.module_class.__name__}")
        _COMPONENTS[name] = Component(name, config_class, module_class)
        module_class.component_type = name  # type: ignore[attr-defined]
        module_class.config_class = config_class  # type: ignore[attr-defined]
        if hasattr(config_class, "component_type"):  # a ComponentConfig: its JSON names its type
            config_class.component_type = name
        return module_class

    return decorate


def component(name: str) -> Component:
    """The registry entry of ``name``; a ``ValueError`` lists the known names."""
    if name not in _COMPONENTS:
        raise ValueError(f"unknown component type {name!r}; known types are {sorted(_COMPONENTS)}")
    return _COMPONENTS[name]


def component_for_config(config: Any) -> Component:
    """The entry whose config class is exactly ``type(config)`` and whose name the config carries."""
    name = getattr(config, "component_type", "")
    entry = _COMPONENTS.get(name)
    if entry is None or entry.config_class is not type(config):
        raise ValueError(f"config: no component is registered for {type(config).__name__}")
    return entry


def build(config: Any) -> nn.Module:
    """Instantiate the module that a component config describes."""
    return component_for_config(config).module_class(config)


def component_types(base: type | None = None) -> list[str]:
    """Registered names, optionally only those whose module class derives from ``base``."""
    return sorted(n for n, c in _COMPONENTS.items() if base is None or issubclass(c.module_class, base))
