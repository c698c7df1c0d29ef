"""Input checks that fail before any computation, with messages that name the argument,
the expected shape and the shape received.

:func:`check_model_input` is the one check of a tensor where it enters a module (an adapter's input, the
encoder's inputs, the decoder's latents): device, dtype and, in the debug mode that :func:`check_finite`
switches on, finite values.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

Dim = int | str | None
"""One expected dimension: an int must match exactly, a str or None is a free symbol (only shown)."""


def _fmt(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_tensor(
    name: str,
    value: object,
    shape: Sequence[Dim],
    *,
    floating: bool | None = None,
    integer: bool = False,
    boolean_or_integer: bool = False,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of ``len(shape)`` dims whose int entries match.

    Raises ``TypeError`` for a non-tensor or a wrong dtype kind, ``ValueError`` for a wrong rank
    or size; both messages name ``name``, the expected shape and the one received.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {_fmt(shape)}, got {type(value).__name__}")
    if value.dim() != len(shape) or any(
        isinstance(want, int) and want != got for want, got in zip(shape, value.shape)
    ):
        raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {list(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    if integer and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer tensor, got dtype {value.dtype}")
    if boolean_or_integer and (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name}: expected a bool or integer (0/1) tensor, got dtype {value.dtype}")
    return value


def check_mask(name: str, mask: torch.Tensor | None, shape: Sequence[Dim]) -> torch.Tensor | None:
    """Check an attention/padding mask (True or 1 = keep) and return it as bool."""
    if mask is None:
        return None
    check_tensor(name, mask, shape, boolean_or_integer=True)
    return mask if mask.dtype == torch.bool else mask != 0


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive int (or zero if allowed)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} int, got {value!r}")


def check_probability(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in ``[0, 1)`` (a dropout rate)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
    if not ok:
        raise ValueError(f"{name}: expected a dropout rate in [0, 1), got {value!r}")


def check_number(name: str, value: object, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless it is a number (not a bool, not NaN) in the
    interval from ``low`` to ``high`` (closed ends unless ``low_open`` / ``high_open``)."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) and (
        (value > low if low_open else value >= low) and (value < high if high_open else value <= high))
    if not ok:
        raise ValueError(f"{name}: expected a number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


def check_divisible(name: str, channels: int, num_heads: int) -> None:
    if channels % num_heads:
        raise ValueError(f"{name}: {channels} channels must be divisible by num_heads={num_heads}")


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def check_not_empty(name: str, value: torch.Tensor, dim: int, what: str) -> None:
    """Raise ``ValueError`` when ``value.shape[dim]`` is 0; ``what`` names one entry of that dim ("token")."""
    if value.shape[dim] == 0:
        raise ValueError(f"{name}: expected at least one {what} (dim {dim}), got shape {list(value.shape)}")


# ------------------------------------------------------------------------------------------------- model inputs

_check_finite = False

# LayerNorm accumulates in float32 for float32/float16/bfloat16 tensors: a row whose values reach about
# sqrt(float32 max) ~ 1.8e19 overflows its variance and comes out NaN. Rescaling every row to avoid that would cost
# the hot path two extra passes over the inputs, so the debug check reports such values instead.
_LAYER_NORM_LIMIT = {torch.float64: 1e150}
_LAYER_NORM_LIMIT_DEFAULT = 1e18


def set_check_finite(enabled: bool) -> bool:
    """Switch the finite-value check of every model input on or off (process-wide); returns the previous setting.

    Off by default (it reads every input value once more). See :func:`check_finite`.
    """
    global _check_finite
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    previous, _check_finite = _check_finite, enabled
    return previous


def is_check_finite_enabled() -> bool:
    """Whether :func:`check_finite` is on."""
    return _check_finite


@contextlib.contextmanager
def check_finite(enabled: bool = True) -> Iterator[None]:
    """Debug mode, as ``torch.autograd.detect_anomaly``: within the block every floating tensor that enters a
    module of this library (an adapter's input such as ``pixel_values``, the encoder's ``inputs``, the decoder's
    ``latents``, ``queries``) is checked for NaN, +-inf and magnitudes above 1e18, which overflow the float32
    variance of a LayerNorm (its output would be NaN; float64 tensors, normalised in float64, are held to 1e150).
    A ``ValueError`` names the argument, how many values are bad and the first one's index. Masked-out positions
    are checked too: they cannot change the outputs, but a NaN there is usually a bug upstream. Use
    ``set_check_finite(True)`` to switch it on outside a block::

        from perceiver_io.core import check_finite

        with check_finite():
            logits = model(pixel_values)  # ValueError: pixel_values: expected finite values ... the first nan at ...
    """
    previous = set_check_finite(enabled)
    try:
        yield
    finally:
        set_check_finite(previous)


def _reference(module: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """The device of ``module``'s first parameter or buffer and the dtype of its first floating one."""
    device = None
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        device = device or tensor.device
        if tensor.is_floating_point():
            return device, tensor.dtype
    return device, None


def _check_values(name: str, value: torch.Tensor) -> None:
    limit = _LAYER_NORM_LIMIT.get(value.dtype, _LAYER_NORM_LIMIT_DEFAULT)
    # isfinite as well: in float16 the limit itself rounds to inf, and inf <= inf.
    bad = ~(torch.isfinite(value) & (value.abs() <= limit))
    count = int(bad.sum())
    if count:
        index = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(
            f"{name}: expected finite values of magnitude at most {limit:g} (larger ones overflow a LayerNorm's "
            f"variance), got {count} bad value(s), the first {value[tuple(index)].item()} at index {index}"
        )


def capturing_graph() -> bool:
    """Whether this runs under ``torch.compile``, tracing (``torch.jit.trace``) or export: the modes that capture a
    graph, which want functional ops and choose their own casts and recomputation. The eager-only paths (in-place
    overwrites, recomputed activations, shared casts, chained weight gradients) step aside under them."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs in on ``device_type``, or None where it is off (or has no autocast, as "meta")."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except RuntimeError:
        return None


def _check_autocast_dtype(name: str, value: torch.Tensor, dtype: torch.dtype) -> None:
    """Accept a floating ``value`` whose dtype differs from the model's ``dtype`` only as autocast's own dtype:
    autocast casts per op between those two, but another dtype (float64, or float16 under bfloat16 autocast) is
    still mixed into ops it does not cast (LayerNorm, cat) and fails there."""
    autocast = _autocast_dtype(value.device.type)
    if value.dtype == autocast:
        return
    expected = f"{dtype} (the model's)" + (f" or {autocast} (autocast's)" if autocast is not None else "")
    hint = f"convert the input (.to({dtype})) or the model (.to({value.dtype}))"
    if autocast is None and value.dtype in (torch.float16, torch.bfloat16):
        hint += f", or run under torch.autocast({value.device.type!r}, dtype={value.dtype})"
    raise TypeError(f"{name}: expected dtype {expected}, got {value.dtype}; {hint}")


def check_model_input(name: str, value: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Check a tensor where it enters ``module``; returns it (integer ids and indices as ``long``).

    * device: the module's (its first parameter or buffer; a module with neither takes any), else ``ValueError``;
    * dtype: a floating tensor must have the module's floating dtype, or autocast's when autocast is on for the
      tensor's device type (autocast mixes those two by design), else ``TypeError`` naming them; an integer
      tensor of any integer dtype (``uint8`` ids, say) is cast to ``long``, which every embedding and index op
      takes;
    * values: with :func:`check_finite` on, NaN, inf and magnitudes that overflow a LayerNorm are a ``ValueError``.

    Call it after the shape check (``check_tensor``), so that a shape error is reported first.
    """
    device, dtype = _reference(module)
    if device is not None and value.device != device:
        raise ValueError(f"{name}: expected a tensor on the model's device {device}, got one on {value.device}")
    if value.is_floating_point():
        if dtype is not None and value.dtype != dtype:
            _check_autocast_dtype(name, value, dtype)
        if _check_finite and value.device.type != "meta":
            _check_values(name, value)
    elif value.dtype != torch.bool and not value.is_complex() and value.dtype != torch.long:
        value = value.long()
    return value
