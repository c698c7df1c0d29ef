"""Config dataclasses that serialise to and from JSON-compatible dicts.

Every serialisable module takes exactly one config dataclass (nanoGPT style). ``Config.from_dict``
is strict: an unknown key is an error that names it, so a typo in a config file never passes
silently. Fields typed as :class:`ComponentConfig` are polymorphic: their dict carries a ``"type"``
key that picks the concrete config class from the component registry.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for config dataclasses: ``to_dict`` / ``from_dict`` with strict key checking."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(self, ComponentConfig):
            out["type"] = self.component_type
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _to_jsonable(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
        data = dict(data)
        type_name = data.pop("type", None)
        if isinstance(cls, type) and issubclass(cls, ComponentConfig) and type_name is not None:
            target = ComponentConfig.resolve(type_name)
            if not issubclass(target, cls):
                raise ValueError(f"{cls.__name__}: component type {type_name!r} is a {target.__name__}, not a {cls.__name__}")
            cls = target  # type: ignore[assignment]
        elif cls is ComponentConfig:
            raise ValueError("component config: missing the 'type' key")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config key(s) {unknown}; known keys are {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {name: _from_jsonable(hints[name], value, f"{cls.__name__}.{name}") for name, value in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as e:  # a required key is missing
            raise ValueError(f"{cls.__name__}: {e}") from None

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


class ComponentConfig(Config):
    """Config of a pluggable component (adapter); ``component_type`` names it in JSON."""

    component_type: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[ComponentConfig]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("component_type")
        if name:
            ComponentConfig._registry[name] = cls

    @classmethod
    def resolve(cls, name: str) -> type[ComponentConfig]:
        if name not in cls._registry:
            raise ValueError(f"unknown component type {name!r}; known types are {sorted(cls._registry)}")
        return cls._registry[name]


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    return value


def _from_jsonable(hint: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if isinstance(value, dict) and "type" in value and all(
            isinstance(a, type) and issubclass(a, ComponentConfig) for a in options
        ):
            target = ComponentConfig.resolve(value["type"])
            if not any(issubclass(target, a) for a in options):
                names = [a.__name__ for a in options]
                raise ValueError(f"{where}: component type {value['type']!r} is not one of {names}")
            return target.from_dict(value)
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            return _from_jsonable(arg, value, where)
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint.from_dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        elem = args[0] if args else Any
        return tuple(_from_jsonable(elem, v, where) for v in value)
    if origin is dict:
        _, vt = typing.get_args(hint) or (Any, Any)
        return {k: _from_jsonable(vt, v, where) for k, v in value.items()}
    return value
