"""SafeCheckpointIO: Lightning checkpoints as safetensors files, no pickle, atomic writes."""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import math
import os
import pathlib
import signal
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from perceiver_io.training import checkpoint_io
from perceiver_io.training.checkpoint_io import SafeCheckpointIO, read_checkpoint, write_checkpoint


def assert_identical(actual, expected, where="checkpoint"):
    """Structural equality with exact types: tuple stays tuple, int key stays int, tensors bitwise."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for (ka, va), (ke, ve) in zip(actual.items(), expected.items()):
            assert type(ka) is type(ke), f"{where}: key {ka!r} type {type(ka)} != {type(ke)}"
            assert_identical(va, ve, f"{where}[{ke!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: length"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_identical(a, e, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert actual.requires_grad == expected.requires_grad, where
        a, e = (t.detach().cpu().resolve_conj().resolve_neg().contiguous() for t in (actual, expected))
        assert torch.equal(a.reshape(-1).view(torch.uint8), e.reshape(-1).view(torch.uint8)), where
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert actual.tobytes() == expected.tobytes(), where
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), where
    elif isinstance(expected, float):
        assert actual == expected and math.copysign(1, actual) == math.copysign(1, expected), where
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype and actual.tobytes() == expected.tobytes(), where
    else:
        assert actual == expected, where


def roundtrip(tmp_path, checkpoint, name="x.ckpt"):
    path = tmp_path / name
    write_checkpoint(checkpoint, path)
    return read_checkpoint(path)


def files_in(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


# ------------------------------------------------------------------------------------------------
# Encoding of every supported type
# ------------------------------------------------------------------------------------------------

VALUES = {
    "int": 7,
    "negative_int": -3,
    "big_int": 2**80 + 1,
    "zero_float": 0.0,
    "negative_zero": -0.0,
    "float": 0.1,
    "tiny_float": 5e-324,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "nan": math.nan,
    "true": True,
    "false": False,
    "none": None,
    "empty_str": "",
    "unicode_str": "ünïcødé \u2603 \ud800 \x00 \"quoted\" \\",
    "empty_list": [],
    "empty_tuple": (),
    "one_tuple": (1,),
    "nested_tuple": (1, (2.5, "a", None), [True, ()]),
    "list_of_tuples": [(0.9, 0.999), (1, 2)],
    "empty_dict": {},
    "size": torch.Size([2, 3]),
    "empty_size": torch.Size([]),
    "np_float32": np.float32(1.1),
    "np_float16": np.float16(-2.5),
    "np_float64_nan": np.float64("nan"),
    "np_int64": np.int64(-(2**62)),
    "np_uint64": np.uint64(2**64 - 1),
    "np_int8": np.int8(-5),
    "np_bool": np.bool_(True),
    "np_array": np.arange(6, dtype=np.float32).reshape(2, 3),
    "np_array_0d": np.array(3.5),
    "np_array_bigendian": np.arange(4, dtype=">i4"),
    "np_array_reversed": np.arange(5, dtype=np.int16)[::-1],
    "np_array_bool": np.array([True, False]),
    "np_array_uint16": np.array([1, 65535], dtype=np.uint16),
    "np_array_empty": np.zeros((0, 3), dtype=np.float64),
    "path": pathlib.Path("runs/a/last.ckpt"),
    "pure_posix_path": pathlib.PurePosixPath("/x/y"),
    "dtype": torch.bfloat16,
    "device": torch.device("cpu"),
    "cuda_device": torch.device("cuda", 1),
}


@pytest.mark.parametrize("name", list(VALUES))
def test_each_type_roundtrips(tmp_path, name):
    value = VALUES[name]
    loaded = roundtrip(tmp_path, {"value": value, "in_list": [value], "in_tuple": (value,)})
    assert_identical(loaded, {"value": value, "in_list": [value], "in_tuple": (value,)})


TENSORS = {
    "float32": torch.randn(3, 4),
    "float64": torch.randn(2, dtype=torch.float64),
    "bfloat16": torch.randn(5, 2).to(torch.bfloat16),
    "float16": torch.tensor([1e-4, 65504.0, -0.0, float("inf"), float("nan")], dtype=torch.float16),
    "bool": torch.tensor([[True, False], [False, True]]),
    "int64": torch.tensor([-(2**63), 2**63 - 1, 0]),
    "int32": torch.arange(7, dtype=torch.int32),
    "uint8": torch.tensor([0, 255], dtype=torch.uint8),
    "int8": torch.tensor([-128, 127], dtype=torch.int8),
    "complex64": torch.randn(3, dtype=torch.complex64),
    "zero_dim_float": torch.tensor(2.5),
    "zero_dim_int": torch.tensor(3),
    "zero_dim_bool": torch.tensor(False),
    "empty": torch.empty(0, 4),
    "transposed": torch.randn(3, 5).t(),
    "strided": torch.arange(20.0).reshape(4, 5)[::2, 1::2],
    "expanded": torch.randn(1, 3).expand(4, 3),
    "conj": torch.randn(3, dtype=torch.complex64).conj(),
    "requires_grad": torch.randn(2, requires_grad=True),
}


@pytest.mark.parametrize("name", list(TENSORS))
def test_tensor_dtypes_shapes_and_layouts(tmp_path, name):
    tensor = TENSORS[name]
    loaded = roundtrip(tmp_path, {"t": tensor})["t"]
    assert type(loaded) is torch.Tensor and loaded.is_contiguous()
    assert_identical(loaded, tensor)
    if tensor.is_complex():
        assert torch.equal(loaded, tensor.resolve_conj())


def test_parameter_roundtrips_as_parameter(tmp_path):
    frozen = torch.nn.Parameter(torch.randn(3), requires_grad=False)
    trainable = torch.nn.Parameter(torch.randn(2, 2))
    loaded = roundtrip(tmp_path, {"frozen": frozen, "trainable": trainable})
    assert type(loaded["frozen"]) is torch.nn.Parameter and not loaded["frozen"].requires_grad
    assert type(loaded["trainable"]) is torch.nn.Parameter and loaded["trainable"].requires_grad
    assert torch.equal(loaded["frozen"], frozen) and torch.equal(loaded["trainable"], trainable)


def test_int_and_other_scalar_keys_stay_as_they_were(tmp_path):
    checkpoint = {
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}, 1: {"step": torch.tensor(3.0)}},
                              "param_groups": [{"params": [0, 1], "betas": (0.9, 0.999)}]}],
        "mixed": {1: "int", "1": "str", 2.5: "float", None: "none", True: "bool"},
        "$tensor": "a key that looks like a tag",
        "nested": {"$float": "inf", "ok": 1},
        "ordered": collections.OrderedDict([("b", 1), ("a", torch.ones(1))]),
        "ordered_int_keys": collections.OrderedDict([(3, 1), (1, 2)]),
        "nan_key": {math.inf: 1},
    }
    loaded = roundtrip(tmp_path, checkpoint)
    assert_identical(loaded, checkpoint)
    assert list(loaded["optimizer_states"][0]["state"]) == [0, 1]


def test_shared_tensors_are_stored_once_and_keep_sharing(tmp_path):
    weight = torch.randn(4, 3)
    checkpoint = {
        "state_dict": collections.OrderedDict(
            [("encoder.weight", weight.detach()), ("decoder.weight", weight.detach())]  # tied: two views
        ),
        "same_object": [weight, weight],
        "row": weight[1],  # a partial view of the same memory: a separate copy
        "transposed": weight.t(),
    }
    path = tmp_path / "shared.ckpt"
    write_checkpoint(checkpoint, path)
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
    assert len(names) == 3, names  # weight (once for 4 references), row, transposed
    loaded = read_checkpoint(path)
    assert_identical(loaded, checkpoint)
    sd = loaded["state_dict"]
    assert sd["encoder.weight"] is not sd["decoder.weight"]
    assert sd["encoder.weight"].data_ptr() == sd["decoder.weight"].data_ptr()
    assert loaded["same_object"][0] is loaded["same_object"][1]
    assert loaded["row"].data_ptr() != loaded["same_object"][0].data_ptr()


def test_numpy_arrays_sharing_memory_and_the_same_array_twice(tmp_path):
    array = np.arange(6.0)
    loaded = roundtrip(tmp_path, {"a": array, "b": array, "c": array.view()})
    assert loaded["a"] is loaded["b"] and loaded["c"] is not loaded["a"]
    assert np.shares_memory(loaded["a"], loaded["c"])
    assert_identical(loaded["c"], array)


def test_map_location(tmp_path):
    path = tmp_path / "m.ckpt"
    write_checkpoint({"t": torch.ones(2), "p": torch.nn.Parameter(torch.zeros(1))}, path)
    assert read_checkpoint(path)["t"].device.type == "cpu"
    assert read_checkpoint(path, map_location="meta")["t"].device.type == "meta"
    assert read_checkpoint(path, map_location=torch.device("meta"))["p"].device.type == "meta"
    assert read_checkpoint(path, map_location={"cpu": "meta"})["t"].device.type == "meta"
    assert read_checkpoint(path, map_location=lambda storage, loc: storage)["t"].device.type == "cpu"
    with pytest.raises(TypeError, match="map_location"):
        read_checkpoint(path, map_location=3)
    with pytest.raises(RuntimeError, match="Expected one of"):  # the caller's error, not "corrupt"
        read_checkpoint(path, map_location={"cpu": "nodevice"})
    loaded = SafeCheckpointIO().load_checkpoint(path, weights_only=True)
    assert torch.equal(loaded["t"], torch.ones(2))


def test_loaded_tensors_outlive_the_file(tmp_path):
    path = tmp_path / "x.ckpt"
    write_checkpoint({"t": torch.arange(10.0)}, path)
    loaded = read_checkpoint(path)
    path.unlink()
    write_checkpoint({"t": torch.zeros(10)}, path)
    assert torch.equal(loaded["t"], torch.arange(10.0))


# ------------------------------------------------------------------------------------------------
# What cannot be stored
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig:
    width: int = 4


@pytest.mark.parametrize(
    ("checkpoint", "key_path", "type_name"),
    [
        ({"hyper_parameters": {"model": ModelConfig()}}, "checkpoint['hyper_parameters']['model']", "ModelConfig"),
        ({"callbacks": {"X": [1, {2: {1, 2}}]}}, "checkpoint['callbacks']['X'][1][2]", "set"),
        ({"lr_schedulers": [{"fn": len}]}, "checkpoint['lr_schedulers'][0]['fn']", "builtin_function_or_method"),
        ({"h": {"module": torch.nn.Linear(1, 1)}}, "checkpoint['h']['module']", "torch.nn.modules.linear.Linear"),
        ({"h": {"cls": ModelConfig}}, "checkpoint['h']['cls']", "type"),
        ({"h": (1, b"bytes")}, "checkpoint['h'][1]", "bytes"),
        ({"h": 1j}, "checkpoint['h']", "complex"),
        ({"h": collections.namedtuple("Pair", "a b")(1, 2)}, "checkpoint['h']", "Pair"),
        ({"h": collections.defaultdict(int)}, "checkpoint['h']", "defaultdict"),
        ({"h": np.array(["a"])}, "checkpoint['h']", "numpy.ndarray"),
        ({"h": np.float128(1) if hasattr(np, "float128") else np.complex64(1)}, "checkpoint['h']", "numpy."),
        ({"h": torch.randn(2, dtype=torch.complex128)}, "checkpoint['h']", "complex128"),
        ({"h": torch.randn(2, 2).to_sparse()}, "checkpoint['h']", "sparse"),
        ({"h": torch.empty(2, device="meta")}, "checkpoint['h']", "meta"),
        ({"h": {(1, 2): "tuple key"}}, "checkpoint['h']", "tuple"),
    ],
)
def test_unsupported_objects_name_the_key_path(tmp_path, checkpoint, key_path, type_name):
    path = tmp_path / "bad.ckpt"
    with pytest.raises(TypeError) as info:
        write_checkpoint(checkpoint, path)
    message = str(info.value)
    assert key_path in message and type_name in message, message
    assert "plain data" in message or "keys must be" in message
    assert files_in(tmp_path) == []  # nothing written, no temporary file


def test_a_cycle_is_an_error_not_a_recursion_error(tmp_path):
    loop: list = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"checkpoint\['a'\]\[0\].*contains itself"):
        write_checkpoint({"a": loop}, tmp_path / "x.ckpt")


def test_remote_urls_and_non_dicts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="s3://"):
        write_checkpoint({}, "s3://bucket/x.ckpt")
    with pytest.raises(ValueError, match="local files only"):
        read_checkpoint("gs://bucket/x.ckpt")
    with pytest.raises(TypeError, match="must be a dict"):
        write_checkpoint([1], tmp_path / "x.ckpt")
    with pytest.raises(TypeError, match="storage_options"):
        SafeCheckpointIO().save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})
    write_checkpoint({"a": 1}, f"file://{tmp_path / 'f.ckpt'}")
    assert read_checkpoint(tmp_path / "f.ckpt") == {"a": 1}


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------


def interrupted_save_file(tensors, filename, metadata=None):
    """Writes part of the file, then Ctrl-C."""
    save_file(tensors, filename, metadata=metadata)
    size = os.path.getsize(filename)
    with open(filename, "r+b") as f:
        f.truncate(size // 2)
    raise KeyboardInterrupt


def test_interrupt_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpts" / "last.ckpt"
    write_checkpoint({"global_step": 2, "w": torch.randn(100)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint_io, "_save_file", interrupted_save_file)
    with pytest.raises(KeyboardInterrupt):
        SafeCheckpointIO().save_checkpoint({"global_step": 4, "w": torch.randn(100)}, path)
    assert path.read_bytes() == before
    assert files_in(path.parent) == ["last.ckpt"]  # the temporary file is gone
    assert read_checkpoint(path)["global_step"] == 2


def test_interrupted_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_io, "_save_file", interrupted_save_file)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint({"w": torch.randn(10)}, tmp_path / "new.ckpt")
    assert files_in(tmp_path) == []


def test_failed_rename_cleans_up(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint({"w": torch.randn(10)}, tmp_path / "x.ckpt")
    assert files_in(tmp_path) == []


def test_overwrite_and_remove(tmp_path):
    io = SafeCheckpointIO()
    path = tmp_path / "sub" / "dir" / "x.ckpt"  # parents are created
    io.save_checkpoint({"v": 1}, path)
    io.save_checkpoint({"v": 2}, path)
    assert io.load_checkpoint(path) == {"v": 2}
    assert files_in(path.parent) == ["x.ckpt"]
    io.remove_checkpoint(path)
    io.remove_checkpoint(path)  # already gone: no error
    assert files_in(path.parent) == []


# ------------------------------------------------------------------------------------------------
# Corrupt and foreign files
# ------------------------------------------------------------------------------------------------


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        SafeCheckpointIO().load_checkpoint(str(path))


def _good_file(tmp_path):
    path = tmp_path / "good.ckpt"
    write_checkpoint({"w": torch.randn(64), "n": 1}, path)
    return path.read_bytes()


def _rewrite_metadata(data: bytes, change) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header["__metadata__"])
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    return struct.pack("<Q", len(new)) + new + data[8 + n :]


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "header_only_half": lambda data: data[:20],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x13\x37" * 100,
    "zip": lambda data: b"PK\x03\x04" + b"\x00" * 100,
    "pickle": lambda data: b"\x80\x04\x95" + b"\x00" * 50,
    "bad_structure_json": lambda data: _rewrite_metadata(data, lambda m: m.update(structure="{not json")),
    "missing_tensor": lambda data: _rewrite_metadata(
        data, lambda m: m.update(structure=json.dumps({"w": {"$tensor": "nope"}}))
    ),
    "unknown_tag": lambda data: _rewrite_metadata(data, lambda m: m.update(structure=json.dumps({"w": {"$x": 1}}))),
    "malformed_tuple": lambda data: _rewrite_metadata(
        data, lambda m: m.update(structure=json.dumps({"w": {"$tuple": 3}}))
    ),
    "not_a_dict": lambda data: _rewrite_metadata(data, lambda m: m.update(structure="[1]")),
    "metadata_missing": lambda data: _rewrite_metadata(data, lambda m: m.clear()),
    "newer_version": lambda data: _rewrite_metadata(data, lambda m: m.update(format_version="99")),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_files_are_reported_by_name(tmp_path, name):
    path = tmp_path / f"{name}.ckpt"
    path.write_bytes(CORRUPTIONS[name](_good_file(tmp_path)))
    with pytest.raises(ValueError, match=f"corrupt checkpoint .*{name}.ckpt"):
        SafeCheckpointIO().load_checkpoint(path)


def test_foreign_files_say_what_they_are(tmp_path):
    pickle_path = tmp_path / "torch.ckpt"
    torch.save({"a": torch.ones(1)}, pickle_path)
    with pytest.raises(ValueError, match=r"corrupt checkpoint .*torch.ckpt: .*torch.save pickle"):
        read_checkpoint(pickle_path)
    plain_path = tmp_path / "plain.ckpt"
    save_file({"a": torch.ones(1)}, plain_path)
    with pytest.raises(ValueError, match=r"plain.ckpt: .*without checkpoint metadata"):
        read_checkpoint(plain_path)
    with pytest.raises(ValueError, match="not a file"):
        read_checkpoint(tmp_path)


def test_the_file_is_plain_safetensors(tmp_path):
    path = tmp_path / "x.ckpt"
    write_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    assert header["__metadata__"]["format"] == "perceiver_io.lightning_checkpoint"
    assert header["__metadata__"]["format_version"] == "1"
    assert json.loads(header["__metadata__"]["structure"]) == {"state_dict": {"w": {"$tensor": "state_dict/w"}},
                                                               "epoch": 3}
    assert header["state_dict/w"]["dtype"] == "F32"
    assert not zipfile.is_zipfile(path)


# ------------------------------------------------------------------------------------------------
# Lightning end to end
# ------------------------------------------------------------------------------------------------

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
    from lightning.pytorch.plugins.io import CheckpointIO
except ImportError:  # the tests above do not need Lightning
    pl = None
_LIGHTNING_MARKS = [
    pytest.mark.skipif(pl is None, reason="lightning is not installed"),
    # expected: a mid-epoch resume with a plain DataLoader, reused checkpoint dirs, Lightning internals
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended"),
    pytest.mark.filterwarnings("ignore:.*ckpt_path"),
    pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


def needs_lightning(test):
    for mark in _LIGHTNING_MARKS:
        test = mark(test)
    return test


class Warmup:
    """A picklable LambdaLR lambda: LambdaLR stores its ``__dict__`` in the scheduler state."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.steps)


class Tiny(pl.LightningModule if pl is not None else object):
    def __init__(self, lr: float = 0.05, hidden: int = 4, name: str = "tiny", betas: tuple = (0.9, 0.99),
                 options: dict | None = None, interrupt_at_step: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lin = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        if self.global_step == self.hparams.interrupt_at_step:
            raise KeyboardInterrupt
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train_loss", loss)
        return loss

    def on_train_start(self) -> None:  # after Lightning restored a checkpoint
        self.start_step = self.trainer.global_step
        self.start_weights = copy.deepcopy(self.state_dict())
        self.start_optimizer = copy.deepcopy(self.trainer.optimizers[0].state_dict())
        self.start_scheduler = copy.deepcopy(self.trainer.lr_scheduler_configs[0].scheduler.state_dict())

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, betas=self.hparams.betas)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, Warmup(3))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self):
        from torch.utils.data import DataLoader, TensorDataset

        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)),
                          batch_size=4)  # 4 steps per epoch: runs cross epochs


class RecordingIO(SafeCheckpointIO):
    """Keeps a deep copy of every checkpoint dict Lightning hands over."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, dict] = {}

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.saved[os.fspath(path)] = copy.deepcopy(checkpoint)
        super().save_checkpoint(checkpoint, path, storage_options)


def trainer(tmp_path, io, max_steps, callbacks):
    return pl.Trainer(plugins=[io], accelerator="cpu", max_steps=max_steps, logger=False, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)


@needs_lightning
def test_lightning_fit_checkpoint_and_resume(tmp_path):
    assert isinstance(SafeCheckpointIO(), CheckpointIO)
    ckpt_dir = tmp_path / "checkpoints"
    io = RecordingIO()
    callback = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2, save_last=True, monitor="train_loss",
                               save_top_k=2)
    first = trainer(tmp_path, io, 6, [callback])
    first.fit(Tiny(options={"depth": 2, "names": ["a", "b"], "scale": 0.5}))

    last = ckpt_dir / "last.ckpt"
    names = files_in(ckpt_dir)
    assert "last.ckpt" in names and len(names) == 3, names  # top 2 + last; the third was removed
    assert not any(name.endswith(".tmp") or name.startswith(".") for name in names)
    for name in names:
        path = ckpt_dir / name
        assert not zipfile.is_zipfile(path)
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        assert data[8:9] == b"{" and 8 + n < len(data)
        with pytest.raises(Exception):
            torch.load(path, weights_only=True)
        # everything Lightning handed over comes back exactly
        assert_identical(read_checkpoint(path), io.saved[str(path)])

    saved = read_checkpoint(last)
    assert set(saved) == {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                          "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters"}
    assert saved["global_step"] == 6 and saved["epoch"] == 1
    assert saved["pytorch-lightning_version"] == pl.__version__
    assert saved["hparams_name"] == "kwargs"
    assert_identical(saved["hyper_parameters"], {"lr": 0.05, "hidden": 4, "name": "tiny", "betas": (0.9, 0.99),
                                                 "options": {"depth": 2, "names": ["a", "b"], "scale": 0.5},
                                                 "interrupt_at_step": None})
    assert type(saved["state_dict"]) is collections.OrderedDict
    assert list(saved["optimizer_states"][0]["state"]) == [0, 1]
    assert saved["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert saved["lr_schedulers"][0]["lr_lambdas"] == [{"steps": 3}] and saved["lr_schedulers"][0]["last_epoch"] == 6
    (model_checkpoint_state,) = saved["callbacks"].values()
    assert model_checkpoint_state["best_model_score"].shape == () and model_checkpoint_state["dirpath"] == str(ckpt_dir)
    assert model_checkpoint_state["last_model_path"] == str(last)
    assert all(isinstance(v, torch.Tensor) for v in model_checkpoint_state["best_k_models"].values())
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["ready"] == 6

    # resume in a new Trainer
    resumed_model = Tiny(options={"depth": 2, "names": ["a", "b"], "scale": 0.5})
    second = trainer(tmp_path, SafeCheckpointIO(), 10, [ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2,
                                                                        save_last=True, monitor="train_loss")])
    second.fit(resumed_model, ckpt_path=last)
    assert resumed_model.start_step == 6
    assert_identical(resumed_model.start_optimizer, saved["optimizer_states"][0])
    assert_identical(resumed_model.start_scheduler, saved["lr_schedulers"][0])
    assert_identical(resumed_model.start_weights, saved["state_dict"])
    assert second.global_step == 10 and read_checkpoint(last)["global_step"] == 10


@needs_lightning
def test_lightning_keyboard_interrupt_checkpoint_and_resume(tmp_path):
    exception_dir = tmp_path / "on_exception"
    sigint = signal.getsignal(signal.SIGINT)
    model = Tiny(interrupt_at_step=3)
    try:
        with pytest.raises(SystemExit):  # Lightning catches Ctrl-C, runs on_exception, then exits
            trainer(tmp_path, SafeCheckpointIO(), 6, [OnExceptionCheckpoint(exception_dir)]).fit(model)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a KeyboardInterrupt
    path = exception_dir / "on_exception.ckpt"
    assert files_in(exception_dir) == ["on_exception.ckpt"]
    saved = read_checkpoint(path)
    assert saved["global_step"] == 3
    assert_identical(saved["state_dict"], model.state_dict())

    resumed = Tiny()
    # with OnExceptionCheckpoint present, fit(ckpt_path=None) would pick on_exception.ckpt up by itself
    second = trainer(tmp_path, SafeCheckpointIO(), 6, [OnExceptionCheckpoint(exception_dir)])
    second.fit(resumed, ckpt_path=path)
    assert resumed.start_step == 3
    assert_identical(resumed.start_weights, saved["state_dict"])
    assert_identical(resumed.start_optimizer, saved["optimizer_states"][0])
    assert_identical(resumed.start_scheduler, saved["lr_schedulers"][0])
    assert second.global_step == 6
    assert files_in(exception_dir) == []  # a run that ends normally removes it through remove_checkpoint
