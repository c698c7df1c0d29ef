"""GLUE fine-tuning data for Perceiver IO: the eight tasks the paper reports (WNLI excluded), byte-level encoding,
single- and multi-task Lightning data modules.

Data come from ``datasets.load_dataset(path, task)`` with ``path="nyu-mll/glue"`` by default, the Hub repository
users load online. ``path`` may instead name a local folder laid out as that repository is: a folder per task
holding parquet files (``cola/train-00000-of-00001.parquet``, ``cola/validation-...``, ``cola/test-...``; MNLI has
``validation_matched`` / ``validation_mismatched`` / ``test_matched`` / ``test_mismatched``) and a ``README.md``
whose YAML front matter has the Hub's ``configs:`` block (``config_name: cola``, ``data_files:`` with
``split: train``, ``path: cola/train-*`` ...). The ``configs:`` block is what makes ``load_dataset(folder, "cola")``
resolve the task name: without it a local folder only has a ``default`` config, and ``data_dir="mnli"`` would fold
``validation_matched`` into a single ``validation`` split. ``tests/glue_fixtures.py`` writes such a folder.

Every example becomes ``[CLS] A [SEP]`` (single sentence) or ``[CLS] A [SEP] B [SEP]`` (pair) with the
:class:`~perceiver_io.tokenizer.ByteTokenizer` ids (``[CLS]`` 4, ``[SEP]`` 5, byte ``b`` -> ``b + 6``), at most
``max_seq_len`` ids (the paper: 2,048 bytes). A tokenizer object with ``encode``, ``cls_token_id``,
``sep_token_id`` and ``pad_token_id`` (e.g. a SentencePiece model for the token baseline) may replace the bytes:
``encode(text, add_special_tokens=False)`` is called if ``encode`` takes that keyword, else ``encode(text)``, which
must then return the ids of the text alone. GLUE's test labels are hidden (-1): test splits serve
``predict_dataloader`` only and are never scored.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler

from ..core.validation import check_choice, check_positive
from ..tokenizer import ByteTokenizer

__all__ = [
    "GLUE_TASKS", "GlueCollate", "GlueDataModule", "GlueDataset", "GlueTask", "GlueTruncationWarning", "TaskSampler",
    "encode_glue_example", "load_glue", "resolve_glue_tasks", "truncated_lengths",
]

Padding = Literal["longest", "max_length"]


@dataclass(frozen=True)
class GlueTask:
    """What the data module and the metrics need to know about one GLUE task.

    Attributes:
        name: the Hub config name (``"cola"``, ``"sst2"``, ...).
        display_name: the name in the paper's tables (``"CoLA"``, ``"SST-2"``, ...).
        text_columns: one column (single sentence) or two (pair ``A``, ``B``), in encoding order.
        num_labels: number of classes; 1 for STS-B, a regression on similarity scores in [0, 5].
        label_names: class names as the Hub's ``ClassLabel`` has them (empty for STS-B).
        validation_splits: the labelled evaluation splits (MNLI: matched and mismatched).
        test_splits: the unlabelled test splits (labels -1), for predictions only.
        metrics: the metrics GLUE reports for the task, computed on every validation split
            (``"matthews_corr"``, ``"accuracy"``, ``"f1"``, ``"pearson"``, ``"spearman"``).
    """

    name: str
    display_name: str
    text_columns: tuple[str, ...]
    num_labels: int
    label_names: tuple[str, ...]
    validation_splits: tuple[str, ...]
    test_splits: tuple[str, ...]
    metrics: tuple[str, ...]

    @property
    def is_regression(self) -> bool:
        """True for STS-B (one float output, float32 labels)."""
        return self.num_labels == 1

    @property
    def is_pair(self) -> bool:
        """True if an example is a sentence pair ``[CLS] A [SEP] B [SEP]``."""
        return len(self.text_columns) == 2


def _task(name: str, display: str, columns: tuple[str, ...], labels: tuple[str, ...], metrics: tuple[str, ...],
          mnli: bool = False) -> GlueTask:
    val = ("validation_matched", "validation_mismatched") if mnli else ("validation",)
    test = ("test_matched", "test_mismatched") if mnli else ("test",)
    return GlueTask(name, display, columns, max(len(labels), 1), labels, val, test, metrics)


#: The eight GLUE tasks of the paper (WNLI excluded), in GLUE's order; columns and label names as on the Hub.
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        _task("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ("matthews_corr",)),
        _task("sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",)),
        _task("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1")),
        _task("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
        _task("stsb", "STS-B", ("sentence1", "sentence2"), (), ("pearson", "spearman")),
        _task("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
              mnli=True),
        _task("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",)),
        _task("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",)),
    )
}


def _normalise_task_name(name: str) -> str:
    # Accept the paper's spellings ("SST-2", "STS-B", "CoLA") for the Hub config names.
    return name.lower().replace("-", "").replace("_", "")


def resolve_glue_tasks(task: str | Sequence[str], name: str = "task") -> tuple[str, ...]:
    """Hub config names of ``task``: one name, a list of names, or ``"all"`` (the eight, in GLUE's order).

    Names are case-insensitive and may be written as in the paper (``"SST-2"``, ``"STS-B"``).

    Raises:
        ValueError: an unknown name (the message lists the known tasks), an empty list, or a repeated task.
        TypeError: ``task`` is neither a str nor a sequence of str.
    """
    known = ", ".join(GLUE_TASKS)
    if isinstance(task, str):
        if task.lower() == "all":
            return tuple(GLUE_TASKS)
        names: Sequence[object] = [task]
    elif isinstance(task, Sequence):
        names = task
        if not names:
            raise ValueError(f"{name}: expected a GLUE task name, a non-empty list of them or 'all', got []")
    else:
        raise TypeError(f"{name}: expected a str or a list of str, got {type(task).__name__}")
    out: list[str] = []
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{name}: expected task names as str, got {type(n).__name__}")
        key = _normalise_task_name(n)
        if key not in GLUE_TASKS:
            hint = " (WNLI is excluded, as in the paper)" if key == "wnli" else ""
            raise ValueError(f"{name}: unknown GLUE task {n!r}{hint}; expected one of {known}, or 'all'")
        if key in out:
            raise ValueError(f"{name}: task {n!r} is listed twice")
        out.append(key)
    return tuple(out)


def load_glue(task: str, path: str = "nyu-mll/glue", cache_dir: str | None = None) -> Any:
    """``datasets.load_dataset(path, task)``: every split of one task as a ``DatasetDict``, columns checked.

    ``path`` is the Hub id (downloads once into the ``datasets`` cache) or a local folder laid out as the Hub
    repository (see the module docstring); both go through the same call.

    Raises:
        ValueError: unknown task, or the data lack the task's columns or its train / validation splits.
    """
    import datasets  # heavy and only needed here: keep it out of the package import

    (task,) = resolve_glue_tasks(task)
    spec = GLUE_TASKS[task]
    data = datasets.load_dataset(path, task, cache_dir=cache_dir)
    for split in ("train", *spec.validation_splits):
        if split not in data:
            raise ValueError(f"path: {path!r} task {task!r} has no {split!r} split; got splits {sorted(data)}")
    for split, ds in data.items():
        missing = [c for c in (*spec.text_columns, "label", "idx") if c not in ds.column_names]
        if missing:
            raise ValueError(f"path: {path!r} task {task!r} split {split!r} lacks columns {missing}; "
                             f"expected {[*spec.text_columns, 'label', 'idx']}, got {ds.column_names}")
    return data


# ---------------------------------------------------------------------------------------------------- encoding


def truncated_lengths(lengths: Sequence[int], budget: int) -> tuple[int, ...]:
    """Segment lengths after cutting ``lengths`` (one or two segments) to ``budget`` ids in total.

    One segment keeps its first ``budget`` ids. Two segments are cut "longest first", as transformers'
    ``truncation="longest_first"``: ids come off the end of the longer segment, one at a time, and off ``B`` when
    the two are equally long, so the result is the closed form below rather than a loop.
    """
    if len(lengths) == 1:
        return (min(lengths[0], budget),)
    a, b = lengths
    if a + b <= budget:
        return a, b
    short = min(a, b)
    if budget - short >= short:  # cutting the longer one alone is enough (it stays at least as long)
        return (budget - b, b) if a > b else (a, budget - a)
    # Both are cut down to a tie, after which B loses the first id of each round: A keeps the odd one.
    return (budget + 1) // 2, budget // 2


def _encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` alone (no special tokens)."""
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(text, add_special_tokens=False)
    return list(tokenizer.encode(text))


def encode_glue_example(texts: Sequence[str], tokenizer: Any, max_seq_len: int) -> tuple[list[int], bool]:
    """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` ids of one example, at most ``max_seq_len`` long.

    Args:
        texts: ``(A,)`` or ``(A, B)``.
        tokenizer: a :class:`ByteTokenizer`, or an object with ``encode(text) -> list[int]`` returning the ids of
            the text alone, ``cls_token_id`` and ``sep_token_id`` (:class:`GlueDataModule` adapts tokenizers whose
            ``encode`` adds special tokens unless ``add_special_tokens=False``).
        max_seq_len: the most ids, special tokens included (at least ``len(texts) + 1``).

    Returns:
        The ids, and whether the text was truncated (see :func:`truncated_lengths`).
    """
    segments = [_encode_text(tokenizer, t) for t in texts]
    budget = max_seq_len - len(segments) - 1  # one [CLS] plus one [SEP] per segment
    if budget < 0:
        raise ValueError(f"max_seq_len: expected at least {len(segments) + 1} for {len(segments)} segment(s), "
                         f"got {max_seq_len}")
    full = tuple(len(s) for s in segments)
    keep = truncated_lengths(full, budget)
    ids = [tokenizer.cls_token_id]
    for segment, n in zip(segments, keep):
        ids += segment[:n]
        ids.append(tokenizer.sep_token_id)
    return ids, keep != full


class _TextOnly:
    """A tokenizer whose ``encode`` takes ``add_special_tokens`` (as :class:`ByteTokenizer` and transformers'),
    seen as ``encode(text) -> ids of the text alone``; a plain class, so it pickles into DataLoader workers."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cls_token_id, self.sep_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad_token_id = tokenizer.pad_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))


def _check_tokenizer(tokenizer: object) -> Any:
    """The encoder the datasets use: ``ByteTokenizer()`` for ``"bytes"``; otherwise the duck-typed tokenizer,
    checked, and wrapped in :class:`_TextOnly` if its ``encode`` takes ``add_special_tokens``."""
    if isinstance(tokenizer, str):
        if tokenizer != "bytes":
            raise ValueError(f"tokenizer: expected 'bytes' or a tokenizer object, got {tokenizer!r}")
        return ByteTokenizer()
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer
    missing = [] if callable(getattr(tokenizer, "encode", None)) else ["encode"]
    missing += [a for a in ("cls_token_id", "sep_token_id", "pad_token_id")
                if not isinstance(getattr(tokenizer, a, None), int)]
    if missing:
        raise TypeError(f"tokenizer: expected 'bytes' or an object with encode(text) -> list[int] and int "
                        f"cls_token_id, sep_token_id, pad_token_id; {type(tokenizer).__name__} lacks {missing}")
    try:
        takes_flag = "add_special_tokens" in inspect.signature(tokenizer.encode).parameters
    except (TypeError, ValueError):  # no signature (some C extensions): assume encode(text) alone
        takes_flag = False
    if takes_flag:
        tokenizer = _TextOnly(tokenizer)
    probe = list(tokenizer.encode("a b"))
    if len(probe) >= 2 and probe[0] == tokenizer.cls_token_id and probe[-1] == tokenizer.sep_token_id:
        # The data module adds [CLS]/[SEP] itself; a tokenizer that adds them too would double them.
        raise ValueError(f"tokenizer: encode(text) must return the ids of the text alone, but "
                         f"encode('a b') = {probe} starts with cls_token_id and ends with sep_token_id")
    return tokenizer


class GlueTruncationWarning(UserWarning):
    """Some examples were longer than ``max_seq_len`` and were truncated (longer segment first)."""


class GlueDataset(Dataset):
    """One split of one GLUE task; examples are encoded when accessed.

    An item is a dict: ``input_ids`` (int64 ``[L]``, ``L <= max_seq_len``, no padding), ``labels`` (int64 scalar,
    float32 for STS-B; -1 on test splits), ``idx`` (GLUE's example index, int64) and ``task_ids`` (int64 scalar,
    ``task_id``).

    Truncation is checked when the dataset is built for the byte tokenizer (exact and cheap: a text's UTF-8 length
    bounds its id count, so only candidates are encoded): one :class:`GlueTruncationWarning` with the count, or a
    ``ValueError`` when ``truncation=False``. Other tokenizers are checked per item (encoding a whole split up
    front would be slow): the first truncated item warns, once per dataset and process.

    Args:
        task: Hub config name.
        split: split name (only for messages and for the test-label rule).
        columns: the text columns, one list of str per segment, all of length N.
        labels: ``[N]`` labels; -1 allowed only on test splits.
        idx: ``[N]`` GLUE example indices.
        tokenizer: a :class:`ByteTokenizer` or a duck-typed tokenizer (see :func:`encode_glue_example`).
        max_seq_len: the most ids per example.
        truncation: cut long examples (True) or raise (False).
        task_id: the value of ``task_ids`` (index into the data module's task list).
    """

    def __init__(self, task: str, split: str, columns: Sequence[Sequence[str]], labels: np.ndarray, idx: np.ndarray,
                 tokenizer: Any, max_seq_len: int, truncation: bool = True, task_id: int = 0) -> None:
        spec = GLUE_TASKS[task]
        n = len(labels)
        if len(columns) != len(spec.text_columns) or any(len(c) != n for c in columns) or len(idx) != n:
            raise ValueError(f"columns: expected {len(spec.text_columns)} text column(s) of {n} rows (as labels), "
                             f"got lengths {[len(c) for c in columns]} and {len(idx)} indices")
        self.task, self.split, self.task_id = task, split, task_id
        self.columns = [list(c) for c in columns]
        self.labels = np.asarray(labels, dtype=np.float32 if spec.is_regression else np.int64)
        self.idx = np.asarray(idx, dtype=np.int64)
        self.tokenizer, self.max_seq_len, self.truncation = tokenizer, max_seq_len, truncation
        self._check_labels(spec)
        self._warned = False
        self.num_truncated: int | None = None
        """Examples longer than ``max_seq_len`` (None: not counted up front, for a non-byte tokenizer)."""
        if isinstance(tokenizer, ByteTokenizer):
            self.num_truncated = self._count_truncated()
            if self.num_truncated:
                self._on_truncation(f"{self.num_truncated} of {n} examples")

    def _check_labels(self, spec: GlueTask) -> None:
        if self.split in spec.test_splits:
            return  # GLUE hides test labels (-1); they are never read as targets
        where = f"{self.task} {self.split}"
        if spec.is_regression:
            bad = ~np.isfinite(self.labels) | (self.labels < 0) | (self.labels > 5)
            expected = "similarity scores in [0, 5]"
        else:
            bad = (self.labels < 0) | (self.labels >= spec.num_labels)
            expected = f"class ids in [0, {spec.num_labels})"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"labels: {where} expected {expected}, got {self.labels[i]} at row {i} "
                             "(-1 marks unlabelled test examples, which only test splits may hold)")

    def _count_truncated(self) -> int:
        budget = self.max_seq_len - len(self.columns) - 1
        count = 0
        for texts in zip(*self.columns):  # a loop over examples, not bytes
            if sum(len(t.encode("utf-8")) for t in texts) > budget:  # upper bound: encode only candidates
                count += encode_glue_example(texts, self.tokenizer, self.max_seq_len)[1]
        return count

    def _on_truncation(self, what: str) -> None:
        message = (f"{self.task} {self.split}: {what} exceed max_seq_len={self.max_seq_len} "
                   f"([CLS] A [SEP]{' B [SEP]' if len(self.columns) == 2 else ''} included)")
        if not self.truncation:
            raise ValueError(f"{message}; pass truncation=True to cut them (longer segment first) "
                             "or raise max_seq_len")
        if not self._warned:
            self._warned = True
            warnings.warn(f"{message}; they are truncated, longer segment first", GlueTruncationWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        texts = tuple(c[i] for c in self.columns)
        ids, truncated = encode_glue_example(texts, self.tokenizer, self.max_seq_len)
        if truncated and self.num_truncated is None:
            self._on_truncation(f"example {i} (idx {int(self.idx[i])}) and possibly others")
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(self.labels[i]),
            "idx": torch.tensor(self.idx[i]),
            "task_ids": torch.tensor(self.task_id, dtype=torch.long),
        }


class GlueCollate:
    """DataLoader ``collate_fn``: pads :class:`GlueDataset` items into a batch dict.

    Returns ``input_ids [B, L]`` (int64, right-padded with ``pad_token_id``), ``attention_mask [B, L]`` (int64, 1
    on ids, 0 on padding), ``labels [B]`` (int64, float32 for STS-B), ``idx [B]`` and, if ``with_task_ids``,
    ``task_ids [B]``. ``L`` is the longest item of the batch, or ``pad_to`` when given (fixed shapes).
    """

    def __init__(self, pad_token_id: int, pad_to: int | None = None, with_task_ids: bool = False) -> None:
        self.pad_token_id, self.pad_to, self.with_task_ids = pad_token_id, pad_to, with_task_ids

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(it["input_ids"]) for it in items])
        width = int(lengths.max()) if self.pad_to is None else self.pad_to
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        for b, it in enumerate(items):  # a loop over rows, not tokens
            input_ids[b, : len(it["input_ids"])] = it["input_ids"]
        batch = {
            "input_ids": input_ids,
            "attention_mask": (torch.arange(width) < lengths[:, None]).long(),
            "labels": torch.stack([it["labels"] for it in items]),
            "idx": torch.stack([it["idx"] for it in items]),
        }
        if self.with_task_ids:
            batch["task_ids"] = torch.stack([it["task_ids"] for it in items])
        return batch


# ---------------------------------------------------------------------------------------------------- sampling


class TaskSampler(Sampler[list[int]]):
    """Batch sampler for multi-task training: every batch holds examples of ONE task.

    The tasks' datasets are concatenated (``ConcatDataset`` order); the sampler yields lists of indices into the
    concatenation. For each batch a task is drawn with probability ``size ** alpha / sum(sizes ** alpha)``:
    ``alpha=1`` is proportional to dataset size (every training example equally likely, as the paper's
    multi-task GLUE), ``alpha=0`` uniform over tasks, ``0 < alpha < 1`` tempered towards uniform (small tasks
    seen more often than their share). Within a task, examples come in a fresh random order, one pass after
    another (a task drawn more often than its size allows starts a new pass; a task smaller than ``batch_size``
    repeats examples inside a batch), so every batch has exactly ``batch_size`` examples.

    Everything is drawn from ``numpy.random.default_rng([seed, epoch])``: the same seed and epoch give the same
    batches. :meth:`set_epoch` (called by Lightning each epoch) changes the order between epochs. Under data
    parallelism each of ``num_replicas`` processes draws the same global sequence and keeps batches
    ``rank, rank + num_replicas, ...``.

    Args:
        sizes: examples per task (all positive).
        batch_size: examples per batch.
        alpha: temperature exponent, >= 0.
        num_batches: batches per epoch and process; default ``sum(sizes) // (batch_size * num_replicas)``
            (at least 1), i.e. one epoch sees about as many examples as all training sets hold.
        seed: non-negative int.
        rank, num_replicas: this process and the number of processes.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, alpha: float = 1.0, num_batches: int | None = None,
                 seed: int = 0, rank: int = 0, num_replicas: int = 1) -> None:
        if not sizes:
            raise ValueError("sizes: expected examples per task for at least one task, got []")
        for i, s in enumerate(sizes):
            check_positive(f"sizes[{i}]", s)
        check_positive("batch_size", batch_size)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha: expected a finite number >= 0, got {alpha!r}")
        check_positive("seed", seed, allow_zero=True)
        check_positive("num_replicas", num_replicas)
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected an int in [0, {num_replicas}), got {rank!r}")
        if num_batches is None:
            num_batches = max(1, sum(sizes) // (batch_size * num_replicas))
        check_positive("num_batches", num_batches)
        self.sizes, self.batch_size, self.alpha = [int(s) for s in sizes], batch_size, float(alpha)
        self.num_batches, self.seed, self.rank, self.num_replicas = num_batches, seed, rank, num_replicas
        self.offsets = np.concatenate(([0], np.cumsum(self.sizes)[:-1]))
        self.epoch = 0

    @property
    def probabilities(self) -> np.ndarray:
        """``[T]`` probability of drawing each task for a batch."""
        weights = np.asarray(self.sizes, dtype=np.float64) ** self.alpha
        return weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of ``epoch`` (Lightning calls this at the start of every training epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_batches * self.num_replicas
        tasks = rng.choice(len(self.sizes), size=total, p=self.probabilities)
        # Per task: the queue of its not yet used local indices, refilled with a new permutation when short.
        queues: list[np.ndarray] = [np.empty(0, dtype=np.int64) for _ in self.sizes]
        for k, t in enumerate(tasks):
            while len(queues[t]) < self.batch_size:
                queues[t] = np.concatenate((queues[t], rng.permutation(self.sizes[t])))
            local, queues[t] = queues[t][: self.batch_size], queues[t][self.batch_size:]
            if k % self.num_replicas == self.rank:
                yield (local + self.offsets[t]).tolist()


# ---------------------------------------------------------------------------------------------------- data module


class GlueDataModule(pl.LightningDataModule):
    """GLUE fine-tuning data, one task or several (multi-task with per-task queries, as in the paper).

    Batches are dicts: ``input_ids [B, L]`` and ``attention_mask [B, L]`` (int64; see :class:`GlueCollate`),
    ``labels [B]`` (int64, float32 for STS-B), ``idx [B]`` (GLUE's example index, for test submissions) and, in
    multi-task mode, ``task_ids [B]`` (index into :attr:`tasks`).

    * Training, one task: its train split, shuffled (order fixed by ``seed`` for a fresh DataLoader).
    * Training, multi-task (``task`` a list or ``"all"``, even a list of one): all train splits, batched by
      :class:`TaskSampler` (one task per batch, task drawn with probability ``size ** alpha``).
    * Validation: a list of DataLoaders, one per ``(task, split)`` of :attr:`val_sets`, each the task's full
      validation split in a fixed order (MNLI gives two, matched and mismatched). Separate loaders keep every
      batch single-task and make ``dataloader_idx`` name the set: ``task, split = dm.val_sets[dataloader_idx]``.
    * Predict: likewise one DataLoader per :attr:`test_sets` entry (labels -1: GLUE's test labels are hidden).
      There is no ``test_dataloader``: score on validation, submit predictions of the test splits.

    Under DDP the training loaders shard by rank themselves (one task: a ``DistributedSampler`` seeded with
    ``seed``; multi-task: :class:`TaskSampler`). Multi-task training needs ``Trainer(use_distributed_sampler=False)``,
    as Lightning cannot rebuild a custom batch sampler around its own sampler; the evaluation loaders are then not
    sharded (every process scores the full sets: the synced metrics are unchanged, only slower), while with the
    default ``use_distributed_sampler=True`` (single task) Lightning shards them.

    Args:
        task: a GLUE task (``"cola"``, ``"sst2"``, ``"mrpc"``, ``"qqp"``, ``"stsb"``, ``"mnli"``, ``"qnli"``,
            ``"rte"``; case-insensitive, paper spellings such as ``"SST-2"`` accepted), a list of them, or ``"all"``.
        path: ``datasets.load_dataset`` path: the Hub id ``"nyu-mll/glue"`` or a local folder with its layout.
        max_seq_len: the most ids per example, special tokens included (the paper: 2,048 bytes).
        batch_size: examples per batch.
        num_workers: DataLoader worker processes.
        max_train_examples: if set, each task trains on a random subset of at most this many examples (drawn with
            ``seed``, kept in file order); validation and test are never cut.
        tokenizer: ``"bytes"`` (:class:`ByteTokenizer` ids) or a tokenizer object (see the module docstring).
        truncation: cut examples longer than ``max_seq_len`` (warning once per split) or raise (False).
        padding: ``"longest"`` pads each batch to its longest example; ``"max_length"`` to ``max_seq_len``.
        alpha: :class:`TaskSampler` temperature (multi-task only).
        num_train_batches: batches per multi-task epoch (default: :class:`TaskSampler`'s).
        seed: seeds the training order, the task draws and the ``max_train_examples`` subset.
        cache_dir: the ``datasets`` cache folder (default: its own default).
    """

    def __init__(
        self,
        task: str | Sequence[str] = "all",
        path: str = "nyu-mll/glue",
        max_seq_len: int = 2048,
        batch_size: int = 32,
        num_workers: int = 0,
        max_train_examples: int | None = None,
        tokenizer: str | Any = "bytes",
        truncation: bool = True,
        padding: Padding = "longest",
        alpha: float = 1.0,
        num_train_batches: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.tasks: tuple[str, ...] = resolve_glue_tasks(task)
        self.multi_task: bool = not isinstance(task, str) or task.lower() == "all"
        if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len < 5:
            raise ValueError(f"max_seq_len: expected an int >= 5 (room for [CLS] A [SEP] B [SEP] with one id of "
                             f"each segment), got {max_seq_len!r}")
        check_positive("batch_size", batch_size)
        check_positive("num_workers", num_workers, allow_zero=True)
        if max_train_examples is not None:
            check_positive("max_train_examples", max_train_examples)
        if not isinstance(truncation, bool):
            raise TypeError(f"truncation: expected a bool, got {type(truncation).__name__}")
        check_choice("padding", padding, ("longest", "max_length"))
        check_positive("seed", seed, allow_zero=True)
        self._encoder = _check_tokenizer(tokenizer)
        self.tokenizer: Any = self._encoder if isinstance(tokenizer, str) else tokenizer
        """The tokenizer (a :class:`ByteTokenizer` for ``"bytes"``)."""
        TaskSampler([1], 1, alpha=alpha, num_batches=num_train_batches)  # validates alpha and num_train_batches
        self.save_hyperparameters(ignore=None if isinstance(tokenizer, str) else ["tokenizer"])
        self.path, self.max_seq_len, self.batch_size, self.num_workers = path, max_seq_len, batch_size, num_workers
        self.max_train_examples, self.truncation, self.padding = max_train_examples, truncation, padding
        self.alpha, self.num_train_batches, self.seed, self.cache_dir = alpha, num_train_batches, seed, cache_dir
        self.task_specs: tuple[GlueTask, ...] = tuple(GLUE_TASKS[t] for t in self.tasks)
        self.val_sets: list[tuple[str, str]] = [(s.name, v) for s in self.task_specs for v in s.validation_splits]
        """``(task, split)`` of each validation DataLoader, in order (``dataloader_idx`` indexes this list)."""
        self.test_sets: list[tuple[str, str]] = [(s.name, v) for s in self.task_specs for v in s.test_splits]
        """``(task, split)`` of each predict DataLoader, in order."""
        self._raw: dict[str, Any] = {}
        self.datasets: dict[tuple[str, str], GlueDataset] = {}

    @property
    def num_labels(self) -> dict[str, int]:
        """Outputs per task (1 for STS-B)."""
        return {s.name: s.num_labels for s in self.task_specs}

    @property
    def vocab_size(self) -> int | None:
        """The tokenizer's vocabulary size (262 for bytes), if it has one."""
        return getattr(self.tokenizer, "vocab_size", None)

    def prepare_data(self) -> None:
        """Download every task into the ``datasets`` cache (rank 0 only, under Lightning)."""
        for task in self.tasks:
            load_glue(task, self.path, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load the tasks and build the splits ``stage`` needs: ``"fit"`` (and ``None``) train and validation,
        ``"validate"`` (and ``"test"``) validation, ``"predict"`` test. Idempotent; other splits build on first use."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "predict": ("test",)}.get(stage or "fit", ("val",))
        for spec in self.task_specs:
            splits = {"train": ("train",), "val": spec.validation_splits, "test": spec.test_splits}
            for split in (s for part in wanted for s in splits[part]):
                self.dataset(spec.name, split)

    def dataset(self, task: str, split: str) -> GlueDataset:
        """The :class:`GlueDataset` of one task's split, built on first use."""
        key = (task, split)
        if key in self.datasets:
            return self.datasets[key]
        if task not in self._raw:
            self._raw[task] = load_glue(task, self.path, self.cache_dir)
        raw = self._raw[task]
        if split not in raw:
            raise ValueError(f"split: {self.path!r} task {task!r} has no {split!r} split; got {sorted(raw)}")
        spec = GLUE_TASKS[task]
        table = raw[split].with_format("arrow")[:]  # one Arrow read, not one Python dict per row
        columns = [table.column(c).to_pylist() for c in spec.text_columns]
        labels = table.column("label").to_numpy(zero_copy_only=False)
        idx = table.column("idx").to_numpy(zero_copy_only=False)
        if split == "train" and self.max_train_examples is not None and len(labels) > self.max_train_examples:
            # Seeded by the task's place in GLUE_TASKS, so a task gets the same subset whatever else is trained.
            rng = np.random.default_rng([self.seed, list(GLUE_TASKS).index(task)])
            keep = np.sort(rng.choice(len(labels), size=self.max_train_examples, replace=False))
            columns = [[c[i] for i in keep] for c in columns]
            labels, idx = labels[keep], idx[keep]
        self.datasets[key] = GlueDataset(task, split, columns, labels, idx, self._encoder, self.max_seq_len,
                                         self.truncation, task_id=self.tasks.index(task))
        return self.datasets[key]

    def _collate(self) -> GlueCollate:
        pad_to = self.max_seq_len if self.padding == "max_length" else None
        return GlueCollate(self._encoder.pad_token_id, pad_to=pad_to, with_task_ids=self.multi_task)

    def _eval_loader(self, task: str, split: str) -> DataLoader:
        return DataLoader(self.dataset(task, split), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=self._collate())

    def train_dataloader(self) -> DataLoader:
        """Training batches: one task shuffled, or :class:`TaskSampler` batches over all tasks."""
        common: dict[str, Any] = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                                  "collate_fn": self._collate()}
        trainer = self.trainer
        rank, replicas = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if not self.multi_task:
            data = self.dataset(self.tasks[0], "train")
            if replicas > 1:  # shard here, so that use_distributed_sampler=False (needed multi-task) works too
                shard = DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=True, seed=self.seed)
                return DataLoader(data, batch_size=self.batch_size, sampler=shard, **common)
            generator = torch.Generator().manual_seed(self.seed)
            return DataLoader(data, batch_size=self.batch_size, shuffle=True, generator=generator, **common)
        parts = [self.dataset(t, "train") for t in self.tasks]
        sampler = TaskSampler([len(p) for p in parts], self.batch_size, alpha=self.alpha,
                              num_batches=self.num_train_batches, seed=self.seed, rank=rank, num_replicas=replicas)
        return DataLoader(ConcatDataset(parts), batch_sampler=sampler, **common)

    def val_dataloader(self) -> list[DataLoader]:
        """One DataLoader per :attr:`val_sets` entry: that task's full validation split, in file order."""
        return [self._eval_loader(t, s) for t, s in self.val_sets]

    def predict_dataloader(self) -> list[DataLoader]:
        """One DataLoader per :attr:`test_sets` entry (labels -1), in file order."""
        return [self._eval_loader(t, s) for t, s in self.test_sets]
