"""Import the official DeepMind (JAX/haiku) Perceiver IO checkpoints.

The released files are pickled haiku parameter dicts ``{module_path: {param_name: array}}``
(``.pystate`` files hold ``{"params", "state"}``, state = BatchNorm averages). They are read with
a restricted unpickler that admits only dicts, numpy arrays and haiku's ``FlatMapping`` (mapped
to ``dict``) and refuses every other global, so a checkpoint cannot run code. Arrays are admitted only
as numpy writes them (an empty array filled from the file's bytes, or protocol 5's buffer) and of a
numeric dtype, so that no array is larger than the file and none holds Python objects.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..adapters.audio import AudioOutputAdapter
from ..adapters.classification import ClassificationOutputAdapter
from ..adapters.video import VideoOutputAdapter
from ..models import ImageClassifier, MaskedLanguageModel, MultimodalAutoencoder, OpticalFlow, create_model
from ..perceiver import PerceiverIO, PerceiverIOConfig
from ..serialization import state_mismatch

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

Params = dict[str, dict[str, np.ndarray]]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint names a global outside the admitted set (dicts, numpy arrays, FlatMapping)."""


def _check_numeric(dtype: Any) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        # Arrays of Python objects in particular: numpy fills them from the file's list without checking its length
        # (a crash, not an error); a haiku parameter is a plain numeric array.
        raise pickle.UnpicklingError(f"an array of dtype {dtype} (a haiku parameter is a numeric array)")
    return dtype


class _Array(np.ndarray):
    """What a checkpoint's ``numpy.ndarray`` names: an array filled from the file's bytes, of a numeric dtype only
    (turned back into a plain ``np.ndarray`` once read)."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5 or not isinstance(state[2], np.dtype):
            raise pickle.UnpicklingError("a numpy array with a malformed state")
        _check_numeric(state[2])
        super().__setstate__(state)


def _reconstruct_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles an array as an empty one that __setstate__ fills from the file's bytes: the only form admitted,
    # so that no array is larger than the data the file holds.
    if subtype is not _Array or shape != (0,):
        raise pickle.UnpicklingError(f"a numpy array built as {getattr(subtype, '__name__', subtype)} of shape {shape!r}")
    return _reconstruct(_Array, (0,), dtype)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # numpy's form for pickle protocol 5 (the default from Python 3.14): the array's bytes and its shape
    return np.frombuffer(buffer, dtype=_check_numeric(dtype)).reshape(shape, order=order).copy()


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # pickle protocol 2 writes bytes (an array's data) as _codecs.encode(text, "latin1"); no other codec is run
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode of {type(text).__name__} with {encoding!r}")
    return text.encode("latin1")


def _type_name(value: Any) -> str:
    return "ndarray" if isinstance(value, np.ndarray) else type(value).__name__


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1,
    ("haiku._src.data_structures", "FlatMapping"): dict,
    ("haiku.data_structures", "FlatMapping"): dict,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,  # files written with numpy 1.x
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path}: refusing to load global {module}.{name}; a haiku checkpoint may only hold "
                "dicts, numpy arrays and haiku FlatMapping"
            ) from None


def load_haiku_checkpoint(path: str | os.PathLike[str]) -> tuple[Params, Params]:
    """Read an official ``.pickle`` / ``.pystate`` file safely; returns ``(params, state)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with path.open("rb") as f:
            data = _RestrictedUnpickler(f, path).load()
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        message = " ".join(str(e).split())
        raise ValueError(f"{path}: corrupt or not a haiku checkpoint ({type(e).__name__}: {message})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of haiku parameters, got {_type_name(data)}")
    params, state = (data["params"], data.get("state")) if "params" in data else (data, None)
    state = {} if state is None else state
    for name, value in (("params", params), ("state", state)):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected {name} to be a dict of haiku modules, got {_type_name(value)}")
    for part in (params, state):
        for module, leaves in part.items():
            if not isinstance(leaves, dict) or not all(isinstance(v, np.ndarray) for v in leaves.values()):
                raise ValueError(f"{path}: entry {module!r} is not a dict of numpy arrays")
            for leaf, value in leaves.items():
                if value.dtype.kind not in "biuf":
                    raise ValueError(f"{path}: {module}/{leaf}: expected a real numeric array, got dtype {value.dtype}")
                # a plain array of this machine's byte order (torch reads no other)
                leaves[leaf] = np.asarray(value.view(np.ndarray), dtype=value.dtype.newbyteorder("="))
    return params, state


# --------------------------------------------------------------------------------------------------
# Name mapping: haiku module path -> our parameter names.


class _ParameterError(ValueError):
    """A haiku parameter that cannot be one of ours (its rank)."""


class _Reader:
    """Reads haiku leaves and remembers which were read, so unused ones can be reported."""

    def __init__(self, params: Params, state: Params) -> None:
        self.params, self.state = params, state
        self.read: set[str] = set()

    def __call__(self, module: str, leaf: str, state: bool = False, ndim: int | None = None) -> torch.Tensor:
        source = self.state if state else self.params
        try:
            value = source[module][leaf]
        except KeyError:
            raise KeyError(f"{module}/{leaf}" + (" (state)" if state else "")) from None
        if not state:
            self.read.add(f"{module}/{leaf}")
        if ndim is not None and value.ndim != ndim:
            raise _ParameterError(f"{module}/{leaf}: expected a {ndim}-D array, got shape {list(value.shape)}")
        return torch.from_numpy(np.ascontiguousarray(value))

    def unused(self) -> list[str]:
        return sorted({f"{m}/{leaf}" for m, leaves in self.params.items() for leaf in leaves} - self.read)

    def linear(self, hk: str, ours: str) -> dict[str, torch.Tensor]:
        out = {f"{ours}.weight": self(hk, "w", ndim=2).t().contiguous()}
        if "b" in self.params.get(hk, {}):
            out[f"{ours}.bias"] = self(hk, "b")
        return out

    def conv(self, hk: str, ours: str) -> dict[str, torch.Tensor]:
        out = {f"{ours}.weight": self(hk, "w", ndim=4).permute(3, 2, 0, 1).contiguous()}  # HWIO -> OIHW
        if "b" in self.params.get(hk, {}):
            out[f"{ours}.bias"] = self(hk, "b")
        return out

    def layer_norm(self, hk: str, ours: str) -> dict[str, torch.Tensor]:
        return {f"{ours}.weight": self(hk, "scale"), f"{ours}.bias": self(hk, "offset")}

    def attention_layer(self, hk: str, ours: str, cross: bool) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        norms = ("q_norm", "kv_norm", "mlp_norm") if cross else ("norm", "mlp_norm")
        for i, name in enumerate(norms):
            out.update(self.layer_norm(f"{hk}/layer_norm" + (f"_{i}" if i else ""), f"{ours}.{name}"))
        for i, name in enumerate(("q", "k", "v", "out")):
            out.update(self.linear(f"{hk}/attention/linear" + (f"_{i}" if i else ""), f"{ours}.attention.{name}"))
        out.update(self.linear(f"{hk}/mlp/linear", f"{ours}.mlp.0"))
        out.update(self.linear(f"{hk}/mlp/linear_1", f"{ours}.mlp.2"))
        return out

    def encoder(self, hk: str, num_self_attends: int) -> dict[str, torch.Tensor]:
        out = {"encoder.latents": self(f"{hk}/~/trainable_position_encoding", "pos_embs")}
        out.update(self.attention_layer(f"{hk}/~/cross_attention", "encoder.cross_attends.0", cross=True))
        for i in range(num_self_attends):
            name = f"{hk}/~/self_attention" + (f"_{i}" if i else "")
            out.update(self.attention_layer(name, f"encoder.self_attends.{i}", cross=False))
        return out

    def decoder(self, hk: str, trainable_query: bool, final_project: bool) -> dict[str, torch.Tensor]:
        out = self.attention_layer(f"{hk}/cross_attention", "decoder.cross_attention", cross=True)
        if trainable_query:
            out["decoder.query.embeddings"] = self(f"{hk}/~/trainable_position_encoding", "pos_embs")
        if final_project:
            out.update(self.linear(f"{hk}/output", "decoder.output"))
        return out


def _image_preprocessor(model: ImageClassifier, read: _Reader) -> dict[str, torch.Tensor]:
    config = model.input_adapter.config
    out: dict[str, torch.Tensor] = {}
    if config.prep_type == "conv1x1":
        out.update(read.conv("image_preprocessor/~/conv2_d", "input_adapter.stem"))
    elif config.prep_type == "conv":
        base = "image_preprocessor/~/conv2_d_downsample/~"
        out.update(read.conv(f"{base}/conv", "input_adapter.stem.conv"))
        bn = "input_adapter.stem.batchnorm"
        out[f"{bn}.weight"] = read(f"{base}/batchnorm", "scale").reshape(-1)
        out[f"{bn}.bias"] = read(f"{base}/batchnorm", "offset").reshape(-1)
        out[f"{bn}.running_mean"] = read(f"{base}/batchnorm/~/mean_ema", "average", state=True).reshape(-1)
        out[f"{bn}.running_var"] = read(f"{base}/batchnorm/~/var_ema", "average", state=True).reshape(-1)
    pe = config.position_encoding
    if pe is not None and pe.kind == "trainable":
        base = "image_preprocessor/~_build_network_inputs"
        table = read(f"{base}/trainable_position_encoding", "pos_embs")
        if pe.project_pos_dim > 0:
            out["input_adapter.position_encoding.base.embeddings"] = table
            out.update(read.linear(f"{base}/position_encoding_projector/linear", "input_adapter.position_encoding.projection"))
        else:
            out["input_adapter.position_encoding.embeddings"] = table
    return out


_POSTPROCESSORS = {
    AudioOutputAdapter: "audio_postprocessor",
    VideoOutputAdapter: "projection_postprocessor",
    ClassificationOutputAdapter: "classification_postprocessor",
}


def _state_from_haiku(model: PerceiverIO, read: _Reader) -> dict[str, torch.Tensor]:
    n_self = model.encoder.config.num_self_attends_per_block
    final_project = getattr(model.decoder, "output", None) is not None
    if isinstance(model, MaskedLanguageModel):
        out = read.encoder("perceiver_encoder", n_self)
        out.update(read.decoder("basic_decoder", trainable_query=True, final_project=final_project))
        out["input_adapter.embedding.weight"] = read("embed", "embeddings")
        out["input_adapter.position_encoding.embeddings"] = read("trainable_position_encoding", "pos_embs")
        out["output_adapter.bias"] = read("embedding_decoder", "bias")
        return out
    if isinstance(model, ImageClassifier):
        out = read.encoder("perceiver_encoder", n_self)
        out.update(read.decoder("classification_decoder/~/basic_decoder", trainable_query=True, final_project=True))
        out.update(_image_preprocessor(model, read))
        return out
    if isinstance(model, OpticalFlow):
        out = read.encoder("perceiver_encoder", n_self)
        out.update(read.decoder("flow_decoder/~/basic_decoder", trainable_query=False, final_project=True))
        out.update(read.linear("image_preprocessor/patches_linear", "input_adapter.patches_linear"))
        return out
    if isinstance(model, MultimodalAutoencoder):
        out = read.encoder("encoder", n_self)
        out.update(read.decoder("multimodal_decoder/~/basic_decoder", trainable_query=False, final_project=True))
        for m in model.input_adapter.modalities:
            out[f"input_adapter.padding.{m}"] = read(f"multimodal_preprocessor/{m}_padding", "pos_embs")
        for m in model.input_adapter.mask_token:
            out[f"input_adapter.mask_token.{m}"] = read(f"multimodal_preprocessor/{m}_mask_token", "pos_embs")
        for m, part in model.output_adapter.modalities.items():
            out[f"output_adapter.padding.{m}"] = read(f"multimodal_decoder/~decoder_query/{m}_padding", "pos_embs")
            # the official postprocessors are named by kind, not by modality
            kind = _POSTPROCESSORS.get(type(part))
            if kind is None:
                raise TypeError(f"model: the official checkpoint has no {type(part).__name__} part")
            out.update(read.linear(f"{kind}/linear", f"output_adapter.modalities.{m}.projection"))
            if isinstance(part, ClassificationOutputAdapter):
                out[f"output_adapter.modalities.{m}.query.embeddings"] = read(
                    "classification_decoder/~/basic_decoder/~/trainable_position_encoding", "pos_embs"
                )
        return out
    raise TypeError(f"model: no official checkpoint layout for {type(model).__name__}")


def from_haiku(
    path: str | os.PathLike[str], preset: str | PerceiverIOConfig | PerceiverIO, model_class: type | None = None
) -> PerceiverIO:
    """Load an official checkpoint into a task model.

    Args:
        path: the official ``.pickle`` / ``.pystate`` file.
        preset: a preset name (``perceiver_io.list_models()``), a config (with ``model_class``),
            or a model instance to fill.
        model_class: the task model class when ``preset`` is a config.

    Every parameter of the model must be found in the file with the right shape, and every
    parameter in the file must be used; otherwise a ``ValueError`` names the file and the keys.
    The model is returned in eval mode.
    """
    path = Path(path)
    params, state = load_haiku_checkpoint(path)
    if isinstance(preset, str):
        model = create_model(preset)
    elif isinstance(preset, PerceiverIOConfig):
        if model_class is None:
            raise ValueError("model_class: required when preset is a config")
        if not (isinstance(model_class, type) and issubclass(model_class, PerceiverIO)):
            raise TypeError(f"model_class: expected a PerceiverIO task model class, got {model_class!r}")
        model = model_class.from_config(preset)
    elif isinstance(preset, PerceiverIO):
        model = preset
    else:
        raise TypeError(f"preset: expected a preset name, a PerceiverIOConfig or a PerceiverIO model, got "
                        f"{type(preset).__name__}")
    read = _Reader(params, state)
    try:
        tensors = _state_from_haiku(model, read)
    except KeyError as e:
        raise ValueError(f"{path}: missing haiku parameter {e.args[0]} for {type(model).__name__}") from None
    except _ParameterError as e:
        raise ValueError(f"{path}: {e}") from None
    expected = model.state_dict()
    problems = state_mismatch(expected, tensors, optional=("num_batches_tracked",), unused=read.unused())
    if problems:
        raise ValueError(f"{path}: checkpoint does not match {type(model).__name__}: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in tensors.items():
            expected[k].copy_(v)
    return model.eval()
