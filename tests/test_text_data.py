"""Masked language modelling data: whole-word masking, packing, the stdlib corpus, local text files and local
``datasets`` folders (offline), SentencePiece training, and the data module."""

from __future__ import annotations

import re

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")
pytest.importorskip("sentencepiece")

from perceiver_io.data.masking import (
    IGNORE_INDEX,
    byte_word_ids,
    mask_words,
    pack_documents,
    whole_word_mask,
    word_ids,
)
from perceiver_io.data.mlm import (
    EpochShuffleSampler,
    MaskedLanguageModelingDataModule,
    StreamingMaskedWindows,
)
from perceiver_io.data.sentencepiece_tokenizer import (
    SPECIAL_PIECES,
    SentencePieceTokenizer,
    train_sentencepiece,
)
from perceiver_io.data.text_corpus import (
    hash_split,
    iter_text,
    iter_text_files,
    stdlib_corpus,
)
from perceiver_io.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach the Hub: a Hub name fails at once instead of retrying a connection."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _byte_ids(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 6


@pytest.fixture(scope="module")
def byte_windows() -> np.ndarray:
    """[N, 512] packed windows of stdlib text with [SEP] separators and a padded last window (~140k bytes)."""
    docs = (_byte_ids(t) for t in stdlib_corpus("validation"))
    return np.stack([w["input_ids"] for w in pack_documents(docs, 512)])


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sp") / "small.model"
    return train_sentencepiece(stdlib_corpus("train")[:400], 320, path)


# ---------------------------------------------------------------------------------------------- masking


def _word_table(ids: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global word index per token (-1 outside words) and the number of words."""
    rows = np.arange(ids.shape[0])[:, None]
    keys = np.where(words >= 0, rows * (words.max() + 1) + words, -1)
    uniq, inv = np.unique(keys, return_inverse=True)
    inv = inv.reshape(ids.shape) - (1 if uniq[0] == -1 else 0)
    return np.where(words >= 0, inv, -1), int((uniq >= 0).sum())


def test_byte_whole_word_masking_statistics(byte_windows: np.ndarray) -> None:
    ids = np.concatenate([byte_windows] * 3)  # every row is masked independently: ~7k words selected
    masked, labels = mask_words(ids, generator=np.random.default_rng(0))
    assert masked.shape == labels.shape == ids.shape and masked.dtype == labels.dtype == np.int64
    selected = labels != IGNORE_INDEX
    real = ids >= 6
    # about 15 % of the non-special tokens (whitespace bytes count, special ids and padding do not)
    assert abs(selected.sum() / real.sum() - 0.15) < 0.005
    # labels: the original id exactly at the selected positions; nothing changes elsewhere
    np.testing.assert_array_equal(labels[selected], ids[selected])
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    # never special tokens, padding ([PAD] is special) or whitespace bytes
    assert not selected[~real].any() and (ids == 0).any() and (ids == 5).any()
    assert not selected[np.isin(ids, np.array([9, 10, 11, 12, 13, 32]) + 6)].any()
    # whole words: every word is all or none selected, and its 80/10/10 decision is shared by all its bytes
    word, num_words = _word_table(ids, byte_word_ids(ids))
    in_word = word >= 0
    per_word_selected = np.bincount(word[in_word], weights=selected[in_word], minlength=num_words)
    length = np.bincount(word[in_word], minlength=num_words)
    assert np.all((per_word_selected == 0) | (per_word_selected == length))
    chosen = per_word_selected > 0
    all_mask = np.bincount(word[in_word], weights=(masked == 3)[in_word], minlength=num_words) == length
    unchanged = np.bincount(word[in_word], weights=(masked == ids)[in_word], minlength=num_words) == length
    is_random = chosen & ~all_mask & ~unchanged
    n = chosen.sum()
    assert n > 6000
    assert abs(all_mask[chosen].mean() - 0.8) < 0.03
    assert abs(unchanged[chosen].mean() - 0.1) < 0.025  # includes random draws equal to the original (~1/256)
    assert abs(is_random.sum() / n - 0.1) < 0.025
    # random replacements are ordinary bytes, and no selected word mixes [MASK] with other ids
    replaced = selected & (masked != ids) & (masked != 3)
    assert replaced.any() and masked[replaced].min() >= 6 and masked[replaced].max() < 262
    assert not (all_mask[word[replaced]]).any()


def test_token_masking_selects_single_bytes(byte_windows: np.ndarray, sp_model: Path) -> None:
    ids = np.concatenate([byte_windows] * 3)
    masked, labels = mask_words(ids, generator=np.random.default_rng(0), unit="token")
    selected = labels != IGNORE_INDEX
    real = ids >= 6
    assert abs(selected.sum() / real.sum() - 0.15) < 0.005
    np.testing.assert_array_equal(labels[selected], ids[selected])
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    assert not selected[~real].any()
    assert not selected[np.isin(ids, np.array([9, 10, 11, 12, 13, 32]) + 6)].any()
    # single bytes: most selected bytes have an unselected neighbour inside their word, unlike whole words
    word = byte_word_ids(ids)
    inner = selected[:, 1:-1] & (word[:, :-2] == word[:, 1:-1]) & (word[:, 1:-1] == word[:, 2:])
    alone = inner & ~selected[:, :-2] & ~selected[:, 2:]
    assert alone.sum() > 0.6 * inner.sum() > 1000
    _, word_labels = mask_words(ids, generator=np.random.default_rng(0))
    whole = word_labels[:, 1:-1] != IGNORE_INDEX
    whole_inner = whole & (word[:, :-2] == word[:, 1:-1]) & (word[:, 1:-1] == word[:, 2:])
    assert not (whole_inner & (word_labels[:, :-2] == IGNORE_INDEX)).any()  # whole words never do
    # 80 / 10 / 10 decided per byte
    shown_mask = (masked == 3)[selected].mean()
    unchanged = (masked == ids)[selected].mean()
    assert abs(shown_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01
    # SentencePiece: single pieces
    tokenizer = SentencePieceTokenizer(sp_model)
    pieces = np.stack([np.asarray(tokenizer.encode(t)[:64]) for t in stdlib_corpus("validation")[:200]
                       if len(tokenizer.encode(t)) >= 64])
    _, sp_labels = mask_words(pieces, tokenizer, generator=1, unit="token")
    chosen = sp_labels != IGNORE_INDEX
    assert abs(chosen.sum() / (pieces >= tokenizer.num_special).sum() - 0.15) < 0.02
    with pytest.raises(ValueError, match=r"unit: expected one of \['word', 'token'\], got 'byte'"):
        mask_words(ids, unit="byte")


def test_data_module_mask_unit() -> None:
    for unit in ("word", "token"):
        data = MaskedLanguageModelingDataModule(max_seq_len=64, batch_size=64, max_val_windows=64, mask_unit=unit)
        data.setup("validate")
        batch = next(iter(data.val_dataloader()))
        selected = batch["labels"] != IGNORE_INDEX
        original = torch.where(selected, batch["labels"], batch["input_ids"])
        words = torch.from_numpy(byte_word_ids(original.numpy()))
        inside = (words[:, :-2] == words[:, 1:-1]) & (words[:, 1:-1] == words[:, 2:])
        lone = selected[:, 1:-1] & inside & ~selected[:, :-2] & ~selected[:, 2:]
        assert (lone.sum() > 100) if unit == "token" else (lone.sum() == 0), (unit, int(lone.sum()))
    with pytest.raises(ValueError, match="mask_unit"):
        MaskedLanguageModelingDataModule(mask_unit="bytes")


def test_masking_is_seedable_and_keeps_the_input_type(byte_windows: np.ndarray) -> None:
    ids = byte_windows[:4]
    a = mask_words(ids, generator=np.random.default_rng(7))
    b = mask_words(ids, generator=np.random.default_rng(7))
    c = mask_words(ids, generator=np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    t_ids, t_labels = mask_words(torch.from_numpy(ids), generator=torch.Generator().manual_seed(3))
    assert isinstance(t_ids, torch.Tensor) and t_ids.dtype == t_labels.dtype == torch.int64
    again = mask_words(torch.from_numpy(ids), generator=torch.Generator().manual_seed(3))
    assert torch.equal(t_labels, again[1])
    one, labels = mask_words(ids[0], generator=1)  # 1-D input, int seed
    assert one.shape == labels.shape == ids[0].shape
    np.testing.assert_array_equal(ids, byte_windows[:4])  # the input is not modified


def test_every_row_with_a_word_gets_a_masked_word() -> None:
    ids = np.stack([_byte_ids("tiny words here"), np.zeros(15, dtype=np.int64)])  # second row: all padding
    for seed in range(50):
        _, labels = mask_words(ids, generator=seed)
        assert (labels[0] != IGNORE_INDEX).any() and (labels[1] == IGNORE_INDEX).all()


def test_word_ids_rules() -> None:
    np.testing.assert_array_equal(byte_word_ids(_byte_ids("ab cd\n\te")), [0, 0, -1, 1, 1, -1, -1, 2])
    np.testing.assert_array_equal(byte_word_ids([4, 6 + 97, 5, 6 + 98, 0]), [-1, 0, -1, 1, -1])  # specials split
    in_word = np.array([[0, 1, 1, 1, 1, 0]], dtype=bool)
    starts = np.array([[0, 1, 0, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(word_ids(in_word, starts), [[-1, 0, 0, 1, 1, -1]])
    np.testing.assert_array_equal(word_ids(in_word), [[-1, 0, 0, 0, 0, -1]])


def test_whole_word_mask_generic_and_errors() -> None:
    ids = np.arange(10, 30).reshape(2, 10)
    words = np.repeat(np.arange(5), 2)[None].repeat(2, 0)  # five 2-token words per row
    masked, labels = whole_word_mask(ids, words, mask_token_id=1, random_range=(10, 30), mask_fraction=0.4,
                                     mask_prob=1.0, random_prob=0.0, generator=0)
    selected = labels != IGNORE_INDEX
    assert (selected.sum(1) == 4).all() and (masked[selected] == 1).all()  # 40 % of 10 = two whole words
    assert (selected.reshape(2, 5, 2).all(-1) == selected.reshape(2, 5, 2).any(-1)).all()
    with pytest.raises(ValueError, match="mask_fraction"):
        whole_word_mask(ids, words, mask_token_id=1, random_range=(10, 30), mask_fraction=0.0)
    with pytest.raises(ValueError, match="mask_prob \\+ random_prob"):
        whole_word_mask(ids, words, mask_token_id=1, random_range=(10, 30), mask_prob=0.9, random_prob=0.2)
    with pytest.raises(ValueError, match="random_range"):
        whole_word_mask(ids, words, mask_token_id=1, random_range=(30, 10))
    with pytest.raises(ValueError, match=r"word_ids: expected shape \[2, 10\]"):
        whole_word_mask(ids, words[:, :3], mask_token_id=1, random_range=(10, 30))
    with pytest.raises(TypeError, match="input_ids: expected integer ids"):
        mask_words(np.zeros(4))
    with pytest.raises(ValueError, match=r"input_ids: every id must be in \[0, 262\)"):
        mask_words([6, 300])
    with pytest.raises(TypeError, match="generator"):
        mask_words([6, 7], generator="seed")


def test_sentencepiece_whole_word_masking(sp_model: Path) -> None:
    tok = SentencePieceTokenizer(sp_model)
    docs = (np.asarray(tok.encode(t, add_special_tokens=False)) for t in stdlib_corpus("validation"))
    ids = np.stack([w["input_ids"] for w in pack_documents(docs, 256, separator=tok.sep_token_id)])
    masked, labels = mask_words(ids, tok, generator=0)
    selected = labels != IGNORE_INDEX
    assert abs(selected.sum() / (ids >= tok.num_special).sum() - 0.15) < 0.01
    assert not selected[ids < tok.num_special].any()
    word, num_words = _word_table(ids, word_ids(ids >= tok.num_special, tok.word_starts(ids)))
    in_word = word >= 0
    count = np.bincount(word[in_word], weights=selected[in_word], minlength=num_words)
    length = np.bincount(word[in_word], minlength=num_words)
    assert np.all((count == 0) | (count == length)) and (length > 1).any()
    replaced = selected & (masked != ids) & (masked != tok.mask_token_id)
    assert masked[replaced].min() >= tok.first_piece_id and masked[replaced].max() < tok.vocab_size


# ---------------------------------------------------------------------------------------------- packing


def test_pack_documents_layout() -> None:
    docs = [[10, 11, 12], [], [20, 21], list(range(30, 39)), [40]]
    windows = list(pack_documents(iter(docs), 4, separator=5))
    stream = [10, 11, 12, 5, 20, 21, 5, *range(30, 39), 5, 40, 5]  # [SEP] after every document, none for []
    assert all(w["input_ids"].shape == (4,) and w["input_ids"].dtype == np.int64 for w in windows)
    flat = np.concatenate([w["input_ids"][w["attention_mask"] == 1] for w in windows])
    np.testing.assert_array_equal(flat, stream)  # in order; the long document runs over three windows
    assert len(windows) == 5  # 19 tokens: four full windows and a padded one
    np.testing.assert_array_equal(windows[-1]["input_ids"], [5, 40, 5, 0])
    np.testing.assert_array_equal(windows[-1]["attention_mask"], [1, 1, 1, 0])
    assert all(w["attention_mask"].all() for w in windows[:-1])
    dropped = list(pack_documents(docs, 4, separator=5, drop_last=True))
    assert len(dropped) == 4 and all(w["attention_mask"].all() for w in dropped)
    two_seps = list(pack_documents([[7, 8]], 3, separator=(2, 5), pad_id=0))
    np.testing.assert_array_equal(np.concatenate([w["input_ids"] for w in two_seps]), [7, 8, 2, 5, 0, 0])


def test_pack_documents_streams_lazily() -> None:
    endless = ([i % 200 + 6] * 7 for i in itertools.count())  # an endless generator of documents
    windows = list(itertools.islice(pack_documents(endless, 16), 3))
    assert len(windows) == 3 and windows[0]["input_ids"][:8].tolist() == [6] * 7 + [5]


def test_pack_documents_errors() -> None:
    with pytest.raises(ValueError, match="window: expected a positive int"):
        list(pack_documents([[6]], 0))
    with pytest.raises(ValueError, match=r"documents\[1\]: expected a 1-D"):
        list(pack_documents([[6], [[6, 7]]], 4))
    with pytest.raises(TypeError, match=r"documents\[0\]: expected integer ids"):
        list(pack_documents([["a"]], 4))


# ---------------------------------------------------------------------------------------------- stdlib corpus


def test_stdlib_corpus_is_deterministic_split_and_sizable() -> None:
    from perceiver_io.data import text_corpus

    named = stdlib_corpus(None, return_names=True)
    names = [n for n, _ in named]
    assert names == sorted(names) and len(set(names)) == len(names)
    texts = [t for _, t in named]
    assert len(set(texts)) == len(texts) and len(named) > 1500
    assert sum(len(t.encode()) for t in texts) > 800_000  # bytes
    # a second build is identical: each build runs in a fresh interpreter with its own random hash seed
    text_corpus._stdlib_documents.cache_clear()
    assert stdlib_corpus(None, return_names=True) == named
    splits = {s: stdlib_corpus(s, return_names=True) for s in ("train", "validation", "test")}
    assert sum(map(len, splits.values())) == len(named)
    for split, docs in splits.items():
        assert all(hash_split(n) == split for n, _ in docs)
        assert 0.85 < len(splits["train"]) / len(named) < 0.95 and len(docs) > 50
    assert not set(splits["train"]) & set(splits["validation"])
    assert all(len(t) >= 80 and t == t.strip() and "\n\n\n" not in t for t in texts)
    assert any(n.startswith("pydoc_data.topics.") for n in names) and "json.dumps" in names


def test_stdlib_corpus_errors() -> None:
    with pytest.raises(ValueError, match="split: expected one of"):
        stdlib_corpus("val")


# ---------------------------------------------------------------------------------------------- local text files


def test_local_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbffirst para\nline two\r\n\n  \nsecond para\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("third\n\n\nfourth", encoding="utf-8")
    assert list(iter_text_files(tmp_path / "a.txt")) == ["first para\nline two", "second para"]
    assert list(iter_text_files(str(tmp_path / "**" / "*.txt"))) == [
        "first para\nline two", "second para", "third", "fourth"]
    assert list(iter_text_files(tmp_path / "a.txt", unit="line")) == ["first para", "line two", "second para"]
    assert list(iter_text_files([tmp_path / "sub" / "b.txt", tmp_path / "a.txt"], unit="file")) == [
        "third\n\n\nfourth", "first para\nline two\n\n  \nsecond para"]
    # iter_text splits local files by hash: disjoint splits that cover every document
    many = tmp_path / "many.txt"
    many.write_text("\n\n".join(f"document number {i}" for i in range(400)), encoding="utf-8")
    parts = {s: list(iter_text(many, s)) for s in ("train", "validation", "test")}
    assert sorted(itertools.chain(*parts.values())) == sorted(iter_text(many, None))
    assert 320 < len(parts["train"]) < 390 and parts["validation"] and parts["test"]
    assert all(hash_split(d) == s for s, docs in parts.items() for d in docs)


def test_local_text_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine first paragraph\n\nok\nbroken \xff\xfe here\n")
    docs = iter_text_files(bad)
    assert next(docs) == "fine first paragraph"  # read lazily: documents before the bad line come through
    with pytest.raises(ValueError, match=r"bad\.txt: not valid UTF-8 text: line 4"):
        list(docs)
    with pytest.raises(FileNotFoundError, match="no such file"):
        iter_text(tmp_path / "missing.txt")  # a Path (or a list) always names local files
    with pytest.raises(FileNotFoundError, match="matches no file"):
        iter_text(str(tmp_path / "*.md"))
    with pytest.raises(IsADirectoryError, match="glob"):
        list(iter_text_files(tmp_path))


# ---------------------------------------------------------------------------------------------- datasets (local)


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """A local dataset in the Hub layout: train.jsonl and validation.jsonl with a "content" column."""
    root = tmp_path / "my_dataset"
    root.mkdir()
    for split, n in (("train", 300), ("validation", 20)):
        rows = [{"content": f"{split} row {i}: the quick brown fox jumps over the lazy dog", "id": i}
                for i in range(n)]
        rows.insert(3, {"content": None, "id": -1})  # missing values are skipped
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return root


def test_local_datasets_folder_through_load_dataset(dataset_dir: Path, tmp_path: Path) -> None:
    kwargs = {"text_column": "content", "cache_dir": str(tmp_path / "cache")}
    train = list(iter_text(str(dataset_dir), "train", **kwargs))
    validation = list(iter_text(str(dataset_dir), "validation", **kwargs))
    test = list(iter_text(str(dataset_dir), "test", **kwargs))  # no test split: carved from train by hash
    assert validation == [f"validation row {i}: the quick brown fox jumps over the lazy dog" for i in range(20)]
    assert test and all(d.startswith("train row") for d in test)
    assert not set(train) & set(test) and len(train) + len(test) == 300
    assert list(iter_text(str(dataset_dir), "validation", streaming=False, **kwargs)) == validation
    # a packaged builder with data_files: the same load_dataset path as a Hub name
    via_builder = list(iter_text("json", "validation", data_files={"validation": str(dataset_dir / "validation.jsonl")},
                                 **kwargs))
    assert via_builder == validation


def test_datasets_errors(dataset_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text_column: .* has no column 'text'; its columns are \\['content', 'id'\\]"):
        next(iter_text(str(dataset_dir), "train", cache_dir=str(tmp_path / "cache")))
    with pytest.raises(ValueError, match="source: 'no-such-org/no-such-dataset' is not 'stdlib'"):
        next(iter_text("no-such-org/no-such-dataset", "train"))
    with pytest.raises(TypeError, match="apply only to a datasets source"):
        iter_text("stdlib", "train", data_files="x")
    with pytest.raises(TypeError, match="source: expected"):
        iter_text(42)


# ---------------------------------------------------------------------------------------------- sentencepiece


def test_sentencepiece_training_and_tokenizer(sp_model: Path, tmp_path: Path) -> None:
    tok = SentencePieceTokenizer(sp_model)
    assert tok.vocab_size == len(tok) == 320
    assert [tok.id_to_piece(i) for i in range(7)] == [*SPECIAL_PIECES, "[UNK]"]
    assert (tok.pad_token_id, tok.mask_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 3, 4, 5)
    text = "Return the number of items in the list and the value of the object."
    ids = tok.encode(text)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and max(ids) < 320
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids).startswith("[CLS]Return") and tok.decode(ids).endswith(".[SEP]")
    assert tok.encode("[MASK]", add_special_tokens=False).count(tok.mask_token_id) == 0  # literal text stays text
    starts = tok.word_starts(ids)
    pieces = [tok.id_to_piece(i) for i in ids]
    assert starts.dtype == bool and starts.tolist() == [p.startswith("\u2581") and i >= 7 for p, i in zip(pieces, ids)]
    assert starts.sum() == len(text.split())  # one start per whitespace-separated word
    assert tok.word_starts(torch.tensor([ids, ids])).shape == (2, len(ids))
    # deterministic: the same corpus and seed give the same model bytes
    again = train_sentencepiece(stdlib_corpus("train")[:400], 320, tmp_path / "again.model")
    assert again.read_bytes() == sp_model.read_bytes()
    import pickle

    assert pickle.loads(pickle.dumps(tok)).encode(text) == ids


def test_sentencepiece_errors(tmp_path: Path, sp_model: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SentencePieceTokenizer(tmp_path / "missing.model")
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"this is not a protobuf")
    with pytest.raises(ValueError, match="corrupt.model' is not a valid SentencePiece model"):
        SentencePieceTokenizer(corrupt)
    with pytest.raises(ValueError, match="vocab_size: 5000 does not fit this corpus"):
        train_sentencepiece(["a few words only", "and a few more"], 5000, tmp_path / "big.model")
    with pytest.raises(ValueError, match="vocab_size: expected an int >= 8"):
        train_sentencepiece(["text"], 5, tmp_path / "tiny.model")
    with pytest.raises(ValueError, match="texts: expected at least one non-empty line"):
        train_sentencepiece(["", "  \n"], 100, tmp_path / "empty.model")
    with pytest.raises(ValueError, match=r"token_ids: every id must be in \[0, 320\)"):
        SentencePieceTokenizer(sp_model).decode([1, 320])


# ---------------------------------------------------------------------------------------------- data module


def _check_batch(batch: dict[str, torch.Tensor], batch_size: int, seq_len: int, vocab_size: int) -> None:
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for value in batch.values():
        assert value.shape == (batch_size, seq_len) and value.dtype == torch.int64
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    selected = labels != IGNORE_INDEX
    assert selected.any() and not selected[mask == 0].any()
    assert labels[selected].min() >= 6 and ids.max() < vocab_size
    assert set(mask.unique().tolist()) <= {0, 1}


def test_data_module_bytes_stdlib() -> None:
    dm = MaskedLanguageModelingDataModule(max_seq_len=128, batch_size=8, max_train_windows=64, max_val_windows=16,
                                          seed=3)
    assert dm.vocab_size == 262 and isinstance(dm.tokenizer, ByteTokenizer)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 64 and len(dm.datasets["validation"]) == 16
    train = dm.train_dataloader()
    assert isinstance(train.sampler, EpochShuffleSampler)
    epoch0 = [b for b in train]
    _check_batch(epoch0[0], 8, 128, 262)
    epoch1 = [b for b in train]  # the next epoch: new order and fresh masks
    assert not torch.equal(epoch0[0]["labels"], epoch1[0]["labels"])
    val = dm.val_dataloader()
    first, second = list(val), list(val)  # validation masks are the same every epoch
    assert all(torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
               for a, b in zip(first, second))
    # and the same in a fresh module with the same seed
    dm2 = MaskedLanguageModelingDataModule(max_seq_len=128, batch_size=8, max_val_windows=16, seed=3)
    assert torch.equal(next(iter(dm2.val_dataloader()))["labels"], first[0]["labels"])


def test_data_module_sentencepiece_stdlib(tmp_path: Path) -> None:
    dm = MaskedLanguageModelingDataModule(tokenizer="sentencepiece", vocab_size=300, cache_dir=str(tmp_path),
                                          max_seq_len=64, batch_size=4, max_train_windows=8, max_val_windows=8,
                                          sentencepiece_max_sentences=3000)
    assert dm.vocab_size == 300  # known before training
    dm.prepare_data()
    assert dm.sentencepiece_path().is_file() and dm.sentencepiece_path().parent == tmp_path
    dm.setup("fit")
    assert isinstance(dm.tokenizer, SentencePieceTokenizer) and dm.vocab_size == 300
    _check_batch(next(iter(dm.train_dataloader())), 4, 64, 300)
    # a saved model can be passed as a path
    dm2 = MaskedLanguageModelingDataModule(tokenizer=str(dm.sentencepiece_path()), max_seq_len=64, batch_size=4,
                                           max_val_windows=4)
    _check_batch(next(iter(dm2.val_dataloader())), 4, 64, 300)


def test_data_module_streams_local_files(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(stdlib_corpus("validation")), encoding="utf-8")
    kw = {"max_seq_len": 96, "batch_size": 4, "max_train_windows": 12, "max_val_windows": 12, "shuffle_buffer": 8}
    dm = MaskedLanguageModelingDataModule(str(corpus), **kw)
    assert dm.streaming
    dm.setup()
    train = list(dm.train_dataloader())
    assert len(train) == 3
    _check_batch(train[0], 4, 96, 262)
    again = list(dm.train_dataloader())  # the next epoch: fresh masks (and another shuffle)
    assert not all(torch.equal(a["labels"], b["labels"]) for a, b in zip(train, again))
    val0 = list(dm.val_dataloader())
    assert [torch.equal(a["labels"], b["labels"]) for a, b in zip(val0, dm.val_dataloader())] == [True] * 3
    # two workers: validation batches identical to the single-process ones
    dm2 = MaskedLanguageModelingDataModule(str(corpus), num_workers=2, **kw)
    val2 = list(dm2.val_dataloader())
    assert len(val2) == 3 and all(torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
                                  for a, b in zip(val0, val2))
    # training: each worker packs every other document and yields half the capped windows, batched on its own
    assert sum(len(b["input_ids"]) for b in dm2.train_dataloader()) == 12


def test_data_module_local_dataset_folder(dataset_dir: Path, tmp_path: Path) -> None:
    dm = MaskedLanguageModelingDataModule(str(dataset_dir), text_column="content", cache_dir=str(tmp_path / "c"),
                                          max_seq_len=64, batch_size=2, max_train_windows=4)
    dm.setup("fit")
    _check_batch(next(iter(dm.train_dataloader())), 2, 64, 262)
    text = dm.tokenizer.decode(next(iter(dm.val_dataloader()))["labels"][0].clamp(min=0), skip_special_tokens=True)
    assert set(text) <= set("validation row 0123456789: the quick brown fox jumps over the lazy dog")


def test_data_module_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="source: 'no-such-dataset-xyz' is not 'stdlib'"):
        MaskedLanguageModelingDataModule("no-such-dataset-xyz", max_seq_len=64).setup("fit")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        MaskedLanguageModelingDataModule(str(tmp_path / "*.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good text\n\nbad \xc3\x28 text\n")
    with pytest.raises(ValueError, match=r"bad\.txt: not valid UTF-8 text: line 3"):
        MaskedLanguageModelingDataModule(str(bad), max_seq_len=64, streaming=False).setup("fit")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(ValueError, match="split 'train': empty corpus"):
        MaskedLanguageModelingDataModule(str(empty), max_seq_len=64).setup("fit")
    lone_surrogate = StreamingMaskedWindows(lambda: iter(["fine", "bad \ud800 text"]), TOK, 16, "validation", 0,
                                            fresh_masks=False, where="test source")
    with pytest.raises(ValueError, match="test source split 'validation': document 1 is not valid UTF-8 text"):
        list(lone_surrogate)
    with pytest.raises(ValueError, match=r"max_seq_len: expected an int >= 7"):
        MaskedLanguageModelingDataModule(max_seq_len=4)
    with pytest.raises(ValueError, match="tokenizer: expected 'bytes', 'sentencepiece'"):
        MaskedLanguageModelingDataModule(tokenizer="wordpiece")
    with pytest.raises(ValueError, match="mask_fraction"):
        MaskedLanguageModelingDataModule(mask_fraction=1.5)


def test_data_module_in_a_lightning_fit() -> None:
    import lightning.pytorch as pl

    class TinyMLM(pl.LightningModule):
        def __init__(self, vocab_size: int) -> None:
            super().__init__()
            self.embed, self.out = torch.nn.Embedding(vocab_size, 8), torch.nn.Linear(8, vocab_size)
            self.labels: list[tuple[int, torch.Tensor]] = []

        def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = self.out(self.embed(batch["input_ids"]))
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())

        def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
            self.labels.append((self.current_epoch, batch["labels"]))
            return self._loss(batch)

        def validation_step(self, batch: dict[str, torch.Tensor], index: int) -> None:
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = MaskedLanguageModelingDataModule(max_seq_len=32, batch_size=8, max_train_windows=8, max_val_windows=8)
    model = TinyMLM(dm.vocab_size)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, dm)
    assert [epoch for epoch, _ in model.labels] == [0, 1]
    assert not torch.equal(model.labels[0][1], model.labels[1][1])  # Lightning's set_epoch: fresh masks
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_streamed_training_windows_are_shared_out_between_processes():
    # Two processes of a distributed run (rank and world size as the dataset reads them from torch.distributed at
    # construction): each trains on its own documents, together on all of them.
    documents = [f"document{i:02d} " + "word " * 5 for i in range(12)]

    def stream(rank: int, world: int) -> list[str]:
        data = StreamingMaskedWindows(lambda: iter(documents), TOK, 32, "train", 0, True)
        data.rank, data.world_size = rank, world
        originals = [torch.where(item["labels"] != -100, item["labels"], item["input_ids"]) for item in data]
        text = b"".join(bytes(int(i) - 6 for i in ids if i >= 6) for ids in originals)  # windows in stream order
        return sorted(set(re.findall(rb"document\d\d", text)))

    single, first, second = stream(0, 1), stream(0, 2), stream(1, 2)
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == single
