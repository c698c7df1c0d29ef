"""GLUE metrics: the numbers GLUE reports per task, the GLUE average and the paper's Table 3 layout.

Per task (validation sets; GLUE's test labels are hidden): CoLA Matthews correlation; SST-2, QNLI, RTE accuracy;
MRPC and QQP accuracy and F1 (class 1, "equivalent" / "duplicate", is positive); STS-B Pearson and Spearman
correlation; MNLI accuracy on the matched and the mismatched set (``mnli/accuracy_m``, ``mnli/accuracy_mm``).
Values are fractions (correlations in [-1, 1]); :func:`format_glue_table` prints them times 100, as the paper.

The GLUE average (:func:`glue_scores`) is the mean over the eight tasks of a per-task score, the mean of that task's
reported metrics: MRPC ``(acc + F1) / 2``, QQP ``(acc + F1) / 2``, STS-B ``(Pearson + Spearman) / 2``, MNLI
``(m + mm) / 2``, the others their single metric. This is the GLUE benchmark's rule (a task with several metrics
scores their unweighted mean) restricted to the paper's eight tasks (no WNLI), and MNLI counts as ONE task: the
paper's Perceiver IO Base (SentencePiece) dev row, as quoted by TensorFlow Model Garden's Perceiver README (CoLA
47.11, MNLI 84.53/85.03, MRPC 87.25, QNLI 92.12, QQP 90.22, RTE 65.23, SST-2 94.38, STS-B 88.18), averages to its
reported 81.16 only with m/mm averaged first and the sum divided by 8 (m and mm as two of nine columns: 81.56).
That row has one number for MRPC, QQP and STS-B without naming the metric (QQP's 90.22 looks like accuracy, F1 is
usually lower); ``score_metrics`` picks the metrics of a task's score (e.g. ``{"qqp": ["accuracy"]}``) to match.

:func:`glue_metric` scores one set at once; :class:`GlueMetrics` accumulates the same torchmetrics over batches
(and processes) in a LightningModule and gives identical numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import BinaryF1Score, BinaryMatthewsCorrCoef, MulticlassAccuracy
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from .data.glue import GLUE_TASKS, resolve_glue_tasks

__all__ = ["TABLE_COLUMNS", "GlueMetrics", "format_glue_table", "glue_metric", "glue_scores", "metric_keys"]

#: The columns of the paper's Table 3, in its order.
TABLE_COLUMNS: tuple[str, ...] = ("CoLA", "MNLI-m/mm", "MRPC", "QNLI", "QQP", "RTE", "SST-2", "STS-B", "Average")
_TABLE_TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")  # the task of each column
# Suffix of a metric name per validation split: MNLI's two sets are two columns of one task.
_SPLIT_SUFFIX = {"validation": "", "validation_matched": "_m", "validation_mismatched": "_mm"}


def metric_keys(task: str) -> list[str]:
    """The result keys of one task: e.g. ``["mrpc/accuracy", "mrpc/f1"]``; MNLI's are
    ``["mnli/accuracy_m", "mnli/accuracy_mm"]``."""
    (task,) = resolve_glue_tasks(task)
    spec = GLUE_TASKS[task]
    return [f"{task}/{m}{_SPLIT_SUFFIX[s]}" for s in spec.validation_splits for m in spec.metrics]


def _suffix(task: str, split: str | None) -> str:
    splits = GLUE_TASKS[task].validation_splits
    if split is None:
        if len(splits) > 1:
            raise ValueError(f"split: {task} has {len(splits)} validation sets; pass one of {list(splits)}")
        split = splits[0]
    if split not in splits:
        raise ValueError(f"split: expected one of {task}'s labelled validation splits {list(splits)}, got {split!r} "
                         "(GLUE's test labels are hidden, so test splits cannot be scored)")
    return _SPLIT_SUFFIX[split]


def _make_metrics(task: str) -> dict[str, Metric]:
    """Fresh torchmetrics for ``task``'s reported metrics."""
    spec = GLUE_TASKS[task]
    with warnings.catch_warnings():  # SpearmanCorrCoef warns that it keeps every value: GLUE sets are small
        warnings.filterwarnings("ignore", message=".*will save all targets and predictions.*")
        factories = {
            "matthews_corr": BinaryMatthewsCorrCoef,
            "accuracy": lambda: MulticlassAccuracy(num_classes=spec.num_labels, average="micro"),
            "f1": BinaryF1Score,
            "pearson": PearsonCorrCoef,
            "spearman": SpearmanCorrCoef,
        }
        return {m: factories[m]() for m in spec.metrics}


def _prepare(task: str, preds: Any, labels: Any, allow_empty: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions (class ids int64 or scores float32 ``[N]``) and labels ``[N]`` checked for ``task``."""
    spec = GLUE_TASKS[task]
    preds = preds.detach() if isinstance(preds, torch.Tensor) else torch.as_tensor(preds)
    labels = labels.detach() if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if labels.dim() != 1 or (labels.numel() == 0 and not allow_empty):
        raise ValueError(f"labels: expected a non-empty 1-D tensor [N], got shape {list(labels.shape)}")
    n = labels.shape[0]
    if spec.is_regression:
        if preds.dim() == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if list(preds.shape) != [n] or not preds.is_floating_point():
            raise ValueError(f"preds: {task} expected float scores [{n}] or [{n}, 1], "
                             f"got shape {list(preds.shape)} of dtype {preds.dtype}")
        labels = labels.float()
        if (labels == -1).any():
            raise ValueError("labels: -1 marks GLUE's unlabelled test examples; score validation sets only")
        return preds.float(), labels
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: {task} expected integer class ids, got dtype {labels.dtype}")
    if (labels == -1).any():
        raise ValueError("labels: -1 marks GLUE's unlabelled test examples; score validation sets only")
    if ((labels < 0) | (labels >= spec.num_labels)).any():
        raise ValueError(f"labels: {task} expected class ids in [0, {spec.num_labels}), got {labels.tolist()[:10]}...")
    if preds.is_floating_point() and list(preds.shape) == [n, spec.num_labels]:
        preds = preds.argmax(dim=-1)
    elif preds.is_floating_point() or preds.dtype == torch.bool or list(preds.shape) != [n]:
        raise ValueError(f"preds: {task} expected logits [{n}, {spec.num_labels}] (float) or class ids [{n}] "
                         f"(integer), got shape {list(preds.shape)} of dtype {preds.dtype}")
    elif ((preds < 0) | (preds >= spec.num_labels)).any():
        raise ValueError(f"preds: {task} expected class ids in [0, {spec.num_labels}), got {preds.tolist()[:10]}...")
    return preds.long(), labels.long()


def glue_metric(task: str, preds: Any, labels: Any) -> dict[str, float]:
    """The metrics GLUE reports for ``task`` on one labelled set.

    Args:
        task: a GLUE task name (see :func:`~perceiver_io.data.glue.resolve_glue_tasks`).
        preds: classification: logits ``[N, num_labels]`` (argmax taken) or class ids ``[N]``; STS-B: scores
            ``[N]`` or ``[N, 1]``. A tensor, NumPy array or list.
        labels: ``[N]`` class ids (float similarity scores for STS-B); -1 (unlabelled test rows) is an error.

    Returns:
        ``{metric: value}`` with the task's metrics (:attr:`GlueTask.metrics`), e.g. ``{"accuracy": 0.9,
        "f1": 0.8}`` for MRPC; for MNLI, the accuracy of the one set given.
    """
    (task,) = resolve_glue_tasks(task)
    preds, labels = _prepare(task, preds, labels)
    out = {}
    for name, metric in _make_metrics(task).items():
        metric = metric.to(preds.device)
        metric.update(preds, labels)
        out[name] = float(metric.compute())
    return out


def glue_scores(results: Mapping[str, float], score_metrics: Mapping[str, Sequence[str]] | None = None
                ) -> dict[str, float]:
    """Per-task scores and the GLUE average from ``{task/metric: value}`` results (see the module docstring).

    Args:
        results: e.g. :meth:`GlueMetrics.compute`'s output; other keys are ignored.
        score_metrics: per task, the metric names (as in the result keys after ``task/``, e.g.
            ``["accuracy_m", "accuracy_mm"]`` for MNLI) whose mean is the task's score; tasks not given use all
            their reported metrics.

    Returns:
        ``{task: score}`` for every task whose score metrics are all in ``results``, plus ``"average"`` (mean of
        the eight task scores) when all eight are there.
    """
    chosen = {task: [k.split("/", 1)[1] for k in metric_keys(task)] for task in GLUE_TASKS}
    for task, names in (score_metrics or {}).items():
        (key,) = resolve_glue_tasks(task, "score_metrics")
        names = [names] if isinstance(names, str) else list(names)
        known = [k.split("/", 1)[1] for k in metric_keys(key)]
        if not names or any(n not in known for n in names):
            raise ValueError(f"score_metrics: {key} expected a non-empty list from {known}, got {names}")
        chosen[key] = names
    scores: dict[str, float] = {}
    for task, names in chosen.items():
        keys = [f"{task}/{n}" for n in names]
        if all(k in results for k in keys):
            scores[task] = sum(float(results[k]) for k in keys) / len(keys)
    if len(scores) == len(GLUE_TASKS):
        scores["average"] = sum(scores.values()) / len(GLUE_TASKS)
    return scores


class GlueMetrics(nn.Module):
    """Accumulates GLUE's metrics per task and validation set over batches, for use in a LightningModule.

    Holds torchmetrics modules (so it moves with the LightningModule and syncs across processes at
    :meth:`compute`); every process must update the same sets, as the data module's per-set validation loaders do.

    Example, with ``GlueDataModule``'s one validation loader per ``(task, split)``::

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            task, split = self.trainer.datamodule.val_sets[dataloader_idx]
            self.glue.update(task, self(batch, task), batch["labels"], split=split)

        def on_validation_epoch_end(self):
            self.log_dict(self.glue.compute())
            self.glue.reset()

    Args:
        tasks: the tasks to track (a name, a list, or ``"all"``).
        score_metrics: see :func:`glue_scores`.
    """

    def __init__(self, tasks: str | Sequence[str] = "all",
                 score_metrics: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.tasks = resolve_glue_tasks(tasks, "tasks")
        self.score_metrics = score_metrics
        glue_scores({}, score_metrics)  # validates score_metrics now rather than at the first compute
        self.sets = nn.ModuleDict({
            f"{task}{_SPLIT_SUFFIX[split]}": nn.ModuleDict(_make_metrics(task))
            for task in self.tasks for split in GLUE_TASKS[task].validation_splits
        })
        self._updated: set[str] = set()

    def update(self, task: str, preds: Any, labels: Any, split: str | None = None) -> None:
        """Add one batch of ``task`` (``split`` is required for MNLI: ``"validation_matched"`` or
        ``"validation_mismatched"``); ``preds`` and ``labels`` as in :func:`glue_metric` (an empty batch is
        ignored)."""
        (task,) = resolve_glue_tasks(task)
        if task not in self.tasks:
            raise ValueError(f"task: {task!r} is not tracked; expected one of {list(self.tasks)}")
        key = f"{task}{_suffix(task, split)}"
        preds, labels = _prepare(task, preds, labels, allow_empty=True)
        if labels.numel() == 0:  # e.g. a process's empty share of a small set: nothing to add
            return
        for metric in self.sets[key].values():
            metric.update(preds, labels)
        self._updated.add(key)

    def compute(self) -> dict[str, float]:
        """``{task/metric: value}`` for every set updated since the last :meth:`reset`, plus ``task/score`` for
        each task with all its score metrics and ``glue/average`` once all eight tasks are scored."""
        results: dict[str, float] = {}
        for task in self.tasks:
            for split in GLUE_TASKS[task].validation_splits:
                suffix = _SPLIT_SUFFIX[split]
                if f"{task}{suffix}" in self._updated:
                    for name, metric in self.sets[f"{task}{suffix}"].items():
                        results[f"{task}/{name}{suffix}"] = float(metric.compute())
        scores = glue_scores(results, self.score_metrics)
        average = scores.pop("average", None)
        results.update({f"{task}/score": value for task, value in scores.items()})
        if average is not None:
            results["glue/average"] = average
        return results

    def reset(self) -> None:
        """Forget every batch."""
        for metrics in self.sets.values():
            for metric in metrics.values():
                metric.reset()
        self._updated.clear()


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def format_glue_table(results: Mapping[str, Any], *, name: str = "Perceiver IO",
                      score_metrics: Mapping[str, Sequence[str]] | None = None, digits: int = 2) -> str:
    """A Markdown table in the layout of the paper's Table 3: CoLA, MNLI-m/mm, MRPC, QNLI, QQP, RTE, SST-2,
    STS-B, Average (values times 100; ``-`` where a result is missing).

    A task's column shows its score (:func:`glue_scores`: MRPC and QQP the mean of accuracy and F1, STS-B of
    Pearson and Spearman, unless ``score_metrics`` says otherwise) and MNLI its two accuracies ``m/mm``.

    Args:
        results: one model's ``{task/metric: value}`` (a row named ``name``), or ``{row name: results}``.
        name: the row name for a single model's results.
        score_metrics: see :func:`glue_scores`.
        digits: decimals.
    """
    if results and all(isinstance(v, Mapping) for v in results.values()):
        rows = list(results.items())
    else:
        rows = [(name, results)]
    lines = [["Model", *TABLE_COLUMNS]]
    for row_name, res in rows:
        scores = glue_scores(res, score_metrics)
        cells = [str(row_name)]
        for task in _TABLE_TASKS:
            if task == "mnli":
                m, mm = (res.get(f"mnli/accuracy_{s}") for s in ("m", "mm"))
                cells.append("-" if m is None and mm is None else
                             f"{_cell(None if m is None else float(m), digits)}/"
                             f"{_cell(None if mm is None else float(mm), digits)}")
            else:
                cells.append(_cell(scores.get(task), digits))
        cells.append(_cell(scores.get("average"), digits))
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in lines]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)
