"""GLUE fine-tuning, one task or several (paper Tables 2 and 3): cross-entropy, or mean squared error for a
regression (STS-B), and GLUE's metrics on every validation set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only

from ..data.glue import GLUE_TASKS, resolve_glue_tasks
from ..glue_metrics import GlueMetrics, format_glue_table
from ..models.language import MultiTaskTextClassifier, TextClassifier
from .task import PerceiverTask

# The result-key suffix of each labelled evaluation split (MNLI's two are two columns of one task).
_SPLIT_SUFFIX = {"validation_matched": "_m", "validation_mismatched": "_mm"}


def text_classification_loss(logits: torch.Tensor, labels: torch.Tensor, regression: torch.Tensor | bool) -> torch.Tensor:
    """Mean over the examples of cross-entropy (class ids) or squared error (regression scores, e.g. STS-B).

    Args:
        logits: ``[B, K]``; a regression example's score is column 0. Columns an example's task lacks hold
            ``-inf`` (a multi-task model's padded logits), which cross-entropy ignores.
        labels: ``[B]`` class ids, or float scores for regression examples (a mixed batch may give floats for all).
        regression: ``[B]`` bool, which examples are regressions, or one bool for the whole batch.

    Returns:
        The scalar loss (float32).
    """
    logits = logits.float()
    if isinstance(regression, bool):
        if regression:
            return F.mse_loss(logits[:, 0], labels.float())
        return F.cross_entropy(logits, labels.long())
    # Per example, then the branch of each row: a regression row's cross-entropy (label 0 on its one finite
    # column) and a class row's squared error are finite, so neither poisons the gradient of the other.
    class_ids = torch.where(regression, torch.zeros_like(labels, dtype=torch.long), labels.long())
    cross_entropy = F.cross_entropy(logits, class_ids, reduction="none")
    squared_error = (logits[:, 0] - labels.float()) ** 2
    return torch.where(regression, squared_error, cross_entropy).mean()


def task_predictions(logits: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Predictions of one task's examples from ``logits [B, >= num_labels]``: class ids ``[B]`` (int64), or the
    scores ``[B]`` (float32) of a regression (``num_labels == 1``)."""
    if num_labels == 1:
        return logits[:, 0].float()
    return logits[:, :num_labels].argmax(dim=-1)


@rank_zero_only
def _print_table(table: str) -> None:
    print(table, flush=True)


class TextClassificationTask(PerceiverTask):
    """Fine-tunes a :class:`~perceiver_io.models.TextClassifier` on one GLUE task or a
    :class:`~perceiver_io.models.MultiTaskTextClassifier` on several (presets ``text_classifier_bytes``,
    ``text_classifier_small``, ``glue_multitask_bytes``, ``glue_multitask_small``), usually ``init_from`` a
    pre-trained masked language model.

    Data: a :class:`~perceiver_io.data.GlueDataModule` (or a data module with the same ``tasks``, ``val_sets``,
    ``test_sets``, ``num_labels`` attributes). Batches are dicts ``input_ids [B, L]``, ``attention_mask [B, L]``,
    ``labels [B]`` (float for STS-B), ``idx [B]`` and, from a multi-task data module, ``task_ids [B]`` (indices
    into the data's ``tasks``, mapped here onto the model's task order).

    * Training: cross-entropy, or squared error for a regression task (one output: STS-B), averaged over the
      examples of the batch (:func:`text_classification_loss`); logged as ``train/loss``.
    * Validation: one DataLoader per ``(task, split)`` of the data's ``val_sets`` (``dataloader_idx`` names the
      set); logs ``val/<task>/loss`` and, per epoch, GLUE's metrics ``val/<task>/<metric>`` (e.g.
      ``val/mrpc/f1``, ``val/mnli/accuracy_mm``), each task's score ``val/<task>/score`` and ``val/glue_average``
      once all eight tasks are scored (:class:`~perceiver_io.glue_metrics.GlueMetrics`). A ``validate`` or
      ``test`` run prints the paper's Table 3 layout at its end (:func:`~perceiver_io.glue_metrics.format_glue_table`);
      the last results stay in :attr:`glue_results`.
    * Test: as validation (``test/...``), for a data module whose test loaders are labelled and listed in
      ``val_sets`` order (GLUE's own test labels are hidden: :class:`GlueDataModule` has no test loader).
    * Predict: over the data's ``test_sets``; each batch gives ``{"task", "split", "idx" [B], "predictions" [B]}``
      (class ids, or float scores for STS-B).

    All arguments: :class:`~perceiver_io.training.task.PerceiverTask`.
    """

    model_class = (TextClassifier, MultiTaskTextClassifier)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_tasks: tuple[str, ...] = ()
        """The data's tasks, in its task-id order (set when a trainer runs)."""
        self.glue_results: dict[str, float] = {}
        """GLUE's metrics of the last validation or test epoch (``{task/metric: value}``, as GlueMetrics gives)."""
        self.glue: GlueMetrics | None = None
        self._model_task: dict[str, int] = {}
        self._task_map = torch.zeros(0, dtype=torch.long)

    @property
    def multi_task(self) -> bool:
        return isinstance(self.model, MultiTaskTextClassifier)

    # ------------------------------------------------------------------------------------------------ setup

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None or not hasattr(data, "tasks"):
            raise ValueError("data: TextClassificationTask needs a GLUE data module (perceiver_io.data.GlueDataModule,"
                             " or one with its tasks, val_sets and test_sets), got "
                             f"{type(data).__name__ if data is not None else 'none'}")
        self.configure_tasks(tuple(data.tasks), getattr(data, "num_labels", None))
        adapter = self.model.input_adapter.config
        vocab = getattr(data, "vocab_size", None)
        if vocab is not None and vocab != adapter.vocab_size:
            raise ValueError(f"data: the tokenizer has {vocab} ids, the model's embedding {adapter.vocab_size}")
        length = getattr(data, "max_seq_len", None)
        if length is not None and length > adapter.max_seq_len:
            raise ValueError(f"data: examples of up to max_seq_len={length} ids, the model takes at most "
                             f"{adapter.max_seq_len}")

    def configure_tasks(self, tasks: Sequence[str], num_labels: dict[str, int] | None = None) -> None:
        """Check that the model has a head for each of the data's GLUE ``tasks`` (in the data's task-id order) and
        set up the metrics. ``setup`` calls this with the data module's tasks; call it yourself to use
        :meth:`model_task_ids` and the loss without a trainer."""
        tasks = resolve_glue_tasks(list(tasks), "data.tasks")
        num_labels = num_labels or {t: GLUE_TASKS[t].num_labels for t in tasks}
        if self.multi_task:
            heads = self.model.tasks
            missing = [t for t in tasks if t not in heads]
            if missing:
                raise ValueError(f"data: the model has no head for task(s) {missing}; its tasks are {list(heads)}")
            wrong = {t: (heads[t], num_labels[t]) for t in tasks if heads[t] != num_labels[t]}
            if wrong:
                raise ValueError("data: head sizes differ from the tasks' labels (model, data): " +
                                 ", ".join(f"{t} {m} vs {d}" for t, (m, d) in wrong.items()))
            self._model_task = {t: list(heads).index(t) for t in heads}
            self._task_map = torch.tensor([self._model_task[t] for t in tasks], dtype=torch.long)
        else:
            if len(tasks) != 1:
                raise ValueError(f"data: a TextClassifier learns one task, the data has {len(tasks)} {list(tasks)}; "
                                 "train a MultiTaskTextClassifier (preset glue_multitask_small or glue_multitask_bytes)")
            classes = self.model.output_adapter.config.num_classes
            if classes != num_labels[tasks[0]]:
                raise ValueError(f"data: {tasks[0]} has {num_labels[tasks[0]]} label(s), the model {classes} outputs "
                                 f"(set num_classes={num_labels[tasks[0]]})")
        self.data_tasks = tasks
        self.glue = GlueMetrics(tasks).to(self.device)

    # ------------------------------------------------------------------------------------------------ model calls

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, K]`` (``task_ids [B]``: indices into the model's tasks, multi-task models only)."""
        if self.multi_task:
            return self.forward_model(input_ids, attention_mask, task_ids)
        return self.forward_model(input_ids, attention_mask)

    def _num_labels(self, task: str) -> int:
        if self.multi_task:
            return self.model.tasks[task]
        return self.model.output_adapter.config.num_classes

    def model_task_ids(self, batch: dict[str, torch.Tensor], task: str | None = None) -> torch.Tensor | None:
        """``[B]`` the batch's task ids in the model's task order (None for a single-task model): all ``task``'s
        when given, else the batch's ``task_ids`` (indices into the data's tasks) mapped, else the data's one task."""
        if not self.multi_task:
            return None
        b, device = batch["input_ids"].shape[0], batch["input_ids"].device
        if task is not None:
            return torch.full((b,), self._model_task[task], dtype=torch.long, device=device)
        if "task_ids" in batch:
            ids = batch["task_ids"]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self._task_map)):
                raise ValueError(f"task_ids: expected indices into the data's tasks {list(self.data_tasks)}, got "
                                 f"values in [{int(ids.min())}, {int(ids.max())}]")
            return self._task_map.to(device)[ids]
        if len(self.data_tasks) != 1:
            raise ValueError(f"task_ids: the batch has none, and the data has {len(self.data_tasks)} tasks")
        return torch.full((b,), self._model_task[self.data_tasks[0]], dtype=torch.long, device=device)

    def _regression(self, task_ids: torch.Tensor | None) -> torch.Tensor | bool:
        if task_ids is None:
            return self.model.output_adapter.config.num_classes == 1
        return self.model.num_labels.to(task_ids.device)[task_ids] == 1

    # ------------------------------------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self._require_tasks()
        task_ids = self.model_task_ids(batch)
        logits = self(batch["input_ids"], batch["attention_mask"], task_ids)
        loss = text_classification_loss(logits, batch["labels"], self._regression(task_ids))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _eval_sets(self, stage: str) -> list[tuple[str, str]]:
        data = getattr(self.trainer, "datamodule", None)
        name = "test_sets" if stage == "predict" else "val_sets"
        sets = getattr(data, name, None)
        if sets is None:
            raise ValueError(f"data: the data module has no {name} (the (task, split) of each {stage} loader)")
        return list(sets)

    def _evaluate(self, batch: dict[str, torch.Tensor], dataloader_idx: int, stage: str) -> None:
        self._require_tasks()
        task, split = self._eval_sets(stage)[dataloader_idx]
        task_ids = self.model_task_ids(batch, task)
        logits = self(batch["input_ids"], batch["attention_mask"], task_ids)
        n = self._num_labels(task)
        loss = text_classification_loss(logits, batch["labels"], n == 1)
        self.glue.update(task, task_predictions(logits, n), batch["labels"], split=split)  # type: ignore[union-attr]
        self.log(f"{stage}/{task}/loss{_SPLIT_SUFFIX.get(split, '')}", loss, batch_size=len(batch["labels"]),
                 add_dataloader_idx=False, sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, dataloader_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, dataloader_idx, "test")

    def _end_of_evaluation(self, stage: str) -> None:
        if self.glue is None:
            return
        results = self.glue.compute()
        self.glue.reset()
        if not results:
            return
        logged = {f"{stage}/{key}": value for key, value in results.items() if key != "glue/average"}
        if "glue/average" in results:
            logged[f"{stage}/glue_average"] = results["glue/average"]
        self.log_dict(logged, add_dataloader_idx=False)
        self.glue_results = results
        if self.trainer.state.fn in ("validate", "test") and not self.trainer.sanity_checking:
            _print_table(format_glue_table(results))

    def on_validation_epoch_end(self) -> None:
        self._end_of_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_of_evaluation("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"task": name, "split": name, "idx": [B], "predictions": [B], "probabilities": [B] or None}``: class ids
        (int64) and the probability of each, or STS-B's similarity scores (float32, unclipped; no probabilities)."""
        self._require_tasks()
        task, split = self._eval_sets("predict")[dataloader_idx]
        logits = self(batch["input_ids"], batch["attention_mask"], self.model_task_ids(batch, task))
        n = self._num_labels(task)
        probabilities = None if n == 1 else logits[:, :n].float().softmax(-1).max(-1).values
        return {"task": task, "split": split, "idx": batch["idx"], "predictions": task_predictions(logits, n),
                "probabilities": probabilities}

    def prediction_records(self, outputs: dict[str, Any], batch: Any, identifiers: Sequence[str],
                           top_k: int) -> list[dict[str, Any]]:
        """One row per example: ``id`` (``task/split/idx``), ``task``, ``split``, ``idx``, ``prediction`` (the
        label's name, or STS-B's score) and ``probability`` (empty for STS-B)."""
        task, split = outputs["task"], outputs["split"]
        names = GLUE_TASKS[task].label_names if task in GLUE_TASKS else ()
        probabilities = outputs["probabilities"]
        records = []
        for row, (idx, value) in enumerate(zip(outputs["idx"].tolist(), outputs["predictions"].tolist())):
            if probabilities is None:
                prediction, probability = round(float(value), 6), ""
            else:
                prediction = names[value] if value < len(names) else str(value)
                probability = round(float(probabilities[row]), 6)
            records.append({"id": f"{task}/{split}/{idx}", "task": task, "split": split, "idx": idx,
                            "prediction": prediction, "probability": probability})
        return records

    def _require_tasks(self) -> None:
        if not self.data_tasks:
            raise ValueError("data: no tasks configured; run through a Trainer with a GlueDataModule, or call "
                             "configure_tasks(tasks) first")
