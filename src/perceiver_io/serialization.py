"""``save_pretrained`` / ``from_pretrained``: a JSON config plus safetensors weights, no pickle.

Files in a model directory:
    config.json        {"model_type": ..., "format_version": 1, "config": {...}}
    model.safetensors  the state dict; tied parameters are stored once (aliases in the metadata)

Both files are written to a temporary name and renamed, so a crash never leaves a half-written
file. Loading checks every key, shape and dtype before touching the model and raises a ``ValueError``
naming the file on any mismatch, so a model is never half-loaded; the config is checked against the
weights file's header on a model built on the meta device first, so a config that does not fit the
weights never allocates its model.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .core.registry import Component, component, component_types

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 2  # 2: model_type is the registered type name (1: the class name, still read)


def model_component(model_type: str) -> Component:
    """The registry entry of a saved ``model_type`` (a registered name, or a class name of format 1)."""
    try:
        return component(model_type)
    except ValueError:
        for name in component_types():
            entry = component(name)
            if entry.module_class.__name__ == model_type:
                return entry
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename. A killed write's
    temporary file is left (hidden, ``.{name}.{pid}.*.tmp``): writers of many files (flow frames) would otherwise
    list their directory once per file; :func:`save_pretrained` clears its own with :func:`remove_stale_temporaries`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the permissions open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_name(path: Path) -> Path:
    """Where a write of ``path`` goes before its rename: ``.{name}.{pid}.{random}.tmp`` in the same directory (the
    pid lets a later write tell a killed writer's leftover from a write in progress)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` (``.{name}.{pid}.*.tmp``) that a killed write left behind: those whose
    writer process is no longer running. Files of running processes, this one included, are kept. Returns the
    removed paths."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process / not a pid: leave its file alone
        return True
    return True


def _split_aliases(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep one name per shared tensor (safetensors refuses shared storage); map the others to it."""
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor.detach().contiguous()
    return unique, aliases


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str], *, source: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` for ``model`` into ``directory``
    (created if needed). ``source`` (where the weights come from, e.g. a converted checkpoint) is kept in
    ``config.json`` and shown on the card; a ``README.md`` not written by this function is left alone."""
    model_type = getattr(type(model), "component_type", None)
    if model_type is None or component(model_type).module_class is not type(model):
        raise TypeError(f"model: {type(model).__name__} is not a registered model type; known: {component_types()}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unique, aliases = _split_aliases(model.state_dict())
    for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME):
        remove_stale_temporaries(directory / name)
    weights_tmp = temporary_name(directory / WEIGHTS_NAME)
    try:
        save_file(unique, str(weights_tmp), metadata={"aliases": json.dumps(aliases), "model_type": model_type})
        os.replace(weights_tmp, directory / WEIGHTS_NAME)
    except BaseException:
        weights_tmp.unlink(missing_ok=True)
        raise
    config: dict[str, Any] = {"model_type": model_type, "format_version": FORMAT_VERSION,
                              "config": model.config.to_dict()}  # type: ignore[attr-defined]
    if source is not None:
        config["source"] = source
    atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
    card = directory / CARD_NAME
    if not card.exists() or CARD_MARK in card.read_text(errors="replace"):
        atomic_write_bytes(card, model_card(model, source).encode())
    return directory


CONFIG_KEYS = frozenset({"model_type", "format_version", "config", "source"})
"""The top-level keys of ``config.json`` (``source``: where the weights came from, optional)."""
CARD_NAME = "README.md"
CARD_MARK = "<!-- written by perceiver-io-torch save_pretrained -->"


def model_card(model: nn.Module, source: str | None = None) -> str:
    """A model card (``README.md``, Hugging Face Hub style) describing ``model``: its class, size, architecture
    (the parts of a Perceiver IO config: adapters, latents, layers, decoder), source, and how to load it."""
    n = sum(p.numel() for p in model.parameters())
    config = model.config  # type: ignore[attr-defined]
    rows = [("model", f"`{type(model).__name__}`"), ("parameters", f"{n:,}")]
    for part in ("input_adapter", "encoder", "decoder", "output_adapter"):
        value = getattr(config, part, None)
        if value is not None:
            rows.append((part.replace("_", " "), _describe_part(value)))
    rows.append(("source", source or "trained or built with perceiver-io-torch"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""---
library_name: perceiver-io-torch
tags:
- perceiver-io
---
{CARD_MARK}
# {type(model).__name__}

A Perceiver IO model (Jaegle et al., "Perceiver IO: A General Architecture for Structured Inputs & Outputs") saved
by perceiver-io-torch: `config.json` holds its configuration and `model.safetensors` its
weights.

| | |
|---|---|
{table}

```python
import perceiver_io
model = perceiver_io.from_pretrained("path/or/hub-id")   # a {type(model).__name__}, in eval mode
```
"""


def _describe_part(config: Any) -> str:
    name = type(config).__name__.removesuffix("Config")
    fields = config.to_dict() if hasattr(config, "to_dict") else {}
    if name == "Encoder":
        return (f"{fields['num_latents']} latents x {fields['num_latent_channels']} channels, "
                f"{fields['num_blocks']} x {fields['num_self_attends_per_block']} self-attention layers "
                f"({fields['num_self_attend_heads']} heads), {fields['num_cross_attend_heads']} cross-attention head(s)")
    if name == "Decoder" and "num_heads" in fields:
        return f"cross-attention decoder, {fields['num_heads']} head(s)"
    return f"`{name}`"


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``config.json``; errors name the file."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file (expected a directory written by save_pretrained)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or not {"model_type", "config"} <= set(data):
        raise ValueError(f"{path}: expected keys 'model_type' and 'config'")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; a model's config.json holds {sorted(CONFIG_KEYS)}")
    if not isinstance(data["model_type"], str):
        raise ValueError(f"{path}: model_type: expected a string, got {data['model_type']!r}")
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path}: format_version: expected an int, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version} is newer than this library ({FORMAT_VERSION})")
    return data


def state_mismatch(
    expected: dict[str, torch.Tensor],
    found: dict[str, torch.Tensor],
    optional: tuple[str, ...] = (),
    unused: list[str] | None = None,
) -> list[str]:
    """What keeps ``found`` from loading into a model whose state dict is ``expected``; empty if nothing.

    Keys ending in one of ``optional`` may be absent; ``unused`` lists source entries that mapped to
    nothing (for converters whose source names differ from ours).
    """
    missing = sorted(k for k in expected if k not in found and not k.endswith(optional))
    unexpected = sorted(set(found) - set(expected)) + list(unused or [])
    mismatched = [
        f"{k}: file {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in found.items()
        if k in expected and v.shape != expected[k].shape
    ]
    # A value converts to the model's dtype only within its kind: integers, bools or complex numbers in a floating
    # weight (or the reverse) are not weights of this model, and a complex one would lose its imaginary part.
    wrong_kind = [
        f"{k}: file {v.dtype} vs model {expected[k].dtype}"
        for k, v in found.items()
        if k in expected and _dtype_kind(v.dtype) != _dtype_kind(expected[k].dtype)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s) {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s) {unexpected[:5]}")
    if mismatched:
        problems.append(f"shape mismatch {mismatched[:5]}")
    if wrong_kind:
        problems.append(f"dtype mismatch {wrong_kind[:5]}")
    return problems


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating"
    return "bool" if dtype == torch.bool else "integer"


# safetensors' dtype names (the header) -> torch dtypes; a name missing here is a dtype torch cannot load.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8,
    "BOOL": torch.bool, "C64": torch.complex64,
}


def _read_aliases(metadata: dict[str, str], path: Path) -> dict[str, str]:
    try:
        aliases = json.loads(metadata.get("aliases", "{}"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: corrupt or not a safetensors file (aliases: {e})") from None
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ValueError(f"{path}: corrupt metadata: aliases: expected a JSON object of tensor names, got "
                         f"{metadata.get('aliases')!r:.100}")
    return aliases


def _read_safetensors(path: str | os.PathLike[str], read: Any) -> tuple[Path, dict[str, Any]]:
    """``{name: read(file, name)}`` for every tensor of a safetensors file, aliases included (mapped to their
    target's value); a missing file is a ``FileNotFoundError``, a corrupt one a ``ValueError``, both naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            values = {key: read(f, key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: corrupt or not a safetensors file ({e})") from None
    for alias, target in _read_aliases(metadata, path).items():
        if target in values:
            values[alias] = values[target]
    return path, values


def read_weights_header(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state a safetensors file holds, aliases included, as meta tensors (names, shapes and dtypes from its
    header; no tensor data is read)."""

    def shape_and_dtype(f: Any, key: str) -> tuple[list[int], str]:
        tensor_slice = f.get_slice(key)
        return tensor_slice.get_shape(), tensor_slice.get_dtype()

    path, header = _read_safetensors(path, shape_and_dtype)
    unknown = sorted({dtype for _, dtype in header.values()} - set(_SAFETENSORS_DTYPES))
    if unknown:
        raise ValueError(f"{path}: unsupported tensor dtype(s) {unknown}")
    return {key: torch.empty(shape, dtype=_SAFETENSORS_DTYPES[dtype], device="meta")
            for key, (shape, dtype) in header.items()}


class _TooManyTensors(Exception):
    pass


@contextlib.contextmanager
def _parameter_budget(limit: int) -> Iterator[None]:
    """Raise :class:`_TooManyTensors` in this thread once more than ``limit`` parameters are registered: a config
    with a huge number of layers stops early instead of building them all (even on the meta device)."""
    owner, count = threading.get_ident(), 0

    def hook(module: nn.Module, name: str, param: Any) -> None:
        nonlocal count
        if param is not None and threading.get_ident() == owner:
            count += 1
            if count > limit:
                raise _TooManyTensors

    handle = torch.nn.modules.module.register_module_parameter_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _check_fits(entry: Component, config: Any, directory: Path, header: dict[str, torch.Tensor]) -> None:
    """Build the model ``config`` describes on the meta device (nothing allocated) and check it against the
    ``header`` of its weights file; errors name ``config.json`` or the weights file."""
    make = getattr(entry.module_class, "from_config", entry.module_class)
    try:
        with torch.device("meta"), _parameter_budget(2 * len(header) + 1000):
            skeleton = make(config)
    except _TooManyTensors:
        raise ValueError(f"{directory / WEIGHTS_NAME}: weights do not match the config: the config builds far more "
                         f"than the {len(header)} tensors the file holds") from None
    except (TypeError, ValueError, RuntimeError, ArithmeticError) as e:  # RuntimeError: a size torch cannot describe
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]  # torch's own errors add a C++ stack
        raise ValueError(f"{directory / CONFIG_NAME}: invalid config: {message}") from None
    problems = state_mismatch(skeleton.state_dict(), header)
    if problems:
        raise ValueError(f"{directory / WEIGHTS_NAME}: weights do not match the config: " + "; ".join(problems))


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a safetensors file into ``model`` after checking every key, shape and dtype kind."""
    path, tensors = _read_safetensors(path, lambda f, key: f.get_tensor(key))
    problems = state_mismatch(model.state_dict(), tensors)
    if problems:
        raise ValueError(f"{path}: weights do not match the config: " + "; ".join(problems))
    model.load_state_dict(tensors, strict=True)
    return model


def from_pretrained(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved with :func:`save_pretrained` (any registered model type), in eval mode."""
    directory = Path(directory)
    data = read_config(directory)
    try:
        entry = model_component(data["model_type"])
    except ValueError as e:
        raise ValueError(f"{directory / CONFIG_NAME}: model_type: {e}") from None
    try:
        config = entry.config_class.from_dict(data["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{directory / CONFIG_NAME}: invalid config: {e}") from None
    # The config against the weights' header first, on the meta device: a config that does not fit the file (a
    # channel count of 10**9, a million layers) is an error before any of its model is allocated.
    _check_fits(entry, config, directory, read_weights_header(directory / WEIGHTS_NAME))
    model = getattr(entry.module_class, "from_config", entry.module_class)(config)
    load_weights(model, directory / WEIGHTS_NAME)
    return model.to(map_location).eval()


class PretrainedMixin:
    """``model.save_pretrained(dir)`` and ``Model.from_pretrained(dir)`` for registered models."""

    def save_pretrained(self, directory: str | os.PathLike[str], *, source: str | None = None) -> Path:
        return save_pretrained(self, directory, source=source)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                        **kwargs: Any) -> Any:
        """The model ``name_or_path`` names (anything :func:`perceiver_io.from_pretrained` reads: a directory of
        ours or of transformers, a Hub id, an official file with ``preset=``); it must be a ``cls``."""
        from .pretrained import from_pretrained as load

        model = load(name_or_path, map_location, **kwargs)
        if not isinstance(model, cls):
            raise ValueError(f"name_or_path: {name_or_path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload this model to the Hugging Face Hub (:func:`perceiver_io.pretrained.push_to_hub`)."""
        from .pretrained import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)  # type: ignore[arg-type]
