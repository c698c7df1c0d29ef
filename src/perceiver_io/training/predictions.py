"""``predict`` runs write their predictions to one file: CSV (default) or JSON lines, one row per input.

Each task turns a batch of its ``predict_step`` outputs into rows (:meth:`PerceiverTask.prediction_records`): for
classification the input's identifier (the file path for image folders), its known label if any, and the top-k
classes with their names and probabilities. :class:`PredictionWriter` names the identifiers, writes the rows as the
batches come (nothing is kept in memory) and prints where it wrote them with a short summary.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from ..core.validation import check_choice, check_positive

FORMATS = ("csv", "jsonl")


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row from a record: a list of dicts (the top-k) becomes numbered columns, ``{"top": [{"class": "cat",
    "probability": 0.9}, ...]}`` -> ``{"class_1": "cat", "probability_1": 0.9, ...}``."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for rank, entry in enumerate(value, start=1):
                row.update({f"{name}_{rank}": v for name, v in entry.items()})
        else:
            row[key] = value
    return row


class PredictionWriter(BasePredictionWriter):
    """Writes a ``predict`` run's rows to ``path`` (``<default_root_dir>/predictions.<format>`` by default).

    Args:
        path: the output file; its folder is created. Under several processes each writes ``<stem>.rank<N><ext>``.
        format: ``"csv"`` (one column per field; the top-k as ``class_1, probability_1, ...``) or ``"jsonl"`` (one
            JSON object per line, the top-k as a list).
        top_k: how many classes each row lists (at most the model's number of classes).

    The identifiers come from the data module's ``predict_identifiers`` (a list in predict order, e.g. file
    paths) when it has one, else they are the inputs' positions in the predict set.
    """

    def __init__(self, path: str | None = None, format: Literal["csv", "jsonl"] = "csv", top_k: int = 5) -> None:
        super().__init__(write_interval="batch")
        check_choice("format", format, FORMATS)
        check_positive("top_k", top_k)
        self.path = path
        self.format = format
        self.top_k = top_k
        self.written: Path | None = None
        """The file of the last run (after it ends)."""
        self._file: Any = None
        self._csv: csv.DictWriter | None = None
        self._identifiers: Sequence[str] | None = None
        self._rows = 0
        self._summary: Counter[str] = Counter()
        self._correct = self._labelled = self._errors = 0

    # ------------------------------------------------------------------------------------------------ lifecycle

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        writes = getattr(type(pl_module), "prediction_records", None)
        if writes is None or getattr(writes, "not_implemented", False):
            hint = getattr(pl_module, "prediction_hint", "")
            raise ValueError(f"predict: the {type(pl_module).__name__} writes no prediction file{hint}")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = Path(self.path or Path(trainer.default_root_dir) / f"predictions.{self.format}")
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.written = path
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._csv = None
        self._identifiers = getattr(trainer.datamodule, "predict_identifiers", None) if trainer.datamodule else None
        self._rows = self._correct = self._labelled = self._errors = 0
        self._summary = Counter()

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        size = _batch_size(prediction)
        indices = list(batch_indices) if batch_indices is not None else list(range(self._rows, self._rows + size))
        identifiers = [self._identifiers[i] if self._identifiers is not None else str(i) for i in indices]
        records = pl_module.prediction_records(prediction, batch, identifiers, self.top_k)  # type: ignore[operator]
        for record in records:
            self._write(record)
            self._count(record)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        if trainer.is_global_zero:
            print(self.summary(), flush=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    # ------------------------------------------------------------------------------------------------ output

    def summary(self) -> str:
        """Where the rows went and what they say: rows, unreadable inputs, accuracy on labelled rows, top classes."""
        lines = [f"wrote {self._rows} predictions to {self.written}"]
        if self._errors:
            lines.append(f"  {self._errors} inputs could not be read (their rows give the reason in 'error')")
        if self._labelled:
            lines.append(f"  accuracy on the {self._labelled} labelled inputs: {self._correct / self._labelled:.2%}")
        if self._summary:
            common = ", ".join(f"{label} ({n})" for label, n in self._summary.most_common(5))
            lines.append(f"  most frequent predictions: {common}")
        return "\n".join(lines)

    def _write(self, record: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self._file.write(json.dumps(record) + "\n")
            return
        row = flatten_record(record)
        if self._csv is None:
            self._csv = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            self._csv.writeheader()
        self._csv.writerow(row)

    def _count(self, record: dict[str, Any]) -> None:
        self._rows += 1
        if record.get("error"):
            self._errors += 1
            return
        predicted = record.get("prediction")
        if predicted is None and record.get("top"):
            predicted = record["top"][0]["class"]
        if predicted is not None and not isinstance(predicted, float):
            self._summary[str(predicted)] += 1
        if record.get("label") not in (None, ""):
            self._labelled += 1
            self._correct += int(str(record["label"]) == str(predicted))

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def _batch_size(prediction: Any) -> int:
    if isinstance(prediction, dict):
        prediction = next(iter(v for v in prediction.values() if hasattr(v, "shape")))
    return int(prediction.shape[0])


def classification_records(
    probabilities: Any,
    identifiers: Sequence[str],
    top_k: int,
    class_names: Sequence[str] | None = None,
    targets: Any = None,
    errors: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of a classifier's predictions: ``{"id", "label" (the known class, "" when unknown), "top": [{"label",
    "probability"} x k], "error" (when ``errors`` is given)}``.

    Args:
        probabilities: ``[B, K]`` class probabilities.
        identifiers: ``B`` names of the inputs.
        top_k: classes per row (at most ``K``).
        class_names: ``K`` names (class ids are written when None).
        targets: ``[B]`` known class ids, negative where unknown, or None.
        errors: ``B`` reasons an input could not be read ("" where it could); such rows list no classes.
    """
    def name(i: int) -> str:
        return class_names[i] if class_names is not None and 0 <= i < len(class_names) else str(i)

    scores, classes = probabilities.float().topk(min(top_k, probabilities.shape[-1]), dim=-1)
    known = targets.tolist() if targets is not None else [-1] * len(identifiers)
    records = []
    for row, identifier in enumerate(identifiers):
        error = errors[row] if errors is not None else ""
        top = [] if error else [{"class": name(c), "probability": round(float(p), 6)}
                                for c, p in zip(classes[row].tolist(), scores[row].tolist())]
        record: dict[str, Any] = {"id": identifier, "label": name(int(known[row])) if known[row] >= 0 else "",
                                  "top": top}
        if errors is not None:
            record["error"] = error
        records.append(record)
    return records
