"""Property-based fuzzing (hypothesis) of the public entry points that are cheap to build.

Targets: the encoder, the decoder, the image / text / audio / label input adapters, ``PerceiverIO`` from small
configs, every task model of :mod:`perceiver_io.models` at a tiny size, and the byte tokenizer. Each example draws
the ranks, sizes (0 and 1 included), dtypes (integer and floating kinds), masks, devices (``meta``), option values
and non-finite values (NaN, +-inf, 1e20) at masked or real positions, with the model in eval or training mode,
its dtype float32 / float64 / bfloat16, under autocast or not, with :func:`perceiver_io.core.check_finite` on or off.

Property: every call either returns, with outputs free of NaN and +inf whenever the inputs are finite at their real
(unmasked) positions, or raises ``TypeError`` / ``ValueError`` whose message starts with the name of an argument
of that entry point; with ``check_finite`` on, an input holding a non-finite value never returns. Any other
exception, an error that names something else, or a NaN out of finite inputs fails.

About half the examples keep every input valid (:class:`Draw`), so the success path is fuzzed as much as the
error paths. The default run draws ``FAST_EXAMPLES`` per target (the whole file takes a few seconds at
OMP_NUM_THREADS=1); ``pytest -m slow tests/test_fuzz.py -s`` draws ``PERCEIVER_FUZZ_EXAMPLES`` per target
(default 400: 6,000 cases over the 15 targets, about 30 s) and prints each target's count of cases and outcomes.
Both are derandomized (the same cases on every run) and keep no example database.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from conftest import small_image_classifier_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perceiver_io import (
    ByteTokenizer,
    DecoderConfig,
    EncoderConfig,
    ImageInputAdapter,
    ImageInputAdapterConfig,
    PerceiverDecoder,
    PerceiverEncoder,
    PerceiverIO,
    PerceiverIOConfig,
    PositionEncodingConfig,
    TextInputAdapter,
    TextInputAdapterConfig,
    create_model,
)
from perceiver_io.adapters import (
    AudioInputAdapter,
    AudioInputAdapterConfig,
    ClassificationOutputAdapterConfig,
    LabelInputAdapter,
    LabelInputAdapterConfig,
)
from perceiver_io.core import check_finite
from perceiver_io.models import ImageClassifier

FAST_EXAMPLES = 40
SLOW_EXAMPLES = int(os.environ.get("PERCEIVER_FUZZ_EXAMPLES", "400"))
FUZZ_SETTINGS = settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck), print_blob=False
)

BAD_VALUES = (float("nan"), float("inf"), -float("inf"), 1e20, -1e30)
LAYER_NORM_LIMIT = 1e18  # inputs above it overflow a float32 LayerNorm (documented by check_finite)
FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INTEGERS = (torch.int64, torch.int32, torch.int16, torch.uint8)
META = torch.device("meta")


# ------------------------------------------------------------------------------------------------------ the oracle
def first_word(message: str) -> str:
    found = re.match(r"[A-Za-z_]\w*", message)
    return found.group() if found else repr(message[:40])


def walk_tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk_tensors(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from walk_tensors(v)


def assert_finite(out: Any, neg_inf_ok: bool) -> None:
    for t in walk_tensors(out):
        if t.is_floating_point() and t.device.type != "meta":  # a module without parameters passes meta through
            t = t.float()
            assert not t.isnan().any(), f"NaN in an output {list(t.shape)} of inputs finite at real positions"
            assert not (t == math.inf).any(), "+inf in an output of inputs finite at real positions"
            assert neg_inf_ok or not (t == -math.inf).any(), "-inf in an output of inputs finite at real positions"


def bad(t: Any) -> torch.Tensor | None:
    """Where a floating tensor holds a value that is not finite or overflows a LayerNorm of its dtype (None for
    other values): the values ``check_finite`` reports."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.device.type == "meta":
        return None
    # isfinite as well: in float16 the limit rounds to inf, and inf <= inf.
    return ~(torch.isfinite(t) & (t.abs() <= (1e150 if t.dtype == torch.float64 else LAYER_NORM_LIMIT)))


def any_bad(*tensors: Any) -> bool:
    return any(b is not None and bool(b.any()) for b in map(bad, tensors))


def outcome(call: Callable[[], Any], names: set[str], *, finite: bool, must_fail: bool = False,
            neg_inf_ok: bool = False, known: Callable[[BaseException], bool] = lambda e: False) -> str:
    """Run ``call`` and check the property; returns "ok" or the error's type name. ``known``: an exception that
    is a reported defect outside the files of this change, counted as ``known:<type>`` instead of failing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except (TypeError, ValueError) as error:
        name = first_word(str(error))
        assert name in names, f"{type(error).__name__} names {name!r}, not one of {sorted(names)}: {error}"
        return type(error).__name__
    except Exception as error:
        if known(error):
            return f"known:{type(error).__name__}"
        raise
    assert not must_fail, "check_finite is on and an input holds a non-finite value, but the call returned"
    if finite:
        assert_finite(out, neg_inf_ok)
    return "ok"


# ------------------------------------------------------------------------------------------------ input strategies
class Draw:
    """``data.draw`` plus ``valid``: whether this example keeps every input valid (about half of them do), so that
    the success path is fuzzed as much as the error paths."""

    def __init__(self, data: st.DataObject) -> None:
        self._draw = data.draw
        self.valid = data.draw(st.booleans())

    def __call__(self, strategy: st.SearchStrategy) -> Any:
        return self._draw(strategy)

    def choose(self, *options: Any) -> Any:
        return self(st.sampled_from(options))

    def pick(self, valid: Any, invalid: Any = (), weight: int = 3) -> Any:
        """One of the ``valid`` options; in an example that may be invalid, now and then one of ``invalid``."""
        valid, invalid = list(valid), list(invalid)
        if self.valid or not invalid:
            return self(st.sampled_from(valid))
        return self(st.sampled_from(valid * weight + invalid))


def fuzz_shape(draw: Draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` as given; in an invalid example now and then one dim resized (0, 1, +1), dropped, or one added."""
    shape = list(shape)
    how = draw.pick(["same"], ["size", "rank"], weight=4)
    if how == "size" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw.choose(0, 1, shape[i] + 1)
    elif how == "rank":
        if shape and draw(st.booleans()):
            del shape[draw(st.integers(0, len(shape) - 1))]
        else:
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(0, 2)))
    return tuple(shape)


def make_tensor(draw: Draw, shape: tuple[int, ...], dtype: torch.dtype, low: int = 0, high: int = 10) -> torch.Tensor:
    """Random values of ``dtype``: floats at a drawn scale (finite, within the LayerNorm range), ints in
    ``[low, high)`` (clipped to the dtype), bools."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if dtype.is_floating_point:
        scale = draw.choose(1.0, 1.0, 1e-30, 1e3, 1e15)
        return (torch.randn(shape, generator=g) * scale).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.3
    info = torch.iinfo(dtype)
    low = max(low, info.min)
    return torch.randint(low, max(min(high, info.max + 1), low + 1), shape, generator=g).to(dtype)


def on_meta_now_and_then(draw: Draw, x: torch.Tensor) -> torch.Tensor:
    return x.to(META) if not draw.valid and draw(st.integers(0, 20)) == 0 else x


def float_input(draw: Draw, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A floating tensor of ``shape`` and ``dtype``; in an invalid example now and then of another shape, dtype
    (floating, integer, bool) or on the meta device."""
    shape = fuzz_shape(draw, shape)
    dtype = draw.pick([dtype], [d for d in FLOATS if d != dtype] + [torch.int64, torch.bool], weight=8)
    return on_meta_now_and_then(draw, make_tensor(draw, shape, dtype))


def int_input(draw: Draw, shape: tuple[int, ...], low: int, high: int) -> torch.Tensor:
    """Integer ids in ``[low, high)`` of any integer dtype; in an invalid example now and then out of range, of
    another shape, floating, bool or on the meta device."""
    shape = fuzz_shape(draw, shape)
    dtype = draw.pick(INTEGERS, [torch.float32, torch.bool])
    low, high = draw.pick([low], [low - 2]), draw.pick([high], [high + 2])
    return on_meta_now_and_then(draw, make_tensor(draw, shape, dtype, low, high))


def mask_input(draw: Draw, shape: tuple[int, ...], every_row_real: bool = False) -> torch.Tensor | None:
    """None, or a mask of ``shape`` (bool, int or uint8; in an invalid example now and then float or another shape).
    A row all padding is valid unless ``every_row_real``."""
    if draw(st.booleans()):
        return None
    shape = fuzz_shape(draw, shape)
    dtype = draw.pick([torch.bool, torch.bool, torch.int64, torch.uint8], [torch.float32])
    mask = make_tensor(draw, shape, torch.bool)
    if len(shape) >= 2 and shape[0] and shape[1]:
        if every_row_real and draw.valid:
            mask[:, 0] = True
        elif draw(st.booleans()):
            mask[0] = draw(st.booleans())  # a row all real or all padding
    return mask.to(dtype)


def poison(draw: Draw, x: Any, where: torch.Tensor | None = None) -> Any:
    """``x`` with a few NaN / inf / 1e20 values written at positions where ``where`` is True (anywhere when None),
    or unchanged; only floating tensors with values are poisoned."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.device.type == "meta" or not x.numel():
        return x
    if draw(st.integers(0, 2)) != 0:
        return x
    allowed = torch.ones_like(x, dtype=torch.bool) if where is None else where.expand_as(x)
    positions = allowed.flatten().nonzero().flatten()
    if not len(positions):
        return x
    x = x.clone()
    for _ in range(draw(st.integers(1, 3))):
        x.view(-1)[positions[draw(st.integers(0, len(positions) - 1))]] = draw(st.sampled_from(BAD_VALUES))
    return x


def real_positions(mask: torch.Tensor | None, x: torch.Tensor, view: Callable[[torch.Tensor], torch.Tensor]):
    """Positions of ``x`` a valid ``mask`` leaves real (``view`` maps the mask onto ``x``); None if not usable."""
    if mask is None:
        return None
    try:
        return view(mask != 0).expand_as(x)
    except (IndexError, RuntimeError, TypeError, ValueError):  # a mask of the wrong shape: the model refuses it
        return None


def masked_poison(draw: Draw, x: Any, real: torch.Tensor | None) -> Any:
    """Poison at masked positions (when there are any), anywhere, or not at all."""
    if real is not None and draw(st.booleans()):
        return poison(draw, x, ~real)
    return poison(draw, x)


def clean_at(x: Any, real: torch.Tensor | None) -> bool:
    """Whether ``x`` is finite (within the LayerNorm range) at its real positions (all when ``real`` is None)."""
    b = bad(x)
    if b is None:
        return True
    return not bool((b if real is None else b & real).any())


def chunk_size(draw: Draw) -> Any:
    return draw.pick([None, None, 1, 2, 100], [0, -1, 1.5, True])


def points_input(draw: Draw, num_outputs: int, none: int = 3) -> Any:
    """``subsampled_output_points`` for a grid of ``num_outputs``: None or valid indices (any integer dtype, or
    NumPy); in an invalid example now and then empty, out of range, floating, 2-D, 0-d or a list."""
    n = max(num_outputs, 1)
    kind = draw.pick(["none"] * none + ["valid", "valid", "numpy"], ["empty", "range", "float", "2d", "0d", "list"])
    if kind == "none":
        return None
    if kind == "valid":
        count = draw(st.integers(1, 4))
        return torch.randint(0, n, (count,), generator=torch.Generator().manual_seed(count)).to(draw.choose(*INTEGERS))
    return {
        "empty": torch.zeros(0, dtype=torch.long), "range": torch.tensor([0, n]), "float": torch.tensor([0.0]),
        "2d": torch.zeros(1, 1, dtype=torch.long), "0d": torch.tensor(0), "numpy": np.array([0, n - 1]), "list": [0],
    }[kind]


class Mode:
    """A drawn run mode: training or eval, autocast or not, check_finite or not."""

    def __init__(self, draw: Draw, autocast: bool = True) -> None:
        self.training = draw(st.booleans())
        self.autocast = autocast and draw(st.integers(0, 4)) == 0
        self.check_finite = draw(st.integers(0, 3)) == 0

    def run(self, model: torch.nn.Module | None, call: Callable[[], Any]) -> Callable[[], Any]:
        def wrapped() -> Any:
            if model is not None:
                model.train(self.training)
            with check_finite(self.check_finite), torch.autocast("cpu", torch.bfloat16, enabled=self.autocast):
                return call()

        return wrapped


def restoring(model: torch.nn.Module) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Restore ``model``'s buffers (BatchNorm statistics) after a call: a NaN batch in training mode must not
    leak into the next example through the shared, cached model."""
    saved = [b.clone() for b in model.buffers()]

    def wrap(call: Callable[[], Any]) -> Callable[[], Any]:
        def wrapped() -> Any:
            try:
                return call()
            finally:
                with torch.no_grad():
                    for b, s in zip(model.buffers(), saved):
                        b.copy_(s)

        return wrapped

    return wrap


# --------------------------------------------------------------------------------------------------- the targets
@functools.cache
def encoder_model(channels: int, latents: int, heads: int, blocks: int, self_attends: int, every_block: bool,
                  shape_for_attn: str, dtype: torch.dtype) -> PerceiverEncoder:
    torch.manual_seed(0)
    return PerceiverEncoder(EncoderConfig(
        num_input_channels=channels, num_latents=latents, num_latent_channels=8, num_blocks=blocks,
        num_self_attends_per_block=self_attends, num_cross_attend_heads=1 if shape_for_attn == "kv" else heads,
        num_self_attend_heads=heads, cross_attend_every_block=every_block,
        cross_attention_shape_for_attn=shape_for_attn,
    )).to(dtype)


def fuzz_encoder(draw: Draw) -> str:
    channels = draw.choose(1, 3, 5)
    dtype = draw.choose(torch.float32, torch.float32, torch.float64, torch.bfloat16)
    model = encoder_model(channels, draw.choose(1, 2, 4), draw.choose(1, 2, 4), draw.choose(1, 2), draw.choose(0, 1),
                          draw(st.booleans()), draw.choose("kv", "q"), dtype)
    mode = Mode(draw, autocast=dtype == torch.float32)
    b, m = draw.choose(0, 1, 2, 3), draw.pick([1, 2, 5], [0])
    x = float_input(draw, (b, m, channels), dtype)
    mask = mask_input(draw, (b, m))
    real = real_positions(mask, x, lambda k: k[:, :, None])
    x = masked_poison(draw, x, real)
    method = model.cross_attention_weights if draw(st.integers(0, 4)) == 0 else model
    return outcome(mode.run(model, lambda: method(x, mask)), {"inputs", "input_mask"}, finite=clean_at(x, real),
                   must_fail=mode.check_finite and any_bad(x))


@functools.cache
def decoder_model(query: str, heads: int, out: int | None, residual: bool) -> PerceiverDecoder:
    torch.manual_seed(0)
    q = {"fourier": PositionEncodingConfig("fourier", (2, 3), num_bands=2),
         "trainable": PositionEncodingConfig("trainable", (5,), num_channels=6), "none": None}[query]
    return PerceiverDecoder(DecoderConfig(8, query=q, num_query_channels=None if q else 6, num_output_channels=out,
                                          num_heads=heads, use_query_residual=residual))


def fuzz_decoder(draw: Draw) -> str:
    query = draw.choose("fourier", "trainable", "none")
    model = decoder_model(query, draw.choose(1, 2), draw.choose(None, 3), draw(st.booleans()))
    mode = Mode(draw)
    b = draw.choose(0, 1, 2)
    latents = poison(draw, float_input(draw, (b, draw.pick([1, 4], [0]), 8)))
    queries = points = None
    if query == "none" or draw.pick([False, False, False, True], [True]):
        queries = float_input(draw, (b, draw.pick([1, 3], [0]), model.config.num_query_channels))
        queries = poison(draw, queries)
    num_outputs = queries.shape[1] if queries is not None and queries.dim() == 3 else (model.num_outputs or 1)
    if queries is None or not draw.valid and draw(st.integers(0, 5)) == 0:
        points = points_input(draw, model.num_outputs or 1)
    if isinstance(points, (torch.Tensor, np.ndarray)) and points.ndim == 1:
        num_outputs = len(points)
    query_mask = mask_input(draw, (b, num_outputs))
    chunk = chunk_size(draw)
    names = {"latents", "queries", "query_mask", "subsampled_output_points", "chunk_size"}
    call = mode.run(model, lambda: model(latents, queries, query_mask=query_mask, subsampled_output_points=points,
                                         chunk_size=chunk))
    return outcome(call, names, finite=clean_at(latents, None) and clean_at(queries, None),
                   must_fail=mode.check_finite and any_bad(latents, queries))


@functools.cache
def image_adapter(prep: str, channels: int, interpolate: bool) -> ImageInputAdapter:
    torch.manual_seed(0)
    pe = (PositionEncodingConfig("trainable", num_channels=4) if prep == "conv1x1"
          else PositionEncodingConfig("fourier", num_bands=2))
    return ImageInputAdapter(ImageInputAdapterConfig((channels, 8, 8), prep_type=prep, num_conv_channels=4,
                                                     position_encoding=pe, interpolate_pos_encoding=interpolate))


def fuzz_image_adapter(draw: Draw) -> str:
    prep, channels, interpolate = draw.choose("pixels", "conv1x1", "conv"), draw.choose(1, 3), draw(st.booleans())
    adapter = image_adapter(prep, channels, interpolate)
    mode = Mode(draw)
    fixed = prep == "conv1x1" and not interpolate  # a learned table covers one grid
    h, w = (8, 8) if fixed and draw.valid else (draw.pick([1, 2, 5, 8, 9], [0]), draw.pick([1, 3, 8], [0]))
    x = poison(draw, float_input(draw, (draw.choose(0, 1, 2), channels, h, w)))
    call = restoring(adapter)(mode.run(adapter, lambda: adapter(x)))
    return outcome(call, {"pixel_values"}, finite=clean_at(x, None), must_fail=mode.check_finite and any_bad(x))


@functools.cache
def text_adapter() -> TextInputAdapter:
    torch.manual_seed(0)
    return TextInputAdapter(TextInputAdapterConfig(vocab_size=262, max_seq_len=8, num_channels=4))


def fuzz_text_adapter(draw: Draw) -> str:
    adapter = text_adapter()
    ids = int_input(draw, (draw.choose(0, 1, 2), draw.pick([1, 5, 8], [0, 9])), 0, 262)
    return outcome(Mode(draw).run(adapter, lambda: adapter(ids)), {"input_ids"}, finite=True)


@functools.cache
def audio_adapter(samples_per_patch: int) -> AudioInputAdapter:
    return AudioInputAdapter(AudioInputAdapterConfig(samples_per_patch, num_bands=2))


def fuzz_audio_adapter(draw: Draw) -> str:
    spp = draw.choose(1, 2, 4)
    adapter = audio_adapter(spp)
    mode = Mode(draw)
    x = poison(draw, float_input(draw, (draw.choose(0, 1, 2), spp * draw.pick([1, 3], [0]) + draw.pick([0], [1]), 1)))
    return outcome(mode.run(adapter, lambda: adapter(x)), {"audio"}, finite=clean_at(x, None),
                   must_fail=mode.check_finite and any_bad(x))


def fuzz_label_adapter(draw: Draw) -> str:
    adapter = LabelInputAdapter(LabelInputAdapterConfig(3))
    mode = Mode(draw)
    x = poison(draw, float_input(draw, (draw.choose(0, 1, 2), 3)))
    return outcome(mode.run(adapter, lambda: adapter(x)), {"label"}, finite=clean_at(x, None),
                   must_fail=mode.check_finite and any_bad(x))


@functools.cache
def perceiver_io(heads: int, blocks: int, every_block: bool, width: int, grid: bool) -> PerceiverIO:
    torch.manual_seed(0)
    config = small_image_classifier_config(num_latents=2, num_latent_channels=width, num_blocks=blocks,
                                           num_self_attends_per_block=1, num_cross_attend_heads=heads,
                                           num_self_attend_heads=heads, cross_attend_every_block=every_block)
    if grid:  # a grid of output queries and no output adapter: chunking and subsampling have something to do
        query = PositionEncodingConfig("fourier", (2, 3), num_bands=2)
        decoder = DecoderConfig(query=query, num_output_channels=2)
        config = PerceiverIOConfig(config.input_adapter, config.encoder, decoder)
    return PerceiverIO.from_config(config)


def fuzz_perceiver_io(draw: Draw) -> str:
    grid = draw(st.booleans())
    model = perceiver_io(draw.choose(1, 3), draw.choose(1, 2), draw(st.booleans()), draw.choose(6, 12), grid)
    mode = Mode(draw)
    b, h, w = draw.choose(0, 1, 2), draw.choose(1, 3, 8), draw.choose(1, 4, 10)
    x = float_input(draw, (b, 3, h, w))
    mask = mask_input(draw, (b, h * w))
    real = real_positions(mask, x, lambda k: k.view(k.shape[0], 1, h, w))  # raw pixels: token = pixel
    x = masked_poison(draw, x, real)
    points = points_input(draw, 6) if grid else draw.pick([None], [torch.tensor([0])])
    chunk = chunk_size(draw)
    names = {"inputs", "pixel_values", "input_mask", "subsampled_output_points", "output_chunk_size"}
    call = mode.run(model, lambda: model(x, mask, subsampled_output_points=points, output_chunk_size=chunk))
    return outcome(call, names, finite=clean_at(x, real), must_fail=mode.check_finite and any_bad(x))


# ----------------------------------------------------------------------------------------------------- task models
LATENTS = {"num_latents": 4, "num_latent_channels": 16}
TEXT = dict(max_seq_len=16, num_self_attends=1, num_channels=16, num_heads=2, **LATENTS)


@functools.cache
def task_model(name: str, variant: str = "") -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "image":
        if variant == "digits":
            return create_model("digits_fourier", decoder="average")
        config = small_image_classifier_config()
        if variant == "conv":
            adapter = ImageInputAdapterConfig((3, 8, 10), prep_type="conv", num_conv_channels=5,
                                              position_encoding=PositionEncodingConfig("fourier", num_bands=2))
            config = PerceiverIOConfig(adapter, config.encoder.replace(num_input_channels=None), config.decoder,
                                       ClassificationOutputAdapterConfig(7))
        return ImageClassifier.from_config(config)
    if name == "mlm":
        return create_model("language_bytes_small", **TEXT)
    if name == "text_classifier":
        return create_model("text_classifier_small", **TEXT)
    if name == "multitask":
        return create_model("glue_multitask_small", tasks={"a": 2, "b": 3, "c": 1}, method=variant, **TEXT)
    if name in ("optical_flow", "optical_flow_conv"):
        return create_model(f"{name}_small", train_size=(8, 8), num_self_attends=1, num_bands=2, **LATENTS)
    if name == "multimodal":
        return create_model("multimodal_autoencoding_small", num_frames=2, image_size=8, audio_samples_per_frame=16,
                            num_self_attends=1, num_bands=2, **LATENTS)
    if name == "sets":
        return create_model("unit_sets", max_units=8, num_channels=16, num_latents=4, num_self_attends=1, num_heads=2,
                            widening_factor=1)
    if name == "sets_transformer":
        return create_model("unit_sets_transformer", max_units=8, num_channels=16, num_layers=1, num_heads=2,
                            widening_factor=1)
    raise KeyError(name)


def fuzz_image_classifier(draw: Draw) -> str:
    variant = draw.choose("pixels", "conv", "digits")
    model = task_model("image", variant)
    mode = Mode(draw)
    c = 1 if variant == "digits" else 3
    x = float_input(draw, (draw.choose(0, 1, 2), c, draw.pick([1, 5, 8], [0]), draw.pick([1, 3, 10], [0])))
    x = poison(draw, x)
    call = restoring(model)(mode.run(model, lambda: model(x)))
    return outcome(call, {"pixel_values"}, finite=clean_at(x, None), must_fail=mode.check_finite and any_bad(x))


def text_inputs(draw: Draw, max_len: int = 16) -> tuple[torch.Tensor, torch.Tensor | None]:
    b, length = draw.choose(0, 1, 2), draw.pick([1, 5, max_len], [0, max_len + 1])
    return int_input(draw, (b, length), 0, 262), mask_input(draw, (b, length))


def fuzz_masked_language_model(draw: Draw) -> str:
    model = task_model("mlm")
    ids, mask = text_inputs(draw)
    points = points_input(draw, ids.shape[-1] if ids.dim() else 1)
    call = Mode(draw).run(model, lambda: model(ids, mask, points))
    return outcome(call, {"input_ids", "attention_mask", "subsampled_output_points"}, finite=True)


def fuzz_text_classifier(draw: Draw) -> str:
    model = task_model("text_classifier")
    ids, mask = text_inputs(draw)
    return outcome(Mode(draw).run(model, lambda: model(ids, mask)), {"input_ids", "attention_mask"}, finite=True)


def fuzz_multitask_text_classifier(draw: Draw) -> str:
    model = task_model("multitask", draw.choose("shared_token", "task_tokens", "task_queries"))
    ids, mask = text_inputs(draw)
    task_ids = int_input(draw, (ids.shape[0] if ids.dim() else 1,), 0, 3) if draw.pick([True], [False]) else None
    if draw(st.integers(0, 3)) == 0:
        call = Mode(draw).run(model, lambda: model.forward_all_tasks(ids, mask))
    else:
        call = Mode(draw).run(model, lambda: model(ids, mask, task_ids))
    return outcome(call, {"input_ids", "attention_mask", "task_ids"}, finite=True, neg_inf_ok=True)


def fuzz_optical_flow(draw: Draw) -> str:
    conv = draw(st.booleans())
    model = task_model("optical_flow_conv" if conv else "optical_flow")
    mode = Mode(draw)
    tiled = not conv and draw(st.integers(0, 3)) == 0
    if tiled:  # at least the training size
        h, w = draw.pick([8, 11], [5]), draw.pick([8, 13], [0])
    else:
        h, w = draw.pick([4, 5, 8] if conv else [1, 3, 8], [0, 1]), draw.pick([4, 8, 9] if conv else [1, 8], [0, 2])
    frames = poison(draw, float_input(draw, (draw.choose(0, 1, 2), 2, 3, h, w)))
    if tiled:
        overlap, batch = draw.pick([2, 0, 7], [8, 1.5]), draw.pick([None, 1, 2], [0])
        call = mode.run(model, lambda: model.predict_tiled(frames, overlap, batch))
        names = {"frames", "min_overlap", "tile_batch_size"}
    else:
        points = None if conv and draw.valid else points_input(draw, h * w)
        chunk = chunk_size(draw)
        call = mode.run(model, lambda: model(frames, chunk, points))
        names = {"frames", "output_chunk_size", "subsampled_output_points"}
    return outcome(restoring(model)(call), names, finite=clean_at(frames, None),
                   must_fail=mode.check_finite and any_bad(frames))


def fuzz_multimodal_autoencoder(draw: Draw) -> str:
    model = task_model("multimodal")
    mode = Mode(draw)
    b, t, h, s = draw.choose(0, 1, 2), draw.pick([1, 2], [0]), draw.pick([4, 8], [0, 6]), draw.pick([16, 32], [0, 8])
    inputs: Any = {
        "image": poison(draw, float_input(draw, (b, t, 3, h, 8))),
        "audio": poison(draw, float_input(draw, (b, s, 1))),
        "label": poison(draw, float_input(draw, (b, 8))),
    }
    how = draw.pick(["dict"], ["missing", "extra", "tensor"], weight=8)
    if how == "missing":
        del inputs[draw.choose(*sorted(inputs))]
    elif how == "extra":
        inputs["video"] = inputs["image"]
    elif how == "tensor":
        inputs = inputs["image"]
    points = draw.pick([None, {"image": points_input(draw, t * h * 8, none=0)}, {"audio": points_input(draw, 1),
                                                                                  "label": None}],
                       [points_input(draw, 4), {"video": torch.tensor([0])},
                        {"image": torch.zeros(0, dtype=torch.long)}])
    chunk = chunk_size(draw)
    floats = list(inputs.values()) if isinstance(inputs, dict) else [inputs]
    names = {"inputs", "subsampled_output_points", "output_chunk_size", "mask_probs", "latents", "modality"}
    if draw(st.integers(0, 3)) == 0:
        modality = draw.pick(["image", "audio", "label"], ["video", 3])
        latents = poison(draw, float_input(draw, (b, 4, 16)))
        single = points.get(modality) if isinstance(points, dict) and isinstance(modality, str) else points
        call = mode.run(model, lambda: model.decode(latents, modality, inputs, single, chunk))
        floats = [latents]  # decode reads only the inputs' sizes (the output grid), never their values
    else:
        mask_probs = draw.pick([None, {"label": 0.0}, {"label": 1.0}], [{"label": 2.0}, {"audio": 0.5}, {"video": 1.0}])
        call = mode.run(model, lambda: model(inputs, points, chunk, mask_probs))
    return outcome(call, names, finite=all(clean_at(t, None) for t in floats),
                   must_fail=mode.check_finite and any_bad(*floats))


def fuzz_set_models(draw: Draw) -> str:
    model = task_model(draw.choose("sets", "sets_transformer"))
    mode = Mode(draw)
    b, m = draw.choose(0, 1, 2), draw.pick([1, 5, 8], [0, 9])
    continuous = float_input(draw, (b, m, 3))
    categorical = int_input(draw, (b, m, 2), 0, 2)
    mask = mask_input(draw, (b, m), every_row_real=True)
    real = real_positions(mask, continuous, lambda k: k[:, :, None])
    continuous = masked_poison(draw, continuous, real)
    how = draw.pick(["dict"], ["missing", "tensor", "list"], weight=8)
    inputs: Any = {"continuous": continuous, "categorical": categorical}
    if how == "missing":
        del inputs["categorical"]
    elif how == "tensor":
        inputs = continuous
    elif how == "list":
        inputs = [continuous, categorical]
    call = mode.run(model, lambda: model(inputs, mask))
    return outcome(call, {"inputs", "mask"}, finite=clean_at(continuous, real), neg_inf_ok=True,
                   must_fail=mode.check_finite and any_bad(continuous))


# ------------------------------------------------------------------------------------------------------ tokenizer
TEXTS = st.text(max_size=12) | st.sampled_from(["[MASK]", "a[CLS]b", "[", "héllo wörld", ""])
OPTIONS = {  # valid values first, then invalid ones
    "add_special_tokens": ([True, False], [None, 1]),
    "padding": ([False, True, "longest", "max_length"], ["do_not_pad", None, 1]),
    "truncation": ([None, True, False], ["longest_first", 1]),
    "max_length": ([None, 2, 5, 10**20], [0, -1, 2.0, True]),
    "return_tensors": ([None, "pt"], ["np", 1]),
}


@functools.cache
def tokenizer(model_max_length: int = 2048) -> ByteTokenizer:
    return ByteTokenizer(model_max_length)


def id_sequences(draw: Draw) -> Any:
    values = st.integers(0, 261) if draw.valid else st.integers(-3, 300) | st.sampled_from([2**70, -(2**70), 262])
    kind = draw.pick(["list", "numpy", "tensor"], ["nested", "str", "ragged", "scalar", "float"])
    ids = draw(st.lists(values, max_size=6))
    in_range = [v % 262 for v in ids]
    if kind == "nested":
        return [ids, ids]
    if kind == "numpy":
        return np.array(in_range, dtype=np.int64).astype(draw.choose(np.int64, np.uint8, np.int16, np.int32))
    if kind == "tensor":
        return torch.tensor(in_range, dtype=torch.long).to(draw.choose(torch.long, torch.uint8, torch.int32))
    if kind == "float":
        return torch.tensor(in_range, dtype=torch.float32) if draw(st.booleans()) else np.array(in_range, dtype=float)
    if kind == "str":
        return "abc"
    if kind == "ragged":
        return [ids, ids + [1]]
    if kind == "scalar":
        return draw(values)
    return ids


def fuzz_tokenizer(draw: Draw) -> str:
    op = draw.choose("call", "call", "encode", "decode", "batch_decode", "init")
    if op == "init":
        value = draw.pick([2048, 2, 7], [1, 0, -5, 2.5, True, "8", None])
        return outcome(lambda: ByteTokenizer(value), {"model_max_length"}, finite=False)
    tok = tokenizer(draw.choose(2048, 4))
    skip = draw.pick([False, True], [1, None])
    if op == "decode":
        ids = id_sequences(draw)
        return outcome(lambda: tok.decode(ids, skip_special_tokens=skip), {"token_ids", "skip_special_tokens"},
                       finite=False)
    if op == "batch_decode":
        ids = id_sequences(draw)
        batch = [ids, ids] if draw.valid and not isinstance(ids, (np.ndarray, torch.Tensor)) else ids
        return outcome(lambda: tok.batch_decode(batch, skip_special_tokens=skip),
                       {"sequences", "skip_special_tokens"}, finite=False)
    text = draw(TEXTS | st.lists(TEXTS, min_size=1, max_size=3) if draw.valid else
                st.lists(TEXTS, max_size=2).map(tuple) | st.sampled_from([None, 3, b"bytes", ["a", 1], []]))
    if op == "encode":
        special = draw.pick([True, False], [None])
        result = outcome(lambda: tok.encode(text, add_special_tokens=special), {"text", "add_special_tokens"},
                         finite=False)
        if result == "ok" and "[" not in text:
            assert tok.decode(tok.encode(text, add_special_tokens=special), skip_special_tokens=True) == text
        return result
    kwargs = {name: draw.pick(*values) for name, values in OPTIONS.items()}
    out: dict[str, Any] = {}
    result = outcome(lambda: out.update(tok(text, **kwargs)), set(OPTIONS) | {"text"}, finite=False)
    if result == "ok":
        ids, mask = out["input_ids"], out["attention_mask"]
        if kwargs["return_tensors"] == "pt":
            assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape
            assert bool(((ids >= 0) & (ids < 262)).all())
        elif isinstance(text, str):
            assert len(ids) == len(mask)
        else:
            assert [len(r) for r in ids] == [len(r) for r in mask]
    return result


# --------------------------------------------------------------------------------------------------------- runner
TARGETS: dict[str, Callable[[Any], str]] = {
    "encoder": fuzz_encoder,
    "decoder": fuzz_decoder,
    "image_adapter": fuzz_image_adapter,
    "text_adapter": fuzz_text_adapter,
    "audio_adapter": fuzz_audio_adapter,
    "label_adapter": fuzz_label_adapter,
    "perceiver_io": fuzz_perceiver_io,
    "image_classifier": fuzz_image_classifier,
    "masked_language_model": fuzz_masked_language_model,
    "text_classifier": fuzz_text_classifier,
    "multitask_text_classifier": fuzz_multitask_text_classifier,
    "optical_flow": fuzz_optical_flow,
    "multimodal_autoencoder": fuzz_multimodal_autoencoder,
    "set_models": fuzz_set_models,
    "tokenizer": fuzz_tokenizer,
}


def fuzz(target: str, max_examples: int) -> Counter:
    """Run ``target`` on ``max_examples`` drawn cases; returns the count of each outcome."""
    outcomes: Counter = Counter()

    @settings(FUZZ_SETTINGS, max_examples=max_examples)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        outcomes[TARGETS[target](Draw(data))] += 1

    run()
    return outcomes


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target):
    outcomes = fuzz(target, FAST_EXAMPLES)
    assert sum(outcomes.values()) >= FAST_EXAMPLES // 2


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_slow(target):
    start = time.perf_counter()
    outcomes = fuzz(target, SLOW_EXAMPLES)
    print(f"\nfuzz {target}: {sum(outcomes.values())} cases in {time.perf_counter() - start:.1f} s, {dict(outcomes)}")
    assert sum(outcomes.values()) >= SLOW_EXAMPLES // 2
