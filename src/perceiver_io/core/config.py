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
        kwargs = {}
        for name, value in data.items():
            try:
                kwargs[name] = _from_jsonable(hints[name], value, f"{cls.__name__}.{name}")
            except DerivedSizeError as e:  # raised by a nested config: locate it from this one
                raise e.within(name) from None
        try:
            return cls(**kwargs)
        except TypeError as e:  # a required key is missing
            raise ValueError(f"{cls.__name__}: {e}") from None

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


class ComponentConfig(Config):
    """Config of a registered component (adapter, decoder); ``component_type`` names it in JSON.

    The name is set by :func:`~perceiver_io.core.registry.register` on the module class that the
    config builds; :func:`~perceiver_io.core.registry.build` makes that module.
    """

    component_type: ClassVar[str] = ""

    @classmethod
    def resolve(cls, name: str) -> type[ComponentConfig]:
        from .registry import component

        target = component(name).config_class
        if not (isinstance(target, type) and issubclass(target, ComponentConfig)):
            raise ValueError(f"component type {name!r} is not configured by a ComponentConfig")
        return target


class DerivedSizeError(ValueError):
    """A size field given explicitly that differs from the value the adjacent parts produce.

    ``path`` locates the field from the top-level config (field names, and keys of dict fields), e.g.
    ``("decoder", "num_latent_channels")``."""

    def __init__(self, path: tuple[str, ...], given: object, derived: object, message: str | None = None) -> None:
        self.path, self.given, self.derived = path, given, derived
        super().__init__(message or (
            f"{_dotted(path)}: {given} was given, but the adjacent parts produce {derived}; "
            f"leave it unset (None) to derive it"
        ))

    def within(self, field: str) -> DerivedSizeError:
        """The same error located from the config that holds this one in ``field``."""
        return DerivedSizeError((field, *self.path), self.given, self.derived, str(self))


def with_sizes(config: C, where: str, **sizes: int | None) -> C:
    """A copy of ``config`` in which each size field named in ``sizes`` that is ``None`` takes the
    derived value; nested configs (and dicts of them) that have such a field are filled the same way.

    A size given explicitly that differs from the derived one is a :class:`DerivedSizeError` (a
    ``ValueError``) naming ``where.field``, the value given and the derived value. A derived value of
    ``None`` (unknown) leaves the field as it is.
    """
    return _with_sizes(config, tuple(where.split(".")), sizes)


def _with_sizes(config: C, path: tuple[str, ...], sizes: dict[str, int | None]) -> C:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        derived = sizes.get(f.name)
        if f.name in sizes and derived is not None:
            if value is None:
                changes[f.name] = derived
            elif value != derived:
                raise DerivedSizeError((*path, f.name), value, derived)
        elif isinstance(value, Config) and dataclasses.is_dataclass(value):
            filled = _with_sizes(value, (*path, f.name), sizes)
            if filled is not value:
                changes[f.name] = filled
        elif isinstance(value, dict) and any(isinstance(v, Config) for v in value.values()):
            filled_dict = {
                k: _with_sizes(v, (*path, f.name, k), sizes) if isinstance(v, Config) else v
                for k, v in value.items()
            }
            if any(filled_dict[k] is not value[k] for k in value):
                changes[f.name] = filled_dict
    return dataclasses.replace(config, **changes) if changes else config  # type: ignore[type-var]


def override_config(config: C, overrides: dict[str, Any], where: str = "overrides") -> C:
    """A copy of ``config`` with ``overrides`` (a nested dict of its fields, as ``to_dict`` writes them) merged in.

    ``{"encoder": {"num_latents": 256, "dropout": 0.1}}`` changes two encoder fields and keeps the rest. Sizes
    the config derives from its parts (a decoder's ``num_latent_channels``, an encoder's ``num_input_channels``,
    ...) follow the change: a derived size that no longer fits is derived again, unless the override itself
    sets it. An unknown key is a ``ValueError`` naming ``where.key`` and the known keys.
    """
    if not isinstance(overrides, dict):
        raise TypeError(f"{where}: expected a dict of config fields, got {type(overrides).__name__}")
    data = config.to_dict()
    _merge(data, overrides, where)
    rederived: set[tuple[str, ...]] = set()
    while True:
        try:
            return type(config).from_dict(data)
        except DerivedSizeError as e:
            if e.path in rederived or _lookup(overrides, e.path) is not _MISSING:
                raise
            rederived.add(e.path)
            _lookup(data, e.path[:-1])[e.path[-1]] = None


_MISSING = object()


def _merge(data: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    for key, value in overrides.items():
        if key not in data:
            raise ValueError(f"{where}.{key}: unknown config key; known keys are {sorted(k for k in data if k != 'type')}")
        if isinstance(value, dict) and isinstance(data[key], dict):
            _merge(data[key], value, f"{where}.{key}")
        else:
            data[key] = value


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def _dotted(path: tuple[str, ...]) -> str:
    return "".join(p if i == 0 else (f".{p}" if p.isidentifier() else f"[{p!r}]") for i, p in enumerate(path))


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
        if args and Ellipsis not in args and len(value) != len(args):
            raise ValueError(f"{where}: expected a list of {len(args)}, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_from_jsonable(elem, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a dict, got {value!r}")
        _, vt = typing.get_args(hint) or (Any, Any)
        return {k: _from_jsonable(vt, v, where) for k, v in value.items()}
    if (hint in _SCALARS and not isinstance(value, _SCALARS[hint])) or (hint in (int, float) and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {'an' if hint is int else 'a'} {hint.__name__}, got {value!r}")
    if hint is int and not -(2**63) <= value < 2**63:  # no size torch can hold
        raise ValueError(f"{where}: {value} is out of range (a 64-bit int)")
    return value


# What a plain field of each type accepts from JSON (a float field takes an int: JSON writes 1.0 as 1 in some tools).
_SCALARS: dict[Any, type | tuple[type, ...]] = {int: int, float: (int, float), bool: bool, str: str}
