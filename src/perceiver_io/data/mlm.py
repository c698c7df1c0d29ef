"""Masked language modelling data (Perceiver IO: UTF-8 bytes, or SentencePiece pieces) as a Lightning data module.

Pipeline per split: documents (:func:`~perceiver_io.data.text_corpus.iter_text`) -> ids (bytes + 6, or
SentencePiece pieces; no [CLS]/[SEP] wrapping) -> windows of ``max_seq_len`` ids packed as ``doc [SEP] doc [SEP]
...`` (:func:`~perceiver_io.data.masking.pack_documents`; the last partial window is padded) -> whole-word masking
(:func:`~perceiver_io.data.masking.mask_words`, 15 %, 80/10/10 per word).

Masks are drawn when a window is loaded, from a generator seeded by ``seed``, the split, the window's index and,
for training only, the epoch: validation and test windows get the same masks every epoch (comparable metrics),
training windows fresh masks every epoch, and a rerun with the same seed reproduces both.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    get_worker_info,
)

from ..core.validation import check_choice, check_number, check_positive
from ..tokenizer import ByteTokenizer
from .masking import MASK_UNITS, mask_words, pack_documents
from .sentencepiece_tokenizer import SentencePieceTokenizer, train_sentencepiece
from .text_corpus import (
    TEXT_SPLITS,
    TEXT_UNITS,
    TextSplit,
    expand_paths,
    iter_text,
    source_kind,
)

__all__ = ["EpochShuffleSampler", "MaskedLanguageModelingDataModule", "MaskedWindowDataset",
           "StreamingMaskedWindows"]

_SPLIT_INDEX: dict[str, int] = {split: i for i, split in enumerate(TEXT_SPLITS)}
_NUM_BYTE_SPECIAL = ByteTokenizer.vocab_size - 256
Tokenizer = ByteTokenizer | SentencePieceTokenizer


class _Encoder:
    """Text -> 1-D int64 ids without special tokens (picklable, for DataLoader workers)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> np.ndarray:
        if isinstance(self.tokenizer, ByteTokenizer):
            # Raw bytes, not ByteTokenizer.encode: a literal "[MASK]" in a document must stay text.
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + _NUM_BYTE_SPECIAL
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)


def _encoded(documents: Iterator[str], encoder: _Encoder, where: str) -> Iterator[np.ndarray]:
    """``encoder`` over the documents; a document that is not valid Unicode text (a lone surrogate, which has no
    UTF-8 form) raises a ``ValueError`` naming ``where`` and its index."""
    for index, text in enumerate(documents):
        try:
            yield encoder(text)
        except UnicodeEncodeError as err:
            raise ValueError(f"{where}: document {index} is not valid UTF-8 text ({err.reason} at character "
                             f"{err.start}: {text[max(0, err.start - 20):err.start]!r}...)") from None


def _window_item(ids: np.ndarray, attention_mask: np.ndarray, tokenizer: Tokenizer, mask_fraction: float,
                 rng: np.random.Generator, mask_unit: str = "word") -> dict[str, torch.Tensor]:
    masked, labels = mask_words(ids, tokenizer, mask_fraction=mask_fraction, generator=rng, unit=mask_unit)
    return {
        "input_ids": torch.from_numpy(np.ascontiguousarray(masked, dtype=np.int64)),
        "attention_mask": torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64)),
        "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
    }


class MaskedWindowDataset(Dataset):
    """Packed windows held in memory, masked on access.

    Item ``index`` (or ``(index, epoch)``, as :class:`EpochShuffleSampler` yields) is a dict of ``input_ids [L]``
    int64 (masked), ``attention_mask [L]`` int64 (1 = token, 0 = padding) and ``labels [L]`` int64 (the original
    id where selected for masking, -100 elsewhere).  Masks come from ``numpy.random.default_rng([seed, split,
    epoch, index])``, with ``epoch`` forced to 0 unless ``fresh_masks`` (training): the same item always has the
    same masks in every process and worker.

    Args:
        windows: ``[N, L]`` integer ids (padding = 0 after ``lengths``).
        lengths: ``[N]`` number of real tokens per window.
        tokenizer: decides the word rule and ids of the masking.
        split: seeds the masks (``"train"``, ``"validation"``, ``"test"``).
        seed: non-negative int.
        fresh_masks: new masks per epoch (training) rather than fixed ones.
        mask_fraction: fraction of each window's real tokens selected.
        mask_unit: ``"word"`` (whole words) or ``"token"`` (single tokens), see
            :func:`~perceiver_io.data.masking.mask_words`.
    """

    def __init__(self, windows: np.ndarray, lengths: np.ndarray, tokenizer: Tokenizer, split: TextSplit, seed: int,
                 fresh_masks: bool, mask_fraction: float = 0.15, mask_unit: str = "word") -> None:
        if windows.ndim != 2 or lengths.shape != windows.shape[:1]:
            raise ValueError(f"windows, lengths: expected shapes [N, L] and [N], got {list(windows.shape)} and "
                             f"{list(lengths.shape)}")
        self.windows, self.lengths = windows, lengths
        self.tokenizer, self.split, self.seed = tokenizer, split, seed
        self.fresh_masks, self.mask_fraction, self.mask_unit = fresh_masks, mask_fraction, mask_unit

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected in [{-len(self)}, {len(self)}), got {index}")
        index = int(index) % len(self)
        epoch = int(epoch) if self.fresh_masks else 0
        rng = np.random.default_rng([self.seed, _SPLIT_INDEX[self.split], epoch, index])
        ids = self.windows[index].astype(np.int64)
        attention_mask = np.arange(ids.size) < self.lengths[index]
        return _window_item(ids, attention_mask, self.tokenizer, self.mask_fraction, rng, self.mask_unit)


class EpochShuffleSampler(Sampler):
    """A fresh permutation of ``range(num_items)`` every epoch, yielding ``(index, epoch)`` so that the dataset can
    draw fresh masks per epoch even in persistent DataLoader workers (which never see the sampler).

    The order of epoch ``e`` is ``numpy.random.default_rng([seed, e]).permutation(num_items)``.  The epoch is set
    by Lightning (``set_epoch``, called before each training epoch) and otherwise counts the iterations.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return iter([(int(i), epoch) for i in order])


class StreamingMaskedWindows(IterableDataset):
    """Windows packed and masked while the text streams in (for sources larger than memory).

    Items as in :class:`MaskedWindowDataset`.  Every DataLoader worker reads the whole text stream and keeps its
    share, so what a split contains never depends on how a ``datasets`` source is cut into files:

    * training (``fresh_masks``): the documents are shared out between all processes of a distributed run and
      their DataLoader workers: reader ``r`` of ``n`` (``n`` = processes x workers, ``r = rank x workers + w``)
      packs documents ``r, r + n, ...``, so no two processes train on the same text; at most ``max_windows``
      windows per epoch in all; a shuffle buffer of ``shuffle_buffer`` windows mixes windows of
      different documents; masks are seeded by (seed, epoch, reader, position), so the training stream depends on
      ``num_workers`` and the number of processes.  The epoch is counted per ``iter()`` of the dataset copy that iterates: in the main
      process, or in persistent workers (the data module's DataLoaders keep their workers) once per epoch of that
      DataLoader.  A *new* multi-worker DataLoader starts again at epoch 0, so iterate one DataLoader for all
      epochs (as Lightning does).  Workers beyond ``max_windows`` yield nothing.
    * validation / test: every process evaluates the whole split (the same numbers on every rank); every worker
      packs all documents and keeps the blocks of ``batch_size`` consecutive
      windows with ``block % n == w``; the DataLoader takes batches from the workers in turn, so the batches are
      exactly those of ``num_workers=0``; masks are seeded by (seed, split, window index), the same every epoch.

    Args:
        documents: a picklable callable returning a fresh iterator over the split's documents.
        tokenizer, split, seed, fresh_masks, mask_fraction, mask_unit: as in :class:`MaskedWindowDataset`.
        window: ids per window.
        max_windows: at most this many windows per pass (None: the whole stream).
        batch_size: the DataLoader's batch size (evaluation sharding).
        shuffle_buffer: training only; 0 or 1 keeps the stream order.
        where: names the source in error messages.

    Raises:
        ValueError: (when iterated) the split has no document, or a document is not valid UTF-8 text.
    """

    def __init__(self, documents: Callable[[], Iterator[str]], tokenizer: Tokenizer, window: int, split: TextSplit,
                 seed: int, fresh_masks: bool, mask_fraction: float = 0.15, max_windows: int | None = None,
                 batch_size: int = 1, shuffle_buffer: int = 0, where: str = "source", mask_unit: str = "word") -> None:
        super().__init__()
        self.documents, self.tokenizer, self.window, self.split = documents, tokenizer, window, split
        self.seed, self.fresh_masks, self.mask_fraction = seed, fresh_masks, mask_fraction
        self.max_windows, self.batch_size = max_windows, batch_size
        self.shuffle_buffer, self.where, self.mask_unit = shuffle_buffer, where, mask_unit
        self.epoch = 0
        # Read here, in the process that builds the dataset (Lightning's setup runs after the process group is up),
        # not in DataLoader workers, where the group is not usable.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.world_size = torch.distributed.get_world_size() if distributed else 1

    def _documents(self, counter: list[int]) -> Iterator[str]:
        for doc in self.documents():
            counter[0] += 1
            yield doc

    def _windows(self, documents: Iterator[str]) -> Iterator[dict[str, np.ndarray]]:
        encoder = _Encoder(self.tokenizer)
        sep = self.tokenizer.sep_token_id
        return pack_documents(_encoded(documents, encoder, f"{self.where} split {self.split!r}"), self.window,
                              separator=sep, pad_id=self.tokenizer.pad_token_id)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        self.epoch += 1
        seen = [0]  # documents read (all workers' shares), to tell an empty split from an empty share
        split_index = _SPLIT_INDEX[self.split]
        if self.fresh_masks:
            # One reader per (process, worker): rank-major, so one process' workers read neighbouring shares.
            worker, num_workers = self.rank * num_workers + worker, self.world_size * num_workers
            docs = (d for i, d in enumerate(self._documents(seen)) if i % num_workers == worker)
            limit = None
            if self.max_windows is not None:
                limit = self.max_windows // num_workers + (worker < self.max_windows % num_workers)
                if limit == 0:  # more workers than windows: this one has none (and must not read)
                    return
            windows = self._shuffled(self._windows(docs), np.random.default_rng([self.seed, split_index, epoch,
                                                                                  worker, 1]))
            for k, item in enumerate(itertools.islice(windows, limit)):
                rng = np.random.default_rng([self.seed, split_index, epoch, worker, 0, k])
                yield _window_item(item["input_ids"], item["attention_mask"], self.tokenizer, self.mask_fraction, rng,
                                   self.mask_unit)
        else:
            windows = itertools.islice(self._windows(self._documents(seen)), self.max_windows)
            for k, item in enumerate(windows):
                if (k // self.batch_size) % num_workers != worker:
                    continue
                rng = np.random.default_rng([self.seed, split_index, 0, k])
                yield _window_item(item["input_ids"], item["attention_mask"], self.tokenizer, self.mask_fraction, rng,
                                   self.mask_unit)
        if seen[0] == 0:
            raise ValueError(f"{self.where} split {self.split!r}: empty corpus, no document to read")

    def _shuffled(self, items: Iterator[dict[str, np.ndarray]], rng: np.random.Generator
                  ) -> Iterator[dict[str, np.ndarray]]:
        if self.shuffle_buffer <= 1:
            yield from items
            return
        buffer: list[dict[str, np.ndarray]] = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = int(rng.integers(len(buffer)))
            yield buffer[j]
            buffer[j] = item
        for j in rng.permutation(len(buffer)):
            yield buffer[j]


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "perceiver_io" / "mlm"


class MaskedLanguageModelingDataModule(pl.LightningDataModule):
    """Masked language modelling batches from a text source, with bytes or SentencePiece tokens.

    Batches are dicts of ``input_ids [B, L]`` int64 (masked ids), ``attention_mask [B, L]`` int64 (1 = token,
    0 = padding; only a split's last window can be padded) and ``labels [B, L]`` int64 (the original id at the
    ~15 % selected positions, -100 elsewhere), with ``L = max_seq_len``.  Documents are packed as
    ``doc [SEP] doc [SEP] ...`` (``[SEP]`` = 5 for both tokenizers); no ``[CLS]`` is added.

    Two ways to hold a split:

    * in memory (``streaming=False``; the default for ``"stdlib"``): all windows (up to the caps) are built in
      :meth:`setup`; training order is reshuffled every epoch (:class:`EpochShuffleSampler`).
    * streamed (``streaming=True``; the default for files and ``datasets`` sources): windows are built while the
      text streams in (:class:`StreamingMaskedWindows`, whose docstring covers the sharding); training windows
      pass a shuffle buffer, and the processes of a distributed run and their workers each train on their own
      share of the documents.

    Args:
        source: ``"stdlib"`` (:func:`~perceiver_io.data.text_corpus.stdlib_corpus`, ~1.3 MB of train text), local
            text files (a path, glob or list; documents per ``text_unit``), or a ``datasets``
            name or local dataset folder (e.g. ``"wikitext"``, ``"allenai/c4"``); see
            :func:`~perceiver_io.data.text_corpus.iter_text`.  Splits a source lacks are carved 90/5/5 by hash.
        dataset_config: the ``datasets`` configuration (``"wikitext-103-raw-v1"``, ``"en"``).
        text_column: the ``datasets`` column with the text.
        tokenizer: ``"bytes"`` (UTF-8 bytes, 262 ids as :class:`~perceiver_io.tokenizer.ByteTokenizer`), a path to
            a SentencePiece ``.model`` with the layout of
            :mod:`~perceiver_io.data.sentencepiece_tokenizer`, or ``"sentencepiece"``: train one on the training
            split (:meth:`prepare_data`) with ``vocab_size`` ids and keep it in ``cache_dir`` (reused when the
            source, vocabulary size and Python version match).
        vocab_size: ids of a trained SentencePiece model (``tokenizer="sentencepiece"`` only).
        cache_dir: where trained SentencePiece models are kept (default ``$XDG_CACHE_HOME/perceiver_io/mlm``);
            if given, ``<cache_dir>/datasets`` is also ``datasets.load_dataset``'s cache (else its own default).
        max_seq_len: window length L (2048 bytes in the paper).
        mask_fraction: fraction of each window's real tokens selected for the loss.
        mask_unit: ``"word"`` (default: whole words, as the paper) or ``"token"`` (single tokens: BERT's original
            masking; the demo's choice, whose small model learns it within its budget).
        batch_size, num_workers: DataLoader settings.
        seed: seeds the masks, the training order and SentencePiece training (non-negative).
        max_train_windows, max_val_windows, max_test_windows: at most this many windows per split (per epoch when
            streaming); None for all.
        streaming: see above; None picks the default per source.
        shuffle_buffer: windows in the streaming training shuffle buffer.
        sentencepiece_max_sentences: lines read to train a SentencePiece model.
        text_unit: local text files only: ``"paragraph"`` (blank-line separated, default), ``"line"`` or
            ``"file"`` documents.

    Raises:
        TypeError, ValueError: an unknown ``tokenizer`` or a bad option (``max_seq_len`` too small for one token,
            its ``[SEP]`` and one masked token), at construction; an unknown source (neither ``"stdlib"``, existing
            files nor a loadable dataset), invalid UTF-8 text, or an empty split, at :meth:`setup` or when
            iterating a streamed split.
        FileNotFoundError: a local file or glob that matches nothing, at construction.
    """

    def __init__(
        self,
        source: str | list[str] = "stdlib",
        dataset_config: str | None = None,
        text_column: str = "text",
        tokenizer: str = "bytes",
        vocab_size: int = 8000,
        cache_dir: str | None = None,
        max_seq_len: int = 2048,
        mask_fraction: float = 0.15,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        max_train_windows: int | None = None,
        max_val_windows: int | None = None,
        max_test_windows: int | None = None,
        streaming: bool | None = None,
        shuffle_buffer: int = 1024,
        sentencepiece_max_sentences: int = 1_000_000,
        text_unit: str = "paragraph",
        mask_unit: str = "word",
    ) -> None:
        super().__init__()
        self.source_kind = source_kind(source)
        if self.source_kind == "files":
            expand_paths(source)  # a missing file or empty glob fails here, not in a worker
        check_number("mask_fraction", mask_fraction, 0, 1, low_open=True)
        check_positive("max_seq_len", max_seq_len)
        minimum = max(2, math.ceil(1 / mask_fraction))
        if max_seq_len < minimum:
            raise ValueError(f"max_seq_len: expected an int >= {minimum} (a window must hold a token and its [SEP], "
                             f"and mask_fraction={mask_fraction} of it at least one token), got {max_seq_len}")
        for name, value in (("batch_size", batch_size), ("sentencepiece_max_sentences", sentencepiece_max_sentences)):
            check_positive(name, value)
        for name, value in (("num_workers", num_workers), ("seed", seed), ("shuffle_buffer", shuffle_buffer)):
            check_positive(name, value, allow_zero=True)
        for name, value in (("max_train_windows", max_train_windows), ("max_val_windows", max_val_windows),
                            ("max_test_windows", max_test_windows)):
            if value is not None:
                check_positive(name, value)
        check_choice("text_unit", text_unit, TEXT_UNITS)
        check_choice("mask_unit", mask_unit, MASK_UNITS)
        if streaming is not None and not isinstance(streaming, bool):
            raise TypeError(f"streaming: expected a bool or None, got {type(streaming).__name__}")
        if not isinstance(tokenizer, (str, os.PathLike)):
            raise TypeError(f"tokenizer: expected 'bytes', 'sentencepiece' or a .model path, got "
                            f"{type(tokenizer).__name__}")
        tokenizer = os.fspath(tokenizer)
        if tokenizer == "sentencepiece":
            check_positive("vocab_size", vocab_size)
            if vocab_size < SentencePieceTokenizer.first_piece_id + 1:
                raise ValueError(f"vocab_size: expected an int >= {SentencePieceTokenizer.first_piece_id + 1}, "
                                 f"got {vocab_size}")
        elif tokenizer != "bytes" and not os.path.isfile(os.path.expanduser(tokenizer)):
            raise ValueError(f"tokenizer: expected 'bytes', 'sentencepiece' or the path of an existing SentencePiece "
                             f".model file, got {tokenizer!r}")
        self.save_hyperparameters()
        self.source, self.dataset_config, self.text_column = source, dataset_config, text_column
        self.tokenizer_spec, self.requested_vocab_size = tokenizer, vocab_size
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
        self._datasets_cache_dir = None if cache_dir is None else str(self.cache_dir / "datasets")
        self.max_seq_len, self.mask_fraction = max_seq_len, float(mask_fraction)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.max_windows: dict[TextSplit, int | None] = {
            "train": max_train_windows, "validation": max_val_windows, "test": max_test_windows}
        self.streaming = self.source_kind != "stdlib" if streaming is None else streaming
        self.shuffle_buffer, self.sentencepiece_max_sentences = shuffle_buffer, sentencepiece_max_sentences
        self.text_unit, self.mask_unit = text_unit, mask_unit
        self._tokenizer: Tokenizer | None = ByteTokenizer() if tokenizer == "bytes" else None
        self.datasets: dict[TextSplit, Dataset] = {}
        self._train_sampler: EpochShuffleSampler | None = None

    # ------------------------------------------------------------------ tokenizer

    def _documents(self, split: TextSplit) -> Callable[[], Iterator[str]]:
        """A picklable factory of the split's document iterator."""
        kwargs: dict[str, Any] = {}
        if self.source_kind == "files":
            kwargs = {"unit": self.text_unit}
        elif self.source_kind == "datasets":
            kwargs = {"dataset_config": self.dataset_config, "text_column": self.text_column,
                      "streaming": self.streaming}
            if self._datasets_cache_dir is not None:  # else the usual Hugging Face cache
                kwargs["cache_dir"] = self._datasets_cache_dir
        return functools.partial(iter_text, self.source, split, **kwargs)

    def sentencepiece_path(self) -> Path:
        """Where ``tokenizer="sentencepiece"`` keeps its model: a name hashed from everything the model depends on
        (source, and for local files or a local dataset folder their sizes and modification times; document unit,
        config, column, vocabulary size, sentence cap, seed; the Python version for the stdlib corpus)."""
        paths: list[Path] = []
        if self.source_kind == "files":
            paths = expand_paths(self.source)
        elif self.source_kind == "datasets" and os.path.isdir(os.path.expanduser(self.source)):
            paths = sorted(p for p in Path(self.source).expanduser().rglob("*") if p.is_file())
        files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
        key = json.dumps({
            "source": self.source if isinstance(self.source, str) else [os.fspath(s) for s in self.source],
            "files": files, "unit": self.text_unit, "config": self.dataset_config, "column": self.text_column,
            "vocab_size": self.requested_vocab_size, "max_sentences": self.sentencepiece_max_sentences,
            "seed": self.seed, "python": sys.version if self.source_kind == "stdlib" else None, "layout": 1,
        }, sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        return self.cache_dir / f"sentencepiece-{self.requested_vocab_size}-{digest}.model"

    def _ensure_tokenizer(self) -> Tokenizer:
        if self._tokenizer is not None:
            return self._tokenizer
        if self.tokenizer_spec == "sentencepiece":
            path = self.sentencepiece_path()
            if not path.is_file():
                train_sentencepiece(self._documents("train")(), self.requested_vocab_size, path,
                                    max_sentences=self.sentencepiece_max_sentences, seed=self.seed)
        else:
            path = Path(self.tokenizer_spec).expanduser()
        self._tokenizer = SentencePieceTokenizer(path)
        return self._tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        """The :class:`~perceiver_io.tokenizer.ByteTokenizer` or
        :class:`~perceiver_io.data.sentencepiece_tokenizer.SentencePieceTokenizer` (trained on first access if
        ``tokenizer="sentencepiece"`` and not cached yet)."""
        return self._ensure_tokenizer()

    @property
    def vocab_size(self) -> int:
        """Ids the model must embed: 262 for bytes, the SentencePiece model's size otherwise (for
        ``tokenizer="sentencepiece"`` the requested ``vocab_size``, known before training)."""
        if self.tokenizer_spec == "sentencepiece" and self._tokenizer is None:
            return self.requested_vocab_size
        return self.tokenizer.vocab_size

    # ------------------------------------------------------------------ datasets

    def prepare_data(self) -> None:
        """Train the SentencePiece model if ``tokenizer="sentencepiece"`` and it is not cached (rank 0 only)."""
        self._ensure_tokenizer()

    def _where(self) -> str:
        return f"source {self.source!r}" + (f" (config {self.dataset_config!r})" if self.dataset_config else "")

    def _make_dataset(self, split: TextSplit) -> Dataset:
        tokenizer = self._ensure_tokenizer()
        fresh = split == "train"
        if self.streaming:
            documents = self._documents(split)
            if next(documents(), None) is None:  # fail in setup, not in a worker, for an empty split
                raise ValueError(f"{self._where()} split {split!r}: empty corpus, no document to read")
            return StreamingMaskedWindows(
                documents, tokenizer, self.max_seq_len, split, self.seed, fresh, self.mask_fraction,
                self.max_windows[split], self.batch_size, self.shuffle_buffer if fresh else 0, self._where(),
                self.mask_unit)
        encoded = _encoded(self._documents(split)(), _Encoder(tokenizer), f"{self._where()} split {split!r}")
        packed = itertools.islice(pack_documents(encoded, self.max_seq_len, separator=tokenizer.sep_token_id,
                                                 pad_id=tokenizer.pad_token_id), self.max_windows[split])
        rows, lengths = [], []
        for item in packed:
            rows.append(item["input_ids"].astype(np.int32))
            lengths.append(int(item["attention_mask"].sum()))
        if not rows:
            raise ValueError(f"{self._where()} split {split!r}: empty corpus, no document to read")
        return MaskedWindowDataset(np.stack(rows), np.asarray(lengths, dtype=np.int64), tokenizer, split, self.seed,
                                   fresh, self.mask_fraction, self.mask_unit)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs (all three for None); idempotent."""
        needed: tuple[TextSplit, ...] = {
            "fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("test",),
        }.get(stage, TEXT_SPLITS)  # type: ignore[arg-type]
        for split in needed:
            if split not in self.datasets:
                self.datasets[split] = self._make_dataset(split)

    def _loader(self, split: TextSplit) -> DataLoader:
        if split not in self.datasets:
            self.datasets[split] = self._make_dataset(split)
        dataset = self.datasets[split]
        sampler = None
        if split == "train" and isinstance(dataset, MaskedWindowDataset):
            # one sampler for every training DataLoader, so that its epoch count carries over
            if self._train_sampler is None or len(self._train_sampler) != len(dataset):
                self._train_sampler = EpochShuffleSampler(len(dataset), self.seed)
            sampler = self._train_sampler
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Training batches: reshuffled (in memory) or shuffle-buffered (streamed), fresh masks every epoch."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order with fixed masks."""
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order with fixed masks."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test batches (with their labels)."""
        return self._loader("test")
