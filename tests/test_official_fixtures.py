"""from_haiku loads the official code's parameters and every task model reproduces its outputs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from official_fixtures import FAMILIES, FIXTURES

from perceiver_io.convert.haiku import from_haiku, load_haiku_checkpoint

TOL = 1e-4  # relative, as the fixtures' README suggests for float32


def assert_close_rel(got: torch.Tensor, expected: np.ndarray) -> None:
    expected_t = torch.from_numpy(expected)
    scale = expected_t.abs().max().clamp_min(1e-6)
    err = (got.detach() - expected_t).abs().max() / scale
    assert got.shape == expected_t.shape
    assert err <= TOL, f"max error relative to the output scale: {err:.2e}"


def load(name: str):
    model_class, config = FAMILIES[name]()
    return from_haiku(FIXTURES / f"{name}.params.pickle", config, model_class), np.load(FIXTURES / f"{name}.io.npz")


def test_fixtures_are_present():
    assert FIXTURES.is_dir(), f"official fixtures not found at {FIXTURES}"


def test_mlm_matches_official():
    model, io = load("mlm")
    with torch.no_grad():
        logits = model(torch.from_numpy(io["input_ids"]).long(), torch.from_numpy(io["attention_mask"]))
    assert_close_rel(logits, io["logits"])


@pytest.mark.parametrize("name", ["image_fourier", "image_conv", "image_learned"])
def test_image_classifiers_match_official(name):
    model, io = load(name)
    images = torch.from_numpy(io["images_nhwc"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        assert_close_rel(model(images), io["logits"])


def test_optical_flow_matches_official():
    model, io = load("optical_flow")
    frames = torch.from_numpy(io["frames_nthwc"]).permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        flow = model(frames)
    assert_close_rel(flow.permute(0, 2, 3, 1), io["flow_nhwc"])
    with torch.no_grad():  # chunked decoding of the per-pixel queries gives the same flow
        torch.testing.assert_close(model(frames, output_chunk_size=50), flow, rtol=1e-5, atol=1e-5)


def test_multimodal_matches_official():
    model, io = load("multimodal")
    inputs = {
        "image": torch.from_numpy(io["images_nthwc"]).permute(0, 1, 4, 2, 3),
        "audio": torch.from_numpy(io["audio"]),
        "label": torch.zeros(1, 5),  # masked entirely (mask_probs label = 1.0): any value gives the same output
    }
    points = {"image": torch.from_numpy(io["image_points"]), "audio": torch.from_numpy(io["audio_points"])}
    with torch.no_grad():
        out = model(inputs, subsampled_output_points=points)
        assert_close_rel(out["image"], io["out_image"])
        assert_close_rel(out["audio"], io["out_audio"])
        assert_close_rel(out["label"], io["out_label"])
        inputs["label"] = torch.randn(1, 5)
        torch.testing.assert_close(model(inputs, subsampled_output_points=points)["label"], out["label"])


def test_multimodal_chunked_reconstruction_equals_subsampled_decode():
    model, io = load("multimodal")
    inputs = {"image": torch.rand(2, 4, 3, 16, 16), "audio": torch.randn(2, 256, 1), "label": torch.zeros(2, 5)}
    full = model.reconstruct(inputs, chunk_size=100)
    assert full["image"].shape == (2, 4, 3, 16, 16) and full["audio"].shape == (2, 256, 1)
    with torch.no_grad():
        every = {"image": torch.arange(4 * 16 * 16), "audio": torch.arange(16)}
        one_shot = model(inputs, subsampled_output_points=every)
    torch.testing.assert_close(full["image"].permute(0, 1, 3, 4, 2).reshape(2, -1, 3), one_shot["image"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full["audio"][..., 0], one_shot["audio"], rtol=1e-5, atol=1e-5)


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"a": {"w": Evil()}}))
    with pytest.raises(pickle.UnpicklingError, match=r"evil.pickle: refusing to load global builtins.print"):
        load_haiku_checkpoint(path)


def test_old_numpy_spelling_and_flatmapping_are_admitted(tmp_path):
    data = (FIXTURES / "mlm.params.pickle").read_bytes()
    old = data.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray")
    assert old != data
    path = tmp_path / "old.pickle"
    path.write_bytes(old)
    params, state = load_haiku_checkpoint(path)
    assert params["embed"]["embeddings"].shape == (262, 32) and state == {}


def test_corrupt_and_mismatched_checkpoints_are_named(tmp_path):
    path = tmp_path / "broken.pickle"
    path.write_bytes((FIXTURES / "mlm.params.pickle").read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pickle: corrupt"):
        load_haiku_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pickle"):
        load_haiku_checkpoint(tmp_path / "nope.pickle")
    model_class, config = FAMILIES["image_fourier"]()
    with pytest.raises(ValueError, match=r"image_conv.params.pickle: checkpoint does not match ImageClassifier: .*unexpected"):
        from_haiku(FIXTURES / "image_conv.params.pickle", config, model_class)
    with pytest.raises(ValueError, match="mlm.params.pickle: missing haiku parameter"):
        from_haiku(FIXTURES / "mlm.params.pickle", config, model_class)
