"""from_transformers / to_transformers: every transformers Perceiver head, same outputs at equal weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perceiver_io import (
    ClassificationOutputAdapterConfig,
    DecoderConfig,
    EncoderConfig,
    ImageInputAdapterConfig,
    PerceiverIO,
    PerceiverIOConfig,
    PositionEncodingConfig,
)
from perceiver_io.adapters.flow import frame_patches
from perceiver_io.core.decoder import AverageDecoderConfig
from perceiver_io.models import ImageClassifier, MaskedLanguageModel, MultimodalAutoencoder, OpticalFlow, TextClassifier
from perceiver_io.models.presets import language_perceiver_bytes

transformers = pytest.importorskip("transformers")
from transformers import PerceiverConfig  # noqa: E402

from perceiver_io.convert.transformers import from_transformers, to_transformers  # noqa: E402

TOL = 1e-5


def perturb(hf):
    """Random weights everywhere (LayerNorms, biases, BatchNorm statistics too), eval mode."""
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for name, b in hf.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.mul_(0.5 + torch.rand_like(b))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
    return hf.eval()


def build(head: str, **kwargs):
    return perturb(getattr(transformers, head)(PerceiverConfig(**kwargs)))


def assert_round_trip(hf, ours) -> None:
    back = to_transformers(ours)
    assert type(back) is type(hf)
    a, b = hf.state_dict(), back.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    for field in ("num_latents", "d_latents", "num_blocks", "num_self_attends_per_block", "num_self_attention_heads",
                  "num_cross_attention_heads", "qk_channels", "v_channels", "cross_attention_shape_for_attention",
                  "self_attention_widening_factor", "cross_attention_widening_factor", "use_query_residual"):
        assert getattr(back.config, field) == getattr(hf.config, field), field


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# core variations shared by the heads: odd head counts, explicit / default qk and v, widening,
# cross-attention shape, the three GELUs transformers offers that we have.

CORES = {
    "odd_heads": dict(num_latents=5, d_latents=15, num_blocks=2, num_self_attends_per_block=2,
                      num_self_attention_heads=5, num_cross_attention_heads=3, qk_channels=15, v_channels=15,
                      cross_attention_widening_factor=2, self_attention_widening_factor=3, hidden_act="gelu"),
    "defaults_q": dict(num_latents=3, d_latents=12, num_blocks=1, num_self_attends_per_block=1,
                       num_self_attention_heads=3, num_cross_attention_heads=1,
                       cross_attention_shape_for_attention="q", hidden_act="gelu_pytorch_tanh"),
    "no_residual": dict(num_latents=4, d_latents=10, num_blocks=3, num_self_attends_per_block=1,
                        num_self_attention_heads=5, num_cross_attention_heads=5, qk_channels=10,
                        use_query_residual=False, hidden_act="gelu_new"),
}


def text_mask(batch: int, length: int) -> torch.Tensor:
    mask = (torch.rand(batch, length) > 0.4).long()
    mask[:, 0] = 1  # transformers doesn't zero fully masked rows; keep one key per row
    return mask


@pytest.mark.parametrize("core", sorted(CORES))
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_masked_lm(core, batch, masked):
    hf = build("PerceiverForMaskedLM", d_model=16, vocab_size=13, max_position_embeddings=11, **CORES[core])
    ours = from_transformers(hf)
    assert isinstance(ours, MaskedLanguageModel) and not ours.training
    assert ours.encoder.config.activation == ("gelu" if CORES[core]["hidden_act"] == "gelu" else "gelu_tanh")
    for length in (7, 11):
        ids = torch.randint(0, 13, (batch, length))
        mask = text_mask(batch, length) if masked else None
        with torch.no_grad():
            expected = hf(inputs=ids, attention_mask=mask).logits[:, :length]
            got = ours(ids, mask)
        if mask is not None:
            # Ours masks the queries of padded positions too (official); transformers ignores that
            # query mask, so only the real positions are comparable.
            real = mask.bool()
            got, expected = got[real], expected[real]
        assert max_diff(got, expected) <= TOL
    assert_round_trip(hf, ours)


@pytest.mark.parametrize("core", sorted(CORES))
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_sequence_classification(core, batch, masked):
    hf = build("PerceiverForSequenceClassification", d_model=20, vocab_size=9, max_position_embeddings=8,
               num_labels=5, **CORES[core])
    ours = from_transformers(hf)
    assert isinstance(ours, TextClassifier)
    ids = torch.randint(0, 9, (batch, 6))
    mask = text_mask(batch, 6) if masked else None
    with torch.no_grad():
        expected = hf(inputs=ids, attention_mask=mask).logits
        got = ours(ids, mask)
    assert max_diff(got, expected) <= TOL
    assert_round_trip(hf, ours)


IMAGE_CASES = [
    # head, image_size, core
    ("PerceiverForImageClassificationLearned", 5, "odd_heads"),
    ("PerceiverForImageClassificationLearned", 4, "defaults_q"),
    ("PerceiverForImageClassificationFourier", [5, 7], "odd_heads"),
    ("PerceiverForImageClassificationFourier", 6, "no_residual"),
    ("PerceiverForImageClassificationConvProcessing", [9, 13], "defaults_q"),
    ("PerceiverForImageClassificationConvProcessing", [16, 11], "odd_heads"),
]


@pytest.mark.parametrize("head, image_size, core", IMAGE_CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_image_classification(head, image_size, core, batch):
    hf = build(head, image_size=image_size, num_labels=4, **CORES[core])
    ours = from_transformers(hf)
    assert isinstance(ours, ImageClassifier)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert ours.input_adapter.config.image_shape == (3, h, w)
    pixels = torch.randn(batch, 3, h, w)
    with torch.no_grad():
        expected = hf(inputs=pixels).logits
        got = ours(pixels)
    assert max_diff(got, expected) <= TOL
    assert_round_trip(hf, ours)


@pytest.mark.parametrize("head, image_size, core", IMAGE_CASES)
@pytest.mark.parametrize("other_size", [(11, 9), (12, 20)])
def test_image_classification_at_other_sizes(head, image_size, core, other_size):
    """Fourier and conv models take any image size (positions for the actual grid, as transformers
    and the official code compute them); the learned one interpolates its table on request."""
    hf = build(head, image_size=image_size, num_labels=4, **CORES[core])
    learned = head == "PerceiverForImageClassificationLearned"
    ours = from_transformers(hf, interpolate_pos_encoding=learned)
    pixels = torch.randn(2, 3, *other_size)
    with torch.no_grad():
        expected = hf(inputs=pixels, interpolate_pos_encoding=learned).logits
        assert max_diff(ours(pixels), expected) <= TOL
    if learned:
        with pytest.raises(ValueError, match=r"pixel_values: expected images of .* interpolate_pos_encoding=True"):
            from_transformers(hf)(pixels)


def test_conv_processing_at_224_has_a_55x55_grid_and_matches():
    hf = build("PerceiverForImageClassificationConvProcessing", image_size=224, num_labels=3, **CORES["defaults_q"])
    ours = from_transformers(hf)
    cfg = ours.input_adapter.config
    assert cfg.token_grid(224, 224) == (55, 55) and cfg.conv_padding == "transformers"
    assert cfg.position_encoding.max_resolution == (56, 56) and cfg.position_encoding.num_bands == 64
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ours(pixels), hf(inputs=pixels).logits) <= TOL


def test_flow_takes_sizes_transformers_cannot():
    """transformers reshapes flow to train_size; ours runs other frame sizes with the same per-pixel math."""
    hf = build("PerceiverForOpticalFlow", train_size=[4, 6], **CORES["defaults_q"])
    ours = from_transformers(hf)
    frames = torch.rand(1, 2, 3, 5, 7) * 2 - 1
    with pytest.raises(RuntimeError, match="invalid for input of size 70"):
        hf(inputs=frame_patches(frames))
    hf.perceiver.decoder.output_image_shape = (5, 7)  # transformers' network runs other sizes but for this reshape
    with torch.no_grad():
        flow = ours(frames)
        expected = hf(inputs=frame_patches(frames)).logits * 20
    assert flow.shape == (1, 2, 5, 7)
    assert max_diff(flow, expected.permute(0, 3, 1, 2)) <= TOL


def test_fourier_positions_come_from_the_transformers_module():
    hf = build("PerceiverForImageClassificationFourier", image_size=[5, 7], num_labels=2, **CORES["odd_heads"])
    pe = from_transformers(hf).input_adapter.config.position_encoding
    assert (pe.kind, pe.index_dims, pe.num_bands, pe.max_resolution) == ("fourier", (5, 7), 64, (224, 224))


def extract_image_patches(x: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """The helper transformers' Perceiver flow docs use: TF 'SAME' padding, unfold, (row, col, channel) channels."""
    b, c, h, w = x.shape
    pad_row, pad_col = kernel - 1, kernel - 1
    x = F.pad(x, (pad_row // 2, pad_row - pad_row // 2, pad_col // 2, pad_col - pad_col // 2))
    patches = x.unfold(2, kernel, 1).unfold(3, kernel, 1).permute(0, 4, 5, 1, 2, 3).contiguous()
    return patches.view(b, -1, h, w)


def test_frame_patches_match_the_transformers_docs_helper():
    frames = torch.randn(2, 2, 3, 5, 7)
    expected = torch.stack([extract_image_patches(frames[:, t]) for t in range(2)], dim=1)
    assert torch.equal(frame_patches(frames), expected)


@pytest.mark.parametrize("train_size, core", [([6, 8], "odd_heads"), ([5, 7], "defaults_q"), ([4, 4], "no_residual")])
@pytest.mark.parametrize("batch", [1, 3])
def test_optical_flow(train_size, core, batch):
    hf = build("PerceiverForOpticalFlow", train_size=train_size, **CORES[core])
    ours = from_transformers(hf)
    assert isinstance(ours, OpticalFlow)
    h, w = train_size
    frames = torch.rand(batch, 2, 3, h, w) * 2 - 1
    with torch.no_grad():
        expected = hf(inputs=frame_patches(frames)).logits * 20  # [B, H, W, 2], without the x20
        got = ours(frames)
    assert max_diff(got, expected.permute(0, 3, 1, 2)) <= TOL
    assert_round_trip(hf, ours)


MULTIMODAL_CASES = [
    # output_shape, num_frames, image_size, audio_samples_per_frame, samples_per_patch, core
    ([1, 2, 8, 12], 2, 2, 8, 4, "odd_heads"),
    ([1, 3, 4, 4], 2, 5, 6, 3, "defaults_q"),
    ([1, 2, 8, 8], 2, 2, 16, 8, "no_residual"),
]


@pytest.mark.parametrize("output_shape, num_frames, image_size, per_frame, per_patch, core", MULTIMODAL_CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_multimodal_autoencoding(output_shape, num_frames, image_size, per_frame, per_patch, core, batch):
    hf = build("PerceiverForMultimodalAutoencoding", output_shape=output_shape, num_frames=num_frames,
               image_size=image_size, audio_samples_per_frame=per_frame, samples_per_patch=per_patch,
               output_num_channels=12, _label_trainable_num_channels=10, num_labels=6, **CORES[core])
    ours = from_transformers(hf)
    assert isinstance(ours, MultimodalAutoencoder)
    _, t, h, w = output_shape
    samples = num_frames * per_frame
    inputs = dict(image=torch.randn(batch, t, 3, h, w), audio=torch.randn(batch, samples, 1), label=torch.randn(batch, 6))
    points = dict(image=torch.randperm(t * h * w)[:17], audio=torch.randperm(samples // per_patch)[:5])
    with torch.no_grad():
        expected = hf(inputs=inputs, subsampled_output_points=dict(points, label=None)).logits
        got = ours(inputs, subsampled_output_points=points)
    assert sorted(got) == sorted(expected) == ["audio", "image", "label"]
    for m in expected:
        assert max_diff(got[m], expected[m]) <= TOL, m
    assert_round_trip(hf, ours)


def test_multimodal_reconstruct_equals_transformers_decoding_every_point():
    """transformers can only decode subsampled points (its full decode fails); all points == our reconstruct."""
    hf = build("PerceiverForMultimodalAutoencoding", output_shape=[1, 2, 8, 4], num_frames=2, image_size=2,
               audio_samples_per_frame=8, samples_per_patch=4, output_num_channels=12,
               _label_trainable_num_channels=10, num_labels=6, **CORES["odd_heads"])
    ours = from_transformers(hf)
    inputs = dict(image=torch.randn(2, 2, 3, 8, 4), audio=torch.randn(2, 16, 1), label=torch.randn(2, 6))
    with torch.no_grad():
        expected = hf(inputs=inputs, subsampled_output_points=dict(image=torch.arange(64), audio=torch.arange(4))).logits
        got = ours.reconstruct(inputs, chunk_size=24)
    assert max_diff(got["image"].permute(0, 1, 3, 4, 2).reshape(2, 64, 3), expected["image"]) <= TOL
    assert max_diff(got["audio"].reshape(2, 16), expected["audio"]) <= TOL
    assert max_diff(got["label"], expected["label"]) <= TOL


@pytest.mark.parametrize("act", ["gelu_python", "gelu_python_tanh", "gelu_fast"])
def test_other_gelu_spellings(act):
    hf = build("PerceiverForSequenceClassification", d_model=8, vocab_size=5, max_position_embeddings=6,
               num_labels=3, **dict(CORES["odd_heads"], hidden_act=act))
    ours = from_transformers(hf)
    ids = torch.randint(0, 5, (2, 6))
    with torch.no_grad():
        assert max_diff(ours(ids), hf(inputs=ids).logits) <= TOL


def test_dtype_and_mode_are_kept():
    hf = build("PerceiverForSequenceClassification", d_model=8, vocab_size=5, max_position_embeddings=4,
               num_labels=2, **CORES["defaults_q"]).double().train()
    ours = from_transformers(hf)
    assert ours.training and all(p.dtype == torch.float64 for p in ours.parameters())
    back = to_transformers(ours)
    assert back.training and all(p.dtype == torch.float64 for p in back.parameters())


def test_our_model_to_transformers_and_back():
    """A model built here (tanh GELU, as the presets) runs the same in transformers."""
    cfg = language_perceiver_bytes(max_seq_len=12, vocab_size=10)
    cfg = cfg.replace(
        input_adapter=cfg.input_adapter.replace(num_channels=16),
        encoder=cfg.encoder.replace(num_input_channels=16, num_latents=3, num_latent_channels=24,
                                    num_self_attends_per_block=2, v_channels=24, qk_channels=16),
        decoder=cfg.decoder.replace(num_latent_channels=24, query=cfg.decoder.query.replace(num_channels=16),
                                    num_query_channels=16, v_channels=16),
    )
    ours = MaskedLanguageModel.from_config(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf = to_transformers(ours)
    assert hf.config.hidden_act == "gelu_pytorch_tanh"
    ids = torch.randint(0, 10, (2, 9))
    with torch.no_grad():
        assert max_diff(ours(ids), hf(inputs=ids).logits[:, :9]) <= TOL
    again = from_transformers(hf)
    a, b = ours.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# bad input


def test_rejects_non_perceiver_models():
    with pytest.raises(TypeError, match="Perceiver task model"):
        from_transformers(torch.nn.Linear(2, 2))
    bare = transformers.PerceiverModel(PerceiverConfig(num_latents=2, d_latents=8, d_model=8, num_self_attends_per_block=1,
                                                       num_self_attention_heads=1, num_cross_attention_heads=1))
    with pytest.raises(TypeError, match="bare transformers PerceiverModel"):
        from_transformers(bare)
    with pytest.raises(TypeError, match="task models"):
        to_transformers(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("act", ["relu", "quick_gelu", "gelu_10"])
def test_rejects_unsupported_hidden_act(act):
    hf = build("PerceiverForSequenceClassification", d_model=8, vocab_size=5, max_position_embeddings=4,
               num_labels=2, **dict(CORES["defaults_q"], hidden_act=act))
    with pytest.raises(ValueError, match="hidden_act"):
        from_transformers(hf)


def test_rejects_leftover_tensors():
    hf = build("PerceiverForSequenceClassification", d_model=8, vocab_size=5, max_position_embeddings=4,
               num_labels=2, **CORES["defaults_q"])
    hf.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"no counterpart: \['extra.weight', 'extra.bias'\]"):
        from_transformers(hf)


def _image_model(**adapter) -> ImageClassifier:
    adapter_cfg = ImageInputAdapterConfig(
        (3, 16, 16), prep_type="conv",
        position_encoding=PositionEncodingConfig("fourier", (4, 4) if adapter.get("conv_padding", "tf_same") == "tf_same"
                                                 else (3, 3), num_bands=64, max_resolution=(56, 56)),
        **adapter,
    )
    decoder = DecoderConfig(query=PositionEncodingConfig("trainable", (1,), num_channels=12), num_output_channels=3,
                            use_query_residual=True, activation="gelu")
    encoder = EncoderConfig(num_latents=3, num_latent_channels=12, num_blocks=1, num_self_attends_per_block=1,
                            num_cross_attend_heads=1, num_self_attend_heads=3, activation="gelu")
    return ImageClassifier.from_config(PerceiverIOConfig(adapter_cfg, encoder, decoder, ClassificationOutputAdapterConfig(3)))


def test_to_transformers_names_what_transformers_cannot_express():
    with pytest.raises(ValueError, match="conv_padding='tf_same'"):
        to_transformers(_image_model())
    ok = _image_model(conv_padding="transformers")
    to_transformers(ok)  # the same model with transformers' padding converts
    with pytest.raises(ValueError, match="encoder.dropout=0.1"):
        to_transformers(ImageClassifier.from_config(ok.config.replace(encoder=ok.config.encoder.replace(dropout=0.1))))
    with pytest.raises(ValueError, match="decoder.num_heads=3"):
        to_transformers(ImageClassifier.from_config(ok.config.replace(decoder=ok.config.decoder.replace(num_heads=3))))
    with pytest.raises(ValueError, match="decoder"):
        to_transformers(ImageClassifier.from_config(ok.config.replace(decoder=AverageDecoderConfig(3))))
    with pytest.raises(TypeError, match="task models"):
        to_transformers(PerceiverIO.from_config(ok.config))


def test_learned_positions_need_square_images():
    hf = build("PerceiverForImageClassificationLearned", image_size=4, num_labels=2, **CORES["defaults_q"])
    ours = from_transformers(hf)
    cfg = ours.config
    adapter = cfg.input_adapter.replace(
        image_shape=(3, 2, 8), position_encoding=cfg.input_adapter.position_encoding.replace(index_dims=(2, 8))
    )
    with pytest.raises(ValueError, match="square"):
        to_transformers(ImageClassifier.from_config(cfg.replace(input_adapter=adapter)))


def test_multimodal_audio_must_split_into_frames():
    hf = build("PerceiverForMultimodalAutoencoding", output_shape=[1, 2, 4, 4], num_frames=3, image_size=1,
               audio_samples_per_frame=4, samples_per_patch=2, output_num_channels=6,
               _label_trainable_num_channels=5, num_labels=3, **CORES["defaults_q"])
    cfg = from_transformers(hf).config
    audio = cfg.input_adapter.modalities["audio"].replace(max_resolution=(10,))
    bad = cfg.replace(input_adapter=cfg.input_adapter.replace(modalities={**cfg.input_adapter.modalities, "audio": audio}))
    with pytest.raises(ValueError, match="num_frames"):
        to_transformers(MultimodalAutoencoder.from_config(bad))


def test_load_transformers_model_from_a_local_directory(tmp_path):
    from perceiver_io.convert.transformers import load_transformers_model

    hf = build("PerceiverForOpticalFlow", train_size=[4, 5], **CORES["defaults_q"])
    hf.save_pretrained(tmp_path / "flow")
    loaded = load_transformers_model(tmp_path / "flow")
    assert type(loaded) is type(hf) and not loaded.training
    a, b = hf.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(from_transformers(loaded), OpticalFlow)

    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_transformers_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_transformers_model(tmp_path / "empty")
    bare = tmp_path / "bare"
    transformers.PerceiverModel(PerceiverConfig(num_latents=2, d_latents=8, d_model=8, num_self_attends_per_block=1,
                                                num_self_attention_heads=1, num_cross_attention_heads=1)).save_pretrained(bare)
    with pytest.raises(ValueError, match="architectures"):
        load_transformers_model(bare)


def test_convert_cli_from_transformers(tmp_path, capsys):
    from perceiver_io import from_pretrained
    from perceiver_io.cli import main

    hf = build("PerceiverForOpticalFlow", train_size=[4, 5], **CORES["defaults_q"]).eval()
    hf.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from", "transformers", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert "wrote OpticalFlow" in capsys.readouterr().out
    ours = from_pretrained(tmp_path / "ours")
    frames = torch.rand(2, 2, 3, 4, 5) * 2 - 1
    with torch.no_grad():
        expected = hf(inputs=frame_patches(frames)).logits * 20
    assert (ours(frames).permute(0, 2, 3, 1) - expected).abs().max() <= 1e-5
