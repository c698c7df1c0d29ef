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


class _Crafted:
    """Pickled as numpy's array form with a declared shape, dtype and state numpy itself never writes."""

    def __init__(self, shape, state):
        self.shape, self.state = shape, state

    def __reduce__(self):
        return (np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, self.shape, b"b"), self.state)


def test_arrays_are_admitted_only_numeric_and_no_larger_than_the_file(tmp_path):
    """Found by tests/test_fuzz_loading.py: an object array filled from a short list crashed numpy (a segfault, not
    an error), and a declared shape allocated memory the file does not hold."""
    path = tmp_path / "crafted.pickle"
    for crafted, why in [
        (_Crafted((0,), (1, (10**4, 10**4), np.dtype("O"), False, [1, 2])), "dtype object"),
        (_Crafted((10**6, 10**6), None), r"shape \(1000000, 1000000\)"),
        (np.array(["a", "b"]), "dtype <U1"),
    ]:
        path.write_bytes(pickle.dumps({"m": {"w": crafted}}))
        with pytest.raises(ValueError, match=f"crafted.pickle: corrupt or not a haiku checkpoint .*{why}"):
            load_haiku_checkpoint(path)


def test_checkpoint_values_of_the_wrong_kind_are_named(tmp_path):
    """Found by tests/test_fuzz_loading.py: each of these raised a TypeError / ValueError / RuntimeError from numpy
    or torch that named neither the file nor the parameter, or (complex) loaded with the imaginary part dropped."""
    params, _ = load_haiku_checkpoint(FIXTURES / "image_learned.params.pickle")
    model_class, config = FAMILIES["image_learned"]()
    path = tmp_path / "bad.pickle"
    linear = "perceiver_encoder/~/cross_attention/attention/linear"
    cases = [
        ({"params": params, "state": np.zeros(3)}, "bad.pickle: expected state to be a dict of haiku modules, got "
                                                   "ndarray"),
        ({"params": "x"}, "bad.pickle: expected params to be a dict of haiku modules, got str"),
        ({**params, linear: {**params[linear], "w": params[linear]["w"].astype(np.complex64)}},
         f"bad.pickle: {linear}/w: expected a real numeric array, got dtype complex64"),
        ({**params, linear: {**params[linear], "w": params[linear]["w"][None]}},
         rf"bad.pickle: {linear}/w: expected a 2-D array, got shape \[1, 32, 32\]"),
        ({**params, linear: {**params[linear], "w": (params[linear]["w"] * 100).astype(np.int64)}},
         "bad.pickle: checkpoint does not match ImageClassifier: dtype mismatch"),
    ]
    for data, message in cases:
        path.write_bytes(pickle.dumps(data))
        with pytest.raises(ValueError, match=message):
            from_haiku(path, config, model_class)
    path.write_bytes(pickle.dumps(params))
    with pytest.raises(TypeError, match="preset: expected a preset name, a PerceiverIOConfig or a PerceiverIO model"):
        from_haiku(path, 3)
    with pytest.raises(TypeError, match="model_class: expected a PerceiverIO task model class"):
        from_haiku(path, config, "ImageClassifier")


def test_big_endian_and_protocol_2_and_5_checkpoints_load(tmp_path):
    """Found by tests/test_fuzz_loading.py: big-endian arrays failed in torch.from_numpy, and pickles of protocol 2
    (bytes as _codecs.encode) and 5 (numpy's _frombuffer, Python 3.14's default) were refused as unsafe."""
    params, _ = load_haiku_checkpoint(FIXTURES / "image_learned.params.pickle")
    model_class, config = FAMILIES["image_learned"]()
    reference = from_haiku(FIXTURES / "image_learned.params.pickle", config, model_class).state_dict()
    path = tmp_path / "ok.pickle"
    for protocol, dtype in [(2, "<f4"), (5, "<f4"), (4, ">f4")]:
        path.write_bytes(pickle.dumps({m: {k: v.astype(dtype) for k, v in leaves.items()}
                                       for m, leaves in params.items()}, protocol=protocol))
        loaded = from_haiku(path, config, model_class).state_dict()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), (protocol, dtype)
