"""A tiny local copy of the Hub dataset ``nyu-mll/glue`` for offline tests.

:func:`write_glue_fixture` lays a folder out as the Hub repository is, so ``datasets.load_dataset(folder, task)``
resolves it exactly as ``load_dataset("nyu-mll/glue", task)`` resolves the Hub:

    folder/
      README.md                           YAML front matter: dataset_info (features, ClassLabel names) and the
                                          configs: block mapping each config's splits to files
      cola/train-00000-of-00001.parquet   columns sentence, label, idx
      cola/validation-00000-of-00001.parquet
      cola/test-00000-of-00001.parquet    labels -1, as GLUE hides test labels
      ...
      mnli/{train,validation_matched,validation_mismatched,test_matched,test_mismatched}-00000-of-00001.parquet

Sentences are random words (some non-ASCII, so multi-byte UTF-8 is exercised); labels are random valid class ids
(int64) or, for STS-B, float32 scores in [0, 5].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perceiver_io.data.glue import GLUE_TASKS

#: Training rows per task: unequal, so task sampling proportions are visible.
TRAIN_ROWS = {"cola": 12, "sst2": 16, "mrpc": 8, "qqp": 20, "stsb": 10, "mnli": 24, "qnli": 14, "rte": 6}
VALIDATION_ROWS = 6
TEST_ROWS = 5

_WORDS = ("the", "cat", "sat", "on", "a", "mat", "dogs", "run", "quickly", "bank", "river", "money", "is",
          "not", "café", "naïve", "über", "日本", "語", "señor", "résumé", "why", "how", "many", "people", "live")


def _sentence(rng: np.random.Generator) -> str:
    words = rng.choice(_WORDS, size=int(rng.integers(3, 12)))
    return " ".join(words).capitalize() + rng.choice([".", "?", "!"])


def _yaml_features(task: str) -> list[str]:
    spec = GLUE_TASKS[task]
    lines = ["  features:"]
    for column in spec.text_columns:
        lines += [f"  - name: {column}", "    dtype: string"]
    if spec.is_regression:
        lines += ["  - name: label", "    dtype: float32"]
    else:
        lines += ["  - name: label", "    dtype:", "      class_label:", "        names:"]
        lines += [f"          '{i}': {n}" for i, n in enumerate(spec.label_names)]
    lines += ["  - name: idx", "    dtype: int32"]
    return lines


def _readme() -> str:
    lines = ["---", "dataset_info:"]
    for task in GLUE_TASKS:
        lines += [f"- config_name: {task}", *_yaml_features(task)]
    lines.append("configs:")
    for task, spec in GLUE_TASKS.items():
        lines += [f"- config_name: {task}", "  data_files:"]
        for split in ("train", *spec.validation_splits, *spec.test_splits):
            lines += [f"  - split: {split}", f"    path: {task}/{split}-*"]
    lines += ["---", "", "# GLUE (test fixture)", "", "A few random rows per split, laid out as nyu-mll/glue.", ""]
    return "\n".join(lines)


def _table(task: str, rows: int, labelled: bool, rng: np.random.Generator) -> pa.Table:
    spec = GLUE_TASKS[task]
    data: dict[str, pa.Array] = {c: pa.array([_sentence(rng) for _ in range(rows)], pa.string())
                                 for c in spec.text_columns}
    if spec.is_regression:
        labels = np.round(rng.uniform(0, 5, rows), 3) if labelled else np.full(rows, -1.0)
        data["label"] = pa.array(labels.astype(np.float32), pa.float32())
    else:
        labels = rng.integers(0, spec.num_labels, rows) if labelled else np.full(rows, -1)
        data["label"] = pa.array(labels.astype(np.int64), pa.int64())
    data["idx"] = pa.array(np.arange(rows, dtype=np.int32), pa.int32())
    return pa.table(data)


def write_glue_fixture(root: Path, seed: int = 0) -> Path:
    """Write the fixture under ``root`` (created if needed) and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for task, spec in GLUE_TASKS.items():
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        splits = [("train", TRAIN_ROWS[task], True)]
        splits += [(s, VALIDATION_ROWS, True) for s in spec.validation_splits]
        splits += [(s, TEST_ROWS, False) for s in spec.test_splits]
        for split, rows, labelled in splits:
            pq.write_table(_table(task, rows, labelled, rng), folder / f"{split}-00000-of-00001.parquet")
    (root / "README.md").write_text(_readme(), encoding="utf-8")
    return root
