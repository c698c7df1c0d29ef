"""The demo (main job): every section runs end to end in its quick form, index.html is one self-contained page,
``--task`` selects sections, and the digits config files equal the digits section's recipe."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

import perceiver_io.demo as demo
from perceiver_io import from_pretrained
from perceiver_io.cli import main
from perceiver_io.demo import SECTIONS, Picture, Section, SectionResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIGS = Path(__file__).resolve().parents[1] / "configs/image_classifier"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, str]:
    """``perceiver-io demo --quick`` (every section, a few training steps each), run once for this module."""
    out = tmp_path_factory.mktemp("demo")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["demo", "--quick", "--output-dir", str(out)]) == 0
    return out, buffer.getvalue()


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_quick_demo_index_is_one_self_contained_page(quick_demo):
    out, printed = quick_demo
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing outside the page: no URLs, no file references, no external stylesheets or scripts
    assert not re.search(r"https?://|file:|<link|<script|url\(", page)
    for attr in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:image/png;base64,", "#")), attr
    results = {s.name: SectionResult.from_dict(json.loads((out / s.name / "result.json").read_text()))
               for s in SECTIONS}
    for section in SECTIONS:
        assert f'id="{section.name}"' in page and section.title in page
        assert section.title in printed
        for row in results[section.name].rows:
            assert row[0] in page
    pngs = _embedded_pngs(page)
    assert len(pngs) == sum(len(r.pictures) for r in results.values()) > 0
    for png in pngs:
        assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert "Quick mode" in page and "missing picture" not in page
    assert "perceiver-io demo:" in printed and "index.html" in printed


def test_quick_demo_writes_each_sections_files(quick_demo):
    out, _ = quick_demo
    for section in SECTIONS:
        folder = out / section.name
        result = SectionResult.from_dict(json.loads((folder / "result.json").read_text()))
        assert result.summary and result.columns and result.rows and result.pictures
        for picture in result.pictures:
            assert (folder / picture.path).read_bytes().startswith(PNG_MAGIC), picture.path
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["run"]["quick"] is True and metrics["run"]["seconds"] >= 0
        assert metrics["run"]["budget_s"] == section.budget_s


def test_quick_digits_section(quick_demo):
    out, printed = quick_demo
    folder = out / "digits"
    for name in ("learning_curves.png", "confusion_matrix.png", "cross_attention.png", "model/config.json",
                 "model/model.safetensors", "logs/class_query/metrics.csv", "logs/average/metrics.csv"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["reloaded_predictions_identical"] is True
    assert metrics["test_images"] == 360 and metrics["train_images"] == 1257
    for name in ("class_query", "average"):
        model = metrics["models"][name]
        assert model["epochs"] == 1 and model["steps"] == demo.digits.QUICK_STEPS
        assert 0.0 <= model["test_accuracy"] <= 1.0
    assert metrics["reloaded_test_accuracy"] == metrics["models"]["class_query"]["test_accuracy"]
    for name in ("logistic_regression", "rbf_svm"):
        assert 0.9 < metrics["baselines"][name]["test_accuracy"] <= 1.0  # real baselines, even in quick mode
    model = from_pretrained(folder / "model")
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert "test accuracy" in printed and "RBF SVM" in printed


def test_quick_unit_sets_section(quick_demo):
    out, printed = quick_demo
    folder = out / "unit-sets"
    for name in ("scene.png", "flops.png", "learning_curves.png", "model/config.json", "model/model.safetensors",
                 "logs/perceiver/metrics.csv", "logs/transformer/metrics.csv"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["reloaded_predictions_identical"] is True
    assert metrics["test_scenes"] == 512 and metrics["test_units"] > 512 * 8
    flops = {name: metrics["models"][name]["flops_per_example"] for name in ("perceiver", "transformer")}
    for name, model in metrics["models"].items():
        assert model["steps"] == demo.unit_sets.QUICK_STEPS and 0.0 <= model["pointer_accuracy"] <= 1.0
    # linear against quadratic, even untrained: doubling 256 -> 512 units
    assert flops["perceiver"]["512"] / flops["perceiver"]["256"] < 2.2 < flops["transformer"]["512"] / flops["transformer"]["256"]
    # the heuristics are computed on the real test scenes (not trained): fixed numbers of the generator
    heuristics = metrics["heuristics"]
    assert 0.3 < heuristics["nearest"] < 0.6 and 0.15 < heuristics["fastest_kill"] < 0.45
    assert 0.05 < heuristics["random"] < 0.15 and 0.5 <= heuristics["majority"] < 0.6
    assert "heuristic: the nearest enemy" in printed
    model = from_pretrained(folder / "model")
    inputs = {"continuous": torch.rand(1, 5, 3), "categorical": torch.zeros(1, 5, 2, dtype=torch.long)}
    assert model(inputs).pointer_logits.shape == (1, 5, 5)


def test_quick_flow_section(quick_demo):
    out, printed = quick_demo
    folder = out / "flow"
    for name in ("pairs.png", "learning_curve.png", "model/config.json", "model/model.safetensors",
                 "logs/perceiver/metrics.csv"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["reloaded_flow_identical"] is True and metrics["steps"] == demo.flow.QUICK_STEPS
    results = metrics["results"]
    # The baselines are measured on the real test pairs, even in quick mode: zero flow is the mean flow speed
    # (about 2.5 px for translations uniform over a disc of 4 px), and Farnebäck (OpenCV, a test dependency) is
    # well below it.
    assert 1.5 < results["zero"]["epe"] < 3.5 and results["zero"]["1px"] < 0.5
    assert results["farneback"]["epe"] < 0.8 * results["zero"]["epe"]
    assert 0.0 <= results["model"]["epe"] < 10.0
    assert "zero flow" in printed and "Farnebäck" in printed
    model = from_pretrained(folder / "model")
    h, w = demo.flow.FLOW_DATA["size"]
    assert model(torch.zeros(1, 2, 3, h, w)).shape == (1, 2, h, w)


def test_flow_config_file_is_the_demo_recipe():
    import yaml

    from perceiver_io.demo.flow import FLOW_DATA, FLOW_STEPS, FLOW_TASK, VAL_EVERY

    config = yaml.safe_load((CONFIGS.parent / "optical_flow" / "synthetic.yaml").read_text())
    expected = {**FLOW_TASK, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                           for k, v in FLOW_TASK["overrides"].items()}}
    assert config["model"] == expected
    data = config["data"]["init_args"]
    assert data == {**{k: list(v) if isinstance(v, tuple) else v for k, v in FLOW_DATA.items()},
                    "num_train": FLOW_STEPS * FLOW_DATA["batch_size"]}
    assert config["trainer"]["max_epochs"] == 1 and config["trainer"]["val_check_interval"] == VAL_EVERY
    assert config["seed_everything"] == demo.flow.SEED


def test_quick_multimodal_section(quick_demo):
    import wave

    out, printed = quick_demo
    folder = out / "multimodal"
    for name in ("reconstruction.png", "audio.png", "original.wav", "reconstructed.wav", "model/config.json",
                 "model/model.safetensors", "logs/autoencoder/metrics.csv"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["reloaded_reconstructions_identical"] is True and metrics["steps"] == demo.multimodal.QUICK_STEPS
    assert metrics["clips"] == 256 and metrics["chance"] == 1 / 8
    # the mean-value baseline is computed on the real test clips: a fixed property of the generator
    assert 10 < metrics["mean_image_psnr"] < 30 and 5 < metrics["mean_audio_psnr"] < 30
    for name in ("original.wav", "reconstructed.wav"):
        with wave.open(str(folder / name)) as f:
            assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, demo.multimodal.WAV_RATE)
            assert f.getnframes() == round(512 / 1600 * demo.multimodal.WAV_RATE)
    assert "mean value" in printed
    model = from_pretrained(folder / "model")
    clip = {"image": torch.rand(1, 8, 3, 32, 32), "audio": torch.zeros(1, 512, 1), "label": torch.zeros(1, 8)}
    assert model.reconstruct(clip, chunk_size=1000)["image"].shape == (1, 8, 3, 32, 32)


def _fake_section(name: str, calls: list[str]) -> Section:
    def run(out: Path, quick: bool) -> SectionResult:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        calls.append(name)
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, 1], [0, 1])
        fig.savefig(out / "plot.png")
        plt.close(fig)
        return SectionResult(summary=f"{name} ran", columns=["model", "score"], rows=[[f"{name} model", "1.0"]],
                             pictures=[Picture("plot.png", f"{name} plot")], metrics={"score": 1.0})

    return Section(name=name, title=f"Section {name}", budget_s=1, run=run)


def test_task_runs_only_the_named_sections(tmp_path, monkeypatch, capsys):
    calls: list[str] = []
    monkeypatch.setattr(demo, "SECTIONS", [_fake_section("alpha", calls), _fake_section("beta", calls)])
    assert main(["demo", "--task", "beta", "--output-dir", str(tmp_path)]) == 0
    assert calls == ["beta"] and not (tmp_path / "alpha").exists()
    page = (tmp_path / "index.html").read_text()
    assert "Section beta" in page and "Section alpha" not in page
    assert main(["demo", "--output-dir", str(tmp_path)]) == 0
    assert calls == ["beta", "alpha", "beta"]
    # running one section again keeps the other's earlier result on the page, marked as earlier
    assert main(["demo", "--task", "alpha", "--output-dir", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "Section alpha" in page and "Section beta" in page and "from an earlier run" in page
    assert len(_embedded_pngs(page)) == 2
    assert main(["demo", "--list"]) == 0
    assert "alpha" in capsys.readouterr().out


def test_task_digits_runs_the_digits_section_alone(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(demo, "SECTIONS", SECTIONS + [_fake_section("other", calls)])
    assert main(["demo", "--quick", "--task", "digits", "--output-dir", str(tmp_path)]) == 0
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["digits", "index.html"]
    page = (tmp_path / "index.html").read_text()
    assert 'id="digits"' in page and "Section other" not in page
    assert json.loads((tmp_path / "digits/metrics.json").read_text())["reloaded_predictions_identical"] is True


def test_digits_augmentation_warps_training_images_only():
    from perceiver_io.data import DigitsDataModule
    from perceiver_io.data.digits import random_affine

    data = DigitsDataModule(batch_size=16, **{k: v for k, v in demo.digits.DIGITS_DATA.items() if k != "batch_size"})
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (16, 1, 8, 8) and labels.shape == (16,)
    assert images.min() >= -1.0 - 1e-6 and images.max() <= 1.0 + 1e-6
    clean = data.datasets["train"].tensors[0]
    assert torch.allclose(random_affine(clean[:8], background=-1.0), clean[:8], atol=1e-5)  # no warp = identity
    assert not any(torch.equal(img, c) for img in images for c in clean)  # every training image warped
    test_images, _ = next(iter(data.test_dataloader()))
    assert torch.equal(test_images, data.datasets["test"].tensors[0][:16])  # evaluation images untouched
    with pytest.raises(ValueError, match="rotate"):
        DigitsDataModule(rotate=90)


def test_unknown_task_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--task", "nosuchtask", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown task 'nosuchtask'" in err
    for section in SECTIONS:
        assert section.name in err
    assert not (tmp_path / "index.html").exists()


def test_a_failing_section_fails_the_demo_but_keeps_the_page(tmp_path, monkeypatch, capsys):
    calls: list[str] = []

    def broken(out: Path, quick: bool) -> SectionResult:
        raise RuntimeError("boom")

    monkeypatch.setattr(demo, "SECTIONS", [Section("broken", "Broken", 1, broken), _fake_section("fine", calls)])
    assert main(["demo", "--output-dir", str(tmp_path)]) == 1
    assert calls == ["fine"]
    page = (tmp_path / "index.html").read_text()
    assert "Section fine" in page and "failed" in page
    assert "broken" in capsys.readouterr().err


def test_digits_config_file_is_the_demo_recipe():
    import yaml

    from perceiver_io.demo.digits import DIGITS_DATA, DIGITS_EPOCHS, DIGITS_TASK

    config = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    assert config["model"] == DIGITS_TASK
    assert config["trainer"]["max_epochs"] == DIGITS_EPOCHS
    assert config["data"]["init_args"] == DIGITS_DATA
    assert config["seed_everything"] == demo.digits.SEED


def test_digits_average_config_file_is_the_demo_recipe():
    import yaml

    from perceiver_io.demo.digits import DIGITS_AVERAGE_TASK, DIGITS_DATA, DIGITS_EPOCHS

    config = yaml.safe_load((CONFIGS / "digits_average.yaml").read_text())
    assert config["model"] == DIGITS_AVERAGE_TASK
    assert config["trainer"]["max_epochs"] == DIGITS_EPOCHS
    assert config["data"]["init_args"] == DIGITS_DATA
    assert config["seed_everything"] == demo.digits.SEED


def test_digits_average_model_is_the_class_query_model_but_its_decoder():
    from perceiver_io.demo.digits import DIGITS_AVERAGE_TASK, DIGITS_TASK
    from perceiver_io.training.image import ImageClassificationTask

    main_config = ImageClassificationTask(**DIGITS_TASK).model.config.to_dict()
    average_config = ImageClassificationTask(**DIGITS_AVERAGE_TASK).model.config.to_dict()
    for part in ("input_adapter", "encoder", "output_adapter"):
        assert average_config[part] == main_config[part], part
    assert average_config["decoder"]["type"] == "average_decoder"


@pytest.mark.parametrize("name", ["perceiver", "transformer"])
def test_unit_sets_config_files_are_the_demo_recipe(name):
    import yaml

    from perceiver_io.demo.unit_sets import MODELS, UNIT_SETS_DATA, UNIT_SETS_STEPS, VAL_EVERY

    config = yaml.safe_load((CONFIGS.parent / "unit_sets" / f"{name}.yaml").read_text())
    assert config["model"] == MODELS[name][2]
    data = config["data"]["init_args"]
    assert data == {**UNIT_SETS_DATA, "num_train": UNIT_SETS_STEPS * UNIT_SETS_DATA["batch_size"]}
    assert config["trainer"]["max_epochs"] == 1 and config["trainer"]["val_check_interval"] == VAL_EVERY
    assert config["seed_everything"] == demo.unit_sets.SEED


def test_multimodal_config_file_is_the_demo_recipe():
    import yaml

    from perceiver_io.demo.multimodal import MULTIMODAL_DATA, MULTIMODAL_STEPS, MULTIMODAL_TASK

    config = yaml.safe_load((CONFIGS.parent / "multimodal_autoencoder" / "synthetic.yaml").read_text())
    assert config["model"] == MULTIMODAL_TASK
    data = config["data"]["init_args"]
    assert data == {**MULTIMODAL_DATA, "num_train": MULTIMODAL_STEPS * MULTIMODAL_DATA["batch_size"]}
    assert config["trainer"]["max_epochs"] == 1 and config["seed_everything"] == demo.multimodal.SEED
