"""One command from DeepMind's flow checkpoint to a Sintel evaluation: ``optical-flow validate --model.init_from``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from flow_fixtures import write_sintel
from official_fixtures import FIXTURES, optical_flow
from perceiver_io.cli import main
from perceiver_io.convert.haiku import from_haiku
from perceiver_io.flow_metrics import FlowMetrics
from perceiver_io.models.flow import predict_tiled
from perceiver_io.training.flow import OpticalFlowTask

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "optical_flow" / "sintel_eval.yaml"
CHECKPOINT = FIXTURES / "optical_flow.params.pickle"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_init_from_an_official_checkpoint_fills_the_model_strictly() -> None:
    model_class, config = optical_flow()
    task = OpticalFlowTask(model=config.to_dict(), init_from=str(CHECKPOINT))
    official = from_haiku(CHECKPOINT, config, model_class)
    for (name, ours), theirs in zip(task.model.state_dict().items(), official.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="init_from: .* is a file; an official checkpoint needs the preset"):
        OpticalFlowTask(init_from=str(CHECKPOINT))


def test_sintel_evaluation_of_official_weights_is_one_command(tmp_path: Path) -> None:
    pairs = write_sintel(tmp_path / "data")[("train", "clean")]
    _, config = optical_flow()
    run = tmp_path / "run"
    code = main(["optical-flow", "validate", "--config", str(CONFIG), *QUIET,
                 "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(run),
                 "--model.preset", "null", "--model.model", json.dumps(config.to_dict()),
                 "--model.init_from", str(CHECKPOINT), "--model.tile_min_overlap", "4",
                 "--data.init_args.root", str(tmp_path / "data")])
    assert code == 0
    logged = {}
    for path in run.rglob("metrics.csv"):
        with path.open() as f:
            for row in csv.DictReader(f):
                logged.update({k: float(v) for k, v in row.items() if k.startswith("val/") and v})

    # The same numbers by hand: the official weights, the official tiling, every training pair of the folder.
    model = from_haiku(CHECKPOINT, *reversed(optical_flow()))
    metric = FlowMetrics()
    with torch.no_grad():
        for pair in pairs:
            frames = torch.stack([pair.image1, pair.image2])[None].float() / 255 * 2 - 1
            flow = predict_tiled(model, frames, (16, 24), min_overlap=4)
            metric.update(flow, pair.flow[None], None)
    expected = metric.compute()
    assert logged["val/epe"] == pytest.approx(expected["epe"], rel=1e-5)
    assert logged["val/1px"] == pytest.approx(expected["1px"], rel=1e-5)
