"""The demo (main job) runs end to end in its quick form and writes every output file."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from perceiver_io import from_pretrained
from perceiver_io.cli import main


def test_demo_quick_writes_every_output(tmp_path: Path, capsys):
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 0
    for name in ("metrics.json", "learning_curve.png", "confusion_matrix.png", "cross_attention.png",
                 "model/config.json", "model/model.safetensors"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["reloaded_predictions_identical"] is True
    assert metrics["test_images"] == 360 and metrics["epochs"] == 2
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["reloaded_test_accuracy"] == metrics["test_accuracy"]
    model = from_pretrained(tmp_path / "model")
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    out = capsys.readouterr().out
    assert "test accuracy" in out and "perceiver-io demo results" in out


def test_digits_config_file_is_the_demo_recipe():
    import yaml

    from perceiver_io.demo import DIGITS_BATCH_SIZE, DIGITS_EPOCHS, DIGITS_TASK

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/image_classifier/digits.yaml").read_text())
    assert config["model"] == DIGITS_TASK
    assert config["trainer"]["max_epochs"] == DIGITS_EPOCHS
    assert config["data"]["init_args"]["batch_size"] == DIGITS_BATCH_SIZE
