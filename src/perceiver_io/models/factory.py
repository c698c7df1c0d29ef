"""Named presets and the factory: ``create_model(name, **overrides)``, ``list_models()`` (timm's convention).

A preset is a function that returns the config of the model class it is registered with (a
:class:`~perceiver_io.perceiver.PerceiverIOConfig` for every Perceiver IO, a baseline's own config
otherwise); its keyword arguments are the overrides it accepts:
``@preset("imagenet_fourier", ImageClassifier)``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..core.config import Config, override_config


@dataclass(frozen=True)
class Preset:
    name: str
    model_class: type[nn.Module]
    make_config: Callable[..., Config]

    @property
    def description(self) -> str:
        return (inspect.getdoc(self.make_config) or "").split("\n")[0]


_PRESETS: dict[str, Preset] = {}


def preset(name: str, model_class: type[nn.Module]) -> Callable[[Callable[..., Config]], Callable[..., Config]]:
    """Decorator: register a config function as the preset ``name`` building ``model_class``."""

    def decorate(make_config: Callable[..., Config]) -> Callable[..., Config]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = Preset(name, model_class, make_config)
        return make_config

    return decorate


def list_models() -> list[str]:
    """The preset names :func:`create_model` builds."""
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    """The preset ``name``; a ``ValueError`` lists the known ones."""
    if not isinstance(name, str) or name not in _PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; known presets are {list_models()}")
    return _PRESETS[name]


def model_config(name: str, **overrides: Any) -> tuple[type[nn.Module], Config]:
    """The task model class and config of preset ``name`` with ``overrides`` (no weights built).

    An override is either one of the preset function's own arguments (``num_classes``, ``image_size``, ...) or a
    part of the config it returns, as a dict of that part's fields (``encoder={"num_latents": 256, "dropout":
    0.1}``, ``decoder={"num_heads": 2}``): those are merged into the preset's config, and the sizes derived from
    them follow (:func:`~perceiver_io.core.config.override_config`).
    """
    entry = get_preset(name)
    accepted = inspect.signature(entry.make_config).parameters
    config = entry.make_config(**{k: v for k, v in overrides.items() if k in accepted})
    parts = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(accepted) - parts)
    if unknown:
        raise ValueError(f"{name}: unknown override(s) {unknown}; this preset accepts {sorted(accepted)} and, as "
                         f"dicts of their fields, the parts of its config {sorted(parts)}")
    config_overrides = {k: v for k, v in overrides.items() if k not in accepted}
    if config_overrides:
        config = override_config(config, config_overrides, where=name)
    return entry.model_class, config


def create_model(name: str, **overrides: Any) -> Any:
    """Build preset ``name`` (freshly initialised, official initialisers) with ``overrides``, e.g.
    ``create_model("imagenet_fourier", num_classes=10)``. Load official weights with
    :func:`perceiver_io.convert.from_haiku`."""
    model_class, config = model_config(name, **overrides)
    return model_class.from_config(config)  # type: ignore[attr-defined]
