"""Task models: presets reproduce the official parameter counts; task-specific behaviour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from perceiver_io import create_model, from_pretrained
from perceiver_io.cli import main
from perceiver_io.core.decoder import AverageDecoderConfig
from perceiver_io.models import ImageClassifier, MaskedLanguageModel, OpticalFlow, factory
from perceiver_io.models.flow import tile_origins

from official_fixtures import FAMILIES, FIXTURES

OFFICIAL_PARAMS = {
    "language_perceiver_bytes": 201_108_230,
    "imagenet_fourier": 48_440_627,
    "imagenet_conv": 48_646_522,
    "imagenet_learned": 62_255_848,
    "optical_flow": 41_057_134,
    "multimodal_autoencoding": 19_858_855,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_preset_parameter_counts_equal_the_official_models(name):
    with torch.device("meta"):  # counts without allocating 200M floats
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_paper_size_presets_run_one_forward(name):
    model = create_model(name).eval()
    with torch.inference_mode():
        if name == "language_perceiver_bytes":
            out = model(torch.randint(0, 262, (1, 2048)))
            assert out.shape == (1, 2048, 262)
        elif name.startswith("imagenet"):
            out = model(torch.randn(1, 3, 224, 224))
            assert out.shape == (1, 1000)
        elif name == "optical_flow":
            out = model(torch.rand(1, 2, 3, 368, 496) * 2 - 1)
            assert out.shape == (1, 2, 368, 496)
        else:
            inputs = {"image": torch.rand(1, 16, 3, 224, 224), "audio": torch.randn(1, 30720, 1),
                      "label": torch.zeros(1, 700)}
            points = {"image": torch.arange(0, 802816, 64), "audio": torch.arange(0, 1920, 16)}
            out = model(inputs, subsampled_output_points=points)
            assert out["image"].shape == (1, 12544, 3) and out["audio"].shape == (1, 120 * 16)
            assert out["label"].shape == (1, 700)
    assert torch.isfinite(out if torch.is_tensor(out) else out["image"]).all()


def test_mlm_masks_padded_queries_like_the_official_model():
    model_class, config = FAMILIES["mlm"]()
    model = model_class.from_config(config).eval()
    ids = torch.randint(6, 262, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 12:] = 0
    with torch.no_grad():
        logits = model(ids, mask)
        alone = model(ids[1:, :12], mask[1:, :12])
    assert logits.shape == (2, 20, 262)
    torch.testing.assert_close(logits[1, :12], alone[0], rtol=1e-5, atol=1e-5)  # padding changes nothing
    masked_rows = logits[1, 12:]
    assert torch.allclose(masked_rows, masked_rows[0].expand_as(masked_rows), atol=1e-5)  # no attention, no position


def test_mlm_decodes_only_the_positions_asked_for():
    model_class, config = FAMILIES["mlm"]()
    model = model_class.from_config(config).eval()
    ids = torch.randint(6, 262, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 15:] = 0
    positions = torch.tensor([3, 7, 16])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, subsampled_output_points=positions), model(ids, mask)[:, positions])
    with pytest.raises(ValueError, match=r"subsampled_output_points: expected indices in \[0, 20\)"):
        model(ids, mask, subsampled_output_points=torch.tensor([20]))


def test_format_1_model_directories_still_load(tmp_path):
    """Format 1 named the model type by class name; those directories still load."""
    import json

    model = ImageClassifier.from_config(FAMILIES["image_fourier"]()[1]).eval()
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "image_classifier" and data["format_version"] == 2
    data.update(model_type="ImageClassifier", format_version=1)
    (tmp_path / "config.json").write_text(json.dumps(data))
    images = torch.randn(1, 3, 16, 20)
    assert torch.equal(from_pretrained(tmp_path)(images), model(images))


def test_image_classifier_with_average_decoder(tmp_path):
    model_class, config = FAMILIES["image_fourier"]()
    config = config.replace(decoder=AverageDecoderConfig(10))
    model = ImageClassifier.from_config(config).eval()
    images = torch.randn(3, 3, 16, 20)
    with torch.no_grad():
        logits = model(images)
        latents = model.encoder(model.input_adapter(images))
    torch.testing.assert_close(logits, model.decoder.output(latents.mean(1)))
    model.save_pretrained(tmp_path)
    assert torch.equal(from_pretrained(tmp_path)(images), logits)


def official_tiled_flow(model: OpticalFlow, frames: np.ndarray, min_overlap: int) -> np.ndarray:
    """The official colab's compute_grid_indices + compute_optical_flow, written with numpy (NHWC)."""
    th, tw = model.input_adapter.config.image_shape[1:]
    h, w = frames.shape[-2:]
    ys = list(range(0, h, th - min_overlap))
    xs = list(range(0, w, tw - min_overlap))
    ys[-1], xs[-1] = h - th, w - tw
    flows, count = 0.0, 0.0
    for y, x in itertools.product(ys, xs):
        piece = frames[..., y : y + th, x : x + tw]
        with torch.no_grad():
            flow = model(torch.from_numpy(piece)).permute(0, 2, 3, 1).numpy()
        wx, wy = np.meshgrid(np.arange(tw), np.arange(th))
        wx = np.minimum(wx + 1, tw - wx)
        wy = np.minimum(wy + 1, th - wy)
        weights = np.minimum(wx, wy)[None, :, :, None]
        pad = [(0, 0), (y, h - y - th), (x, w - x - tw), (0, 0)]
        flows = flows + np.pad(flow * weights, pad)
        count = count + np.pad(weights, pad)
    return flows / count


def test_tiled_flow_matches_the_official_stitching():
    model_class, config = FAMILIES["optical_flow"]()
    model = OpticalFlow.from_config(config).eval()
    frames = torch.rand(1, 2, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.predict_tiled(frames, min_overlap=5), model(frames), rtol=1e-5, atol=1e-5)
    big = torch.rand(1, 2, 3, 40, 50) * 2 - 1
    got = model.predict_tiled(big, min_overlap=5)
    expected = official_tiled_flow(model, big.numpy(), 5)
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert tile_origins(40, 16, 5) == [0, 11, 22, 24]
    assert tile_origins(37, 16, 5) == [0, 11, 21, 21]  # the official rule would cut past the edge here
    with pytest.raises(ValueError, match="frames: expected at least the training size 16x24, got 10x50"):
        model.predict_tiled(torch.zeros(1, 2, 3, 10, 50), min_overlap=5)
    with pytest.raises(ValueError, match="min_overlap: expected less than the tile size 16x24, got 20"):
        model.predict_tiled(big)


@pytest.mark.parametrize("name", ["image_fourier", "image_conv"])
def test_fourier_image_models_take_any_size(name):
    """Positions follow the input's grid: a model run at another size equals the same weights in a
    model configured for that size (the same fixed max_resolution)."""
    model_class, config = FAMILIES[name]()
    model = model_class.from_config(config).eval()
    adapter = config.input_adapter.replace(image_shape=(3, 24, 36), position_encoding=config.input_adapter.position_encoding.replace(index_dims=None))
    resized = model_class.from_config(config.replace(input_adapter=adapter)).eval()
    resized.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 24, 36)
    with torch.no_grad():
        torch.testing.assert_close(model(images), resized(images))
        assert not torch.allclose(model(images), model(images[..., :20, :28]))


def test_flow_and_video_run_at_any_size():
    flow = OpticalFlow.from_config(FAMILIES["optical_flow"]()[1]).eval()
    with torch.no_grad():
        assert flow(torch.rand(1, 2, 3, 10, 13) * 2 - 1).shape == (1, 2, 10, 13)
    model_class, config = FAMILIES["multimodal"]()
    auto = model_class.from_config(config).eval()
    inputs = {"image": torch.rand(1, 2, 3, 8, 12), "audio": torch.randn(1, 96, 1), "label": torch.zeros(1, 5)}
    out = auto.reconstruct(inputs, chunk_size=50)
    assert out["image"].shape == (1, 2, 3, 8, 12) and out["audio"].shape == (1, 96, 1) and out["label"].shape == (1, 5)


def test_task_models_reject_mismatched_parts():
    mlm = MaskedLanguageModel.from_config(FAMILIES["mlm"]()[1])
    image = ImageClassifier.from_config(FAMILIES["image_fourier"]()[1])
    with pytest.raises(ValueError, match="input_adapter: ImageClassifier needs a ImageInputAdapter, got TextInputAdapter"):
        ImageClassifier(mlm.input_adapter, image.encoder, image.decoder, image.output_adapter)
    with pytest.raises(ValueError, match="output_adapter: MaskedLanguageModel needs a TiedEmbeddingOutputAdapter"):
        MaskedLanguageModel(mlm.input_adapter, mlm.encoder, mlm.decoder, image.output_adapter)


def test_convert_cli_from_haiku(tmp_path, capsys, monkeypatch):
    model_class, config = FAMILIES["image_conv"]()
    monkeypatch.setitem(factory._PRESETS, "tiny_image_conv", factory.Preset("tiny_image_conv", model_class, lambda: config))
    source = FIXTURES / "image_conv.params.pickle"
    assert main(["convert", "--from", "haiku", str(source), str(tmp_path / "out"), "--preset", "tiny_image_conv"]) == 0
    assert "wrote ImageClassifier" in capsys.readouterr().out
    io = np.load(FIXTURES / "image_conv.io.npz")
    with torch.no_grad():
        logits = from_pretrained(tmp_path / "out")(torch.from_numpy(io["images_nhwc"]).permute(0, 3, 1, 2))
    np.testing.assert_allclose(logits.numpy(), io["logits"], rtol=1e-4, atol=1e-4 * np.abs(io["logits"]).max())

    # a checkpoint that is not the named preset: one clear error line, nothing written
    code = main(["convert", "--from", "haiku", str(source), str(tmp_path / "bad"), "--preset", "imagenet_conv"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "image_conv.params.pickle: missing haiku parameter" in err
    assert not (tmp_path / "bad").exists()
