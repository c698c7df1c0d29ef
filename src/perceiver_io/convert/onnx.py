"""ONNX export with a dynamic batch axis, checked against the eager model under onnxruntime.

:func:`export_onnx` writes one self-contained ``.onnx`` file (``torch.onnx.export(..., dynamo=True)``: the graph
of ``torch.export``, translated by onnxscript; weights over 1.5 GB go to ``OUT.onnx.data`` beside it) whose every
input has a dynamic first (batch) axis, then, with ``check=True``, runs the file under onnxruntime on a batch of
another size than the one it was traced with and compares its outputs with the eager model's. The returned
:class:`OnnxExport` states the largest difference; a difference above ``tolerance`` (relative to the largest eager
output) raises :class:`OnnxCheckError`.

Models with default example inputs (other models need ``example_inputs``):

* :class:`~perceiver_io.models.ImageClassifier`: ``pixel_values [B, C, H, W]`` (the configured image size) ->
  ``logits [B, classes]``; Fourier models take any size in eager mode, the file the traced one.
* :class:`~perceiver_io.models.MaskedLanguageModel`: ``input_ids [B, max_seq_len]`` (int64) and
  ``attention_mask [B, max_seq_len]`` (bool) -> ``logits [B, max_seq_len, vocab]``.
* :class:`~perceiver_io.models.OpticalFlow`: ``frames [B, 2, C, H, W]`` (the training size) -> ``flow [B, 2, H, W]``.

The file holds the model's computation for valid inputs only: the value checks of the eager model (ids within the
vocabulary, output indices within the grid) read tensor values, which an exported graph cannot branch on, so they
are left out of it (``check_indices`` and the text input adapter's id check skip their range checks while exporting).
Needs the ``onnx`` extra (``onnx``, ``onnxscript``, and ``onnxruntime`` for the check).
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_BATCH = 2
# Weights past 1.5 GB go to an external data file: with the constants the trace adds (Fourier features: 0.2 GB for
# the flow model) the single file must stay under protobuf's 2 GB.
ONNX_FILE_LIMIT_BYTES = 3 * 2**29


class OnnxCheckError(ValueError):
    """The exported file's outputs differ from the eager model's by more than the tolerance."""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how it compared (path-like: ``open(report)``, ``Path(report)`` work).

    ``max_abs_diff``: the largest ``|onnxruntime - eager|`` over the outputs on a batch of ``check_batch_size``
    inputs, ``max_abs_output`` the largest ``|eager|`` there; None when the check did not run.
    """

    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    example_batch_size: int
    export_seconds: float
    check_batch_size: int | None = None
    max_abs_diff: float | None = None
    max_abs_output: float | None = None
    tolerance: float | None = None

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def relative_diff(self) -> float | None:
        """``max_abs_diff / max_abs_output`` (what ``tolerance`` bounds)."""
        if self.max_abs_diff is None or self.max_abs_output is None:
            return None
        return self.max_abs_diff / max(self.max_abs_output, 1e-12)

    def summary(self) -> str:
        """One line: the file, its inputs, and the check's result."""
        line = (f"wrote {self.path} (inputs {', '.join(self.input_names)}; dynamic batch; traced with batch "
                f"{self.example_batch_size} in {self.export_seconds:.1f} s)")
        if self.max_abs_diff is None:
            return line + "; not checked"
        return (line + f"; onnxruntime vs eager on a batch of {self.check_batch_size}: max abs diff "
                f"{self.max_abs_diff:.2e} (outputs up to {self.max_abs_output:.3g}; relative "
                f"{self.relative_diff:.1e} <= {self.tolerance:.0e})")


def _model_kind(model: nn.Module) -> str | None:
    from ..models import ImageClassifier, MaskedLanguageModel, OpticalFlow

    for kind, cls in (("image", ImageClassifier), ("mlm", MaskedLanguageModel), ("flow", OpticalFlow)):
        if isinstance(model, cls):
            return kind
    return None


def default_inputs(model: nn.Module, batch_size: int = DEFAULT_BATCH, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of ``batch_size`` for an image classifier, masked language model or flow model (seeded); the
    last sample of an MLM batch ends in padding, so that the mask is exercised."""
    kind = _model_kind(model)
    if kind is None:
        raise ValueError(f"example_inputs: required for a {type(model).__name__} (default inputs exist for "
                         "ImageClassifier, MaskedLanguageModel and OpticalFlow)")
    g = torch.Generator().manual_seed(seed)
    config = model.input_adapter.config  # type: ignore[union-attr]
    if kind == "image":
        return (torch.randn(batch_size, *config.image_shape, generator=g),)
    if kind == "flow":
        return (torch.rand(batch_size, 2, *config.image_shape, generator=g) * 2 - 1,)
    length = config.max_seq_len
    ids = torch.randint(0, config.vocab_size, (batch_size, length), generator=g)
    mask = torch.ones(batch_size, length, dtype=torch.bool)
    if length > 1:
        mask[-1, length - max(1, length // 4):] = False
    return ids, mask


def _names(model: nn.Module, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    kind = _model_kind(model)
    outputs = ("flow",) if kind == "flow" else ("logits",) if kind else ("output",)
    params = [p.name for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    inputs = tuple(params[:count]) if len(params) >= count else tuple(f"input_{i}" for i in range(count))
    return inputs, outputs


def _as_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(x, torch.Tensor) and x.dim() >= 1 for x in inputs):
        raise TypeError("example_inputs: expected a tensor or a tuple of tensors with a batch axis first (the "
                        "model's positional arguments)")
    if len({x.shape[0] for x in inputs}) != 1:
        raise ValueError(f"example_inputs: expected one batch size, got {[x.shape[0] for x in inputs]}")
    return inputs


def _outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _outputs(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _outputs(v)]
    return []


def check_onnx(path: str | os.PathLike[str], model: nn.Module, inputs: tuple[torch.Tensor, ...],
               threads: int | None = None) -> tuple[float, float]:
    """(max |onnxruntime - eager|, max |eager|) of the file at ``path`` and ``model`` on ``inputs``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.detach().cpu().numpy() for i, x in zip(session.get_inputs(), inputs)}
    got = session.run(None, feeds)
    with torch.inference_mode():
        expected = _outputs(model(*inputs))
    if len(got) != len(expected):
        raise OnnxCheckError(f"{path}: the file has {len(got)} outputs, the model {len(expected)}")
    diff = scale = 0.0
    for g, e in zip(got, expected):
        g_t = torch.from_numpy(g)
        if tuple(g_t.shape) != tuple(e.shape):
            raise OnnxCheckError(f"{path}: output shape {list(g_t.shape)} from onnxruntime, {list(e.shape)} eager")
        diff = max(diff, (g_t.double() - e.double()).abs().max().item() if e.numel() else 0.0)
        scale = max(scale, e.double().abs().max().item() if e.numel() else 0.0)
    return diff, scale


def require_onnx(check: bool = True) -> None:
    """Raise an ``ImportError`` naming the extra if the export (``onnx``, ``onnxscript``) or the check
    (``onnxruntime``) cannot be imported."""
    import importlib.util

    needed = ("onnx", "onnxscript", "onnxruntime") if check else ("onnx", "onnxscript")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'perceiver-io-torch[onnx]'")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    check: bool = True,
    tolerance: float = 1e-4,
    opset_version: int | None = None,
) -> OnnxExport:
    """Export ``model`` (float32, CPU) to the ONNX file ``path`` with a dynamic batch axis; see the module docstring.

    Args:
        model: an image classifier, masked language model or flow model (default inputs), or any model called
            with positional tensor arguments that have the batch first (pass ``example_inputs``).
        path: the ``.onnx`` file to write (its folder is created).
        example_inputs: the tensors to trace with (a tensor or a tuple: the positional arguments); default:
            random inputs of batch 2 at the model's configured size. A batch of 1 is repeated to 2 (a size-1 axis
            would be traced as a constant).
        check: run the file under onnxruntime on a batch of another size (the example batch plus one) and
            compare with ``model``.
        tolerance: the largest ``max |onnxruntime - eager| / max |eager|`` accepted by the check.
        opset_version: the ONNX opset (default: the exporter's recommended one).

    Returns:
        An :class:`OnnxExport` (path-like) with the input and output names, the export time and the check's
        ``max_abs_diff``. Raises :class:`OnnxCheckError` if the check finds a difference above ``tolerance``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(check, bool):
        raise TypeError(f"check: expected a bool, got {type(check).__name__}")
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ValueError(f"tolerance: expected a positive number, got {tolerance!r}")
    floating = [p for p in model.parameters() if p.is_floating_point()]
    if any(p.dtype != torch.float32 for p in floating) or any(p.device.type != "cpu" for p in floating):
        raise ValueError("model: export a float32 model on the CPU (.float().cpu()); onnxruntime's results are "
                         "checked against it")
    require_onnx(check)
    inputs = default_inputs(model) if example_inputs is None else _as_tuple(example_inputs)
    if inputs[0].shape[0] == 1:
        inputs = tuple(torch.cat([x, x]) for x in inputs)
    input_names, output_names = _names(model, len(inputs))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One named batch axis; the other inputs' batch axes are DYNAMIC (export ties them to it), as one Dim on
    # several inputs makes the exporter warn that it cannot name them twice.
    dynamic_shapes = ({0: torch.export.Dim("batch")}, *({0: torch.export.Dim.DYNAMIC} for _ in inputs[1:]))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, inputs, path, dynamo=True, dynamic_shapes=dynamic_shapes,
                input_names=list(input_names), output_names=list(output_names), opset_version=opset_version,
                external_data=size > ONNX_FILE_LIMIT_BYTES, verbose=False,
            )
    finally:
        model.train(was_training)
    report = OnnxExport(path, input_names, output_names, inputs[0].shape[0], time.perf_counter() - start)
    if not check:
        return report
    if example_inputs is None:
        check_inputs = default_inputs(model, inputs[0].shape[0] + 1, seed=1)
    else:
        check_inputs = tuple(torch.cat([x, x[:1]]) for x in inputs)
    diff, scale = check_onnx(path, model.eval(), check_inputs)
    model.train(was_training)
    report = OnnxExport(path, input_names, output_names, report.example_batch_size, report.export_seconds,
                        check_inputs[0].shape[0], diff, scale, tolerance)
    if not diff <= tolerance * max(scale, 1e-12):  # "not <=": NaN fails too
        raise OnnxCheckError(f"{path}: onnxruntime's outputs differ from eager by up to {diff:.3g} (outputs up "
                             f"to {scale:.3g}: relative {report.relative_diff:.2e} > tolerance {tolerance:.0e})")
    return report
