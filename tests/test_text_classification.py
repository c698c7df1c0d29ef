"""GLUE fine-tuning: the language presets' sizes, classifiers that start from a saved MLM, the three multi-task
methods of the paper's Table 3, the training task (single task, STS-B regression, all tasks), the command line and
the errors."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from glue_fixtures import write_glue_fixture

from perceiver_io import create_model, from_pretrained
from perceiver_io.adapters.multitask import (
    METHODS,
    MultiTaskClassificationOutputAdapterConfig,
    TaskTokenTextInputAdapterConfig,
)
from perceiver_io.cli import main
from perceiver_io.core.decoder import DecoderConfig
from perceiver_io.core.position import PositionEncodingConfig
from perceiver_io.data import GLUE_TASKS, GlueDataModule
from perceiver_io.models import MaskedLanguageModel, TextClassifier
from perceiver_io.models.language import MultiTaskTextClassifier
from perceiver_io.models.presets import GLUE_NUM_LABELS
from perceiver_io.perceiver import PerceiverIOConfig
from perceiver_io.training.checkpoint_io import load_checkpoint
from perceiver_io.training.predictions import PredictionWriter
from perceiver_io.training.text import (
    TextClassificationTask,
    task_predictions,
    text_classification_loss,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "text_classifier" / "tiny.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# Small enough for a few CPU steps a second; max_seq_len fits every fixture example ([CLS] A [SEP] B [SEP]).
TINY = {"max_seq_len": 256, "num_latents": 8, "num_latent_channels": 32, "num_self_attends": 1, "num_channels": 32,
        "num_heads": 2}
FEW_TASKS = {"cola": 2, "stsb": 1, "mnli": 3}


def count(name: str, **overrides) -> int:
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters())


def shapes(name: str, **overrides) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    options = {"accelerator": "cpu", "max_steps": 2, "logger": False, "enable_progress_bar": False,
               "enable_model_summary": False, "enable_checkpointing": False, "num_sanity_val_steps": 0,
               "default_root_dir": str(tmp_path)}
    return pl.Trainer(**{**options, **kwargs})


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_glue_fixture(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("datasets_cache"))


def glue_data(glue_dir: Path, cache_dir: str, task="rte", **kwargs) -> GlueDataModule:
    return GlueDataModule(task, path=str(glue_dir), cache_dir=cache_dir, max_seq_len=TINY["max_seq_len"],
                          **{"batch_size": 4, **kwargs})


# ---------------------------------------------------------------------------------------------------- presets


def test_preset_parameter_counts_on_the_meta_device():
    # The numbers in the presets' docstrings; the paper's Table 2 has 425M (Perceiver IO++) and 223M (Base).
    assert count("language_perceiver_bytes_plus") == 425_607_430
    assert count("perceiver_io_base_sentencepiece") == 223_155_456
    assert count("perceiver_io_base_sentencepiece", vocab_size=8000) == 223_155_456 - 24_000 * (768 + 1)
    assert count("text_classifier_bytes") == 199_537_410
    bytes_counts = {m: count("glue_multitask_bytes", method=m) for m in METHODS}
    assert bytes_counts == {"shared_token": 199_548_944, "task_tokens": 199_554_320, "task_queries": 199_553_552}
    assert count("language_bytes_small") == 705_542
    assert count("text_classifier_small") == 672_898
    small_counts = {m: count("glue_multitask_small", method=m) for m in METHODS}
    assert small_counts == {"shared_token": 674_832, "task_tokens": 675_728, "task_queries": 675_600}
    assert GLUE_NUM_LABELS == {name: task.num_labels for name, task in GLUE_TASKS.items()}


@pytest.mark.parametrize("classifier", ["text_classifier_bytes", "glue_multitask_bytes"])
def test_paper_scale_classifiers_share_the_byte_mlm_names(classifier):
    mlm, model = shapes("language_perceiver_bytes"), shapes(classifier)
    fresh = {k for k in model if mlm.get(k) != model[k]}
    # Embedding, positions, the whole encoder and the decoder's cross-attention line up, name for name.
    assert all(model.get(k) == v for k, v in mlm.items() if k.startswith(("input_adapter.", "encoder.")))
    assert all(model.get(k) == v for k, v in mlm.items() if k.startswith("decoder.cross_attention."))
    if classifier == "text_classifier_bytes":
        assert fresh == {"decoder.query.embeddings", "decoder.output.weight", "decoder.output.bias"}
    else:
        assert fresh == {"output_adapter.query.embeddings"} | {
            f"output_adapter.heads.{t}.{p}" for t in GLUE_NUM_LABELS for p in ("weight", "bias")}


@pytest.fixture(scope="module")
def small_mlm(tmp_path_factory: pytest.TempPathFactory) -> tuple[MaskedLanguageModel, Path]:
    torch.manual_seed(0)
    model = create_model("language_bytes_small", **TINY)
    directory = tmp_path_factory.mktemp("mlm")
    model.save_pretrained(directory)
    return model, directory


@pytest.mark.parametrize("preset, overrides", [
    ("text_classifier_small", {"num_classes": 3}),
    *[("glue_multitask_small", {"method": m, "tasks": FEW_TASKS}) for m in METHODS],
])
def test_init_from_a_small_mlm_loads_every_encoder_weight(small_mlm, preset, overrides):
    mlm, directory = small_mlm
    task = TextClassificationTask(preset=preset, overrides={**TINY, **overrides}, init_from=str(directory))
    source, target = mlm.state_dict(), task.model.state_dict()
    if preset == "text_classifier_small":
        assert sorted(task.reinitialised) == ["decoder.output.bias", "decoder.output.weight", "decoder.query.embeddings"]
    else:
        assert task.reinitialised and all(k == "input_adapter.task_tokens" or k.startswith("output_adapter.")
                                          for k in task.reinitialised)
        assert ("input_adapter.task_tokens" in task.reinitialised) == (overrides["method"] != "task_queries")
    for name, value in target.items():
        if name not in task.reinitialised:
            torch.testing.assert_close(value, source[name], rtol=0, atol=0)
    assert all(k.startswith(("decoder.", "output_adapter.", "input_adapter.task_tokens")) for k in task.reinitialised)


# ---------------------------------------------------------------------------------------------------- multi-task


def mixed_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(6, 262, (6, 24), generator=g)
    attention_mask = torch.ones(6, 24, dtype=torch.long)
    attention_mask[1, 18:] = 0
    task_ids = torch.tensor([0, 1, 2, 0, 1, 2])  # cola, stsb, mnli
    labels = torch.tensor([1.0, 3.2, 2.0, 0.0, 0.5, 1.0])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "task_ids": task_ids, "labels": labels}


@pytest.mark.parametrize("method", METHODS)
def test_each_multitask_method_trains_and_gives_one_output_per_task(method):
    torch.manual_seed(0)
    model = create_model("glue_multitask_small", method=method, tasks=FEW_TASKS, **TINY)
    assert isinstance(model, MultiTaskTextClassifier) and model.method == method and model.tasks == FEW_TASKS
    batch = mixed_batch()
    regression = batch["task_ids"] == 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        logits = model(batch["input_ids"], batch["attention_mask"], batch["task_ids"])
        loss = text_classification_loss(logits, batch["labels"], regression)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]

    model.eval()
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["task_ids"])
        every = model.forward_all_tasks(batch["input_ids"], batch["attention_mask"])
    # [B, max_labels] with -inf where the example's task has no class; label_mask marks the real columns.
    mask = model.label_mask(batch["task_ids"])
    assert logits.shape == (6, 3) and mask.tolist()[:3] == [[True, True, False], [True, False, False], [True] * 3]
    assert torch.isneginf(logits[~mask]).all() and torch.isfinite(logits[mask]).all()
    # One output per task for every example, agreeing with each example's own row.
    assert {t: tuple(v.shape) for t, v in every.items()} == {"cola": (6, 2), "stsb": (6, 1), "mnli": (6, 3)}
    for b, t in enumerate(batch["task_ids"].tolist()):
        name, n = list(FEW_TASKS.items())[t]
        torch.testing.assert_close(logits[b, :n], every[name][b], atol=1e-5, rtol=1e-5)


def test_the_methods_read_their_task_where_the_paper_says():
    torch.manual_seed(0)
    ids = mixed_batch()["input_ids"][:2]
    models = {m: create_model("glue_multitask_small", method=m, tasks=FEW_TASKS, **TINY).eval() for m in METHODS}
    with torch.no_grad():
        latents = {m: {t: model.encode({"input_ids": ids, "task_ids": torch.full((2,), t)}) for t in range(3)}
                   for m, model in models.items()}
    # Only task_tokens' encoder sees the task; the others encode every task's example the same way.
    for method in ("shared_token", "task_queries"):
        torch.testing.assert_close(latents[method][0], latents[method][2], rtol=0, atol=0)
    assert not torch.allclose(latents["task_tokens"][0], latents["task_tokens"][2])
    # One query per task (task_queries), else one; a prepended token only for the two token methods.
    assert [models[m].output_adapter.config.num_queries for m in METHODS] == [1, 1, 3]
    assert [models[m].input_adapter.config.num_task_tokens for m in METHODS] == [1, 3, 0]
    assert models["shared_token"].input_adapter(ids).shape == (2, 25, 32)
    assert models["task_queries"].input_adapter(ids).shape == (2, 24, 32)


def test_multitask_model_saves_and_reloads(tmp_path):
    model = create_model("glue_multitask_small", method="task_tokens", tasks=FEW_TASKS, **TINY).eval()
    model.save_pretrained(tmp_path / "m")
    again = from_pretrained(tmp_path / "m")
    assert isinstance(again, MultiTaskTextClassifier) and again.method == "task_tokens" and again.tasks == FEW_TASKS
    batch = mixed_batch()
    with torch.no_grad():
        torch.testing.assert_close(again(batch["input_ids"], None, batch["task_ids"]),
                                   model(batch["input_ids"], None, batch["task_ids"]))


def test_loss_is_cross_entropy_or_squared_error_per_example():
    logits = torch.tensor([[2.0, 0.0, float("-inf")], [1.5, float("-inf"), float("-inf")], [0.0, 1.0, 3.0]],
                          requires_grad=True)
    labels = torch.tensor([1.0, 4.0, 2.0])
    regression = torch.tensor([False, True, False])
    loss = text_classification_loss(logits, labels, regression)
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits[0, :2], torch.tensor(1)) + (1.5 - 4.0) ** 2 + ce(logits[2], torch.tensor(2))) / 3
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[1, 1:] == 0).all()
    torch.testing.assert_close(text_classification_loss(logits[1:2, :1], labels[1:2], True), torch.tensor(6.25))
    assert task_predictions(logits, 3).tolist() == [0, 0, 2] and task_predictions(logits, 1).dtype == torch.float32


def test_multitask_errors_are_clear():
    model = create_model("glue_multitask_small", tasks=FEW_TASKS, **TINY)
    ids = torch.randint(6, 262, (2, 10))
    cases = [
        (lambda: model(ids), "task_ids: required, the model has 3 tasks ['cola', 'stsb', 'mnli']"),
        (lambda: model(ids, None, torch.tensor([0, 3])), "task_ids: expected indices in [0, 3) into the tasks"),
        (lambda: model(ids, None, torch.tensor([0.0, 1.0])), "task_ids: expected an integer tensor"),
        (lambda: model(ids, None, torch.tensor([0, 1, 2])), "task_ids: expected shape [2], got [3]"),
        (lambda: model(ids, torch.ones(2, 9), torch.tensor([0, 1])), "attention_mask: expected shape [2, 10]"),
        (lambda: create_model("glue_multitask_small", method="cls_token"),
         "method: expected one of"),
        (lambda: create_model("glue_multitask_small", tasks={}), "tasks: expected at least one task"),
        (lambda: create_model("glue_multitask_small", tasks={"a.b": 2}), "task names must be non-empty strings"),
        (lambda: create_model("glue_multitask_small", tasks={"rte": 0}), "tasks['rte']: expected a positive int"),
    ]
    for call, message in cases:
        with pytest.raises((ValueError, TypeError)) as error:
            call()
        assert message in str(error.value)
    # A single-task model needs no task_ids.
    one = create_model("glue_multitask_small", tasks={"rte": 2}, **TINY)
    assert one(ids).shape == (2, 2)
    # Adapters that pair to none of the three methods.
    config = create_model("glue_multitask_small", method="task_tokens", tasks=FEW_TASKS, **TINY).config
    bad = PerceiverIOConfig(
        TaskTokenTextInputAdapterConfig(max_seq_len=256, num_channels=32, num_task_tokens=2), config.encoder,
        DecoderConfig(num_heads=2, v_channels=32),
        MultiTaskClassificationOutputAdapterConfig(FEW_TASKS, PositionEncodingConfig("trainable", num_channels=32)),
    )
    with pytest.raises(ValueError, match=r"num_task_tokens: 2 with per_task_queries=False and 3 tasks is none of"):
        MultiTaskTextClassifier.from_config(bad)


# ---------------------------------------------------------------------------------------------------- training


def test_single_task_fine_tunes_then_validates_with_glue_metrics(glue_dir, cache_dir, tmp_path, capsys):
    pl.seed_everything(0)
    data = glue_data(glue_dir, cache_dir, "mrpc")
    task = TextClassificationTask(preset="text_classifier_small", overrides=TINY, optimizer="adamw", lr=1e-3,
                                  schedule="constant")
    fit = trainer(tmp_path, max_steps=4, check_val_every_n_epoch=1)  # 8 examples: 2 steps an epoch
    fit.fit(task, datamodule=data)
    assert "train/loss" in fit.callback_metrics and {"val/mrpc/accuracy", "val/mrpc/f1"} <= set(fit.callback_metrics)
    capsys.readouterr()
    (results,) = trainer(tmp_path).validate(task, datamodule=data, verbose=False)
    assert {"val/mrpc/loss", "val/mrpc/accuracy", "val/mrpc/f1", "val/mrpc/score"} <= set(results)
    assert "val/glue_average" not in results  # only once all eight tasks are scored
    table = capsys.readouterr().out
    assert "| MRPC" in table and "| Perceiver IO |" in table
    assert task.glue_results["mrpc/score"] == pytest.approx(results["val/mrpc/score"])
    predictions = trainer(tmp_path).predict(task, datamodule=data)
    assert predictions[0]["task"] == "mrpc" and predictions[0]["split"] == "test"
    assert predictions[0]["predictions"].dtype == torch.long and predictions[0]["idx"].tolist() == [0, 1, 2, 3]


def test_stsb_is_a_regression_trained_with_squared_error(glue_dir, cache_dir, tmp_path):
    pl.seed_everything(0)
    data = glue_data(glue_dir, cache_dir, "stsb")
    task = TextClassificationTask(preset="text_classifier_small", overrides={**TINY, "num_classes": 1},
                                  optimizer="adamw", lr=1e-3, schedule="constant")
    task.configure_tasks(["stsb"])
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["labels"].dtype == torch.float32
    logits = task(batch["input_ids"], batch["attention_mask"])
    loss = text_classification_loss(logits, batch["labels"], True)
    torch.testing.assert_close(loss, ((logits[:, 0] - batch["labels"]) ** 2).mean())
    (results,) = trainer(tmp_path).validate(task, datamodule=data, verbose=False)
    assert {"val/stsb/pearson", "val/stsb/spearman", "val/stsb/score", "val/stsb/loss"} <= set(results)
    predictions = trainer(tmp_path).predict(task, datamodule=data)
    assert predictions[0]["predictions"].dtype == torch.float32 and predictions[0]["task"] == "stsb"


def test_multitask_fine_tuning_on_all_tasks_reports_the_glue_average(glue_dir, cache_dir, tmp_path, capsys):
    pl.seed_everything(0)
    data = glue_data(glue_dir, cache_dir, "all", num_train_batches=3)
    task = TextClassificationTask(preset="glue_multitask_small", overrides={**TINY, "method": "task_tokens"},
                                  optimizer="adamw", lr=1e-3, schedule="constant")
    trainer(tmp_path, max_steps=3, use_distributed_sampler=False).fit(task, datamodule=data)
    capsys.readouterr()
    results = trainer(tmp_path).validate(task, datamodule=data, verbose=False)
    assert len(results) == len(data.val_sets) == 9  # MNLI has two sets
    merged = {k: v for r in results for k, v in r.items()}
    assert "val/glue_average" in merged and {"val/mnli/accuracy_m", "val/mnli/accuracy_mm", "val/stsb/pearson",
                                             "val/cola/matthews_corr", "val/mnli/loss_mm"} <= set(merged)
    assert "Average" in capsys.readouterr().out
    predictions = trainer(tmp_path).predict(task, datamodule=data)
    assert [p[0]["task"] for p in predictions] == [t for t, _ in data.test_sets]
    # the prediction file: one row per test example of every task, label names, STS-B's score without probability
    writer = PredictionWriter(path=str(tmp_path / "glue.csv"))
    trainer(tmp_path, callbacks=[writer]).predict(task, datamodule=data, return_predictions=False)
    rows = list(csv.DictReader((tmp_path / "glue.csv").open()))
    assert list(rows[0]) == ["id", "task", "split", "idx", "prediction", "probability"]
    assert len(rows) == sum(len(batch["idx"]) for loader in predictions for batch in loader)
    assert all(r["id"] == f"{r['task']}/{r['split']}/{r['idx']}" for r in rows)
    for r in rows:
        if r["task"] == "stsb":
            assert r["probability"] == "" and float(r["prediction"]) == float(r["prediction"])
        else:
            assert r["prediction"] in GLUE_TASKS[r["task"]].label_names and 0 < float(r["probability"]) <= 1
    assert {r["task"] for r in rows} == set(GLUE_TASKS) and "wrote" in capsys.readouterr().out


def test_a_multitask_model_maps_the_data_task_ids_onto_its_own(glue_dir, cache_dir):
    # The data's task ids index its own task list; the model's heads are in the model's order.
    task = TextClassificationTask(preset="glue_multitask_small", overrides=TINY)  # the eight, GLUE's order
    task.configure_tasks(["rte", "stsb"])
    batch = {"input_ids": torch.randint(6, 262, (3, 8)), "task_ids": torch.tensor([0, 1, 0])}
    assert task.model_task_ids(batch).tolist() == [7, 4, 7]


def test_task_refuses_data_that_does_not_fit_the_model(glue_dir, cache_dir, tmp_path):
    single = TextClassificationTask(preset="text_classifier_small", overrides=TINY)
    cases = [
        (single, glue_data(glue_dir, cache_dir, ["rte", "cola"]), "a TextClassifier learns one task, the data has 2"),
        (single, glue_data(glue_dir, cache_dir, "mnli"), "mnli has 3 label(s), the model 2 outputs"),
        (TextClassificationTask(preset="glue_multitask_small", overrides={**TINY, "tasks": FEW_TASKS}),
         glue_data(glue_dir, cache_dir, "rte"), "the model has no head for task(s) ['rte']"),
        (TextClassificationTask(preset="glue_multitask_small", overrides={**TINY, "tasks": {"rte": 3}}),
         glue_data(glue_dir, cache_dir, "rte"), "head sizes differ from the tasks' labels (model, data): rte 3 vs 2"),
        (TextClassificationTask(preset="text_classifier_small", overrides={**TINY, "max_seq_len": 64}),
         glue_data(glue_dir, cache_dir, "rte"), "examples of up to max_seq_len=256 ids, the model takes at most 64"),
        (TextClassificationTask(preset="text_classifier_small", overrides={**TINY, "vocab_size": 300}),
         glue_data(glue_dir, cache_dir, "rte"), "the tokenizer has 262 ids, the model's embedding 300"),
    ]
    for task, data, message in cases:
        with pytest.raises(ValueError) as error:
            trainer(tmp_path, max_steps=1).fit(task, datamodule=data)
        assert message in str(error.value)
    with pytest.raises(ValueError, match="this task trains a TextClassifier or MultiTaskTextClassifier"):
        TextClassificationTask(preset="language_bytes_small")
    with pytest.raises(ValueError, match="no tasks configured"):
        single.training_step({"input_ids": torch.zeros(1, 4, dtype=torch.long)}, 0)


def test_cli_fit_validate_and_export(glue_dir, cache_dir, tmp_path):
    run = tmp_path / "run"
    base = ["--config", str(TINY_CONFIG), "--trainer.default_root_dir", str(run), *QUIET,
            "--data.init_args.path", str(glue_dir), "--data.init_args.cache_dir", cache_dir,
            "--model.overrides", '{"num_classes": 2, "max_seq_len": 256, "num_latents": 16, "num_self_attends": 1}']
    assert main(["text-classifier", "fit", *base, "--trainer.max_steps", "2"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 2
    assert main(["text-classifier", "validate", *base, "--ckpt_path", str(last)]) == 0
    logged = "".join(p.read_text() for p in run.rglob("metrics.csv"))
    assert "val/rte/accuracy" in logged and "val/rte/loss" in logged
    assert main(["export", str(last), str(tmp_path / "model")]) == 0
    assert type(from_pretrained(tmp_path / "model")) is TextClassifier


def test_cli_multitask_fit_and_validate(glue_dir, cache_dir, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["--config", str(TINY_CONFIG), "--trainer.default_root_dir", str(run), *QUIET,
            "--data.init_args.path", str(glue_dir), "--data.init_args.cache_dir", cache_dir,
            "--data.init_args.task", "all", "--data.init_args.num_train_batches", "2",
            "--trainer.use_distributed_sampler", "false", "--model.preset", "glue_multitask_small",
            "--model.overrides", '{"method": "task_queries", "num_latents": 16, "num_self_attends": 1}']
    assert main(["text-classifier", "fit", *base, "--trainer.max_steps", "2"]) == 0
    capsys.readouterr()
    assert main(["text-classifier", "validate", *base, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert "| Perceiver IO |" in capsys.readouterr().out
    logged = "".join(p.read_text() for p in run.rglob("metrics.csv"))
    assert "val/glue_average" in logged and "val/mnli/accuracy_mm" in logged
