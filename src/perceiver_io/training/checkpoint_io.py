"""Lightning checkpoints that cannot run code when read, and are written atomically.

Checkpoints are Lightning's standard ``.ckpt`` files (``torch.save``). They are read only with
``torch.load(..., weights_only=True)``: torch's weights-only unpickler rebuilds tensors, dicts,
lists, tuples and scalars and refuses every other global, so a crafted pickle fails to load
instead of calling ``os.system``. Our checkpoints need no allow-list (``add_safe_globals``): their
hyper-parameters are plain dicts and the ``LambdaLR`` factors are stored as dicts.

:class:`SafeCheckpointIO` (``Trainer(plugins=[SafeCheckpointIO()])``) is Lightning's
``TorchCheckpointIO`` with two changes:

* loading always passes ``weights_only=True`` (Lightning passes ``None``, torch's default, which
  the environment variable ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns off), and errors name the file;
* a local checkpoint is written to a temporary file in its own directory, fsynced, and renamed over
  the target. Lightning's ``_atomic_save`` writes through an fsspec transaction whose temporary
  file is in the system temp directory and is committed with ``shutil.move``, which across file
  systems copies into the target: a kill during the copy leaves a truncated checkpoint.

Hyper-parameters are data, but LightningCLI (and ``load_from_checkpoint`` of a CLI-trained task)
hand them to jsonargparse, which instantiates any ``{"class_path": ...}`` value (also one written
as a YAML string) of an ``Any``-typed argument such as ``model: dict[str, Any]``.
:func:`task_hyperparameters` refuses such values.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..serialization import remove_stale_temporaries, temporary_name

__all__ = ["SafeCheckpointIO", "load_checkpoint", "task_hyperparameters"]


class SafeCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that loads with ``weights_only=True`` only and writes local files atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        fs, local = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec transaction
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)  # a killed write's leftover
        tmp = temporary_name(target)
        try:
            with open(tmp, "xb") as f:  # mode 0o666 less the umask, as torch.save
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if os.name == "posix":  # make the rename itself durable
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise ValueError(f"{type(self).__name__} loads checkpoints with weights_only=True only: {path}")
        kwargs = {} if map_location is None else {"map_location": map_location}  # None: Lightning's default
        try:
            checkpoint = super().load_checkpoint(path, weights_only=True, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as e:  # UnpicklingError (a refused or bad pickle), RuntimeError (a bad zip), EOFError
            raise ValueError(f"cannot load checkpoint {path}: {_reason(e)}") from e
        if not isinstance(checkpoint, dict):
            raise ValueError(f"cannot load checkpoint {path}: it holds a {type(checkpoint).__name__}, not a dict")
        return checkpoint


TASK_KEY = "perceiver_io_task"
MODEL_TYPE_KEY = "perceiver_io_model_type"
MODEL_CONFIG_KEY = "perceiver_io_model_config"
CLASS_NAMES_KEY = "perceiver_io_class_names"


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a ``.ckpt`` file with ``torch.load(weights_only=True)``; ``ValueError`` naming it if it is not one."""
    return SafeCheckpointIO().load_checkpoint(path, map_location)


def task_hyperparameters(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The task's ``__init__`` arguments saved in ``checkpoint`` (``_``-prefixed Lightning entries dropped).

    Raises ``ValueError`` naming ``path`` if a value holds a ``class_path`` entry, directly or in a
    string that reads as YAML (jsonargparse would import and call that class).

    ``init_from`` is dropped: the checkpoint holds every weight, so rebuilding the task must not read the model it
    started from again (which may be gone). When that model was the whole model (no ``model`` or ``preset``), the
    checkpoint's own model config takes its place.
    """

    def check(value: Any, where: str) -> None:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)  # as jsonargparse reads a string given to an Any argument
            except yaml.YAMLError:
                return
        if isinstance(value, dict):
            if "class_path" in value:
                raise ValueError(f"{path}: refusing hyper-parameter {where}: it names a class to instantiate")
            items: Any = value.items()
        elif isinstance(value, (list, tuple)):
            items = enumerate(value)
        else:
            return
        for key, item in items:
            check(item, f"{where}[{key!r}]")

    saved = checkpoint.get("hyper_parameters", {})
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: the hyper-parameters are a {type(saved).__name__}, not a dict")
    hparams = {k: v for k, v in saved.items() if not str(k).startswith("_")}
    for key, value in hparams.items():
        check(value, key)
    if hparams.get("init_from") is not None:
        hparams["init_from"] = None
        if hparams.get("model") is None and hparams.get("preset") is None and MODEL_TYPE_KEY in checkpoint:
            hparams["model"] = {"model_type": checkpoint[MODEL_TYPE_KEY], "config": checkpoint.get(MODEL_CONFIG_KEY)}
    return hparams


def _reason(error: Exception) -> str:
    """One line from torch's error: its detail, without the advice to load with weights_only=False."""
    if isinstance(error, EOFError):
        return "the file is empty or truncated"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    detail = ([line for line in lines if not line.startswith(boilerplate)] or lines or [type(error).__name__])[-1]
    detail = re.sub(r"^\[enforce fail at [^\]]*\][ .]*", "", detail).split(". ")[0].rstrip(".")[:200]
    if isinstance(error, pickle.UnpicklingError):
        return f"refused by the weights-only unpickler ({detail})"
    return f"not a complete torch checkpoint ({detail})"
