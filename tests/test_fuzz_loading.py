"""Property-based fuzzing (hypothesis) of the loading entry points: ``perceiver_io.from_pretrained`` on a saved
model directory, ``perceiver_io.convert.from_haiku`` on an official (haiku) checkpoint file, and the training
command line's argument parsing (``perceiver-io <task> fit ...``).

* ``from_pretrained``: a tiny model saved by ``save_pretrained`` (an image classifier and a masked language model
  with tied weights), then mutated: ``config.json`` (invalid JSON, empty, nested too deeply, a field of the wrong
  type or size: negative, zero, huge, float, bool, string, list; missing and unknown keys, component types,
  ``model_type``, ``format_version``), ``model.safetensors`` (truncated, random bytes, a broken header: wrong
  dtypes, shapes, offsets, aliases; tensors missing, extra, reshaped, of another dtype: bool, int, complex, float16
  ...) and missing files. Property: it loads (in eval mode; a forward pass on a valid input is finite) or raises
  ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` whose one-line message starts with the directory's path
  (the file at fault) or an argument's name; and no model larger than the file's weights is ever allocated (the
  config is checked against the weights' header first, on the meta device).
* ``from_haiku``: the official fixture checkpoints (``tests/fixtures/official``), re-pickled after mutations: the
  container (not a dict, ``params`` / ``state`` of another type), arrays of another dtype (object, str, bytes,
  complex, bool, int, big-endian, structured), rank or size, missing and extra parameters, truncated and random
  files, NumPy's ``.npz``, pickles that name other globals (code). Property: it loads (a forward pass is finite), or
  raises ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` / ``UnsafeCheckpointError`` naming the file (or the
  argument at fault); a pickle never runs code.
* the command line: argument lists of real option names (``--model.preset``, ``--model.overrides.<part>.<field>``,
  ``--model.lr``, ``--trainer.max_epochs``, ``--checkpoint.every_n_train_steps``, ``--data.batch_size`` ...) with
  drawn values (negative, zero, huge, floats for ints, strings, broken YAML), run through
  :func:`perceiver_io.training.cli.run_task_cli` with the subcommand itself stubbed out (the model, data module and
  trainer are built, nothing is trained or loaded), or with ``--print_config`` (parsing only). Property: exit code 0,
  or a single error line on stderr (``perceiver-io <task>: ...``) and no traceback.

The default run draws ``FAST_EXAMPLES`` cases per target (a few seconds in all at OMP_NUM_THREADS=1);
``pytest -m slow tests/test_fuzz_loading.py -s`` draws ``PERCEIVER_FUZZ_EXAMPLES`` per target and prints the count of
each outcome. Both are derandomized and keep no example database (``test_fuzz.FUZZ_SETTINGS``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import pickle
import shutil
import struct
import sys
import threading
import time
import types
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from test_fuzz import FUZZ_SETTINGS, SLOW_EXAMPLES, Draw, assert_finite, first_word

import official_fixtures
from perceiver_io import create_model, from_pretrained
from perceiver_io.convert.haiku import UnsafeCheckpointError, from_haiku
from perceiver_io.core.registry import component_types
from perceiver_io.serialization import CONFIG_NAME, WEIGHTS_NAME

FAST_EXAMPLES = {"from_pretrained": 40, "from_haiku": 40, "cli": 20}

INTS = (-1, 0, 1, 2, 3, 7, 64, 10**9, 2**63, -(2**63), 10**40)  # never 10**4..10**8: a real model of that size fits
VALUES = INTS + (1.5, -0.5, 1e300, float("nan"), float("inf"), True, False, None, "abc", "", [], {}, [1, 2], [1],
                 {"a": 1}, [[1]], "8")


# ---------------------------------------------------------------------------------------------- shared oracle bits
class AllocationWatch:
    """Counts the elements of every parameter registered off the meta device while active (this thread only)."""

    def __init__(self) -> None:
        self.numel, self._owner = 0, threading.get_ident()

    def _hook(self, module: torch.nn.Module, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta" and threading.get_ident() == self._owner:
            self.numel += param.numel()

    def __enter__(self) -> AllocationWatch:
        self._handle = torch.nn.modules.module.register_module_parameter_registration_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


def check_error(error: BaseException, where: Path, names: set[str]) -> str:
    """An error message is one line and starts with ``where`` (a file or directory at fault, or one inside it) or
    with one of the argument ``names``."""
    message = str(error)
    assert "\n" not in message.strip(), f"{type(error).__name__} of more than one line: {message!r}"
    assert message.startswith(str(where)) or first_word(message) in names, (
        f"{type(error).__name__} names neither {where} nor one of {sorted(names)}: {message[:300]}")
    return type(error).__name__


def forward_is_finite(model: torch.nn.Module) -> str:
    """Run ``model`` on a valid input where that is cheap: "ok", or "ok:not run" for a model too large to run."""
    config = model.config  # type: ignore[attr-defined]
    adapter = config.input_adapter.to_dict()
    blocks = config.encoder.num_blocks * max(config.encoder.num_self_attends_per_block, 1)
    if blocks > 64:
        return "ok:not run"
    if "image_shape" in adapter:
        shape = tuple(adapter["image_shape"])
        if np.prod(shape) > 10**5:
            return "ok:not run"
        x = torch.rand(2, *shape) * 2 - 1
    elif "vocab_size" in adapter:
        if adapter["max_seq_len"] > 10**4:
            return "ok:not run"
        x = torch.randint(0, adapter["vocab_size"], (2, adapter["max_seq_len"]))
    else:  # pragma: no cover - the fuzzed models are image and text models
        return "ok:not run"
    with torch.no_grad():
        assert_finite(model(x), neg_inf_ok=False)
    return "ok"


# -------------------------------------------------------------------------------------------------- from_pretrained
@functools.cache
def saved_model(kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, str], int]:
    """A tiny saved model: its config.json, tensors, metadata and parameter count."""
    torch.manual_seed(0)
    if kind == "image":
        model = create_model("digits_fourier", encoder={
            "num_latents": 4, "num_latent_channels": 16, "num_self_attends_per_block": 2, "num_cross_attend_heads": 1,
            "num_self_attend_heads": 2, "qk_channels": 16, "v_channels": 16})
    else:
        model = create_model("language_bytes_small", max_seq_len=8, encoder={
            "num_latents": 4, "num_latent_channels": 16, "num_self_attends_per_block": 1, "num_self_attend_heads": 2,
            "num_cross_attend_heads": 1, "qk_channels": 16, "v_channels": 16})
    folder = Path(__import__("tempfile").mkdtemp(prefix="fuzz-saved-"))
    try:
        model.save_pretrained(folder)
        from safetensors import safe_open

        with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        config = json.loads((folder / CONFIG_NAME).read_text())
    finally:
        shutil.rmtree(folder)
    return config, tensors, metadata, sum(p.numel() for p in model.parameters())


def paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every value in a JSON tree (dict keys and list indices), the root ``()`` and containers included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [path, *(p for k, v in items for p in paths(v, (*path, k)))]


def leaves(node: Any) -> list[tuple]:
    """Paths of every value below the root."""
    return [p for p in paths(node) if p]


def at(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


def dicts(node: Any) -> list[tuple]:
    """Paths of every dict, the root included."""
    return [p for p in paths(node) if isinstance(at(node, p), dict)]


def mutate_config(draw: Draw, config: dict[str, Any]) -> Any:
    """Change ``config`` in place (returns None), or return the whole file's new content: text, bytes, "delete"
    (no file) or "dir" (a directory in its place)."""
    how = draw.choose("field", "field", "field", "field", "delete", "unknown", "type", "top", "file")
    if how == "field":
        path = draw.choose(*leaves(config["config"]))
        at(config["config"], path[:-1])[path[-1]] = draw(st.sampled_from(VALUES))
    elif how == "delete":
        path = draw.choose(*[p for p in dicts(config["config"]) if at(config["config"], p)])
        node = at(config["config"], path)
        del node[draw.choose(*sorted(node, key=str))]
    elif how == "unknown":
        at(config["config"], draw.choose(*dicts(config["config"])))["no_such_field"] = draw(st.sampled_from(VALUES))
    elif how == "type":
        node = at(config["config"], draw.choose(*[p for p in dicts(config["config"]) if "type" in at(config["config"], p)]))
        node["type"] = draw(st.sampled_from(component_types()) | st.sampled_from(VALUES))
    elif how == "top":
        key = draw.choose("model_type", "format_version", "config", "source", "extra")
        value = draw(st.sampled_from(VALUES) | st.sampled_from(
            ["perceiver", "ImageClassifier", "image_classifier", "perceiver_io", "masked_language_model", 1, 2, 3]))
        if draw(st.integers(0, 4)) == 0 and key in config:
            del config[key]
        else:
            config[key] = value
    else:
        text = json.dumps(config)
        return draw.choose("", "{", text[: draw(st.integers(0, len(text) - 1))], "[" * 100_000, "null", "[]", '"x"',
                           "3", b"\xff\xfe\x00garbage", text.replace("{", "[", 1), "delete", "dir")
    return None


def header_bytes(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def with_header(header: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


BROKEN_FILE_KINDS = ("truncate", "random", "empty")


def broken_file(draw: Draw, kind: str, data: bytes, max_random: int) -> bytes:
    """A file's bytes ``data`` cut short (``truncate``), replaced by up to ``max_random`` random bytes (``random``)
    or by nothing (``empty``)."""
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "random":
        rng = np.random.default_rng(draw(st.integers(0, 99)))
        return bytes(rng.integers(0, 256, draw(st.integers(1, max_random)), dtype=np.uint8))
    return b""


def mutate_weights(draw: Draw, tensors: dict[str, torch.Tensor], metadata: dict[str, str], data: bytes) -> Any:
    """New weights-file bytes, or None to delete the file, or "dir"."""
    how = draw.choose("tensor", "tensor", "tensor", "header", "header", "bytes", "metadata")
    if how == "bytes":
        kind = draw.choose("truncate", "random", "empty", "prefix", "flip")
        if kind in BROKEN_FILE_KINDS:
            return broken_file(draw, kind, data, max_random=4096)
        if kind == "prefix":
            return struct.pack("<Q", draw.choose(0, 1, 2**63, 2**64 - 1, len(data), 10**12)) + data[8:]
        n = struct.unpack("<Q", data[:8])[0]
        pos = draw(st.integers(8, 8 + n - 1))
        return data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1:]
    if how == "header":
        header, body = header_bytes(data)
        names = [k for k in header if k != "__metadata__"]
        name = draw.choose(*names)
        field = draw.choose("dtype", "shape", "data_offsets", "drop", "entry", "extra")
        if field == "dtype":
            header[name]["dtype"] = draw.choose("BOOL", "I64", "I8", "U8", "F16", "BF16", "F64", "C64", "F8_E4M3",
                                                "U16", "XYZ", 3, None)
        elif field == "shape":
            header[name]["shape"] = draw.choose([10**12], [], [-1], "abc", [2**64], [0], [1, 10**9, 10**9], None)
        elif field == "data_offsets":
            header[name]["data_offsets"] = draw.choose([0, 10**15], [5, 1], [0], "x", [-1, 4], None)
        elif field == "drop":
            del header[name]
        elif field == "entry":
            header[name] = draw.choose(None, 3, "x", [], {})
        else:
            header["extra.weight"] = {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}
        return with_header(header, body)
    if how == "metadata":
        metadata = dict(metadata)
        metadata["aliases"] = draw.choose("[1]", '{"a": [1]}', "{", '{"x": "y"}', "null", "3", '"s"',
                                          json.dumps({k: "missing" for k in json.loads(metadata.get("aliases", "{}"))}),
                                          json.dumps({"decoder.output.weight": "encoder.latents"}))
        if draw(st.booleans()):
            del metadata["aliases"]
        return ("save", tensors, metadata)
    tensors = dict(tensors)
    name = draw.choose(*sorted(tensors))
    kind = draw.choose("drop", "extra", "rename", "reshape", "dtype", "scalar")
    if kind == "drop":
        del tensors[name]
    elif kind == "extra":
        tensors["extra.weight"] = torch.zeros(draw.choose(1, 3, 100))
    elif kind == "rename":
        tensors[name + "_renamed"] = tensors.pop(name)
    elif kind == "reshape":
        t = tensors[name]
        tensors[name] = draw.choose(t.reshape(-1), t[None], t[..., :0].clone(),
                                    torch.zeros(*[s + 1 for s in t.shape]), t.t().contiguous() if t.dim() == 2 else t[None])
    elif kind == "dtype":
        dtype = draw.choose(torch.bool, torch.int64, torch.int8, torch.uint8, torch.complex64, torch.float16,
                            torch.bfloat16, torch.float64)
        tensors[name] = tensors[name].to(dtype)
    else:
        tensors[name] = torch.tensor(1.0)
    return ("save", tensors, metadata)


def write_case(folder: Path, config: Any, weights: Any) -> None:
    """``config`` / ``weights``: bytes or text, ("save", tensors, metadata), "delete" or "dir"."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, content in ((CONFIG_NAME, config), (WEIGHTS_NAME, weights)):
        path = folder / name
        if isinstance(content, str) and content in ("delete", "dir"):
            if content == "dir":
                path.mkdir()
        elif isinstance(content, tuple):
            save_file(content[1], str(path), metadata=content[2])
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())


def fuzz_from_pretrained(draw: Draw, root: Path) -> str:
    from safetensors.torch import save

    kind = draw.choose("image", "text")
    base_config, tensors, metadata, numel = saved_model(kind)
    config = json.loads(json.dumps(base_config))
    original = save(tensors, metadata=metadata)
    weights: Any = original
    config_file: Any = None  # None: json.dumps(config)
    where = "directory"
    if draw.valid:  # valid variations: the weights in another floating dtype, no format_version, a source
        dtype = draw.choose(None, torch.float16, torch.bfloat16, torch.float64)
        if dtype is not None:
            weights = ("save", {k: v.to(dtype) for k, v in tensors.items()}, metadata)
        if draw(st.booleans()):
            config.pop("format_version")
        config["source"] = draw.choose("somewhere", None)
    else:
        for _ in range(draw(st.integers(1, 3))):
            target = draw.choose("config", "config", "weights", "weights", "files")
            if target == "config" and config == base_config:  # one change of the config (it may be no dict after)
                config_file = mutate_config(draw, config)
            elif target == "weights":
                weights = mutate_weights(draw, dict(tensors), metadata, original)
            elif target == "files":
                missing = draw.choose(CONFIG_NAME, WEIGHTS_NAME, "weights dir", "no directory", "a file")
                if missing == CONFIG_NAME:
                    config_file = "delete"
                elif missing == WEIGHTS_NAME:
                    weights = "delete"
                elif missing == "weights dir":
                    weights = "dir"
                else:
                    where = missing
    folder = root / "model"
    write_case(folder, json.dumps(config) if config_file is None else config_file, weights)
    source = folder
    if where == "no directory":
        shutil.rmtree(folder)
    elif where == "a file":
        source = folder / WEIGHTS_NAME if (folder / WEIGHTS_NAME).is_file() else folder
    try:
        with warnings.catch_warnings(), AllocationWatch() as watch:
            warnings.simplefilter("ignore")
            model = from_pretrained(source)
    except (ValueError, TypeError, FileNotFoundError) as error:
        assert watch.numel <= 2 * numel + 1000, f"{watch.numel} parameters allocated before the error {error}"
        return check_error(error, folder, {"name_or_path", "preset"})
    assert watch.numel <= 2 * numel + 1000, f"a model of {watch.numel} parameters from a file of {numel}"
    assert not model.training
    return forward_is_finite(model)


# ------------------------------------------------------------------------------------------------------ from_haiku
HAIKU_FIXTURES = {"image_learned": ("image_learned", 16), "image_conv": ("image_conv", 32)}


@functools.cache
def haiku_fixture(name: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    from perceiver_io.convert.haiku import load_haiku_checkpoint

    params, state = load_haiku_checkpoint(official_fixtures.FIXTURES / f"{name}.params.pickle")
    model_class, config = getattr(official_fixtures, name)()
    return params, state, (model_class, config)


@functools.cache
def haiku_model(name: str) -> torch.nn.Module:
    model_class, config = haiku_fixture(name)[2]
    return model_class.from_config(config)


class FlatMapping(dict):
    """Pickled as haiku's FlatMapping (which the loader reads as a dict)."""

    def __reduce__(self) -> Any:
        return (FlatMapping, (dict(self),))


FlatMapping.__module__ = "haiku._src.data_structures"


class CraftedArray:
    """Pickled as a numpy array of a declared size, dtype and state that numpy itself never writes."""

    def __init__(self, spec: tuple) -> None:
        self.spec = spec

    def __reduce__(self) -> Any:
        shape, code, state = self.spec
        return (np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, shape, code), state)


class RunsCode:
    """A pickle that would create ``path`` if the loader ran the code it names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


@contextlib.contextmanager
def fake_haiku_module():
    module = types.ModuleType("haiku._src.data_structures")
    module.FlatMapping = FlatMapping  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("haiku", "haiku._src", "haiku._src.data_structures")}
    sys.modules.update({"haiku": types.ModuleType("haiku"), "haiku._src": types.ModuleType("haiku._src"),
                        "haiku._src.data_structures": module})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def odd_array(draw: Draw, value: np.ndarray) -> Any:
    kind = draw.choose("object", "str", "bytes", "complex", "bool", "int", "bigendian", "structured", "datetime",
                       "float16", "float64", "rank+", "rank-", "scalar", "size", "empty", "list", "float", "none",
                       "dict", "fortran", "crafted")
    if kind == "object":
        return value.astype(object) if draw(st.booleans()) else np.array(["a"] * value.size, dtype=object)
    if kind == "str":
        return value.astype(str)
    if kind == "bytes":
        return value.astype("S8")
    if kind == "complex":
        return value.astype(draw.choose(np.complex64, np.complex128))
    if kind == "bool":
        return value > 0
    if kind == "int":
        return (value * 100).astype(draw.choose(np.int64, np.int8, np.uint16))
    if kind == "bigendian":
        return value.astype(">f4")
    if kind == "structured":
        return np.zeros(value.shape, dtype=[("a", "f4")])
    if kind == "datetime":
        return np.zeros(value.shape, dtype="datetime64[s]")
    if kind in ("float16", "float64"):
        return value.astype(kind)
    if kind == "rank+":
        return value[None, ..., None]
    if kind == "rank-":
        return value.reshape(-1)[: max(value.size // 2, 1)] if value.ndim <= 1 else value.reshape(value.shape[0], -1)[0]
    if kind == "scalar":
        return np.float32(0.5) if draw(st.booleans()) else np.array(0.5, dtype=np.float32)
    if kind == "size":
        return np.zeros([s + 1 for s in value.shape], dtype=value.dtype)
    if kind == "empty":
        return np.zeros((0,) + value.shape[1:], dtype=value.dtype)
    if kind == "list":
        return value.tolist()
    if kind == "float":
        return 0.5
    if kind == "none":
        return None
    if kind == "dict":
        return {"w": value}
    if kind == "fortran":
        return np.asfortranarray(value)
    return CraftedArray(draw.choose(
        ((10**6, 10**6), b"f", None),  # built at a huge size
        ((0,), b"b", (1, (10**6, 10**6), np.dtype("f4"), False, b"1234")),  # filled from too few bytes
        ((0,), b"b", (1, (10**4, 10**4), np.dtype("O"), False, [1, 2])),  # numpy would crash filling this one
        ((0,), b"b", (1, (3,), np.dtype([("a", "O")]), False, [1])),
        ((0,), b"b", (1, (2,), np.dtype("f4"), False, [1.0, 2.0])),
        ((0,), b"b", "state"),
    ))


def mutate_haiku(draw: Draw, params: dict[str, Any], state: dict[str, Any], tmp: Path) -> Any:
    """The object to pickle (or bytes to write) for one invalid case; ``params`` and ``state`` are copies to edit."""
    how = draw.choose("array", "array", "array", "missing", "extra", "container", "file", "state")
    module = draw.choose(*sorted(params))
    if how == "array":
        leaf = draw.choose(*sorted(params[module]))
        params[module][leaf] = odd_array(draw, params[module][leaf])
    elif how == "missing":
        if draw(st.booleans()):
            del params[module]
        else:
            del params[module][draw.choose(*sorted(params[module]))]
    elif how == "extra":
        target = draw.choose("module", "leaf")
        if target == "module":
            params["no_such_module/linear"] = {"w": np.zeros((2, 2), np.float32)}
        else:
            params[module]["extra"] = np.zeros(3, np.float32)
    elif how == "state":
        value = draw.choose(None, [], np.zeros(3), "x", {"m": np.zeros(2)}, {"m": {"average": "x"}}, 0, {})
        return {"params": params, "state": value}
    elif how == "container":
        value = draw.choose(None, [], np.zeros(3), "x", 3, {"m": [1]}, {1: {"w": np.zeros(1)}}, {"m": {2: np.zeros(1)}},
                            ())
        return {"params": value} if draw(st.booleans()) else value
    else:
        kind = draw.choose("truncate", "random", "empty", "npz", "code", "global", "protocol0")
        data = pickle.dumps(params)
        if kind in BROKEN_FILE_KINDS:
            return broken_file(draw, kind, data, max_random=2048)
        if kind == "npz":
            out = io.BytesIO()
            np.savez(out, **{k.replace("/", "."): v for m in params.values() for k, v in m.items()})
            return out.getvalue()
        if kind == "code":
            return pickle.dumps({"params": params, "x": RunsCode(tmp / "ran")})
        if kind == "global":
            return pickle.dumps(draw.choose(Counter({"a": 1}), zipfile.ZipInfo("x"), torch.zeros(1), np.float32(1)))
        return pickle.dumps(params, protocol=0)
    return params


def fuzz_from_haiku(draw: Draw, root: Path) -> str:
    name = draw.choose(*HAIKU_FIXTURES)
    base_params, base_state, (model_class, config) = haiku_fixture(name)
    params = {m: dict(leaves) for m, leaves in base_params.items()}
    state = {m: dict(leaves) for m, leaves in base_state.items()}
    path = root / draw.choose("ckpt.params.pickle", "ckpt.pystate", "ckpt.npz")
    obj: Any = {"params": params, "state": state} if state else params
    if not draw.valid:
        obj = mutate_haiku(draw, params, state, root)
        if isinstance(obj, dict) and state and "params" not in obj and obj is params:
            obj = {"params": params, "state": state}
    root.mkdir(parents=True, exist_ok=True)
    (root / "ran").unlink(missing_ok=True)
    if isinstance(obj, bytes):
        path.write_bytes(obj)
    elif draw(st.integers(0, 5)) == 5 and not draw.valid:
        path.unlink(missing_ok=True)  # no file at all
    else:
        flat = draw(st.booleans())
        if flat and isinstance(obj, dict):
            obj = FlatMapping({k: FlatMapping(v) if isinstance(v, dict) else v for k, v in obj.items()})
        with fake_haiku_module():
            path.write_bytes(pickle.dumps(obj, protocol=draw.choose(2, 4, 5)))
    how = draw.pick(["instance", "config"], ["preset", "bad_preset", "bad_class"], weight=6)
    if how == "instance":
        args: tuple = (haiku_model(name),)
    elif how == "config":
        args = (config, model_class)
    elif how == "preset":
        args = (draw.choose("digits_fourier", "no_such_preset"),)
    elif how == "bad_preset":
        args = (draw.choose(3, None, torch.nn.Linear(2, 2), {"a": 1}),)
    else:
        args = (config, draw.choose(None, 3, torch.nn.Linear, "ImageClassifier"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = from_haiku(path, *args)
    except (ValueError, TypeError, FileNotFoundError, UnsafeCheckpointError) as error:
        assert not (root / "ran").exists(), "the pickle ran code"
        return check_error(error, path, {"preset", "model_class", "model", "path"})
    assert not (root / "ran").exists(), "the pickle ran code"
    assert not model.training
    return forward_is_finite(model)


# ------------------------------------------------------------------------------------------------------ the CLI
PRESET_OVERRIDES = ("encoder.num_latents", "encoder.num_latent_channels", "encoder.num_self_attends_per_block",
                    "encoder.dropout", "encoder.latent_init_scale", "encoder.activation", "encoder.num_blocks",
                    "decoder.num_heads", "num_classes", "input_adapter.position_encoding.num_bands",
                    "input_adapter.image_shape", "encoder", "decoder", "nope.field", "encoder.nope")
CLI_OPTIONS: dict[str, tuple[list[Any], list[Any]]] = {  # option: (valid values, invalid values)
    "--model.lr": ([0.001, 1e-5], [-1, 0, "abc", 1e300, "nan", "[1]"]),
    "--model.weight_decay": ([0.0, 0.1], [-1, "x"]),
    "--model.label_smoothing": ([0.0, 0.1], [-1, 7, "abc"]),
    "--model.schedule": (["constant", "warmup_cosine"], ["nope", 3]),
    "--model.optimizer": (["adamw", "lamb"], ["sgd", ""]),
    "--model.warmup_steps": ([0, 10], [-5, 1.5, "x"]),
    "--model.betas": (["[0.9, 0.99]"], ["[2, 3, 4]", "x", "[1]"]),
    "--model.freeze": (["encoder", "decoder"], ["nope", "[]", "3"]),
    "--model.max_grad_norm": ([1.0, "null"], ["x"]),
    "--model.init_from": ([], ["/nonexistent/dir", "", "owner-only"]),
    "--model.preset": (["digits_fourier"], ["nope", "", "3"]),
    "--trainer.max_epochs": ([1, 5, -1], [-5, 1.5, "abc", 10**40, 0]),
    "--trainer.max_steps": ([3, -1], [-7, "x"]),
    "--trainer.accumulate_grad_batches": ([1, 2], [0, -1, "x"]),
    "--trainer.val_check_interval": ([1.0, 0.5], [-0.5, 2.5, "x"]),
    "--trainer.limit_train_batches": ([1, 0.5], [-1, "x"]),
    "--trainer.log_every_n_steps": ([1, 50], [-1, "x"]),
    "--trainer.precision": (["32-true", "bf16-mixed"], ["abc", "7"]),
    "--trainer.devices": ([1], [-3, 0, "x", 10**9]),
    "--trainer.accelerator": (["cpu"], ["tpu", "nope", "gpu"]),
    "--trainer.gradient_clip_val": ([1.0, "null"], [-1, "x"]),
    "--checkpoint.every_n_train_steps": ([1, 200, 0], [-4, 1.5, "abc"]),
    "--checkpoint.save_top_k": ([-1, 2], [-4, "x"]),
    "--checkpoint.filename": (["step-{step}"], ["{", ""]),
    "--data.batch_size": ([8, 32], [-3, 0, 1.5, "abc"]),
    "--data.val_fraction": ([0.1], [-1, 2, "x"]),
    "--seed_everything": ([0, 7], [-1, 2**40, "x"]),
    "--predictions.top_k": ([1, 5], [0, -1, "x"]),
    "--ckpt_path": ([], ["/nonexistent.ckpt", "last"]),
}


def cli_value(draw: Draw, valid: list[Any], invalid: list[Any]) -> str:
    value = draw.pick(valid, list(invalid) + ["[1", "{a: b: c}", "-", "--x"], weight=3) if valid else draw.choose(
        *invalid)
    return value if isinstance(value, str) else json.dumps(value)


def cli_argv(draw: Draw, run: Path) -> list[str]:
    argv = [draw.pick(["fit", "validate", "test", "predict"], ["train", "", "--help"], weight=10)]
    if draw.valid or draw(st.integers(0, 5)):
        argv += ["--model.preset", "digits_fourier"]
    if draw.valid or draw(st.integers(0, 5)):
        argv += ["--data.class_path", draw.pick(["perceiver_io.data.DigitsDataModule"],
                                                ["perceiver_io.data.Nope", "os.system", "builtins.dict"], weight=8)]
    argv += ["--trainer.default_root_dir", str(run)]
    for option in draw(st.lists(st.sampled_from(sorted(CLI_OPTIONS)), max_size=4, unique=True)):
        valid, invalid = CLI_OPTIONS[option]
        if draw.valid and not valid:
            continue
        argv += [option, cli_value(draw, valid, invalid)]
    for _ in range(draw(st.integers(0, 3))):
        field = draw.choose(*PRESET_OVERRIDES)
        value = draw.pick(["2", "4", "0.1", "8"], [json.dumps(v) for v in VALUES if not isinstance(v, float) or
                                                   abs(v) < 1e10] + ["[1", "{a: b", "gelu", "'x'"])
        if draw.valid and field in ("encoder", "decoder", "nope.field", "encoder.nope", "input_adapter.image_shape",
                                    "encoder.activation", "encoder.dropout", "decoder.num_heads",
                                    "encoder.latent_init_scale", "input_adapter.position_encoding.num_bands"):
            continue
        if draw(st.integers(0, 5)) == 0:
            argv.append(f"--model.overrides.{field}={value}")
        else:
            argv += [f"--model.overrides.{field}", value]
    if not draw.valid and draw(st.integers(0, 8)) == 0:
        argv += draw.choose(["--model.overrides.encoder.num_latents"], ["--nope", "3"], ["--model"], ["--config",
                                                                                                     "/nonexistent.yaml"])
    if draw(st.integers(0, 3)) == 3:  # (hypothesis draws 0 more often than 1 in 4)
        argv.append("--print_config")
    return argv


@contextlib.contextmanager
def quiet_lightning():
    """No INFO lines from Lightning's loggers (seeds, devices, the library's rank-zero notices) while fuzzing."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def fuzz_cli(draw: Draw, root: Path) -> str:
    from perceiver_io.training import cli

    task = draw.pick(["image-classifier"], ["image-classifier", "unit-sets"], weight=6)
    argv = cli_argv(draw, root / "run")
    out, err = io.StringIO(), io.StringIO()
    ran: list[str] = []
    try:
        with (mock.patch.object(cli.PerceiverCLI, "_run_subcommand", lambda self, sub: ran.append(sub)),
              contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(),
              quiet_lightning()):
            warnings.simplefilter("ignore")
            code = cli.run_task_cli(task, argv)
    except SystemExit as e:  # --help and --print_config print and exit 0
        assert e.code in (0, None), f"SystemExit({e.code!r}) for {argv}: {err.getvalue()[-500:]}"
        assert "--help" in argv or "--print_config" in argv, f"exit without an error for {argv}"
        return "exit 0"
    except BaseException as e:
        raise AssertionError(f"{task} {argv} raised {type(e).__name__}: {e}") from e
    stderr = err.getvalue()
    assert "Traceback" not in stderr, stderr
    if code == 0:
        assert ran, f"{argv}: exit code 0 without running the subcommand"
        return "ok"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"perceiver-io {task}: "), f"{argv}: exit {code}, stderr {stderr[-500:]!r}"
    errors = [line for line in lines if line.startswith(f"perceiver-io {task}: ")]
    assert len(errors) == 1, f"{argv}: more than one error line: {errors}"
    return f"exit {code}"


# ------------------------------------------------------------------------------------------------------ runner
TARGETS: dict[str, Callable[[Draw, Path], str]] = {
    "from_pretrained": fuzz_from_pretrained,
    "from_haiku": fuzz_from_haiku,
    "cli": fuzz_cli,
}


def fuzz(target: str, max_examples: int, root: Path) -> Counter:
    outcomes: Counter = Counter()

    @settings(FUZZ_SETTINGS, max_examples=max_examples)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        outcomes[TARGETS[target](Draw(data), root)] += 1

    run()
    return outcomes


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_loading(target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the command line writes nothing here, or nowhere else
    outcomes = fuzz(target, FAST_EXAMPLES[target], tmp_path)
    assert sum(outcomes.values()) >= FAST_EXAMPLES[target] // 2
    assert outcomes["ok"] + outcomes["exit 0"], f"no case of {target} succeeded: {dict(outcomes)}"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_loading_slow(target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    outcomes = fuzz(target, SLOW_EXAMPLES, tmp_path)
    print(f"\nfuzz {target}: {sum(outcomes.values())} cases in {time.perf_counter() - start:.1f} s, {dict(outcomes)}")
    assert sum(outcomes.values()) >= SLOW_EXAMPLES // 2
