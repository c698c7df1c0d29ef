"""The command line a user meets: a preset with overrides fine-tuned from saved weights on an image folder with a
frozen encoder, predictions written to a readable file, clean output, and no checkpoint from a run that never
started or from an interrupted evaluation."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_helpers import trainer
from perceiver_io import create_model, from_pretrained
from perceiver_io.cli import main
from perceiver_io.core.config import DerivedSizeError, override_config
from perceiver_io.data import DigitsDataModule
from perceiver_io.models import list_models
from perceiver_io.models.factory import model_config
from perceiver_io.training.checkpoint_io import load_checkpoint
from perceiver_io.training.cli import InterruptCheckpoint, merge_nested_overrides
from perceiver_io.training.image import ImageClassificationTask
from perceiver_io.training.predictions import PredictionWriter, flatten_record
from perceiver_io.training.task import freeze_parts
from test_data import _write_image, make_folder

# A small stand-in for the ImageNet conv model: the same preset, shrunk by overrides (the README's worked example
# runs the same command on the converted official weights).
TINY = {"image_size": 32, "encoder": {"num_latents": 8, "num_latent_channels": 32, "num_blocks": 1,
                                      "num_self_attends_per_block": 1, "num_self_attend_heads": 2}}
TINY_ARGS = ["--model.overrides.image_size", "32", "--model.overrides.encoder.num_latents", "8",
             "--model.overrides.encoder.num_latent_channels", "32", "--model.overrides.encoder.num_blocks", "1",
             "--model.overrides.encoder.num_self_attends_per_block", "1",
             "--model.overrides.encoder.num_self_attend_heads=2"]
BENIGN = ("Tip:", "LeafSpec", "LightningCLI's args", "weights_only", "Unable to serialize", "PossibleUserWarning")

CONFIG = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 3
  limit_val_batches: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {run}
model:
  preset: imagenet_conv
  optimizer: adamw
  lr: 0.01
  schedule: constant
data:
  class_path: perceiver_io.data.ImageFolderDataModule
  init_args:
    root: {root}
    image_size: 32
    batch_size: 4
    num_workers: 0
    augment: none
"""


@pytest.fixture
def pretrained(tmp_path) -> Path:
    """A 'pretrained' 5-class model saved as from_pretrained reads it (a converted checkpoint would be the same)."""
    model = create_model("imagenet_conv", num_classes=5, **TINY)
    model.save_pretrained(tmp_path / "pretrained")
    return tmp_path / "pretrained"


@pytest.fixture
def config(tmp_path) -> Path:
    root = make_folder(tmp_path / "data")
    path = tmp_path / "finetune.yaml"
    path.write_text(CONFIG.format(run=tmp_path / "run", root=root))
    return path


def unlabelled_folder(root: Path) -> Path:
    """Images in nested folders without class names, a hidden file and one broken file."""
    _write_image(root / "a.png", (220, 20, 20))
    _write_image(root / "holiday" / "b.jpg", (20, 220, 20), seed=1)
    _write_image(root / "holiday" / "c.png", (20, 20, 220), seed=2)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (root / ".hidden.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``perceiver-io ARGS`` in a fresh process, as a user runs it (its real stderr, warnings included)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""}
    return subprocess.run([sys.executable, "-m", "perceiver_io.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_fine_tune_a_preset_from_saved_weights_with_a_frozen_encoder_then_predict_a_folder(
        tmp_path, pretrained, config, capfd):
    run = tmp_path / "run"
    fit = run_cli("image-classifier", "fit", "--config", str(config), "--model.overrides.num_classes", "3",
                  *TINY_ARGS, "--model.init_from", str(pretrained), "--model.freeze", "encoder")
    assert fit.returncode == 0, fit.stderr
    # every weight that fits came from the saved model; the 3-class head was re-initialised, and the log says so
    assert "re-initialised: decoder.output.bias, decoder.output.weight" in fit.stderr
    assert "freeze encoder:" in fit.stderr and "parameters frozen" in fit.stderr
    for notice in BENIGN:
        assert notice not in fit.stdout + fit.stderr, notice

    saved = from_pretrained(pretrained).state_dict()
    trained = {k.removeprefix("model."): v for k, v in load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
               .items() if k.startswith("model.")}
    encoder = [k for k in trained if k.startswith(("input_adapter.", "encoder."))]
    assert encoder and all(torch.equal(trained[k], saved[k]) for k in encoder)  # frozen: unchanged
    assert trained["decoder.output.weight"].shape[0] == 3
    moved = [k for k in trained if k.startswith("decoder.") and k in saved and trained[k].shape == saved[k].shape
             and not torch.equal(trained[k], saved[k])]
    assert moved, "the decoder trains (it was loaded, not frozen)"

    # predict a folder of unlabelled images: one row per file, class names from the training folders
    photos = unlabelled_folder(tmp_path / "photos")
    predict = run_cli("image-classifier", "predict", "--config", str(config), "--ckpt_path", "last",
                      "--data.init_args.predict_root", str(photos), "--predictions.top_k", "2")
    assert predict.returncode == 0, predict.stderr
    for notice in BENIGN:
        assert notice not in predict.stdout + predict.stderr, notice
    written = run / "predictions.csv"
    assert f"wrote 4 predictions to {written}" in predict.stdout
    assert "1 inputs could not be read" in predict.stdout
    assert "unreadable image" in predict.stderr and "broken.png" in predict.stderr  # a real warning stays
    rows = list(csv.DictReader(written.open()))
    assert [r["id"] for r in rows] == [str(photos / n) for n in ("a.png", "broken.png", "holiday/b.jpg",
                                                                 "holiday/c.png")]
    assert list(rows[0]) == ["id", "label", "class_1", "probability_1", "class_2", "probability_2", "error"]
    readable = [r for r in rows if not r["error"]]
    assert len(readable) == 3 and all(r["label"] == "" for r in rows)
    for r in readable:
        assert {r["class_1"], r["class_2"]} <= {"ant", "bee", "cat"} and r["class_1"] != r["class_2"]
        assert 1 >= float(r["probability_1"]) >= float(r["probability_2"]) >= 0
    broken = rows[1]
    assert broken["error"] and broken["class_1"] == ""

    # JSON lines, and the labelled test split with its known labels, without the data set folder for class names
    code = main(["image-classifier", "predict", "--config", str(config), "--ckpt_path", "last",
                 "--predictions.format", "jsonl", "--predictions.path", str(tmp_path / "val.jsonl")])
    out, _ = capfd.readouterr()
    assert code == 0 and "accuracy on the 6 labelled inputs" in out
    records = [json.loads(line) for line in (tmp_path / "val.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["label"] for r in records} == {"ant", "bee", "cat"}
    assert all(len(r["top"]) == 5 - 2 for r in records)  # top_k 5 capped at the 3 classes
    assert all(Path(r["id"]).parent.name == r["label"] for r in records)

    only_photos = tmp_path / "predict_only.yaml"
    only_photos.write_text(config.read_text().replace(f"root: {tmp_path / 'data'}", f"predict_root: {photos}"))
    code = main(["image-classifier", "predict", "--config", str(only_photos), "--ckpt_path", "last",
                 "--predictions.path", str(tmp_path / "photos.csv")])
    _, err = capfd.readouterr()
    assert code == 0, err
    classes = {r["class_1"] for r in csv.DictReader((tmp_path / "photos.csv").open()) if not r["error"]}
    assert classes <= {"ant", "bee", "cat"}  # the names came from the checkpoint


def test_a_data_error_before_the_first_step_writes_no_checkpoint(tmp_path, config, capfd):
    code = main(["image-classifier", "fit", "--config", str(config), *TINY_ARGS])  # 1000 classes, the data 3
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1
    assert "the model has 1000 classes, the data has 3" in err[-1] and "--model.overrides.num_classes 3" in err[-1]
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_predict_of_a_task_without_a_prediction_file_says_where_to_look(tmp_path, capfd):
    from perceiver_io.training.mlm import MaskedLanguageModelingTask

    writer = PredictionWriter()
    with pytest.raises(ValueError, match="writes no prediction file; fill masked spans with `perceiver-io fill-mask"):
        writer.setup(None, MaskedLanguageModelingTask(preset="language_bytes_small"), "predict")  # type: ignore[arg-type]


def test_interrupts_never_replace_a_checkpoint_with_an_older_or_untrained_state(tmp_path):
    data = DigitsDataModule(batch_size=32)
    task = ImageClassificationTask(preset="digits_fourier")
    t = trainer(tmp_path, max_steps=4, enable_checkpointing=True, callbacks=[InterruptCheckpoint()])
    t.fit(task, datamodule=data)
    last = tmp_path / "checkpoints" / "last.ckpt"
    t.save_checkpoint(last)
    original = last.read_bytes()

    class Interrupt(pl.Callback):
        def __init__(self, hook: str, exception: type[BaseException] = KeyboardInterrupt) -> None:
            self.hook, self.exception = hook, exception

        def __getattribute__(self, name):  # raise from the one hook under test
            if name == object.__getattribute__(self, "hook"):
                raise object.__getattribute__(self, "exception")
            return object.__getattribute__(self, name)

    handler = signal.getsignal(signal.SIGINT)
    try:
        # Ctrl-C during test, and during a resumed fit that is still restoring: last.ckpt stays as it was
        for run, hook in (("test", "on_test_batch_start"), ("fit", "on_train_start")):
            t = trainer(tmp_path, max_steps=8, callbacks=[Interrupt(hook), InterruptCheckpoint()])
            with pytest.raises(SystemExit):
                getattr(t, run)(ImageClassificationTask(preset="digits_fourier"), datamodule=data, ckpt_path=str(last))
            assert last.read_bytes() == original, (run, hook)
        # an error before the first step of a fresh run: no on_exception.ckpt of an untrained model
        t = trainer(tmp_path, max_steps=8, callbacks=[Interrupt("on_train_start", RuntimeError), InterruptCheckpoint()])
        with pytest.raises(RuntimeError):
            t.fit(ImageClassificationTask(preset="digits_fourier"), datamodule=data)
        assert not (tmp_path / "checkpoints" / "on_exception.ckpt").exists()
    finally:
        signal.signal(signal.SIGINT, handler)
    assert load_checkpoint(last)["global_step"] == 4


# ---------------------------------------------------------------------------------------------------- pieces


def test_nested_override_arguments_merge_into_one_per_part():
    argv = ["fit", "--model.overrides.encoder.num_latents", "8", "--model.overrides.num_classes", "3",
            "--model.overrides.encoder.dropout=0.1", "--model.overrides.input_adapter.position_encoding.num_bands",
            "4", "--trainer.max_steps", "2"]
    merged = merge_nested_overrides(argv)
    assert merged[:5] == ["fit", "--model.overrides.encoder", '{"num_latents": 8, "dropout": 0.1}',
                          "--model.overrides.num_classes", "3"]
    assert merged[5:] == ["--model.overrides.input_adapter", '{"position_encoding": {"num_bands": 4}}',
                          "--trainer.max_steps", "2"]
    with pytest.raises(ValueError, match="expected a value"):
        merge_nested_overrides(["--model.overrides.encoder.dropout"])


def test_preset_overrides_reach_any_config_field_and_derived_sizes_follow():
    for name in list_models():
        _, config = model_config(name)
        assert override_config(config, {}) == config, name
    _, config = model_config("imagenet_conv", num_classes=3, encoder={"num_latent_channels": 64, "dropout": 0.1},
                             input_adapter={"position_encoding": {"num_bands": 8}})
    assert config.encoder.num_latent_channels == 64 and config.encoder.dropout == 0.1
    assert config.decoder.num_latent_channels == 64  # derived again
    assert config.encoder.num_input_channels == 64 + 2 + 4 * 8  # conv channels + Fourier features, derived again
    model = create_model("imagenet_conv", num_classes=3, **TINY)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"imagenet_conv.encoder.num_latent: unknown config key; known keys are \["):
        model_config("imagenet_conv", encoder={"num_latent": 3})
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['encodr'\]; this preset accepts \['image_size', "
                                         r"'num_classes'\] and, as dicts of their fields, the parts of its config"):
        model_config("imagenet_conv", encodr={})
    with pytest.raises(DerivedSizeError, match="decoder.num_latent_channels: 7 was given"):
        model_config("imagenet_conv", decoder={"num_latent_channels": 7})  # set by the user: not derived over


def test_freeze_parts_names_and_counts():
    model = create_model("digits_fourier")
    assert freeze_parts(model, "encoder") == ["input_adapter", "encoder"]
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(("decoder.", "output_adapter.")), name
    task = ImageClassificationTask(preset="imagenet_conv", overrides={"num_classes": 3, **TINY}, freeze="encoder")
    task.train()
    task.on_train_start()  # the frozen batch norm keeps its statistics
    assert not task.model.input_adapter.training and not task.model.encoder.training and task.model.decoder.training
    with pytest.raises(ValueError, match="freeze: expected one of"):
        freeze_parts(create_model("digits_fourier"), ["encoder", "latents"])


def test_csv_rows_flatten_the_top_k():
    record = {"id": "x", "label": "", "top": [{"class": "cat", "probability": 0.75}, {"class": "ant",
                                                                                        "probability": 0.25}]}
    assert flatten_record(record) == {"id": "x", "label": "", "class_1": "cat", "probability_1": 0.75,
                                      "class_2": "ant", "probability_2": 0.25}


def test_help_lists_the_training_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for task in ("image-classifier", "mlm", "multimodal-autoencoder", "optical-flow", "text-classifier", "unit-sets"):
        assert f"    {task}" in out


def test_argument_errors_found_by_the_fuzzer_are_one_line(tmp_path, capsys):
    """Found by tests/test_fuzz_loading.py: each of these ended in a traceback (Lightning's
    MisconfigurationException, a YAML parser error, a missing override value, torch's failed allocation, a
    missing optional package) instead of one error line."""
    from perceiver_io.training.cli import run_task_cli

    base = ["fit", "--model.preset", "digits_fourier", "--data.class_path", "perceiver_io.data.DigitsDataModule",
            "--trainer.default_root_dir", str(tmp_path)]
    cases = [
        (["--trainer.max_epochs", "-5"], "`max_epochs` must be a non-negative integer or -1"),
        (["--checkpoint.every_n_train_steps", "-4"], "Invalid value for every_n_train_steps=-4"),
        (["--model.overrides.encoder.num_latents", "[1"], "--model.overrides.encoder.num_latents: not a YAML value"),
        (["--model.overrides.encoder.num_latents"], "--model.overrides.encoder.num_latents: expected a value"),
        (["--model.overrides.encoder.a", "1", "--model.overrides.encoder.a.b", "2"],
         "--model.overrides.encoder.a.b: a is set to a value"),
        (["--model.overrides.num_classes", str(10**12)], "out of memory building the run"),
        (["--model.overrides.encoder.latent_init_scale", "abc"],
         "EncoderConfig.latent_init_scale: expected a float, got 'abc'"),
    ]
    for extra, message in cases:
        assert run_task_cli("image-classifier", base + extra) == 1, extra
        err = capsys.readouterr().err
        assert "Traceback" not in err, extra
        lines = [line for line in err.splitlines() if line.startswith("perceiver-io image-classifier: ")]
        assert len(lines) == 1 and message in lines[0], (extra, err)


def test_convert_of_a_pickle_that_would_run_code_is_one_line(tmp_path, capfd):
    import pickle

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    source = tmp_path / "evil.pickle"
    source.write_bytes(pickle.dumps({"params": RunsCode()}))
    assert main(["convert", "--from", "haiku", "--preset", "imagenet_conv", str(source), str(tmp_path / "out")]) == 1
    err = capfd.readouterr().err
    assert err.startswith("perceiver-io convert: error: ") and "refusing to load global" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


def test_label_smoothing_out_of_range_is_one_line(capfd):
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a number in \[0, 1\], got 2"):
        ImageClassificationTask(preset="digits_fourier", label_smoothing=2)
    config = str(Path(__file__).parents[1] / "configs" / "image_classifier" / "digits.yaml")
    assert main(["image-classifier", "fit", "--config", config,
                 "--model.label_smoothing", "2", "--trainer.max_steps", "1"]) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and "label_smoothing: expected a number in [0, 1], got 2" in err
