"""A small text-classification task built at run time from the standard library's documentation: which family of
modules a piece of documentation belongs to.

The documents are those of :func:`~perceiver_io.data.text_corpus.stdlib_corpus` (the masked language modelling
corpus), with its train / validation / test split by qualified name, so a model pre-trained on the corpus' training
split never saw a validation or test document. A document's label comes from the top-level module of its qualified
name (``"json.dumps"`` -> ``json``) through :data:`TOPIC_FAMILIES`; documents of modules in no family are left out.

Measured on CPython 3.11.7 with the defaults (256-byte chunks, at most 4 per document): 3,392 training chunks
(1,992 documents), 233 validation chunks (132 documents), 195 test chunks (121 documents); class shares 21 / 11 /
29 / 14 / 25 % of the training chunks (the family order of :data:`TOPIC_FAMILIES`).

Examples are byte windows: a document's UTF-8 bytes are cut into consecutive chunks of ``max_seq_len`` bytes (its
first ``max_chunks_per_document`` chunks; a last chunk under ``min_chunk_bytes`` is dropped unless it is the
document's only one), each chunk an example with the document's label. Ids are bytes + 6 (the ids of
:class:`~perceiver_io.tokenizer.ByteTokenizer` and of the masked language modelling data), no ``[CLS]``/``[SEP]``,
right-padded with ``[PAD]`` (0). ``max_chunks_per_document=1`` is plain truncation to the window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.validation import check_choice, check_positive
from ..tokenizer import ByteTokenizer
from .text_corpus import TEXT_SPLITS, TextSplit, stdlib_corpus

__all__ = ["TOPIC_FAMILIES", "StdlibTopicsDataModule", "TopicChunks", "topic_chunks", "topic_of"]

_NUM_BYTE_SPECIAL = ByteTokenizer.vocab_size - 256

TOPIC_FAMILIES: dict[str, tuple[str, ...]] = {
    "text and data formats": (
        "json", "csv", "xml", "html", "email", "string", "re", "codecs", "base64", "binascii", "quopri", "uu",
        "mimetypes", "configparser", "plistlib", "textwrap", "unicodedata", "difflib", "pickle", "pickletools",
        "marshal", "struct", "tomllib", "encodings", "gettext", "shlex", "netrc", "mailbox", "mailcap", "stringprep",
        "copyreg", "shelve", "dbm"),
    "files and OS": (
        "os", "pathlib", "shutil", "tempfile", "io", "glob", "stat", "fnmatch", "fileinput", "filecmp", "posixpath",
        "genericpath", "ntpath", "tarfile", "zipfile", "gzip", "bz2", "lzma", "zlib", "platform", "subprocess",
        "signal", "sysconfig", "linecache", "getpass", "pwd", "grp", "errno", "mmap", "fcntl", "resource", "pty",
        "tty", "termios", "posix"),
    "concurrency and networking": (
        "asyncio", "threading", "multiprocessing", "concurrent", "queue", "sched", "selectors", "select", "_thread",
        "contextvars", "socket", "http", "urllib", "ssl", "socketserver", "imaplib", "smtplib", "poplib", "ftplib",
        "nntplib", "telnetlib", "xmlrpc", "wsgiref", "ipaddress", "asynchat", "asyncore", "smtpd", "webbrowser",
        "cgi", "cgitb"),
    "language and built-ins": ("pydoc_data", "builtins"),
    "development tools": (
        "logging", "inspect", "pdb", "bdb", "importlib", "traceback", "doctest", "unittest", "pkgutil", "dis", "ast",
        "symtable", "pyclbr", "tabnanny", "modulefinder", "opcode", "cProfile", "profile", "pstats", "trace",
        "tracemalloc", "timeit", "faulthandler", "gc", "code", "codeop", "compileall", "py_compile", "site", "venv",
        "warnings", "pydoc", "imp", "zipimport", "runpy", "tokenize"),
}
"""Topic name -> the top-level modules whose documentation it holds (no module in two topics). Chosen for a
reasonably balanced task: ``pydoc_data`` (the language reference) is merged with ``builtins`` and concurrency with
networking, since either alone has only about a dozen test documents."""

_MODULE_TOPIC: dict[str, int] = {m: i for i, modules in enumerate(TOPIC_FAMILIES.values()) for m in modules}


def topic_of(name: str) -> int | None:
    """The topic index (into :data:`TOPIC_FAMILIES`) of a document's qualified name, or None (no topic)."""
    return _MODULE_TOPIC.get(name.split(".", 1)[0])


@dataclass(frozen=True)
class TopicChunks:
    """One split's examples: ``ids [N, L]`` int64 (bytes + 6, padded with 0), ``lengths [N]`` (real bytes),
    ``labels [N]`` int64 (topic indices), ``names`` (each chunk's document) and ``chunk_index`` (its place in the
    document)."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    chunk_index: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        """Examples per topic, in :data:`TOPIC_FAMILIES` order."""
        counts = Counter(self.labels.tolist())
        return [counts.get(k, 0) for k in range(len(TOPIC_FAMILIES))]


def topic_chunks(split: TextSplit, max_seq_len: int = 256, max_chunks_per_document: int = 4,
                 min_chunk_bytes: int = 32) -> TopicChunks:
    """The examples of ``split`` (see the module docstring); deterministic for a given Python installation."""
    check_choice("split", split, TEXT_SPLITS)
    for name, value in (("max_seq_len", max_seq_len), ("max_chunks_per_document", max_chunks_per_document),
                        ("min_chunk_bytes", min_chunk_bytes)):
        check_positive(name, value)
    rows: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    chunk_index: list[int] = []
    for name, text in stdlib_corpus(split, return_names=True):
        topic = topic_of(name)
        if topic is None:
            continue
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        for k, start in enumerate(range(0, len(data), max_seq_len)):
            chunk = data[start:start + max_seq_len]
            if k >= max_chunks_per_document or (k > 0 and len(chunk) < min_chunk_bytes):
                break
            row = np.zeros(max_seq_len, dtype=np.int64)
            row[: len(chunk)] = chunk.astype(np.int64) + _NUM_BYTE_SPECIAL
            rows.append(row)
            labels.append(topic)
            names.append(name)
            chunk_index.append(k)
    if not rows:
        raise ValueError(f"split {split!r}: no document of any topic")
    ids = np.stack(rows)
    return TopicChunks(ids, (ids != 0).sum(1), np.asarray(labels, dtype=np.int64), tuple(names), tuple(chunk_index))


class _ChunkDataset(Dataset):
    def __init__(self, chunks: TopicChunks) -> None:
        self.chunks = chunks
        self.ids = torch.from_numpy(chunks.ids)
        self.attention_mask = (self.ids != 0).long()
        self.labels = torch.from_numpy(chunks.labels)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "attention_mask": self.attention_mask[index],
                "labels": self.labels[index], "idx": torch.tensor(index)}


class StdlibTopicsDataModule(pl.LightningDataModule):
    """Topic classification of standard-library documentation chunks (:func:`topic_chunks`).

    Batches are dicts ``input_ids [B, L]`` int64 (bytes + 6, 0 = padding), ``attention_mask [B, L]`` int64
    (1 = byte), ``labels [B]`` int64 (topic index into :data:`TOPIC_FAMILIES`) and ``idx [B]`` (the example's index
    in its split). Splits: ``"train"``, ``"validation"``, ``"test"`` (the corpus' own, by document); the training
    order is shuffled by a generator seeded with ``seed`` (the same for a fresh DataLoader); predict uses test.

    Args:
        max_seq_len: bytes per example (the model's ``max_seq_len`` or less).
        max_chunks_per_document: examples per document at most (1: the document's start only).
        min_chunk_bytes: a document's last chunk is dropped if shorter (unless it is the only one).
        batch_size, num_workers: DataLoader settings.
        seed: the training shuffle (non-negative).
    """

    classes: tuple[str, ...] = tuple(TOPIC_FAMILIES)
    vocab_size = ByteTokenizer.vocab_size

    def __init__(self, max_seq_len: int = 256, max_chunks_per_document: int = 4, min_chunk_bytes: int = 32,
                 batch_size: int = 16, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("max_seq_len", max_seq_len), ("max_chunks_per_document", max_chunks_per_document),
                            ("min_chunk_bytes", min_chunk_bytes), ("batch_size", batch_size)):
            check_positive(name, value)
        check_positive("num_workers", num_workers, allow_zero=True)
        check_positive("seed", seed, allow_zero=True)
        self.save_hyperparameters()
        self.max_seq_len, self.max_chunks_per_document = max_seq_len, max_chunks_per_document
        self.min_chunk_bytes, self.batch_size = min_chunk_bytes, batch_size
        self.num_workers, self.seed = num_workers, seed
        self.chunks: dict[TextSplit, TopicChunks] = {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        """Build all three splits (idempotent; a second of work once the corpus is built)."""
        for split in TEXT_SPLITS:
            if split not in self.chunks:
                self.chunks[split] = topic_chunks(split, self.max_seq_len, self.max_chunks_per_document,
                                                  self.min_chunk_bytes)

    def _loader(self, split: TextSplit, shuffle: bool) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(_ChunkDataset(self.chunks[split]), batch_size=self.batch_size, shuffle=shuffle,
                          generator=generator, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
