"""GLUE data (perceiver_io.data.glue) and metrics (perceiver_io.glue_metrics), offline on a local nyu-mll/glue copy."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from glue_fixtures import TEST_ROWS, TRAIN_ROWS, VALIDATION_ROWS, write_glue_fixture

from perceiver_io.data.glue import (
    GLUE_TASKS,
    GlueCollate,
    GlueDataModule,
    GlueTruncationWarning,
    TaskSampler,
    encode_glue_example,
    load_glue,
    resolve_glue_tasks,
    truncated_lengths,
)
from perceiver_io.glue_metrics import (
    TABLE_COLUMNS,
    GlueMetrics,
    format_glue_table,
    glue_metric,
    glue_scores,
    metric_keys,
)
from perceiver_io.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_glue_fixture(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("hf_cache"))


def make_dm(glue_dir: Path, cache_dir: str, task="all", **kwargs) -> GlueDataModule:
    kwargs.setdefault("batch_size", 4)
    return GlueDataModule(task, path=str(glue_dir), cache_dir=cache_dir, **kwargs)


def parquet_rows(glue_dir: Path, task: str, split: str) -> dict[str, list]:
    return pq.read_table(glue_dir / task / f"{split}-00000-of-00001.parquet").to_pydict()


def byte_ids(text: str) -> list[int]:
    return [b + 6 for b in text.encode("utf-8")]


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("task", list(GLUE_TASKS))
def test_every_task_loads_through_load_dataset(task, glue_dir, cache_dir, monkeypatch):
    import datasets

    calls = []
    real = datasets.load_dataset

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    data = load_glue(task, path=str(glue_dir), cache_dir=cache_dir)
    assert calls == [((str(glue_dir), task), {"cache_dir": cache_dir})]  # the Hub call, with a local path
    spec = GLUE_TASKS[task]
    assert sorted(data) == sorted(["train", *spec.validation_splits, *spec.test_splits])
    assert data["train"].column_names == [*spec.text_columns, "label", "idx"]
    assert len(data["train"]) == TRAIN_ROWS[task]
    if not spec.is_regression:  # the README's dataset_info gives the Hub's ClassLabel names
        assert tuple(data["train"].features["label"].names) == spec.label_names
    for split in spec.test_splits:
        assert set(data[split]["label"]) == {-1}


def test_default_path_is_the_hub_repository(glue_dir, cache_dir, monkeypatch):
    import datasets

    seen = []
    real = datasets.load_dataset

    def offline(path, name, **kwargs):  # answer the Hub id from the local copy: nothing is downloaded
        seen.append(path)
        return real(str(glue_dir), name, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", offline)
    dm = GlueDataModule("rte", cache_dir=cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    assert seen == ["nyu-mll/glue", "nyu-mll/glue"] and len(dm.dataset("rte", "train")) == TRAIN_ROWS["rte"]


def test_unknown_task_lists_known_tasks(glue_dir, cache_dir):
    with pytest.raises(ValueError) as err:
        make_dm(glue_dir, cache_dir, "boolq")
    message = str(err.value)
    assert "task" in message and "'boolq'" in message and all(t in message for t in GLUE_TASKS)
    with pytest.raises(ValueError, match="WNLI is excluded"):
        resolve_glue_tasks(["cola", "wnli"])
    with pytest.raises(ValueError, match="listed twice"):
        resolve_glue_tasks(["cola", "CoLA"])
    assert resolve_glue_tasks(["SST-2", "STS-B", "MNLI"]) == ("sst2", "stsb", "mnli")
    assert resolve_glue_tasks("all") == tuple(GLUE_TASKS) and len(GLUE_TASKS) == 8


def test_task_table():
    assert GLUE_TASKS["mnli"].validation_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["qqp"].text_columns == ("question1", "question2")
    assert GLUE_TASKS["stsb"].num_labels == 1 and GLUE_TASKS["stsb"].metrics == ("pearson", "spearman")
    assert GLUE_TASKS["cola"].metrics == ("matthews_corr",) and not GLUE_TASKS["cola"].is_pair
    assert set(GLUE_TASKS["mrpc"].metrics) == set(GLUE_TASKS["qqp"].metrics) == {"accuracy", "f1"}
    assert GLUE_TASKS["mnli"].num_labels == 3


# ------------------------------------------------------------------------------------------------ encoding


def test_single_and_pair_layout_exact():
    ids, cut = encode_glue_example(("héllo",), TOK, 64)
    assert ids == [4, *byte_ids("héllo"), 5] and not cut
    ids, cut = encode_glue_example(("ab", "日本"), TOK, 64)
    assert ids == [4, 6 + 97, 6 + 98, 5, *byte_ids("日本"), 5] and not cut
    assert encode_glue_example(("", ""), TOK, 64)[0] == [4, 5, 5]


def test_dataset_rows_are_encoded_exactly(glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, ["cola", "rte"])
    cola, rte = parquet_rows(glue_dir, "cola", "validation"), parquet_rows(glue_dir, "rte", "validation")
    batch = next(iter(dm.val_dataloader()[1]))  # rte
    for b in range(4):
        want = [4, *byte_ids(rte["sentence1"][b]), 5, *byte_ids(rte["sentence2"][b]), 5]
        n = int(batch["attention_mask"][b].sum())
        assert batch["input_ids"][b, :n].tolist() == want
        assert (batch["input_ids"][b, n:] == 0).all()
    assert batch["labels"].tolist() == rte["label"][:4] and batch["idx"].tolist() == rte["idx"][:4]
    assert (batch["task_ids"] == 1).all()
    item = dm.dataset("cola", "validation")[2]
    assert item["input_ids"].tolist() == [4, *byte_ids(cola["sentence"][2]), 5]


def _longest_first(a: int, b: int, budget: int) -> tuple[int, int]:
    """transformers' truncation="longest_first", one id at a time."""
    while a + b > budget:
        if a > b:
            a -= 1
        else:
            b -= 1
    return a, b


def test_truncated_lengths_match_longest_first():
    for a in range(12):
        for b in range(12):
            for budget in range(15):
                assert truncated_lengths((a, b), budget) == _longest_first(a, b, budget), (a, b, budget)
    assert truncated_lengths((10,), 4) == (4,) and truncated_lengths((3,), 4) == (3,)


def test_pair_truncation_cuts_the_longer_segment_first():
    a, b = "abcdefghij", "xyz"  # 10 + 3 bytes, room for 8 with [CLS] [SEP] [SEP] in 11
    ids, cut = encode_glue_example((a, b), TOK, 11)
    assert cut and ids == [4, *byte_ids("abcde"), 5, *byte_ids("xyz"), 5]
    ids, cut = encode_glue_example((b, a), TOK, 11)
    assert cut and ids == [4, *byte_ids("xyz"), 5, *byte_ids("abcde"), 5]
    ids, _ = encode_glue_example((a, "uvwxyz"), TOK, 9)  # both cut: 3 + 3
    assert ids == [4, *byte_ids("abc"), 5, *byte_ids("uvw"), 5]
    ids, cut = encode_glue_example(("abcdef",), TOK, 5)
    assert cut and ids == [4, *byte_ids("abc"), 5]
    with pytest.raises(ValueError, match="max_seq_len"):
        encode_glue_example(("a", "b"), TOK, 2)


def test_truncation_warns_once_per_split_or_raises(glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, "mrpc", max_seq_len=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dm.dataset("mrpc", "train")
        batches = list(dm.train_dataloader())
    truncation = [w for w in caught if issubclass(w.category, GlueTruncationWarning)]
    assert len(truncation) == 1 and "mrpc train" in str(truncation[0].message)
    assert ds.num_truncated == TRAIN_ROWS["mrpc"]  # every fixture pair is longer than 17 bytes
    assert all(b["input_ids"].shape[1] == 20 and (b["input_ids"][:, -1] == 5).all() for b in batches)
    with pytest.raises(ValueError, match=r"max_seq_len=20.*truncation=True"):
        make_dm(glue_dir, cache_dir, "mrpc", max_seq_len=20, truncation=False).setup("fit")
    with pytest.raises(ValueError, match="max_seq_len"):
        make_dm(glue_dir, cache_dir, "mrpc", max_seq_len=4)


class WordTokenizer:
    """A duck-typed token tokenizer: one id per word (3 + its length)."""

    pad_token_id, cls_token_id, sep_token_id, vocab_size = 0, 1, 2, 40

    def encode(self, text: str) -> list[int]:
        return [3 + min(len(w), 30) for w in text.split()]


def test_token_tokenizer_duck_typed(glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, "qnli", tokenizer=WordTokenizer(), padding="max_length", max_seq_len=64)
    rows = parquet_rows(glue_dir, "qnli", "validation")
    batch = next(iter(dm.val_dataloader()[0]))
    want = [1, *WordTokenizer().encode(rows["question"][0]), 2, *WordTokenizer().encode(rows["sentence"][0]), 2]
    assert batch["input_ids"].shape == (4, 64) and batch["input_ids"][0, : len(want)].tolist() == want
    assert dm.vocab_size == 40 and make_dm(glue_dir, cache_dir, "qnli").vocab_size == 262

    short = make_dm(glue_dir, cache_dir, "qnli", tokenizer=WordTokenizer(), max_seq_len=6)
    ds = short.dataset("qnli", "validation")
    assert ds.num_truncated is None  # not counted up front for a non-byte tokenizer
    with pytest.warns(GlueTruncationWarning) as record:
        items = [ds[i] for i in range(len(ds))]
    assert len(record) == 1 and all(len(it["input_ids"]) <= 6 for it in items)
    strict = make_dm(glue_dir, cache_dir, "qnli", tokenizer=WordTokenizer(), max_seq_len=6, truncation=False)
    with pytest.raises(ValueError, match="truncation=True"):
        strict.dataset("qnli", "validation")[0]

    class Flagged(WordTokenizer):  # adds [CLS]/[SEP] unless told not to, like ByteTokenizer and transformers
        def encode(self, text, *, add_special_tokens=True):
            ids = super().encode(text)
            return [1, *ids, 2] if add_special_tokens else ids

    flagged = make_dm(glue_dir, cache_dir, "qnli", tokenizer=Flagged(), max_seq_len=64)
    assert flagged.tokenizer.__class__ is Flagged
    assert flagged.dataset("qnli", "validation")[0]["input_ids"].tolist() == want  # specials not doubled

    class Wrapping(WordTokenizer):
        def encode(self, text):
            return [1, *super().encode(text), 2]

    with pytest.raises(ValueError, match="ids of the text alone"):
        make_dm(glue_dir, cache_dir, "qnli", tokenizer=Wrapping())
    with pytest.raises(TypeError, match="sep_token_id"):
        make_dm(glue_dir, cache_dir, "qnli", tokenizer=type("T", (), {"encode": len, "cls_token_id": 1,
                                                                      "pad_token_id": 0})())


def test_padding_and_attention_mask():
    items = [{"input_ids": torch.tensor(ids), "labels": torch.tensor(1), "idx": torch.tensor(i),
              "task_ids": torch.tensor(2)} for i, ids in enumerate([[4, 7, 5], [4, 5], [4, 8, 9, 10, 5]])]
    batch = GlueCollate(pad_token_id=0)(items)
    assert batch["input_ids"].tolist() == [[4, 7, 5, 0, 0], [4, 5, 0, 0, 0], [4, 8, 9, 10, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long and "task_ids" not in batch
    fixed = GlueCollate(pad_token_id=9, pad_to=8, with_task_ids=True)(items)
    assert fixed["input_ids"].shape == (3, 8) and fixed["input_ids"][1, 2:].tolist() == [9] * 6
    assert fixed["attention_mask"].sum(1).tolist() == [3, 2, 5] and fixed["task_ids"].tolist() == [2, 2, 2]


# ------------------------------------------------------------------------------------------------ data module


@pytest.mark.parametrize("task", list(GLUE_TASKS))
def test_single_task_batches(task, glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, task, batch_size=3)
    dm.setup("fit")
    spec = GLUE_TASKS[task]
    train = list(dm.train_dataloader())
    assert sum(len(b["labels"]) for b in train) == TRAIN_ROWS[task]
    dtype = torch.float32 if spec.is_regression else torch.int64
    for b in train:
        assert "task_ids" not in b and b["labels"].dtype == dtype
        assert b["input_ids"].shape == b["attention_mask"].shape and b["input_ids"].shape[0] == len(b["labels"])
    assert sorted(int(i) for b in train for i in b["idx"]) == list(range(TRAIN_ROWS[task]))
    assert dm.val_sets == [(task, s) for s in spec.validation_splits]
    val = dm.val_dataloader()
    assert len(val) == len(spec.validation_splits)
    for loader, (_, split) in zip(val, dm.val_sets):
        labels = torch.cat([b["labels"] for b in loader])
        want = parquet_rows(glue_dir, task, split)["label"]
        assert labels.dtype == dtype and labels.tolist() == pytest.approx(want)
    assert dm.num_labels == {task: spec.num_labels}


def test_stsb_labels_are_float_scores(glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, "STS-B", batch_size=100)
    batch = next(iter(dm.val_dataloader()[0]))
    want = parquet_rows(glue_dir, "stsb", "validation")["label"]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == pytest.approx(want)
    assert (batch["labels"] >= 0).all() and (batch["labels"] <= 5).all() and dm.num_labels == {"stsb": 1}


def test_test_split_labels_are_minus_one_and_predict_only(glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, ["mnli", "stsb"])
    dm.setup("predict")
    assert dm.test_sets == [("mnli", "test_matched"), ("mnli", "test_mismatched"), ("stsb", "test")]
    loaders = dm.predict_dataloader()
    for loader in loaders:
        labels = torch.cat([b["labels"] for b in loader])
        assert len(labels) == TEST_ROWS and (labels == -1).all()
    with pytest.raises(ValueError, match="unlabelled test"):
        glue_metric("mnli", torch.zeros(TEST_ROWS, dtype=torch.long), labels.long())
    with pytest.raises(ValueError, match="test splits cannot be scored"):
        GlueMetrics("mnli").update("mnli", torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                                   split="test_matched")
    ds = dm.dataset("stsb", "validation")  # -1 outside test splits is rejected
    with pytest.raises(ValueError, match="labels: stsb validation"):
        type(ds)("stsb", "validation", ds.columns, np.full(len(ds), -1.0), ds.idx, TOK, 64)


def test_multi_task_loaders(glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, "all", batch_size=4, num_train_batches=60, seed=3)
    dm.setup("fit")
    seen = set()
    for b in dm.train_dataloader():
        ids = b["task_ids"]
        assert (ids == ids[0]).all() and len(ids) == 4  # one task per batch
        task = dm.tasks[int(ids[0])]
        seen.add(task)
        assert b["labels"].dtype == (torch.float32 if task == "stsb" else torch.int64)
    assert len(seen) >= 6
    val = dm.val_dataloader()
    assert len(val) == len(dm.val_sets) == 9
    for loader, (task, _) in zip(val, dm.val_sets):
        ids = torch.cat([b["task_ids"] for b in loader])
        assert len(ids) == VALIDATION_ROWS and (ids == dm.tasks.index(task)).all()
    one = make_dm(glue_dir, cache_dir, ["rte"])
    assert one.multi_task and "task_ids" in next(iter(one.train_dataloader()))


def test_max_train_examples(glue_dir, cache_dir):
    dm = make_dm(glue_dir, cache_dir, ["mnli", "rte"], max_train_examples=7, seed=1)
    mnli, rte = dm.dataset("mnli", "train"), dm.dataset("rte", "train")
    assert len(mnli) == 7 and len(rte) == TRAIN_ROWS["rte"]  # rte has only 6
    assert list(mnli.idx) == sorted(mnli.idx) and len(set(mnli.idx)) == 7
    again = make_dm(glue_dir, cache_dir, "mnli", max_train_examples=7, seed=1).dataset("mnli", "train")
    assert list(again.idx) == list(mnli.idx)  # same subset whatever else is trained
    assert len(dm.dataset("mnli", "validation_matched")) == VALIDATION_ROWS  # evaluation is never cut


# ------------------------------------------------------------------------------------------------ sampler


def test_task_sampler_one_task_per_batch_and_passes():
    sizes = [5, 12, 30]
    offsets = [0, 5, 17, 47]
    sampler = TaskSampler(sizes, batch_size=4, seed=0, num_batches=200)
    per_task: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for batch in sampler:
        assert len(batch) == 4
        tasks = {next(t for t in range(3) if offsets[t] <= i < offsets[t + 1]) for i in batch}
        assert len(tasks) == 1
        per_task[tasks.pop()].extend(batch)
    for t, stream in per_task.items():  # consecutive passes are permutations of the task
        n = sizes[t]
        for k in range(len(stream) // n):
            assert sorted(stream[k * n : (k + 1) * n]) == list(range(offsets[t], offsets[t + 1]))
    assert len(sampler) == 200 and len(TaskSampler(sizes, 4)) == sum(sizes) // 4


def _task_counts(sampler: TaskSampler, offsets: np.ndarray) -> np.ndarray:
    firsts = np.array([b[0] for b in sampler])
    return np.bincount(np.searchsorted(offsets, firsts, side="right") - 1, minlength=len(offsets))


def test_task_sampler_proportions_and_temperature():
    sizes = [100, 300, 600]
    offsets = np.array([0, 100, 400])
    n = 6000
    for alpha, want in ((1.0, [0.1, 0.3, 0.6]), (0.0, [1 / 3] * 3),
                        (0.5, np.sqrt(sizes) / np.sqrt(sizes).sum())):
        sampler = TaskSampler(sizes, batch_size=2, alpha=alpha, num_batches=n, seed=5)
        assert sampler.probabilities == pytest.approx(want)
        freq = _task_counts(sampler, offsets) / n
        assert freq == pytest.approx(want, abs=0.025)  # > 4 standard errors at n = 6000


def test_task_sampler_deterministic_epochs_and_ranks():
    sizes = [7, 9, 20]
    a = list(TaskSampler(sizes, 3, seed=11, num_batches=40))
    assert a == list(TaskSampler(sizes, 3, seed=11, num_batches=40))
    assert a != list(TaskSampler(sizes, 3, seed=12, num_batches=40))
    sampler = TaskSampler(sizes, 3, seed=11, num_batches=40)
    sampler.set_epoch(1)
    assert list(sampler) != a
    both = [list(TaskSampler(sizes, 3, seed=11, num_batches=20, rank=r, num_replicas=2)) for r in (0, 1)]
    assert [b for pair in zip(*both) for b in pair] == a  # ranks interleave the single-process sequence
    with pytest.raises(ValueError, match="alpha"):
        TaskSampler(sizes, 3, alpha=-1)
    with pytest.raises(ValueError, match=r"sizes\[1\]"):
        TaskSampler([3, 0], 3)


# ------------------------------------------------------------------------------------------------ metrics


def _confusion(tp: int, tn: int, fp: int, fn: int) -> tuple[torch.Tensor, torch.Tensor]:
    preds = [1] * tp + [0] * tn + [1] * fp + [0] * fn
    labels = [1] * tp + [0] * tn + [0] * fp + [1] * fn
    return torch.tensor(preds), torch.tensor(labels)


def test_matthews_f1_accuracy_by_hand():
    preds, labels = _confusion(tp=3, tn=4, fp=1, fn=2)
    mcc = (3 * 4 - 1 * 2) / math.sqrt((3 + 1) * (3 + 2) * (4 + 1) * (4 + 2))  # 10 / sqrt(600)
    assert glue_metric("cola", preds, labels) == {"matthews_corr": pytest.approx(mcc, abs=1e-6)}
    precision, recall = 3 / 4, 3 / 5
    f1 = 2 * precision * recall / (precision + recall)  # 2/3
    got = glue_metric("mrpc", preds, labels)
    assert got == {"accuracy": pytest.approx(0.7), "f1": pytest.approx(f1, abs=1e-6)}
    logits = torch.stack([1 - preds.float(), preds.float()], dim=1) * 3 - 1  # argmax == preds
    assert glue_metric("qqp", logits, labels) == got
    three = glue_metric("mnli", torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 1, 1, 2, 0]))
    assert three == {"accuracy": pytest.approx(3 / 5)}
    with pytest.raises(ValueError, match=r"preds: mnli expected logits \[5, 3\]"):
        glue_metric("mnli", torch.zeros(5, 2), torch.zeros(5, dtype=torch.long))


def _ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def test_pearson_spearman_by_hand():
    scores = [0.5, 2.0, 2.0, 3.5, 1.0, 4.8]
    labels = [0.0, 1.8, 2.6, 4.0, 1.0, 5.0]
    assert _ranks([1.0, 2.0, 2.0, 0.0]) == [2.0, 3.5, 3.5, 1.0]
    got = glue_metric("stsb", torch.tensor(scores)[:, None], torch.tensor(labels))
    assert got["pearson"] == pytest.approx(_pearson(scores, labels), abs=1e-5)
    assert got["spearman"] == pytest.approx(_pearson(_ranks(scores), _ranks(labels)), abs=1e-5)


def test_glue_metrics_accumulates_like_one_shot():
    torch.manual_seed(1)
    metrics = GlueMetrics(["cola", "mnli", "stsb"])
    cola_p, cola_y = torch.randint(0, 2, (40,)), torch.randint(0, 2, (40,))
    m_p, m_y = torch.randn(30, 3), torch.randint(0, 3, (30,))
    mm_p, mm_y = torch.randint(0, 3, (20,)), torch.randint(0, 3, (20,))
    s_p, s_y = torch.rand(25) * 5, torch.rand(25) * 5
    for chunk in range(4):
        sl = slice(chunk * 10, (chunk + 1) * 10)
        metrics.update("cola", cola_p[sl], cola_y[sl])
        metrics.update("mnli", m_p[sl], m_y[sl], split="validation_matched")
        metrics.update("mnli", mm_p[sl], mm_y[sl], split="validation_mismatched")
        metrics.update("stsb", s_p[sl], s_y[sl])
    got = metrics.compute()
    assert got["cola/matthews_corr"] == pytest.approx(glue_metric("cola", cola_p, cola_y)["matthews_corr"], abs=1e-6)
    assert got["mnli/accuracy_m"] == pytest.approx(glue_metric("mnli", m_p, m_y)["accuracy"])
    assert got["mnli/accuracy_mm"] == pytest.approx(glue_metric("mnli", mm_p, mm_y)["accuracy"])
    for name, value in glue_metric("stsb", s_p, s_y).items():
        assert got[f"stsb/{name}"] == pytest.approx(value, abs=1e-5)
    assert got["mnli/score"] == pytest.approx((got["mnli/accuracy_m"] + got["mnli/accuracy_mm"]) / 2)
    assert got["stsb/score"] == pytest.approx((got["stsb/pearson"] + got["stsb/spearman"]) / 2)
    assert "glue/average" not in got  # three tasks of eight
    with pytest.raises(ValueError, match="split: mnli has 2 validation sets"):
        metrics.update("mnli", m_p, m_y)
    with pytest.raises(ValueError, match="not tracked"):
        metrics.update("rte", cola_p, cola_y)
    metrics.reset()
    assert metrics.compute() == {}


def test_glue_average_all_tasks():
    metrics = GlueMetrics("all")
    perfect = torch.arange(6) % 2
    for task, split in [(t, s) for t in GLUE_TASKS for s in GLUE_TASKS[t].validation_splits]:
        if task == "stsb":
            metrics.update(task, torch.tensor([0.0, 1, 2, 3, 4, 5]), torch.tensor([0.0, 1, 2, 3, 4, 5]), split=split)
        elif task == "mnli" and split.endswith("mismatched"):
            metrics.update(task, torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 1, 1]), split=split)  # 0.5
        else:
            metrics.update(task, perfect, perfect, split=split)
    got = metrics.compute()
    assert set(metric_keys("mnli")) <= set(got) and got["mnli/score"] == pytest.approx(0.75)
    # seven perfect tasks and MNLI (1.0 + 0.5) / 2 counted once: (7 + 0.75) / 8
    assert got["glue/average"] == pytest.approx((7 + 0.75) / 8)


# The paper's Perceiver IO Base (SentencePiece) dev row: one number per column, Average 81.16.
PAPER_ROW = {"cola/matthews_corr": 0.4711, "mnli/accuracy_m": 0.8453, "mnli/accuracy_mm": 0.8503,
             "mrpc/accuracy": 0.8725, "qnli/accuracy": 0.9212, "qqp/accuracy": 0.9022, "rte/accuracy": 0.6523,
             "sst2/accuracy": 0.9438, "stsb/pearson": 0.8818}
ONE_METRIC = {"mrpc": ["accuracy"], "qqp": ["accuracy"], "stsb": ["pearson"]}


def test_glue_average_reproduces_the_paper_row():
    scores = glue_scores(PAPER_ROW, ONE_METRIC)
    assert round(100 * scores["average"], 2) == 81.16  # MNLI m/mm averaged first, then / 8
    assert "average" not in glue_scores(PAPER_ROW)  # MRPC, QQP, STS-B lack their second metric
    full = {**PAPER_ROW, "mrpc/f1": 0.9, "qqp/f1": 0.88, "stsb/spearman": 0.87}
    by_hand = (0.4711 + (0.8453 + 0.8503) / 2 + (0.8725 + 0.9) / 2 + 0.9212 + (0.9022 + 0.88) / 2 + 0.6523
               + 0.9438 + (0.8818 + 0.87) / 2) / 8
    assert glue_scores(full)["average"] == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="score_metrics: mrpc"):
        glue_scores(PAPER_ROW, {"mrpc": ["pearson"]})


def test_format_glue_table():
    text = format_glue_table(PAPER_ROW, name="Perceiver IO Base", score_metrics=ONE_METRIC)
    header, rule, row = text.splitlines()
    assert all(column in header for column in TABLE_COLUMNS) and set(rule) <= {"|", "-"}
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["Perceiver IO Base", "47.11", "84.53/85.03", "87.25", "92.12", "90.22", "65.23", "94.38",
                     "88.18", "81.16"]
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", *TABLE_COLUMNS]
    two = format_glue_table({"a": PAPER_ROW, "b": {"cola/matthews_corr": 0.5}})
    lines = two.splitlines()
    assert len(lines) == 4 and lines[3].split("|")[2].strip() == "50.00" and lines[3].rstrip("| ").endswith("-")


def test_training_loaders_shard_by_rank(glue_dir, cache_dir):
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    multi = make_dm(glue_dir, cache_dir, ["cola", "mnli"], num_train_batches=5, seed=2)
    full = [b["idx"].tolist() for b in multi.train_dataloader()]
    shards = []
    for rank in (0, 1):
        dm = make_dm(glue_dir, cache_dir, ["cola", "mnli"], num_train_batches=5, seed=2)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # what Lightning attaches under DDP
        loader = dm.train_dataloader()
        assert loader.batch_sampler.rank == rank and loader.batch_sampler.num_replicas == 2
        shards.append([b["idx"].tolist() for b in loader])
    assert len(shards[0]) == len(shards[1]) == 5 and shards[0] != shards[1]
    assert full != shards[0]  # 5 batches of a 10-batch global sequence, not the single-process 5
    single = make_dm(glue_dir, cache_dir, "cola")
    single.trainer = SimpleNamespace(global_rank=1, world_size=2)
    sampler = single.train_dataloader().sampler
    assert isinstance(sampler, DistributedSampler) and sampler.rank == 1 and len(sampler) == TRAIN_ROWS["cola"] // 2
