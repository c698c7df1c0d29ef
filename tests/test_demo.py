"""The demo (main job) runs end to end in its quick form and writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

from perceiver_io.cli import main


def test_demo_quick(tmp_path: Path, capsys):
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["reload_identical"] is True
    assert metrics["image_logits_shape"] == [8, 10]
    assert metrics["decoded_outputs"] == 4 * 128 * 128
    assert (tmp_path / "image-model" / "model.safetensors").is_file()
    assert "chunked decode" in capsys.readouterr().out
