"""Bad input raises a ValueError/TypeError naming the argument, the expected and the received shape,
before any computation (attention is patched to fail if it is ever reached).

Tests that request the ``computes`` fixture run the model on purpose: valid edge cases (an empty batch, NaN at
masked positions, integer ids of any dtype, autocast) that must give outputs, not errors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import small_image_classifier_config

from perceiver_io import (
    DecoderConfig,
    EncoderConfig,
    ImageInputAdapter,
    ImageInputAdapterConfig,
    PerceiverDecoder,
    PerceiverEncoder,
    PerceiverIO,
    PositionEncodingConfig,
    TextInputAdapter,
    TextInputAdapterConfig,
    create_model,
)
from perceiver_io.adapters import (
    AudioInputAdapter,
    AudioInputAdapterConfig,
    LabelInputAdapter,
    LabelInputAdapterConfig,
    VideoInputAdapter,
    VideoInputAdapterConfig,
)
from perceiver_io.core import attention as attention_module
from perceiver_io.core import check_finite, is_check_finite_enabled, set_check_finite
from perceiver_io.models import ImageClassifier


@pytest.fixture
def computes():
    """Requested by a test that runs the model on purpose: attention stays available."""


@pytest.fixture(autouse=True)
def no_attention(request, monkeypatch):
    if "computes" in request.fixturenames:
        return

    def fail(*args, **kwargs):
        raise AssertionError("computation started before the input was checked")

    monkeypatch.setattr(F, "scaled_dot_product_attention", fail)


@pytest.fixture
def encoder() -> PerceiverEncoder:
    return PerceiverEncoder(EncoderConfig(num_input_channels=5, num_latents=4, num_latent_channels=8,
                                          num_blocks=1, num_self_attends_per_block=1, num_self_attend_heads=2))


@pytest.fixture
def decoder() -> PerceiverDecoder:
    q = PositionEncodingConfig("fourier", (4, 5), num_bands=2)
    return PerceiverDecoder(DecoderConfig(8, query=q, num_output_channels=3))


@pytest.mark.parametrize(
    "inputs,mask,error,pattern",
    [
        (torch.randn(2, 7), None, ValueError, r"inputs: expected shape \[B, M, 5\], got \[2, 7\]"),
        (torch.randn(2, 7, 6), None, ValueError, r"inputs: expected shape \[B, M, 5\], got \[2, 7, 6\]"),
        (torch.randint(0, 3, (2, 7, 5)), None, TypeError, r"inputs: expected a floating-point tensor, got dtype torch.int64"),
        ([[0.0] * 5], None, TypeError, r"inputs: expected a torch.Tensor of shape \[B, M, 5\], got list"),
        (torch.randn(2, 7, 5), torch.ones(2, 6, dtype=torch.bool), ValueError, r"input_mask: expected shape \[2, 7\], got \[2, 6\]"),
        (torch.randn(2, 7, 5), torch.ones(7, dtype=torch.bool), ValueError, r"input_mask: expected shape \[2, 7\], got \[7\]"),
        (torch.randn(2, 7, 5), torch.ones(2, 7), TypeError, r"input_mask: expected a bool or integer"),
    ],
)
def test_encoder_bad_input(encoder, inputs, mask, error, pattern):
    with pytest.raises(error, match=pattern):
        encoder(inputs, mask)


def test_decoder_bad_input(decoder):
    z = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match=r"latents: expected shape \[B, N, 8\], got \[2, 4, 9\]"):
        decoder(torch.randn(2, 4, 9))
    with pytest.raises(ValueError, match=r"subsampled_output_points: expected indices in \[0, 20\), got values in \[0, 20\]"):
        decoder(z, subsampled_output_points=torch.tensor([0, 20]))
    with pytest.raises(TypeError, match="subsampled_output_points: expected an integer tensor, got dtype torch.float32"):
        decoder(z, subsampled_output_points=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"subsampled_output_points: expected shape \[n\], got \[1, 2\]"):
        decoder(z, subsampled_output_points=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="chunk_size: expected a positive int, got 0"):
        decoder(z, chunk_size=0)
    with pytest.raises(ValueError, match=r"queries: expected shape \[2, O, 10\], got \[2, 3, 4\]"):
        decoder(z, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"query_mask: expected shape \[2, 20\], got \[2, 19\]"):
        decoder(z, query_mask=torch.ones(2, 19, dtype=torch.bool))
    given = PerceiverDecoder(DecoderConfig(8, query=None, num_query_channels=6))
    with pytest.raises(ValueError, match="queries: this decoder has no query provider"):
        given(z)


def test_adapter_bad_input():
    image = ImageInputAdapter(ImageInputAdapterConfig((3, 8, 10), position_encoding=PositionEncodingConfig("fourier", (8, 10), num_bands=2)))
    with pytest.raises(ValueError, match=r"pixel_values: expected shape \[B, 3, H, W\], got \[2, 8, 10, 3\]"):
        image(torch.randn(2, 8, 10, 3))
    learned = ImageInputAdapter(ImageInputAdapterConfig((3, 8, 10), prep_type="conv1x1", num_conv_channels=4,
                                                        position_encoding=PositionEncodingConfig("trainable", num_channels=4)))
    with pytest.raises(ValueError, match=r"pixel_values: expected images of 8x10 pixels .* got 10x8; .*interpolate_pos_encoding=True"):
        learned(torch.randn(1, 3, 10, 8))
    conv = ImageInputAdapter(ImageInputAdapterConfig((3, 8, 8), prep_type="conv", conv_padding="transformers"))
    with pytest.raises(ValueError, match=r"pixel_values: an image of \[2, 2\] pixels is too small for prep_type='conv'"):
        conv(torch.randn(1, 3, 2, 2))
    with pytest.raises(TypeError, match="pixel_values: expected a floating-point tensor, got dtype torch.uint8"):
        image(torch.zeros(2, 3, 8, 10, dtype=torch.uint8))
    text = TextInputAdapter(TextInputAdapterConfig(vocab_size=262, max_seq_len=8, num_channels=4))
    with pytest.raises(ValueError, match="input_ids: expected at most max_seq_len=8 tokens, got 9"):
        text(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids: expected ids in \[0, 262\), got values in \[0, 262\]"):
        text(torch.tensor([[0, 262]]))
    with pytest.raises(TypeError, match="input_ids: expected an integer tensor, got dtype torch.float32"):
        text(torch.zeros(1, 3))


def test_model_bad_input_and_composition():
    model = PerceiverIO.from_config(small_image_classifier_config())
    with pytest.raises(ValueError, match=r"pixel_values: expected shape \[B, 3, H, W\], got \[1, 4, 10, 8\]"):
        model(torch.randn(1, 4, 10, 8))
    with pytest.raises(ValueError, match="output_chunk_size: expected a positive int, got 0"):
        model(torch.randn(1, 3, 8, 10), output_chunk_size=0)
    cfg = small_image_classifier_config()
    with pytest.raises(ValueError, match="encoder.num_input_channels: 99 was given, but the adjacent parts produce 21"):
        PerceiverIO.from_config(cfg.replace(encoder=cfg.encoder.replace(num_input_channels=99)))
    with pytest.raises(ValueError, match="decoder.num_latent_channels: 12 was given, but the adjacent parts produce 24"):
        PerceiverIO.from_config(cfg.replace(decoder=cfg.decoder.replace(num_latent_channels=12)))
    # modules built for other sizes are refused when composed
    other = PerceiverIO.from_config(small_image_classifier_config(image_shape=(2, 8, 10), num_cross_attend_heads=2))
    with pytest.raises(ValueError, match="encoder.num_input_channels: 20 was given, but the adjacent parts produce 21"):
        PerceiverIO(model.input_adapter, other.encoder, model.decoder, model.output_adapter)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(num_latents=0), "num_latents: expected a positive int, got 0"),
        (dict(num_self_attend_heads=3), r"qk_channels: 8 channels must be divisible by num_heads=3"),
        (dict(activation="swish"), r"activation: expected one of \['gelu_tanh', 'gelu'\], got 'swish'"),
        (dict(cross_attention_shape_for_attn="k"), "cross_attention_shape_for_attn"),
        (dict(dropout=1.5), r"dropout: expected a dropout rate in \[0, 1\), got 1.5"),
        (dict(attention_dropout=-0.1), r"attention_dropout: expected a dropout rate in \[0, 1\), got -0.1"),
    ],
)
def test_bad_encoder_config(kwargs, pattern):
    cfg = dict(num_input_channels=5, num_latents=4, num_latent_channels=8, num_blocks=1,
               num_self_attends_per_block=1, num_self_attend_heads=2)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        PerceiverEncoder(EncoderConfig(**cfg))


def test_bad_decoder_config():
    q = PositionEncodingConfig("fourier", (4, 5), num_bands=2)
    with pytest.raises(ValueError, match="num_query_channels: the query encoding makes 10 channels, got num_query_channels=7"):
        DecoderConfig(8, query=q, num_query_channels=7)
    with pytest.raises(ValueError, match="num_query_channels: required to build a decoder on its own"):
        PerceiverDecoder(DecoderConfig(8, query=None))
    with pytest.raises(ValueError, match=r"query: index_dims \(the output grid\) is required"):
        DecoderConfig(8, query=PositionEncodingConfig("trainable", num_channels=4))
    with pytest.raises(ValueError, match="^widening_factor: expected a positive int, got 0"):
        DecoderConfig(8, query=q, widening_factor=0)
    with pytest.raises(ValueError, match=r"^dropout: expected a dropout rate in \[0, 1\), got True"):
        DecoderConfig(8, query=q, dropout=True)


def test_a_bad_decoder_override_is_named():
    with pytest.raises(ValueError, match="widening_factor: expected a positive int, got 0"):
        create_model("language_bytes_small", decoder={"widening_factor": 0})


# ----------------------------------------------------------------------------------------------- tiny task models
LATENTS = {"num_latents": 4, "num_latent_channels": 16}
TEXT = dict(max_seq_len=16, num_self_attends=1, num_channels=16, num_heads=2, **LATENTS)
SETS = {"continuous": torch.randn(2, 5, 3), "categorical": torch.zeros(2, 5, 2, dtype=torch.long)}


def tiny(name: str):
    """(model, inputs of a batch of 2) of each task model, at a few thousand parameters."""
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 262, (2, 5)), torch.ones(2, 5, dtype=torch.bool)
    if name == "image":
        return ImageClassifier.from_config(small_image_classifier_config()), (torch.randn(2, 3, 8, 10),)
    if name == "digits_average":
        return create_model("digits_fourier", decoder="average"), (torch.randn(2, 1, 8, 8),)
    if name == "mlm":
        return create_model("language_bytes_small", **TEXT), (ids, mask)
    if name == "text_classifier":
        return create_model("text_classifier_small", **TEXT), (ids, mask)
    if name == "multitask":
        model = create_model("glue_multitask_small", tasks={"a": 2, "b": 3}, method="task_tokens", **TEXT)
        return model, (ids, mask, torch.tensor([0, 1]))
    if name in ("optical_flow", "optical_flow_conv"):
        model = create_model(f"{name}_small", train_size=(8, 8), num_self_attends=1, num_bands=2, **LATENTS)
        return model, (torch.randn(2, 2, 3, 8, 8),)
    if name == "multimodal":
        model = create_model("multimodal_autoencoding_small", num_frames=2, image_size=8, audio_samples_per_frame=16,
                             num_self_attends=1, num_bands=2, **LATENTS)
        inputs = {"image": torch.randn(2, 2, 3, 8, 8), "audio": torch.randn(2, 32, 1), "label": torch.randn(2, 8)}
        return model, (inputs,)
    if name == "sets":
        model = create_model("unit_sets", max_units=8, num_channels=16, num_latents=4, num_self_attends=1, num_heads=2,
                             widening_factor=1)
        return model, (dict(SETS), mask)
    if name == "sets_transformer":
        model = create_model("unit_sets_transformer", max_units=8, num_channels=16, num_layers=1, num_heads=2,
                             widening_factor=1)
        return model, (dict(SETS), mask)
    raise KeyError(name)


TASK_MODELS = ("image", "digits_average", "mlm", "text_classifier", "multitask", "optical_flow", "optical_flow_conv",
               "multimodal", "sets", "sets_transformer")


def first_rows(value, n: int):
    """Every tensor in ``value`` (nested dicts, tuples) cut to its first ``n`` rows."""
    if isinstance(value, torch.Tensor):
        return value[:n]
    if isinstance(value, dict):
        return {k: first_rows(v, n) for k, v in value.items()}
    if isinstance(value, tuple):
        return type(value)(*(first_rows(v, n) for v in value)) if hasattr(value, "_fields") else tuple(
            first_rows(v, n) for v in value)
    return value


def shapes(value):
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, dict):
        return {k: shapes(v) for k, v in value.items()}
    return [shapes(v) for v in value]


# -------------------------------------------------------------------------------------------------- empty sizes
@pytest.mark.parametrize("name", TASK_MODELS)
@pytest.mark.parametrize("training", [False, True])
def test_an_empty_batch_gives_empty_outputs_of_the_right_shape(computes, name, training):
    model, inputs = tiny(name)
    model.train(training)
    with torch.no_grad():
        one, empty = model(*first_rows(inputs, 1)), model(*first_rows(inputs, 0))
    assert shapes(empty) == shapes(first_rows(one, 0)) and shapes(one) != shapes(empty)


def test_generic_model_encoder_and_decoder_take_an_empty_batch(computes, encoder, decoder):
    model = PerceiverIO.from_config(small_image_classifier_config()).eval()
    assert list(model(torch.randn(0, 3, 8, 10)).shape) == [0, 7]
    assert list(encoder(torch.randn(0, 7, 5), torch.ones(0, 7, dtype=torch.bool)).shape) == [0, 4, 8]
    assert list(decoder(torch.randn(0, 4, 8)).shape) == [0, 20, 3]
    assert list(decoder(torch.randn(0, 4, 8), subsampled_output_points=torch.tensor([3])).shape) == [0, 1, 3]


def test_empty_sequences_latents_and_queries_are_named(encoder, decoder):
    z = torch.randn(2, 4, 8)
    text = TextInputAdapter(TextInputAdapterConfig(max_seq_len=8, num_channels=4))
    cases = [
        (lambda: encoder(torch.randn(2, 0, 5)),
         r"inputs: expected at least one input position M \(dim 1\), got shape \[2, 0, 5\]"),
        (lambda: encoder.cross_attention_weights(torch.randn(2, 0, 5)),
         r"inputs: expected at least one input position"),
        (lambda: decoder(torch.randn(2, 0, 8)),
         r"latents: expected at least one latent N \(dim 1\), got shape \[2, 0, 8\]"),
        (lambda: decoder(z, subsampled_output_points=torch.zeros(0, dtype=torch.long)),
         r"subsampled_output_points: expected at least one index, got an empty tensor"),
        (lambda: PerceiverDecoder(DecoderConfig(8, num_query_channels=6))(z, torch.randn(2, 0, 6)),
         r"queries: expected at least one query O \(dim 1\), got shape \[2, 0, 6\]"),
        (lambda: EncoderConfig(num_input_channels=5, num_latents=0), "num_latents: expected a positive int, got 0"),
        (lambda: text(torch.zeros(2, 0, dtype=torch.long)),
         r"input_ids: expected at least one token L \(dim 1\), got shape \[2, 0\]"),
        (lambda: AudioInputAdapter(AudioInputAdapterConfig(4, num_bands=2))(torch.randn(2, 0, 1)),
         r"audio: expected at least one sample S \(dim 1\), got shape \[2, 0, 1\]"),
        (lambda: VideoInputAdapter(VideoInputAdapterConfig(num_bands=2))(torch.randn(1, 0, 3, 8, 8)),
         r"video: expected at least one frame of at least 4x4 pixels \(one patch\), got 0 frames of 8x8"),
        (lambda: VideoInputAdapter(VideoInputAdapterConfig(num_bands=2))(torch.randn(1, 2, 3, 0, 8)),
         r"video: expected at least one frame of at least 4x4 pixels \(one patch\), got 2 frames of 0x8"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()


@pytest.mark.parametrize("name", ["mlm", "optical_flow", "multimodal"])
def test_empty_subsampled_output_points_of_a_task_model_are_named(name):
    model, inputs = tiny(name)
    points = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"subsampled_output_points(\['image'\])?: expected at least one index"):
        model(*inputs, subsampled_output_points={"image": points} if name == "multimodal" else points)


# ------------------------------------------------------------------------------------------------ dtype and device
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_inputs_of_another_dtype_are_named_with_both_dtypes(encoder, decoder, dtype):
    model = PerceiverIO.from_config(small_image_classifier_config())
    got = str(dtype).replace(".", r"\.")
    with pytest.raises(TypeError, match=rf"pixel_values: expected dtype torch\.float32 \(the model's\), got {got}"):
        model(torch.randn(1, 3, 8, 10, dtype=dtype))
    with pytest.raises(TypeError, match=rf"inputs: expected dtype torch\.float32 \(the model's\), got {got}"):
        encoder(torch.randn(2, 7, 5, dtype=dtype))
    with pytest.raises(TypeError, match=rf"latents: expected dtype torch\.float32 \(the model's\), got {got}"):
        decoder(torch.randn(2, 4, 8, dtype=dtype))
    multimodal, (inputs,) = tiny("multimodal")
    pattern = rf"inputs\['label'\]: expected dtype torch\.float32 \(the model's\), got {got}"
    with pytest.raises(TypeError, match=pattern):
        multimodal({**inputs, "label": inputs["label"].to(dtype)})


def test_inputs_on_another_device_are_named(encoder, decoder):
    meta = torch.device("meta")
    model = PerceiverIO.from_config(small_image_classifier_config())
    text, (ids, mask) = tiny("mlm")
    multitask, (ids, mask, task_ids) = tiny("multitask")
    sets, (entities, set_mask) = tiny("sets")
    cases = [
        (lambda: model(torch.randn(1, 3, 8, 10, device=meta)), "pixel_values"),
        (lambda: encoder(torch.randn(2, 7, 5, device=meta)), "inputs"),
        (lambda: encoder(torch.randn(2, 7, 5), torch.ones(2, 7, dtype=torch.bool, device=meta)), "input_mask"),
        (lambda: decoder(torch.randn(2, 4, 8, device=meta)), "latents"),
        (lambda: text(ids.to(meta)), "input_ids"),
        (lambda: text(ids, mask.to(meta)), "attention_mask"),
        (lambda: multitask(ids, mask, task_ids.to(meta)), "task_ids"),
        (lambda: sets({**entities, "continuous": entities["continuous"].to(meta)}), r"inputs\['continuous'\]"),
        (lambda: sets(entities, set_mask.to(meta)), "mask"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}: expected a tensor on the model's device cpu, got one on meta"):
            call()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_integer_ids_of_any_dtype_are_used_as_long(computes, dtype):
    for name in ("mlm", "multitask"):
        model, (ids, mask, *task_ids) = tiny(name)
        model.eval()
        expected = model(ids, mask, *task_ids)
        got = model(ids.to(dtype), mask.to(dtype), *(t.to(dtype) for t in task_ids))
        assert torch.equal(got, expected)


def test_autocast_takes_its_own_dtype_and_names_a_third_one(computes):
    model = PerceiverIO.from_config(small_image_classifier_config()).eval()
    x = torch.randn(2, 3, 8, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == model(x.bfloat16()).dtype == torch.bfloat16
        with pytest.raises(TypeError, match=r"pixel_values: expected dtype torch\.float32 \(the model's\) or "
                                            r"torch\.bfloat16 \(autocast's\), got torch\.float16"):
            model(x.half())


# ------------------------------------------------------------------------------------------------ non-finite values
@pytest.mark.parametrize("path", ["fused", "unfused"])
def test_masked_inputs_cannot_change_the_latents_whatever_their_values(computes, monkeypatch, encoder, path):
    monkeypatch.setattr(attention_module, "use_fused_attention", lambda q, v: path == "fused")
    x = torch.randn(3, 7, 5)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 2:4] = mask[1, 6] = False
    mask[2] = False  # an example with no input at all
    expected = encoder(x, mask)
    for bad in (float("nan"), float("inf"), -float("inf"), 1e30, 0.0):
        poisoned = x.masked_fill(~mask[:, :, None], bad)
        assert torch.equal(encoder(poisoned, mask), expected)  # bit-identical, not just finite
        assert torch.equal(encoder.cross_attention_weights(poisoned, mask), encoder.cross_attention_weights(x, mask))


@pytest.mark.parametrize("name", ["sets", "sets_transformer"])
def test_nan_in_padded_entities_stays_out_of_the_set_outputs(computes, name):
    model, (entities, mask) = tiny(name)
    model.eval()
    mask[1, 3:] = False
    expected = model(entities, mask)
    poisoned = {**entities, "continuous": entities["continuous"].clone()}
    poisoned["continuous"][1, 3:] = float("nan")
    got = model(poisoned, mask)
    assert torch.equal(got.set_logits, expected.set_logits)
    assert torch.equal(got.entities[mask], expected.entities[mask])
    real = mask[:, :, None] & mask[:, None, :]
    assert torch.equal(got.pointer_logits[real], expected.pointer_logits[real])


def test_check_finite_names_the_argument_of_a_nan_inf_or_overflowing_value(computes, encoder):
    model = PerceiverIO.from_config(small_image_classifier_config()).eval()
    x = torch.randn(1, 3, 8, 10)
    for bad, shown in ((float("nan"), "nan"), (float("-inf"), "-inf"), (1e20, r"1\.0\d*e\+20")):
        poisoned = x.clone()
        poisoned[0, 1, 2, 3] = bad
        model(poisoned)  # off by default: no check
        with check_finite():
            assert is_check_finite_enabled()
            pattern = (r"pixel_values: expected finite values of magnitude at most 1e\+18 \(larger ones overflow a "
                       rf"LayerNorm's variance\), got 1 bad value\(s\), the first {shown} at index \[0, 1, 2, 3\]")
            with pytest.raises(ValueError, match=pattern):
                model(poisoned)
        assert not is_check_finite_enabled()
    assert set_check_finite(True) is False
    try:
        with pytest.raises(ValueError, match=r"inputs: expected finite values .* at index \[1, 6, 0\]"):
            encoder(torch.randn(2, 7, 5).index_put((torch.tensor(1), torch.tensor(6), torch.tensor(0)),
                                                   torch.tensor(float("nan"))))
        with check_finite(False):
            model(x)
    finally:
        assert set_check_finite(False) is True
    with pytest.raises(TypeError, match="enabled: expected a bool, got int"):
        set_check_finite(1)


# ------------------------------------------------------------------------------------------------ smaller API paths
def test_multimodal_points_and_modalities_are_checked_before_any_computation():
    model, (inputs,) = tiny("multimodal")
    with pytest.raises(TypeError, match=r"subsampled_output_points: expected a dict \{modality: indices \[n\]\} over "
                                        r"the modalities \['audio', 'image', 'label'\], got Tensor of shape \[\]"):
        model(inputs, subsampled_output_points=torch.tensor(3))
    with pytest.raises(TypeError, match=r"subsampled_output_points: expected a dict .*, got Tensor of shape \[2\]"):
        model(inputs, subsampled_output_points=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"subsampled_output_points: unknown modalities \['video'\]"):
        model(inputs, subsampled_output_points={"video": torch.tensor([0])})
    with pytest.raises(ValueError, match=r"subsampled_output_points\['image'\]: expected shape \[n\], got \[\]"):
        model(inputs, subsampled_output_points={"image": torch.tensor(3)})
    latents = torch.randn(2, 4, 16)
    with pytest.raises(ValueError, match=r"modality: expected one of \['audio', 'image', 'label'\], got 'video'"):
        model.decode(latents, "video", inputs)
    with pytest.raises(ValueError, match=r"latents: expected shape \[B, N, 16\], got \[2, 4, 8\]"):
        model.decode(torch.randn(2, 4, 8), "image", inputs)


def test_multimodal_decode_of_one_modality_equals_the_forward(computes):
    model, (inputs,) = tiny("multimodal")
    model.eval()
    points = {"image": torch.tensor([0, 5, 127]), "audio": torch.tensor([1])}
    with torch.no_grad():
        full, part = model(inputs), model(inputs, subsampled_output_points=points)
        latents = model.encode(inputs)
        for m in ("image", "audio", "label"):
            torch.testing.assert_close(model.decode(latents, m, inputs), full[m], rtol=0, atol=0)
            if m in points:
                torch.testing.assert_close(model.decode(latents, m, inputs, points[m], output_chunk_size=2), part[m])


def test_text_models_name_the_attention_mask_the_caller_passed():
    for name in ("mlm", "text_classifier", "multitask"):
        model, (ids, mask, *task_ids) = tiny(name)
        with pytest.raises(ValueError, match=r"attention_mask: expected shape \[2, 5\], got \[2, 4\]"):
            model(ids, mask[:, :4], *task_ids)
        with pytest.raises(TypeError, match="attention_mask: expected a bool or integer"):
            model(ids, mask.float(), *task_ids)


def test_encoder_attention_weights_check_their_inputs(encoder):
    with pytest.raises(ValueError, match=r"inputs: expected shape \[B, M, 5\], got \[2, 7\]"):
        encoder.cross_attention_weights(torch.randn(2, 7))
    with pytest.raises(TypeError, match="inputs: expected a floating-point tensor, got dtype torch.int64"):
        encoder.cross_attention_weights(torch.zeros(2, 7, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_mask: expected shape \[2, 7\], got \[2, 6\]"):
        encoder.cross_attention_weights(torch.randn(2, 7, 5), torch.ones(2, 6, dtype=torch.bool))


@pytest.mark.parametrize("name", ["sets", "optical_flow_conv"])
def test_models_without_subsampling_refuse_points_before_any_computation(name):
    model, inputs = tiny(name)
    with pytest.raises(ValueError, match="subsampled_output_points: "):
        PerceiverIO.forward(model, inputs[0], subsampled_output_points=torch.tensor([0]))


# ------------------------------------------------------------------------------------------ found by tests/test_fuzz.py
def test_check_finite_reports_inf_in_float16():
    # 1e18 rounds to inf in float16, and inf <= inf: the check must not rely on the comparison alone.
    label = LabelInputAdapter(LabelInputAdapterConfig(3))  # no parameters: any dtype passes
    pattern = r"label: expected finite values .* the first inf at index \[0, 1\]"
    with check_finite(), pytest.raises(ValueError, match=pattern):
        label(torch.tensor([[0.0, float("inf"), 1.0]], dtype=torch.float16))


def test_a_classifier_refuses_subsampled_output_points_before_any_computation():
    # It has one output; the points used to reach the decoder and fail as "outputs: expected shape [B, 1, 7]".
    model = PerceiverIO.from_config(small_image_classifier_config())
    with pytest.raises(ValueError, match="subsampled_output_points: a classifier has one output"):
        model(torch.randn(1, 3, 8, 10), subsampled_output_points=torch.tensor([0, 0]))


def test_multimodal_decode_names_the_input_that_sets_the_output_grid():
    model, (inputs,) = tiny("multimodal")
    latents = torch.randn(2, 4, 16)
    with pytest.raises(TypeError, match=r"inputs\['audio'\]: audio: expected a floating-point tensor, got dtype torch"):
        model.decode(latents, "audio", {**inputs, "audio": torch.zeros(2, 32, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"inputs\['image'\]: video: the input video \[B, T, C, H, W\] sets the"):
        model.decode(latents, "image")


def test_conv_stem_names_a_batch_too_small_for_batchnorm_statistics():
    adapter = ImageInputAdapter(ImageInputAdapterConfig((3, 8, 8), prep_type="conv", num_conv_channels=4))
    with pytest.raises(ValueError, match=r"pixel_values: in training mode the stem's BatchNorm needs more than one"):
        adapter.train()(torch.randn(1, 3, 2, 2))  # one image whose 7x7/2 conv output is one pixel


def test_tiled_flow_of_an_empty_batch_is_empty():
    model, _ = tiny("optical_flow")
    assert list(model.predict_tiled(torch.randn(0, 2, 3, 9, 12), min_overlap=2).shape) == [0, 2, 9, 12]
    assert list(model.predict_tiled(torch.randn(0, 2, 3, 9, 12), 2, tile_batch_size=1).shape) == [0, 2, 9, 12]
