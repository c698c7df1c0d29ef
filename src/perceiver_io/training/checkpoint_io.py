"""Lightning checkpoints without pickle: one safetensors file per checkpoint, written atomically.

Lightning's default ``TorchCheckpointIO`` writes ``torch.save`` pickles. :class:`SafeCheckpointIO`
(``Trainer(plugins=[SafeCheckpointIO()])``) writes the same checkpoint dict as a safetensors file
under the same ``.ckpt`` path, and reads it back exactly; :func:`read_checkpoint` and
:func:`write_checkpoint` do the same outside Lightning.

File format (format version 1)
------------------------------
A standard safetensors file (8-byte little-endian header length, JSON header, tensor data), so
``safetensors.safe_open`` can inspect it. It holds:

* every tensor leaf of the checkpoint (model ``state_dict``, optimizer state, scheduler state,
  callback states such as ``ModelCheckpoint.best_model_score``, numpy arrays ...), each stored once,
  named by its key path (``state_dict/lin.weight``, ``optimizer_states/0/state/0/exp_avg``; a
  ``#n`` suffix keeps names unique);
* the header ``__metadata__`` entries ``format`` (``"perceiver_io.lightning_checkpoint"``),
  ``format_version`` (``"1"``) and ``structure``: the whole nested checkpoint as JSON, tensor
  leaves replaced by references to the stored tensors.

``structure`` encodes values like this (a JSON object is a tagged node iff one of its keys starts
with ``$``; it has exactly one such key)::

    str, int, bool, None, finite float   JSON string / number / true, false / null / number
    float inf, -inf, nan                 {"$float": "inf" | "-inf" | "nan"}
    list                                 JSON array
    dict, all keys str, none "$..."      JSON object
    other dict (int/float/bool/None keys) {"$dict": [[key, value], ...]}   (keys encoded as values)
    collections.OrderedDict              {"$odict": [[key, value], ...]}
    tuple                                {"$tuple": [...]}
    torch.Size                           {"$size": [ints]}
    torch.Tensor / nn.Parameter          {"$tensor": NAME, "alias": k?, "requires_grad": true?,
                                          "parameter": true?, "device": "cuda:0"?}
    numpy.ndarray                        {"$ndarray": NAME, "dtype": "<f4", "alias": k?}
    numpy scalar (bool, int, float<=64)  {"$numpy": "float32", "value": 1.5}
    pathlib paths                        {"$path": "a/b", "class": "PosixPath"}
    torch.dtype / torch.device           {"$dtype": "bfloat16"} / {"$device": "cuda:0"}

Types are matched exactly (no subclasses: an ``IntEnum``, a namedtuple or an ``AttributeDict`` is
refused rather than silently turned into its base type). Anything else (dataclasses, modules,
classes, functions, sets, bytes, complex numbers ...) raises a ``TypeError`` naming the key path,
e.g. ``checkpoint['hyper_parameters']['model']``.

Tensor sharing: references to the same tensor object load as one object; distinct tensors that
view the same memory the same way (tied weights' ``state_dict`` entries) are stored once and load
as distinct tensors sharing storage (``"alias"`` numbers them). Partially overlapping views are
stored as separate copies (values exact, sharing not kept). Non-contiguous tensors are stored
contiguous, GPU tensors are copied to the CPU (their device is recorded for ``map_location``),
and ``requires_grad`` / ``nn.Parameter`` are restored. Containers are not shared: a list that
appears twice loads as two equal lists.

Writes go to a hidden temporary file in the target directory (``.NAME.<random>.tmp``), are
fsynced, and replace the target with ``os.replace`` (then the directory is fsynced): a crash or
Ctrl-C leaves the previous checkpoint intact, and an interrupted write removes its temporary file
(only a hard kill can leave one behind). Only local paths (or ``file://``) are supported.
"""

from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import secrets
import shutil
from collections.abc import Callable
from typing import Any, Union

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as _save_file

try:  # the plugin base class; without Lightning the functions and the class still work standalone
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO as _CheckpointIOBase
except ImportError:  # pragma: no cover - Lightning is installed wherever the plugin is used
    _CheckpointIOBase = object  # type: ignore[assignment,misc]

__all__ = ["FORMAT", "FORMAT_VERSION", "SafeCheckpointIO", "read_checkpoint", "write_checkpoint"]

FORMAT = "perceiver_io.lightning_checkpoint"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]
MapLocation = Union[None, str, torch.device, dict, Callable]

# safetensors refuses headers over 100 MB when loading; refuse earlier when saving.
_MAX_STRUCTURE_CHARS = 64_000_000

_SUPPORTED_DTYPES = {
    getattr(torch, name)
    for name in (
        "bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
        "float16", "bfloat16", "float32", "float64", "complex64",
        "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    )
    if hasattr(torch, name)
}
_DTYPES_BY_NAME = {str(d).removeprefix("torch."): d for d in vars(torch).values() if isinstance(d, torch.dtype)}
_PATH_CLASSES = {c.__name__: c for c in (
    pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath,
    pathlib.PurePath, pathlib.PurePosixPath, pathlib.PureWindowsPath,
)}
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def write_checkpoint(checkpoint: dict[str, Any], path: PathLike) -> None:
    """Write ``checkpoint`` (a dict of plain data and tensors) to ``path`` atomically, no pickle.

    The parent directory is created if needed. Raises ``TypeError`` naming the key path of the
    first value that is not plain data (see the module docstring for what is), before anything is
    written, and ``ValueError`` for a remote URL.
    """
    path = _local_path(path)
    if type(checkpoint) is not dict:
        raise TypeError(f"a checkpoint must be a dict, got {type(checkpoint).__qualname__}")
    encoder = _Encoder()
    structure = json.dumps(encoder.encode(checkpoint, ()), ensure_ascii=True, allow_nan=False,
                           separators=(",", ":"))
    if len(structure) > _MAX_STRUCTURE_CHARS:
        raise ValueError(
            f"checkpoint for {path}: its non-tensor data takes {len(structure)} characters of JSON; "
            "store large data (long lists of numbers) as tensors instead"
        )
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "structure": structure}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: _save_file(encoder.tensors, tmp, metadata=metadata))


def read_checkpoint(path: PathLike, map_location: MapLocation = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`write_checkpoint` / :class:`SafeCheckpointIO`.

    Args:
        path: the ``.ckpt`` file.
        map_location: where tensors go. ``None`` (default, like Lightning's): the CPU. A device
            or device string: that device. A dict: maps the device a tensor was saved from
            (``"cuda:0"``; ``"cpu"``) to a device, others go back to where they were saved. A
            callable ``f(storage, location)``, as for ``torch.load``: the tensor goes to the
            device of the storage it returns.

    Raises:
        FileNotFoundError: no file at ``path`` (the message names it).
        ValueError: the file is not such a checkpoint: corrupt, truncated, a ``torch.save``
            pickle, a safetensors file without the checkpoint metadata, or a newer format
            (the message reads "corrupt checkpoint <path>: <what is wrong / what the file is>").
    """
    path = _local_path(path)
    if map_location is not None and not isinstance(map_location, (str, torch.device, dict)) and not callable(
        map_location
    ):
        raise TypeError(f"map_location must be None, a device, a dict or a callable, not {map_location!r}")
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    if not path.is_file():
        raise ValueError(f"corrupt checkpoint {path}: not a file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or "structure" not in metadata:
                raise _CorruptError(
                    "a safetensors file without checkpoint metadata (format/structure); "
                    "it was not written by SafeCheckpointIO"
                )
            version = metadata.get("format_version")
            if version != str(FORMAT_VERSION):
                raise _CorruptError(f"format_version {version!r}; this version reads {FORMAT_VERSION}")
            try:
                structure = json.loads(metadata["structure"])
            except json.JSONDecodeError as e:
                raise _CorruptError(f"the structure metadata is not valid JSON ({e})") from e
            decoder = _Decoder(f, set(f.keys()), map_location)
            checkpoint = decoder.decode(structure, ())
    except SafetensorError as e:
        raise ValueError(f"corrupt checkpoint {path}: {_describe_unreadable(path, e)}") from e
    except _CorruptError as e:
        raise ValueError(f"corrupt checkpoint {path}: {e}") from e
    except _MapLocationError as e:
        raise e.error from None
    if type(checkpoint) is not dict:
        raise ValueError(f"corrupt checkpoint {path}: the top level is not a dict")
    return checkpoint


class SafeCheckpointIO(_CheckpointIOBase):  # type: ignore[misc,valid-type]
    """Lightning ``CheckpointIO`` plugin: safetensors checkpoints, no pickle, atomic writes.

    ``Trainer(plugins=[SafeCheckpointIO()])``. Every checkpoint Lightning saves through the
    strategy (``ModelCheckpoint``, ``OnExceptionCheckpoint``, ``trainer.save_checkpoint``) and
    every ``ckpt_path=`` it resumes from goes through this plugin. The file format is described in
    the module docstring. ``LightningModule.load_from_checkpoint`` does *not* use the plugin (it
    calls ``torch.load`` directly); use :func:`read_checkpoint` and ``load_state_dict`` instead.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` (see :func:`write_checkpoint`)."""
        if storage_options is not None:
            raise TypeError(
                f"`Trainer.save_checkpoint(..., storage_options=...)` is not supported by {type(self).__name__}"
            )
        write_checkpoint(checkpoint, path)

    def load_checkpoint(
        self, path: PathLike, map_location: MapLocation = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path`` (see :func:`read_checkpoint`).

        ``weights_only`` is accepted for Lightning's interface and ignored: reading never runs code.
        """
        return read_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete the checkpoint file at ``path``; nothing happens if there is none."""
        path = _local_path(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # as Lightning's TorchCheckpointIO (fs.rm(recursive=True))
        else:
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Paths and atomic writes
# ----------------------------------------------------------------------------------------------


class _CorruptError(Exception):
    """Raised while reading; turned into ``ValueError("corrupt checkpoint <path>: ...")``."""


class _MapLocationError(Exception):
    """Carries an error of the caller's ``map_location`` out of the decoder unchanged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _local_path(path: PathLike) -> pathlib.Path:
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme != "file":
            raise ValueError(
                f"SafeCheckpointIO writes and reads local files only, not {scheme}:// URLs: {text}"
            )
        text = rest
    return pathlib.Path(text)


def _atomic_write(path: pathlib.Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a new temporary file next to ``path``, fsync it, rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, as torch.save
    os.close(fd)
    try:
        write(str(tmp))
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: pathlib.Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsynced there
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse; the rename is done anyway
        pass
    finally:
        os.close(fd)


def _describe_unreadable(path: pathlib.Path, error: Exception) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:  # pragma: no cover
        head = b""
    if head.startswith(b"PK\x03\x04"):
        return ("a zip file, probably a torch.save pickle (Lightning's default TorchCheckpointIO); "
                "SafeCheckpointIO reads only its own safetensors checkpoints")
    if head[:1] == b"\x80":
        return "a pickle file; SafeCheckpointIO reads only its own safetensors checkpoints"
    if not head:
        return "the file is empty"
    return f"not a readable safetensors file ({error})"


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------


def _key_path(path: tuple[Any, ...]) -> str:
    return "checkpoint" + "".join(f"[{k!r}]" for k in path)


def _unsupported(value: Any, path: tuple[Any, ...], why: str = "") -> TypeError:
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__
    return TypeError(
        f"cannot store {_key_path(path)} of type {name} in a checkpoint without pickle"
        + (f" ({why})" if why else "")
        + ": store plain data instead (dict, list, tuple, str, int, float, bool, None, tensors, "
        "numpy arrays), e.g. a dataclass as a dict or a config object by its fields"
    )


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}  # file name -> contiguous CPU tensor
        self._by_object: dict[int, tuple[Any, dict[str, Any]]] = {}  # id -> (object kept alive, node)
        self._by_view: dict[tuple[Any, ...], list[Any]] = {}  # same memory, same view -> [name, aliases]
        self._stored_storages: set[int] = set()
        self._active: set[int] = set()  # containers being encoded, to catch cycles

    def encode(self, value: Any, path: tuple[Any, ...]) -> Any:
        kind = type(value)
        if value is None or kind in (str, bool, int):
            return value
        if kind is float:
            if math.isfinite(value):
                return value
            return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if kind in (dict, collections.OrderedDict, list, tuple):
            if id(value) in self._active:
                raise _unsupported(value, path, "it contains itself")
            self._active.add(id(value))
            try:
                return self._encode_container(value, path)
            finally:
                self._active.discard(id(value))
        if kind is torch.Size:
            return {"$size": list(value)}
        if kind is torch.Tensor or kind is torch.nn.Parameter:
            return self._encode_tensor(value, path)
        if kind is np.ndarray:
            return self._encode_ndarray(value, path)
        if isinstance(value, np.generic):
            return self._encode_numpy_scalar(value, path)
        if kind in _PATH_CLASSES.values():
            return {"$path": str(value), "class": kind.__name__}
        if kind is torch.dtype:
            return {"$dtype": str(value).removeprefix("torch.")}
        if kind is torch.device:
            return {"$device": str(value)}
        raise _unsupported(value, path)

    def _encode_container(self, value: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(value, list):
            return [self.encode(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, (*path, i)) for i, v in enumerate(value)]}
        for key in value:
            if key is not None and type(key) not in (str, int, float, bool):
                raise TypeError(
                    f"cannot store {_key_path(path)} in a checkpoint without pickle: it has a key "
                    f"{key!r} of type {type(key).__qualname__}; dict keys must be str, int, float, "
                    "bool or None"
                )
        if type(value) is dict and all(type(k) is str and not k.startswith("$") for k in value):
            return {k: self.encode(v, (*path, k)) for k, v in value.items()}
        tag = "$dict" if type(value) is dict else "$odict"
        return {tag: [[self.encode(k, path), self.encode(v, (*path, k))] for k, v in value.items()]}

    def _check_tensor(self, tensor: torch.Tensor, path: tuple[Any, ...]) -> None:
        why = None
        if tensor.layout != torch.strided:
            why = f"a {tensor.layout} tensor; store .to_dense()"
        elif tensor.is_quantized:
            why = "a quantized tensor; store .dequantize() or its int_repr() and scales"
        elif tensor.is_nested:
            why = "a nested tensor"
        elif tensor.device.type == "meta":
            why = "a meta tensor has no data"
        elif tensor.dtype not in _SUPPORTED_DTYPES:
            why = f"dtype {tensor.dtype} is not supported by safetensors"
        if why:
            raise _unsupported(tensor, path, why)

    def _store(self, data: torch.Tensor, path: tuple[Any, ...], view_key: tuple[Any, ...] | None) -> tuple[str, int]:
        """Store ``data`` once per distinct view; returns (file name, alias number)."""
        if view_key is not None and view_key in self._by_view:
            entry = self._by_view[view_key]
            entry[1] += 1
            return entry[0], entry[1]
        base = "/".join(str(k) for k in path) or "checkpoint"
        name, n = base, 1
        while name in self.tensors or name == "__metadata__":
            name, n = f"{base}#{n}", n + 1
        data = data.detach()
        if data.device.type != "cpu":
            data = data.to("cpu")
        data = data.resolve_conj().resolve_neg().contiguous()
        ptr = data.untyped_storage().data_ptr()
        if ptr and data.numel():
            if ptr in self._stored_storages:  # safetensors refuses tensors sharing memory
                data = data.clone()
                ptr = data.untyped_storage().data_ptr()
            self._stored_storages.add(ptr)
        self.tensors[name] = data
        if view_key is not None:
            self._by_view[view_key] = [name, 0]
        return name, 0

    @staticmethod
    def _view_key(tensor: torch.Tensor) -> tuple[Any, ...] | None:
        ptr = tensor.untyped_storage().data_ptr()
        if not ptr or not tensor.numel():
            return None
        return (tensor.device, ptr, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)

    def _encode_tensor(self, tensor: torch.Tensor, path: tuple[Any, ...]) -> dict[str, Any]:
        if id(tensor) in self._by_object:
            return dict(self._by_object[id(tensor)][1])
        self._check_tensor(tensor, path)
        name, alias = self._store(tensor, path, self._view_key(tensor))
        node: dict[str, Any] = {"$tensor": name}
        if alias:
            node["alias"] = alias
        if type(tensor) is torch.nn.Parameter:
            node["parameter"] = True
            node["requires_grad"] = tensor.requires_grad
        elif tensor.requires_grad:
            node["requires_grad"] = True
        if tensor.device.type != "cpu":
            node["device"] = str(tensor.device)
        self._by_object[id(tensor)] = (tensor, node)
        return dict(node)

    def _encode_ndarray(self, array: np.ndarray, path: tuple[Any, ...]) -> dict[str, Any]:
        if id(array) in self._by_object:
            return dict(self._by_object[id(array)][1])
        if array.dtype.kind not in "biufc" or array.dtype.hasobject:
            raise _unsupported(array, path, f"numpy dtype {array.dtype} has no tensor dtype")
        native = array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))
        if not native.flags.writeable or any(s < 0 for s in native.strides):
            native = native.copy()  # torch.from_numpy refuses read-only data and negative strides
        try:
            tensor = torch.from_numpy(native)
        except TypeError as e:
            raise _unsupported(array, path, f"numpy dtype {array.dtype} has no tensor dtype") from e
        self._check_tensor(tensor, path)
        name, alias = self._store(tensor, path, self._view_key(tensor))
        node: dict[str, Any] = {"$ndarray": name, "dtype": array.dtype.str}
        if alias:
            node["alias"] = alias
        self._by_object[id(array)] = (array, node)
        return dict(node)

    def _encode_numpy_scalar(self, value: np.generic, path: tuple[Any, ...]) -> dict[str, Any]:
        if isinstance(value, np.bool_):
            item: Any = bool(value)
        elif isinstance(value, np.integer):
            item = int(value)
        elif isinstance(value, np.floating) and value.dtype.itemsize <= 8:
            item = self.encode(float(value), path)
        else:
            raise _unsupported(value, path, "only numpy bool, integer and float (up to 64-bit) scalars")
        return {"$numpy": value.dtype.name, "value": item}


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


class _Decoder:
    def __init__(self, file: Any, names: set[str], map_location: MapLocation) -> None:
        self._file = file
        self._names = names
        self._map_location = map_location
        self._raw: dict[str, torch.Tensor] = {}
        self._objects: dict[tuple[str, str, int], Any] = {}

    def decode(self, node: Any, path: tuple[Any, ...]) -> Any:
        kind = type(node)
        if node is None or kind in (str, bool, int, float):
            return node
        if kind is list:
            return [self.decode(v, (*path, i)) for i, v in enumerate(node)]
        if kind is not dict:  # pragma: no cover - json.loads makes nothing else
            raise _CorruptError(f"unexpected {kind.__name__} at {_key_path(path)}")
        tags = [k for k in node if k.startswith("$")]
        if not tags:
            return {k: self.decode(v, (*path, k)) for k, v in node.items()}
        if len(tags) != 1:
            raise _CorruptError(f"a node with several tags {tags} at {_key_path(path)}")
        tag = tags[0]
        try:
            return self._decode_tagged(tag, node, path)
        except _CorruptError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise _CorruptError(f"malformed {tag} node at {_key_path(path)}: {node!r:.200} ({e})") from e

    def _decode_tagged(self, tag: str, node: dict[str, Any], path: tuple[Any, ...]) -> Any:
        value = node[tag]
        if tag == "$float":
            return _NONFINITE[value]
        if tag == "$tuple":
            return tuple(self.decode(v, (*path, i)) for i, v in enumerate(_as_list(value)))
        if tag in ("$dict", "$odict"):
            result: dict[Any, Any] = {} if tag == "$dict" else collections.OrderedDict()
            for item in _as_list(value):
                k, v = _as_list(item)
                key = self.decode(k, path)
                if key is not None and type(key) not in (str, int, float, bool):
                    raise _CorruptError(f"a dict key of type {type(key).__name__} at {_key_path(path)}")
                result[key] = self.decode(v, (*path, key))
            return result
        if tag == "$size":
            return torch.Size([_as_int(v) for v in _as_list(value)])
        if tag == "$tensor":
            return self._tensor(node, path)
        if tag == "$ndarray":
            key = ("ndarray", value, node.get("alias", 0))
            if key not in self._objects:
                data = self._data(value, path, node.get("alias", 0))
                array = data.detach().numpy()
                self._objects[key] = array.astype(np.dtype(node["dtype"]), copy=False)
            return self._objects[key]
        if tag == "$numpy":
            item = self.decode(node["value"], path)
            return np.dtype(value).type(item)
        if tag == "$path":
            return _PATH_CLASSES[node["class"]](_as_str(value))
        if tag == "$dtype":
            return _DTYPES_BY_NAME[value]
        if tag == "$device":
            return torch.device(_as_str(value))
        raise _CorruptError(f"unknown tag {tag!r} at {_key_path(path)}")

    def _data(self, name: Any, path: tuple[Any, ...], alias: int) -> torch.Tensor:
        if type(name) is not str or name not in self._names:
            raise _CorruptError(f"{_key_path(path)} refers to a tensor {name!r} that is not in the file")
        if name not in self._raw:
            self._raw[name] = self._file.get_tensor(name)
        raw = self._raw[name]
        return raw if not alias else raw.detach().view(raw.shape)

    def _tensor(self, node: dict[str, Any], path: tuple[Any, ...]) -> torch.Tensor:
        name, alias = node["$tensor"], _as_int(node.get("alias", 0))
        key = ("tensor", name, alias)
        if key in self._objects:
            return self._objects[key]
        tensor = self._data(name, path, alias)
        saved_device = _as_str(node.get("device", "cpu"))
        target = self._target_device(tensor, saved_device)
        if target is not None and target != tensor.device:
            tensor = tensor.to(target)
        if node.get("parameter"):
            tensor = torch.nn.Parameter(tensor, requires_grad=bool(node.get("requires_grad", True)))
        elif node.get("requires_grad"):
            tensor = tensor.requires_grad_(True)
        self._objects[key] = tensor
        return tensor

    def _target_device(self, tensor: torch.Tensor, saved_device: str) -> torch.device | None:
        location = self._map_location
        if location is None:
            return None
        if isinstance(location, (str, torch.device)):
            return torch.device(location)
        try:
            if isinstance(location, dict):
                return torch.device(location.get(saved_device, saved_device))
            result = location(tensor.untyped_storage(), saved_device)
            device = getattr(result, "device", None)
            return torch.device(device) if device is not None else None
        except Exception as e:  # the caller's mistake, not a corrupt file
            raise _MapLocationError(e) from e


def _as_list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _as_int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an int, got {type(value).__name__}")
    return value


def _as_str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a str, got {type(value).__name__}")
    return value
