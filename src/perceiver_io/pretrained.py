"""Pretrained models in one call: ``from_pretrained(name_or_path)`` reads every form a Perceiver IO model comes in.

* a directory written by :func:`~perceiver_io.serialization.save_pretrained` (ours);
* a local transformers Perceiver directory (``config.json`` with ``"model_type": "perceiver"``), converted on load;
* a Hugging Face Hub id of a transformers Perceiver checkpoint (``"deepmind/vision-perceiver-conv"``): fetched and
  cached by ``huggingface_hub`` (its cache, its ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` settings), converted on the
  first load, and the converted copy kept in our format under :func:`cache_root`, so later loads read safetensors
  and need neither the network nor transformers;
* an official DeepMind (haiku) ``.pickle`` / ``.pystate`` file with its ``preset`` name.

This module sits above ``convert`` and ``serialization``; the models' own ``Model.from_pretrained`` calls it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .serialization import CONFIG_NAME, from_pretrained as load_saved, read_config, save_pretrained

#: The Perceiver checkpoints DeepMind published on the Hugging Face Hub (transformers format).
DEEPMIND_MODELS = (
    "deepmind/language-perceiver",
    "deepmind/vision-perceiver-learned",
    "deepmind/vision-perceiver-fourier",
    "deepmind/vision-perceiver-conv",
    "deepmind/optical-flow-perceiver",
    "deepmind/multimodal-perceiver",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What a transformers checkpoint needs: its config and safetensors weights, or (older repos) the PyTorch pickle,
# which transformers reads with torch's weights-only loader. TF/Flax weights are never fetched.
_HUB_FILES = ["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json"]
_HUB_FALLBACK = ["pytorch_model.bin", "pytorch_model.bin.index.json"]


def cache_root() -> Path:
    """Where converted Hub models are kept: ``$PERCEIVER_IO_CACHE``, else ``$XDG_CACHE_HOME/perceiver_io``, else
    ``~/.cache/perceiver_io``."""
    if os.environ.get("PERCEIVER_IO_CACHE"):
        return Path(os.environ["PERCEIVER_IO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perceiver_io"


def from_pretrained(
    name_or_path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    preset: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> nn.Module:
    """The model ``name_or_path`` names, in eval mode on ``map_location``.

    Args:
        name_or_path: a directory of ours or of transformers, an official haiku checkpoint file (with ``preset``),
            or a Hugging Face Hub id (``"deepmind/vision-perceiver-conv"``; :data:`DEEPMIND_MODELS` lists DeepMind's).
        map_location: the device to put the model on.
        preset: the preset an official haiku file belongs to (``perceiver_io.list_models()``).
        revision: a Hub branch, tag or commit (default: the main branch).
        cache_dir: ``huggingface_hub``'s cache folder (default: its own, ``HF_HUB_CACHE``).
        local_files_only: never use the network: a Hub id must be in the local cache already.

    Raises:
        FileNotFoundError: nothing at ``name_or_path``, a directory without ``config.json``, a Hub id not in the
            cache with ``local_files_only``.
        ValueError: a ``config.json`` that is neither ours nor a transformers Perceiver's, an unknown Hub id, a haiku
            file without ``preset``; each message is one line naming what was given.
    """
    source = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else name_or_path
    if not isinstance(source, str) or not source:
        raise TypeError(f"name_or_path: expected a path or a Hub id, got {name_or_path!r}")
    path = Path(source)
    if path.is_file():
        return _from_haiku(path, preset).to(map_location).eval()
    if preset is not None:
        raise ValueError(f"preset: only for an official (haiku) checkpoint file; {source} is not a file")
    if path.is_dir():
        return _from_directory(path).to(map_location).eval()
    if _HUB_ID.match(source) and not path.exists():
        return _from_hub(source, revision, cache_dir, local_files_only).to(map_location).eval()
    raise FileNotFoundError(f"name_or_path: {source} is neither a file, a directory nor a Hub id (owner/name)")


def _from_haiku(path: Path, preset: str | None) -> nn.Module:
    from .convert.haiku import from_haiku
    from .models import list_models

    if preset is None:
        raise ValueError(f"preset: {path} is an official (haiku) checkpoint file; name the preset it belongs to "
                         f"(one of {list_models()})")
    return from_haiku(path, preset)


def is_transformers_directory(path: Path) -> bool:
    """Whether ``path/config.json`` is a transformers Perceiver config (``"model_type": "perceiver"``)."""
    import json

    try:
        data = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("model_type") == "perceiver"


def _from_directory(path: Path) -> nn.Module:
    if is_transformers_directory(path):
        from .convert.transformers import from_transformers, load_transformers_model

        return from_transformers(load_transformers_model(path))
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"name_or_path: {path} is not a model directory (no {CONFIG_NAME}: neither a "
                                "directory written by save_pretrained nor a transformers Perceiver)")
    read_config(path)  # names the file when it is neither ours nor transformers'
    return load_saved(path)


def _from_hub(repo_id: str, revision: str | None, cache_dir: Any, local_files_only: bool) -> nn.Module:
    snapshot = _download(repo_id, revision, cache_dir, local_files_only)
    converted = cache_root() / "converted" / repo_id.replace("/", "--") / snapshot.name
    if (converted / CONFIG_NAME).is_file():
        return load_saved(converted)
    if not is_transformers_directory(snapshot):  # uploaded by push_to_hub: ours already
        if not (snapshot / CONFIG_NAME).is_file():
            raise ValueError(f"name_or_path: {repo_id} on the Hugging Face Hub has no {CONFIG_NAME}")
        return _from_directory(snapshot)
    model = _from_directory(snapshot)
    _save_converted(model, converted, source=f"{repo_id} (Hugging Face Hub, revision {snapshot.name})")
    return model


def _download(repo_id: str, revision: str | None, cache_dir: Any, local_files_only: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with the 'hub' extra
        raise ImportError("Hub ids need huggingface_hub and transformers: pip install 'perceiver-io-torch[hub]'") from e
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                        local_files_only=local_files_only, allow_patterns=_HUB_FILES))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                            local_files_only=local_files_only,
                                            allow_patterns=_HUB_FILES + _HUB_FALLBACK))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"name_or_path: {repo_id} is not in the local Hugging Face cache; load it once with network access "
            f"(perceiver_io.from_pretrained({repo_id!r}))") from None
    except GatedRepoError:
        raise ValueError(f"name_or_path: {repo_id} is gated on the Hugging Face Hub; log in (HF_TOKEN) with access") \
            from None
    except RepositoryNotFoundError:
        raise ValueError(f"name_or_path: no model {repo_id} on the Hugging Face Hub (or it is private)") from None
    except RevisionNotFoundError:
        raise ValueError(f"revision: {repo_id} has no revision {revision!r}") from None
    return folder


def _save_converted(model: nn.Module, directory: Path, source: str) -> None:
    # Written beside and renamed, so that a crash never leaves a half-converted copy that later loads would trust.
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_pretrained(model, staging, source=source)
        try:
            os.replace(staging, directory)
        except OSError:  # another process converted it meanwhile
            if not (directory / CONFIG_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "Upload Perceiver IO model", revision: str | None = None) -> str:
    """Upload ``model`` (``config.json``, ``model.safetensors`` and the model card ``README.md``) to the Hugging
    Face Hub repository ``repo_id`` (created if needed) with ``huggingface_hub``; returns the commit URL.

    ``huggingface_hub``'s ``ModelHubMixin`` is not used: its ``from_pretrained`` would load weights without this
    library's key and shape checks. The files are the ones ``save_pretrained`` writes, so
    ``from_pretrained(repo_id)`` reads them back (as a directory of ours, not converted).
    """
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or not _HUB_ID.match(repo_id):
        raise ValueError(f"repo_id: expected 'owner/name', got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, source=f"uploaded to {repo_id}")
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 revision=revision, repo_type="model")
    return str(getattr(info, "commit_url", info))
