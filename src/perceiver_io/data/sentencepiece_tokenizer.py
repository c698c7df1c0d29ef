"""SentencePiece tokenization for the Perceiver IO masked language modelling variant that reads word pieces
instead of bytes: :func:`train_sentencepiece` trains a unigram model on a text stream, and
:class:`SentencePieceTokenizer` loads one.

Id layout (the first six ids equal :class:`~perceiver_io.tokenizer.ByteTokenizer`'s, so masking and packing code
treats both alike):

====  ==========  ==============================================================
id    piece       role
====  ==========  ==============================================================
0     ``[PAD]``   padding
1     ``[BOS]``   begin of sequence
2     ``[EOS]``   end of sequence
3     ``[MASK]``  mask token
4     ``[CLS]``   classification token
5     ``[SEP]``   separator
6     ``[UNK]``   unknown character (part of words, never a random replacement)
7...  pieces      learned pieces; a piece beginning with "▁" starts a word
====  ==========  ==============================================================

The six special pieces are SentencePiece *control* symbols rather than user-defined ones: encoding never produces
them from text, so a document that contains the literal string ``"[MASK]"`` stays text (as bytes do in the
masked-language-modelling data) instead of forging a mask token; :meth:`SentencePieceTokenizer.decode` renders them
as their names.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..serialization import atomic_write_bytes

__all__ = ["SPECIAL_PIECES", "SentencePieceTokenizer", "train_sentencepiece"]

SPECIAL_PIECES: tuple[str, ...] = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
UNK_PIECE = "[UNK]"
_UNK_ID = len(SPECIAL_PIECES)
_FIRST_PIECE_ID = _UNK_ID + 1
#: Longest training sentence fed to SentencePiece, in characters: its trainer skips sentences over 4192 bytes
#: (``max_sentence_length``), and 1024 characters are at most 4096 bytes of UTF-8.
_MAX_SENTENCE_CHARS = 1024


def _import_sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError as err:  # an optional dependency (the ``text`` extra)
        raise ImportError("SentencePiece tokenization needs the 'sentencepiece' package "
                          "(pip install sentencepiece)") from err
    return sentencepiece


def _sentences(texts: Iterable[str], max_sentences: int | None) -> Iterator[str]:
    """Training sentences: the non-empty lines of every text, lines longer than :data:`_MAX_SENTENCE_CHARS` cut at
    the last space before the limit (or at the limit), at most ``max_sentences`` of them."""
    count = 0
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}]: expected a str, got {type(text).__name__}")
        for line in text.splitlines():
            line = line.strip()
            while line:
                if max_sentences is not None and count >= max_sentences:
                    return
                if len(line) <= _MAX_SENTENCE_CHARS:
                    piece, line = line, ""
                else:
                    cut = line.rfind(" ", 0, _MAX_SENTENCE_CHARS)
                    cut = cut if cut > 0 else _MAX_SENTENCE_CHARS
                    piece, line = line[:cut], line[cut:].strip()
                count += 1
                yield piece


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    output: str | os.PathLike,
    *,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    byte_fallback: bool = False,
    max_sentences: int | None = 1_000_000,
    seed: int = 0,
    num_threads: int = 1,
    **options: Any,
) -> Path:
    """Train a SentencePiece model with the module's id layout on a stream of texts; write it to ``output``.

    Every non-empty line of every text is one training sentence (long lines are cut at a space, since the trainer
    skips sentences over 4192 bytes); reading stops after ``max_sentences`` sentences, so an endless stream is
    fine.  The model file is written atomically (a temporary file renamed), so concurrent readers never see half
    a model.

    Args:
        texts: documents (``str``), e.g. :func:`~perceiver_io.data.text_corpus.iter_text`.
        vocab_size: the exact number of ids, special ones included (at least 8).  The trainer fails with a clear
            error if the corpus cannot fill it.
        output: path of the ``.model`` file to write (parent folders are created).
        model_type: ``"unigram"`` (default, the SentencePiece default) or ``"bpe"``, ``"char"``, ``"word"``.
        character_coverage: fraction of characters covered by pieces; the rest become ``[UNK]`` (or bytes with
            ``byte_fallback``).
        byte_fallback: encode uncovered characters as UTF-8 byte pieces (``<0x..>``, 256 ids) instead of
            ``[UNK]``; needs ``vocab_size`` well above 256.
        max_sentences: stop reading after this many sentences (None: read everything).
        seed: seeds SentencePiece's random generator (sampling of seed pieces), for a reproducible model.
        num_threads: trainer threads.
        **options: further ``SentencePieceTrainer`` options (``normalization_rule_name``, ...).

    Returns:
        ``Path(output)``.

    Raises:
        ValueError: ``vocab_size`` too small or too large for the corpus, no text to train on, or another trainer
            error (its message included).
        TypeError: a text that is not a ``str``.
    """
    spm = _import_sentencepiece()
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, Integral) or vocab_size < _FIRST_PIECE_ID + 1:
        raise ValueError(f"vocab_size: expected an int >= {_FIRST_PIECE_ID + 1} ({_FIRST_PIECE_ID} special ids plus "
                         f"at least one piece), got {vocab_size!r}")
    if max_sentences is not None and (isinstance(max_sentences, bool) or not isinstance(max_sentences, Integral)
                                      or max_sentences < 1):
        raise ValueError(f"max_sentences: expected a positive int or None, got {max_sentences!r}")
    output = Path(output)
    sentences = _sentences(texts, max_sentences)
    first = next(sentences, None)
    if first is None:
        raise ValueError("texts: expected at least one non-empty line to train SentencePiece on, got none")

    def feed() -> Iterator[str]:
        yield first
        yield from sentences

    spm.set_random_generator_seed(int(seed))
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=feed(), model_writer=writer, vocab_size=int(vocab_size), model_type=model_type,
            character_coverage=character_coverage, byte_fallback=byte_fallback, num_threads=num_threads,
            pad_id=0, bos_id=1, eos_id=2, unk_id=_UNK_ID,
            pad_piece=SPECIAL_PIECES[0], bos_piece=SPECIAL_PIECES[1], eos_piece=SPECIAL_PIECES[2],
            unk_piece=UNK_PIECE, control_symbols=list(SPECIAL_PIECES[3:]),
            input_sentence_size=0,  # use every sentence fed (already capped by max_sentences)
            minloglevel=2, **options,
        )
    except RuntimeError as err:
        message = " ".join(str(err).split())
        if "Vocabulary size" in message or "vocab_size" in message:
            raise ValueError(f"vocab_size: {vocab_size} does not fit this corpus; "
                             f"SentencePiece says: {message}") from None
        raise ValueError(f"train_sentencepiece: the SentencePiece trainer failed: {message}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, writer.getvalue())
    return output


class SentencePieceTokenizer:
    """A SentencePiece model with the id layout of :func:`train_sentencepiece` (see the module docstring).

    Args:
        model_file: path of a ``.model`` file written by :func:`train_sentencepiece`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a SentencePiece model, or its first ids are not the layout's special pieces
            (the message names the path).
    """

    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    mask_token_id = 3
    cls_token_id = 4
    sep_token_id = 5
    unk_token_id = _UNK_ID
    num_special = len(SPECIAL_PIECES)
    """Ids below this are special (never masked, not counted in the masking budget)."""
    first_piece_id = _FIRST_PIECE_ID
    """The first learned piece: random replacements in masking are drawn from ``[first_piece_id, vocab_size)``."""

    def __init__(self, model_file: str | os.PathLike) -> None:
        if not isinstance(model_file, (str, os.PathLike)):
            raise TypeError(f"model_file: expected a path, got {type(model_file).__name__}")
        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FileNotFoundError(f"model_file: no SentencePiece model at {str(self.model_file)!r}")
        self._load(self.model_file.read_bytes())

    def _load(self, proto: bytes) -> None:
        spm = _import_sentencepiece()
        self._proto = proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"model_file: {str(self.model_file)!r} is not a valid SentencePiece model "
                             f"({' '.join(str(err).split())[:200]})") from None
        size = self._sp.get_piece_size()
        pieces = [self._sp.id_to_piece(i) for i in range(size)]
        expected = [*SPECIAL_PIECES, UNK_PIECE]
        if pieces[: len(expected)] != expected:
            raise ValueError(f"model_file: {str(self.model_file)!r} does not have the id layout of "
                             f"train_sentencepiece: ids 0..{len(expected) - 1} should be {expected}, got "
                             f"{pieces[: len(expected)]}")
        self._pieces = pieces
        # Word starts by id, for a vectorised word_starts(): learned pieces beginning with "▁" (U+2581).
        self._starts = np.array([i >= _FIRST_PIECE_ID and p.startswith("\u2581") for i, p in enumerate(pieces)])

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers receive a pickled copy
        return {"model_file": self.model_file, "proto": self._proto}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.model_file = state["model_file"]
        self._load(state["proto"])

    @property
    def vocab_size(self) -> int:
        """Number of ids, special ones included."""
        return len(self._pieces)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({str(self.model_file)!r}, vocab_size={self.vocab_size})"

    def id_to_piece(self, token_id: int) -> str:
        """The piece string of one id."""
        self._check_ids("token_id", np.asarray([token_id]))
        return self._pieces[int(token_id)]

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Ids of one text: ``[CLS] pieces [SEP]``, or the pieces alone with ``add_special_tokens=False``.

        Text is normalised by the model's rule (NFKC and whitespace collapsing by default), so decoding returns
        the normalised text.  Literal special-piece strings (``"[MASK]"``) are encoded as text.

        Raises:
            TypeError: ``text`` is not a ``str`` or ``add_special_tokens`` not a bool.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        if not isinstance(add_special_tokens, bool):
            raise TypeError(f"add_special_tokens: expected a bool, got {type(add_special_tokens).__name__}")
        ids = self._sp.encode(text, out_type=int)
        return [self.cls_token_id, *ids, self.sep_token_id] if add_special_tokens else ids

    def _check_ids(self, name: str, ids: np.ndarray) -> np.ndarray:
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer ids, got dtype {ids.dtype}")
        ids = ids.astype(np.int64, copy=False)
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            where = tuple(int(k) for k in np.argwhere(bad)[0])
            raise ValueError(f"{name}: every id must be in [0, {self.vocab_size}), got {ids[where]} at index "
                             f"{list(where) if ids.ndim > 1 else where[0]}")
        return ids

    @staticmethod
    def _as_array(value: object) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"ids: expected integer ids, got a tensor of dtype {value.dtype}")
            value = value.detach().cpu().numpy()
        return np.asarray(value)

    def decode(self, token_ids: Sequence[int] | np.ndarray | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of one 1-D id sequence.  Special ids render as their names (``"[MASK]"``, ``"[SEP]"``, ...), like
        :class:`~perceiver_io.tokenizer.ByteTokenizer`, or are dropped with ``skip_special_tokens=True``;
        ``[UNK]`` renders as SentencePiece's " ⁇ ".

        Raises:
            TypeError: non-integer ids.  ValueError: not 1-D, or an id outside ``[0, vocab_size)``.
        """
        if not isinstance(skip_special_tokens, bool):
            raise TypeError(f"skip_special_tokens: expected a bool, got {type(skip_special_tokens).__name__}")
        ids = self._as_array(token_ids)
        if ids.ndim != 1:
            raise ValueError(f"token_ids: expected a 1-D id sequence, got shape {list(ids.shape)}")
        ids = self._check_ids("token_ids", ids).tolist()
        out: list[str] = []
        run: list[int] = []
        previous = -1  # the special id before the current run (-1: none)

        def flush() -> None:
            if run:
                text = self._sp.decode(run)
                # decode drops the leading "▁" of a run as the text's dummy prefix; after [MASK] (which replaced
                # pieces) it is a real space, after [CLS]/[SEP]/... a document start
                if previous == self.mask_token_id and self._pieces[run[0]].startswith("\u2581"):
                    text = " " + text
                out.append(text)
                run.clear()

        for i in ids:  # loop over ids only to split runs of ordinary pieces at special ids
            if i < self.num_special:
                flush()
                previous = i
                if not skip_special_tokens:
                    out.append(SPECIAL_PIECES[i])
            else:
                run.append(i)
        flush()
        return "".join(out)

    def word_starts(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """``bool`` array of the shape of ``ids`` (any rank): True where a learned piece beginning with "▁" starts
        a new word (special ids and ``[UNK]``: False).  For whole-word masking
        (:func:`~perceiver_io.data.masking.mask_words`)."""
        return self._starts[self._check_ids("ids", self._as_array(ids))]
