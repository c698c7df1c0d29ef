"""Inference switches (perceiver_io.inference) and ONNX export (perceiver_io.convert.onnx).

Each switch is held to a tolerance on the official code's outputs of every task's small model (relative error =
max |optimized - official| / max |official|) and on the predictions of a digits classifier trained here. Measured
(torch 2.14, AMD EPYC with avx512_bf16) over all fixture outputs, worst case: bf16 0.018 (multimodal audio),
int8 0.042 (optical flow), bf16 + int8 0.049 (optical flow), compile 1e-5 (as float32); the trained classifier's
360 test predictions changed 0 (bf16), 0 (int8) and 1 (both) times. The bounds below leave about 1.5x that.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from official_fixtures import FAMILIES, FIXTURES
from torch import nn

from perceiver_io import create_model
from perceiver_io.convert.haiku import from_haiku
from perceiver_io.inference import Int8DynamicLinear, ReducedPrecisionModel, optimize_for_inference

SWITCHES = {"bf16": {"precision": "bf16"}, "int8": {"quantize": "int8"},
            "bf16+int8": {"precision": "bf16", "quantize": "int8"}}
FIXTURE_TOL = {"bf16": 0.03, "int8": 0.06, "bf16+int8": 0.075, "compile": 1e-4}
MAX_CHANGED_PREDICTIONS = 0.02  # fraction of the trained classifier's test predictions a switch may change


def load(name: str) -> tuple[nn.Module, dict[str, np.ndarray]]:
    model_class, config = FAMILIES[name]()
    model = from_haiku(FIXTURES / f"{name}.params.pickle", config, model_class).eval()
    return model, np.load(FIXTURES / f"{name}.io.npz")


def run_fixture(name: str, model: nn.Module, io: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The fixture's outputs from ``model``, keyed by their names in the .npz, in its layout."""
    with torch.inference_mode():
        if name == "mlm":
            return {"logits": model(torch.from_numpy(io["input_ids"]).long(), torch.from_numpy(io["attention_mask"]))}
        if name.startswith("image"):
            return {"logits": model(torch.from_numpy(io["images_nhwc"]).permute(0, 3, 1, 2))}
        if name == "optical_flow":
            frames = torch.from_numpy(io["frames_nthwc"]).permute(0, 1, 4, 2, 3)
            return {"flow_nhwc": model(frames).permute(0, 2, 3, 1)}
        inputs = {"image": torch.from_numpy(io["images_nthwc"]).permute(0, 1, 4, 2, 3),
                  "audio": torch.from_numpy(io["audio"]), "label": torch.zeros(1, 5)}
        points = {"image": torch.from_numpy(io["image_points"]), "audio": torch.from_numpy(io["audio_points"])}
        return {f"out_{k}": v for k, v in model(inputs, subsampled_output_points=points).items()}


def relative_error(got: torch.Tensor, expected: np.ndarray | torch.Tensor) -> float:
    expected_t = torch.as_tensor(expected).double()
    assert got.dtype == torch.float32 and got.shape == expected_t.shape
    return ((got.double() - expected_t).abs().max() / expected_t.abs().max()).item()


# ------------------------------------------------------------------------------------------ official fixtures


@pytest.mark.parametrize("switch", list(SWITCHES))
@pytest.mark.parametrize("name", list(FAMILIES))
def test_switch_keeps_official_outputs_within_its_tolerance(name: str, switch: str) -> None:
    model, io = load(name)
    for key, got in run_fixture(name, optimize_for_inference(model, **SWITCHES[switch]), io).items():
        err = relative_error(got, io[key])
        assert err <= FIXTURE_TOL[switch], f"{name} {key}: relative error {err:.3g} under {switch}"


def _compiled_matches_official(name: str, **switches: object) -> None:
    model, io = load(name)
    optimized = optimize_for_inference(model, compile=True, **switches)  # type: ignore[arg-type]
    tol = FIXTURE_TOL["bf16+int8" if switches else "compile"]
    for key, got in run_fixture(name, optimized, io).items():
        assert relative_error(got, io[key]) <= tol, key
    with torch.compiler.set_stance("fail_on_recompile"):  # the Fourier cache does not make it recompile
        for key, got in run_fixture(name, optimized, io).items():
            assert relative_error(got, io[key]) <= tol, key


def test_compile_keeps_official_outputs_and_compiles_once() -> None:
    _compiled_matches_official("image_fourier")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "image_fourier"])
def test_compile_keeps_official_outputs_of_every_task(name: str) -> None:
    _compiled_matches_official(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlm", "optical_flow"])
def test_every_switch_together_compiled(name: str) -> None:
    _compiled_matches_official(name, precision="bf16", quantize="int8")


# ------------------------------------------------------------------------------------------ a trained classifier


@pytest.fixture(scope="module")
def digits_classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """digits_fourier trained for 300 steps (about 10 s on one core): ~87% test accuracy."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8 - 1
    labels = torch.tensor(data.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=g)
    test, train = order[:360], order[360:]
    torch.manual_seed(0)
    model = create_model("digits_fourier")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (32,), generator=g)]
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), images[test], labels[test]


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_switch_keeps_a_trained_classifiers_predictions(digits_classifier, switch: str) -> None:
    model, images, labels = digits_classifier
    with torch.inference_mode():
        reference = model(images).argmax(-1)
        predictions = optimize_for_inference(model, **SWITCHES[switch])(images).argmax(-1)
    accuracy = (reference == labels).float().mean().item()
    assert accuracy > 0.75, f"the classifier did not train ({accuracy:.2f})"
    changed = (predictions != reference).float().mean().item()
    assert changed <= MAX_CHANGED_PREDICTIONS, f"{switch} changed {changed:.1%} of the predictions"
    assert (predictions == labels).float().mean().item() >= accuracy - MAX_CHANGED_PREDICTIONS


# ------------------------------------------------------------------------------------------ the API


def test_the_model_passed_in_is_left_unchanged_and_the_result_is_called_like_it() -> None:
    model, io = load("image_fourier")
    images = torch.from_numpy(io["images_nhwc"]).permute(0, 3, 1, 2)
    with torch.inference_mode():
        before = model(images)
    optimized = optimize_for_inference(model, precision="bf16", quantize="int8")
    assert isinstance(optimized, ReducedPrecisionModel) and not optimized.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(isinstance(m, Int8DynamicLinear) for m in model.modules())
    assert sum(isinstance(m, Int8DynamicLinear) for m in optimized.modules()) == sum(
        type(m) is nn.Linear for m in model.modules())
    with torch.inference_mode():
        torch.testing.assert_close(model(images), before, rtol=0, atol=0)
        assert optimized(pixel_values=images).dtype == torch.float32
    assert optimized.config == model.config  # attributes of the task model are reachable
    with pytest.raises(AttributeError, match="no_such_attribute"):
        optimized.no_such_attribute
    again = copy.deepcopy(optimized)
    with torch.inference_mode():
        torch.testing.assert_close(again(images), optimized(images), rtol=0, atol=0)
    assert inspect.signature(optimized) == inspect.signature(model.forward)
    assert optimize_for_inference(model) is model


def test_bf16_methods_reached_through_the_wrapper_and_dict_outputs() -> None:
    flow, io = load("optical_flow")
    frames = torch.rand(1, 2, 3, 20, 30) * 2 - 1
    optimized = optimize_for_inference(flow, precision="bf16")
    with torch.inference_mode():
        tiled = optimized.predict_tiled(frames, min_overlap=4)
        expected = flow.predict_tiled(frames, min_overlap=4)
    assert tiled.dtype == torch.float32 and tiled.shape == (1, 2, 20, 30)
    assert relative_error(tiled, expected) <= FIXTURE_TOL["bf16"]
    multimodal, io = load("multimodal")
    out = run_fixture("multimodal", optimize_for_inference(multimodal, precision="bf16"), io)
    assert {v.dtype for v in out.values()} == {torch.float32}


def test_compile_returns_a_module_with_the_models_attributes() -> None:
    model = create_model("digits_fourier")
    compiled = optimize_for_inference(model, compile=True)  # compiles on the first call only
    assert compiled.config == model.config and not compiled.training


@pytest.mark.parametrize("kwargs, error, match", [
    ({"precision": "fp16"}, ValueError, r"precision: expected one of \['fp32', 'bf16'\], got 'fp16'"),
    ({"quantize": "int4"}, ValueError, r"quantize: expected one of \[None, 'int8'\], got 'int4'"),
    ({"quantize": True}, ValueError, "quantize: expected one of"),
    ({"compile": "yes"}, TypeError, "compile: expected a bool, got str"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        optimize_for_inference(nn.Linear(2, 2), **kwargs)


def test_bad_model_and_int8_off_the_cpu() -> None:
    with pytest.raises(TypeError, match="model: expected an nn.Module, got int"):
        optimize_for_inference(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantize: 'int8' runs on the CPU only, and the model is on meta"):
        optimize_for_inference(nn.Linear(2, 2, device="meta"), quantize="int8")


def test_int8_linear_matches_the_linear_it_replaces() -> None:
    linear = nn.Linear(48, 20)
    quantized = Int8DynamicLinear(linear)
    x = torch.randn(3, 5, 48)
    x[0, 0] = 0.0  # a row of zeros: its scale is clamped, its output is the bias
    with torch.inference_mode():
        expected, got = linear(x), quantized(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert relative_error(got, expected) <= 0.02
    torch.testing.assert_close(got[0, 0], linear.bias.detach())
    assert relative_error(quantized.weight, linear.weight.detach()) <= 1 / 254 + 1e-6
    no_bias = Int8DynamicLinear(nn.Linear(8, 4, bias=False))
    assert no_bias.bias is None and no_bias(torch.randn(2, 8)).shape == (2, 4)
    assert no_bias(torch.randn(0, 8)).shape == (0, 4)
    assert no_bias(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------ ONNX export


ort = pytest.importorskip("onnxruntime")


def run_onnx(path: Path, *inputs: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)})


def export_quietly(model: nn.Module, path: Path, **kwargs):
    """export_onnx, with the warnings it raised (none expected about the Fourier position cache)."""
    from perceiver_io.convert.onnx import export_onnx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export_onnx(model, path, **kwargs)
    assert not [w for w in caught if "_cache" in str(w.message) or "axis name" in str(w.message)], \
        [str(w.message)[:200] for w in caught]
    return report


def test_onnx_export_of_the_image_classifier_has_a_dynamic_batch(tmp_path: Path) -> None:
    from perceiver_io.convert.onnx import OnnxCheckError, export_onnx

    model = create_model("digits_fourier").eval()
    report = export_quietly(model, tmp_path / "digits.onnx")
    assert report.input_names == ("pixel_values",) and report.output_names == ("logits",)
    assert report.example_batch_size == 2 and report.check_batch_size == 3
    assert report.max_abs_diff <= 1e-4 * report.max_abs_output and "max abs diff" in report.summary()
    assert Path(report) == tmp_path / "digits.onnx" and not (tmp_path / "digits.onnx.data").exists()
    images = torch.randn(5, 1, 8, 8)
    with torch.inference_mode():
        expected = model(images)
    (logits,) = run_onnx(report.path, images)
    assert np.abs(logits - expected.numpy()).max() <= 1e-5
    # a difference above the tolerance is an error naming the file
    with pytest.raises(OnnxCheckError, match=r"digits.onnx: onnxruntime's outputs differ from eager by up to"):
        export_onnx(model, tmp_path / "digits.onnx", tolerance=1e-12)


def test_onnx_export_of_the_mlm_with_a_padding_mask(tmp_path: Path) -> None:
    model = create_model("language_bytes_small", max_seq_len=32, num_latents=16, num_latent_channels=64,
                         num_self_attends=1, num_channels=64).eval()
    report = export_quietly(model, tmp_path / "mlm.onnx")
    assert report.input_names == ("input_ids", "attention_mask") and report.max_abs_diff <= 1e-4 * report.max_abs_output
    ids = torch.randint(0, 262, (4, 32))
    mask = torch.ones(4, 32, dtype=torch.bool)
    mask[1, 20:] = False
    with torch.inference_mode():
        expected = model(ids, mask)
    (logits,) = run_onnx(report.path, ids, mask)
    assert np.abs(logits - expected.numpy()).max() <= 1e-4 * expected.abs().max().item()


def test_onnx_export_of_the_flow_model(tmp_path: Path) -> None:
    model = create_model("optical_flow_small", train_size=(16, 24), num_latents=16, num_latent_channels=32,
                         num_self_attends=1, num_bands=8).eval()
    nn.init.normal_(model.decoder.output.weight, std=0.02)  # the head starts at zero: a flow of 0 checks nothing
    report = export_quietly(model, tmp_path / "flow.onnx")
    assert report.input_names == ("frames",) and report.output_names == ("flow",)
    assert 0 < report.max_abs_diff <= 1e-4 * report.max_abs_output
    frames = torch.rand(1, 2, 3, 16, 24) * 2 - 1
    with torch.inference_mode():
        expected = model(frames)
    (flow,) = run_onnx(report.path, frames)
    assert flow.shape == (1, 2, 16, 24) and np.abs(flow - expected.numpy()).max() <= 1e-5


def test_onnx_export_of_any_module_with_example_inputs(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.GELU())
    report = export_quietly(model, tmp_path / "any.onnx", example_inputs=torch.randn(1, 4))
    assert report.input_names == ("input",) and report.example_batch_size == 2 and report.check_batch_size == 3


def test_onnx_export_refuses_what_it_cannot_check(tmp_path: Path) -> None:
    from perceiver_io.convert.onnx import export_onnx

    with pytest.raises(ValueError, match="example_inputs: required for a Sequential"):
        export_onnx(nn.Sequential(nn.Linear(4, 3)), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="tolerance: expected a positive number"):
        export_onnx(create_model("digits_fourier"), tmp_path / "x.onnx", tolerance=0)
    with pytest.raises(ValueError, match=r"model: export a float32 model on the CPU"):
        export_onnx(create_model("digits_fourier").bfloat16(), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"example_inputs: expected one batch size, got \[2, 3\]"):
        export_onnx(nn.Linear(4, 3), tmp_path / "x.onnx", example_inputs=(torch.randn(2, 4), torch.randn(3, 4)))
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_onnx(tmp_path: Path, capsys) -> None:
    from perceiver_io.cli import main

    create_model("digits_fourier").save_pretrained(tmp_path / "model")
    assert main(["export", "--onnx", str(tmp_path / "model"), str(tmp_path / "out" / "digits.onnx")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime vs eager on a batch of 3: max abs diff" in out and (tmp_path / "out" / "digits.onnx").is_file()
    assert main(["export", "--no-check", str(tmp_path / "a.ckpt"), str(tmp_path / "b")]) == 1
    assert "--no-check: applies to --onnx exports only" in capsys.readouterr().err
