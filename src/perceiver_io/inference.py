"""Inference switches: bf16, int8 and ``torch.compile`` for any model of this library, one argument each.

:func:`optimize_for_inference` takes a model and returns a module that computes the same function faster; there is
no separate model class per precision. The returned module is called exactly like the model (same arguments, same
outputs, float32 results) and the task model's attributes and methods stay reachable through it
(``optimized.config``, ``optimized.predict_tiled(...)``). The switches combine. Their cost in accuracy is stated as
the relative error max |optimized - fp32| / max |fp32| over an output.

* ``precision="bf16"``: a copy of the model with bfloat16 weights (:class:`ReducedPrecisionModel`: floating inputs
  are cast to bf16 on the way in, floating outputs back to float32 on the way out). Matrix products, attention,
  LayerNorm and softmax then run on bf16 tensors (the CPU kernels of LayerNorm and softmax accumulate in float32;
  Fourier position features are computed in float32 and then cast). Running the float32 model under
  ``torch.autocast("cpu", torch.bfloat16)`` was measured as the alternative and is as accurate but slower (it casts
  weights and activations back and forth around every LayerNorm and product): 1 thread of an AMD EPYC with
  avx512_bf16, an ImageNet-structured model with 128 x 256 latents, 1.3-2x slower at 64 x 64 and 224 x 224 pixels,
  equal on the small byte MLM. Fast on CPUs with ``avx512_bf16`` or AMX (bf16 matrix products 4-5x the float32 rate
  of torch's CPU GEMM on that EPYC); slower than float32 on CPUs with neither.
* ``quantize="int8"``: dynamic int8 quantisation of every ``nn.Linear`` (:class:`Int8DynamicLinear`) in a copy:
  weights int8 with a scale per output channel (symmetric), each activation row quantised to int8 on the fly with
  its own scale, products in int8 with int32 accumulation (``torch._int_mm``, oneDNN's VNNI kernels on x86): the
  scheme of torchao's ``Int8DynamicActivationInt8WeightConfig``. ``torch.ao.quantization.quantize_dynamic`` is not
  used: torch 2.14 deprecates it and its quantised tensors (its warning points to torchao, a further dependency),
  and its per-tensor activation scale (7 bits on x86) is 1.5-2.5x less accurate on the official fixtures (0.024-0.097
  against 0.018-0.042). CPU only. Embeddings, the MLM's tied output projection and the attention products are not
  Linear layers and keep the model's precision (bf16 with ``precision="bf16"``), so int8 speeds up models whose
  FLOPs sit in Linear layers (ImageNet: 81%, MLM: 93%) far more than the flow model (23%).
* ``compile=True``: ``torch.compile`` of the result (compiles on the first call, and again for new input shapes).

Tolerances (``tests/test_inference.py`` holds them), as relative errors against the official code's outputs of the
small model of every task (``tests/fixtures/official``): measured worst case bf16 0.018, int8 0.042, bf16 + int8
0.049, compile 1e-5; bounds bf16 <= 0.03, int8 <= 0.06, bf16 + int8 <= 0.075, compile <= 1e-4 (float32's). On a
digits classifier trained in the test, none of 360 test predictions changed under bf16 or int8 and one under both
(bound: 2%).

The model passed in keeps its weights and layers (bf16 and int8 work on copies, compile wraps it); it is set to eval
mode, as is the result. Run the result under ``torch.inference_mode()`` for the fastest forward.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any, Callable

import torch
from torch import nn

from .core.validation import check_choice

PRECISIONS = ("fp32", "bf16")
QUANTIZATIONS = (None, "int8")
_INT8_MAX = 127
_TINY = torch.finfo(torch.float32).tiny


def optimize_for_inference(
    model: nn.Module, *, precision: str = "fp32", quantize: str | None = None, compile: bool = False
) -> nn.Module:
    """A module computing ``model``'s forward faster, for inference (see the module docstring for each switch).

    Args:
        model: any model of this library (a task model, ``PerceiverIO``, or any ``nn.Module``).
        precision: ``"fp32"`` (default, unchanged) or ``"bf16"`` (a bfloat16 copy; float32 in and out).
        quantize: ``None`` (default) or ``"int8"`` (dynamic int8 quantisation of every ``nn.Linear``; CPU only).
        compile: ``torch.compile`` the result.

    Returns:
        A module in eval mode, called like ``model``; ``model`` keeps its weights and layers (bf16 and int8 work on a
        copy, compile wraps it) and is set to eval mode. With every switch at its default, ``model`` itself.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    check_choice("precision", precision, PRECISIONS)
    check_choice("quantize", quantize, QUANTIZATIONS)
    if not isinstance(compile, bool):
        raise TypeError(f"compile: expected a bool, got {type(compile).__name__}")
    device = _device(model)
    if quantize == "int8" and device.type != "cpu":
        raise ValueError(f"quantize: 'int8' runs on the CPU only, and the model is on {device}; move it with .cpu()")
    result = model.eval()
    if quantize == "int8":
        result = quantize_int8(result)
    if precision == "bf16":
        result = ReducedPrecisionModel(result if quantize else copy.deepcopy(result), torch.bfloat16).eval()
    if compile:
        result = torch.compile(result)
    return result


def _device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _cast(value: Any, source: tuple[torch.dtype, ...], target: torch.dtype) -> Any:
    """``value`` with every tensor of a ``source`` dtype in it (nested in tuples, lists, dicts) cast to ``target``."""
    if isinstance(value, torch.Tensor):
        return value.to(target) if value.dtype in source else value
    if isinstance(value, dict):
        return type(value)((k, _cast(v, source, target)) for k, v in value.items())
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_cast(v, source, target) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, source, target) for v in value)
    return value


class ReducedPrecisionModel(nn.Module):
    """``model`` with its floating weights in ``dtype``, called like a float32 model.

    Floating inputs (nested in dicts, lists and tuples too) are cast to ``dtype`` on the way in, floating outputs
    back to float32 on the way out; integer and bool inputs (ids, masks, indices) pass unchanged. Attributes not
    found here are looked up on ``model``, and its methods (``predict_tiled``, ``reconstruct``, ...) reached that
    way cast their arguments and results the same way.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.model.forward)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._casting(self.model)(*args, **kwargs)

    def _casting(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        inputs = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            out = fn(*_cast(args, inputs, self.dtype), **_cast(kwargs, inputs, self.dtype))
            return _cast(out, (self.dtype,), torch.float32)

        return run

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")  # not self._modules: no recursion while unpickling
            if model is None:
                raise
        value = getattr(model, name)
        if inspect.ismethod(value) and value.__self__ is model:
            return self._casting(value)
        return value

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


class Int8DynamicLinear(nn.Module):
    """An ``nn.Linear`` with int8 weights and dynamically quantised int8 activations.

    ``W ~ W_q * s_w`` (``W_q`` int8 in [-127, 127], one scale per output channel); each input row ``x`` is quantised
    as ``x ~ x_q * s_x`` with ``s_x = max |x| / 127``; ``y = (x_q @ W_q^T) * s_x * s_w + b``, the product in int8
    with int32 accumulation (``torch._int_mm``). Outputs have the input's dtype. Rows of NaN or inf give
    meaningless outputs (they cannot be quantised).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(_TINY) / _INT8_MAX
        w_q = torch.round(w / scale[:, None]).clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8)
        self.register_buffer("weight_int8_t", w_q.t().contiguous())  # [in, out]: _int_mm's layout
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", linear.bias.detach().float().clone() if linear.bias is not None else None)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight ``[out, in]`` (float32), for code that reads a Linear's weight."""
        return (self.weight_int8_t.t().float() * self.weight_scale.float()[:, None]).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).float()
        # max |x| per row: amax and amin are vectorised reductions (abs().amax() writes a copy, aminmax is slower)
        amax = torch.maximum(rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True).neg_()).clamp_min_(_TINY)
        x_q = torch.mul(rows, _INT8_MAX / amax).round_().to(torch.int8)
        y_int = torch._int_mm(x_q, self.weight_int8_t)
        scale = amax.div_(_INT8_MAX)
        if torch.compiler.is_compiling():  # functional: the compiler fuses it
            y = y_int.float() * scale * self.weight_scale.float()
            y = y if self.bias is None else y + self.bias
        else:  # in place: an output-sized buffer less to allocate and fill (page faults cost as much as the product)
            y = y_int.view(torch.float32)  # the same memory; each element is read as int32, then written as float32
            y.copy_(y_int)
            y.mul_(scale).mul_(self.weight_scale)
            y = y if self.bias is None else y.add_(self.bias)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by an :class:`Int8DynamicLinear` (CPU)."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, Int8DynamicLinear(child))
    if type(model) is nn.Linear:
        return Int8DynamicLinear(model)
    return model
