"""Whole-word masking (BERT-style, as in the Perceiver IO masked language modelling experiments) and document
packing into fixed windows.

Whole-word masking (:func:`whole_word_mask`) picks random words until about ``mask_fraction`` (15 %) of a row's
real tokens are selected; a word is always selected as a whole.  Each selected *word* then draws once: with
probability 0.8 all its tokens become ``[MASK]``, 0.1 each of its tokens becomes an independent random
non-special id, 0.1 it stays unchanged.  Deciding per word (not per token, as BERT's reference code and
``transformers``' whole-word collator do) is the whole-word convention taken to its end: with bytes, per-token
decisions would leave most masked words with some of their bytes visible (``"h[MASK]llo"``), which makes the task
much easier than predicting a word.  Labels are the original ids at the selected positions and -100 (the
cross-entropy ``ignore_index``) everywhere else, so the loss sees only the selected tokens.

What a word is (:func:`word_ids`):

* bytes (:func:`byte_word_ids`): a maximal run of non-whitespace bytes; the ASCII whitespace bytes (space, tab,
  ``\\n``, ``\\v``, ``\\f``, ``\\r``) belong to no word and are never masked (they do count towards the 15 %);
* SentencePiece: a word starts at a piece beginning with ``"▁"`` and runs until the next such piece
  (:meth:`~perceiver_io.data.sentencepiece_tokenizer.SentencePieceTokenizer.word_starts`).

Special tokens and padding are never selected and do not count towards the budget.

:func:`pack_documents` turns a stream of tokenised documents into fixed-length windows (2048 bytes at paper
scale): ``doc_1 [SEP] doc_2 [SEP] ...`` cut every ``window`` tokens, so long documents continue in the next window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch

from ..core.validation import check_choice, check_number
from ..tokenizer import ByteTokenizer

__all__ = ["IGNORE_INDEX", "MASK_UNITS", "byte_word_ids", "mask_words", "pack_documents", "whole_word_mask", "word_ids"]

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
MASK_UNITS = ("word", "token")
"""What :func:`mask_words` selects and replaces as one: whole words (the paper) or single tokens."""

#: The bytes that separate words: ASCII whitespace, as ``bytes.split()`` uses.
ASCII_WHITESPACE: tuple[int, ...] = (9, 10, 11, 12, 13, 32)
_NUM_BYTE_SPECIAL = ByteTokenizer.vocab_size - 256  # ids below are [PAD] [BOS] [EOS] [MASK] [CLS] [SEP]
_BYTE_IS_SPACE = np.zeros(ByteTokenizer.vocab_size, dtype=bool)
_BYTE_IS_SPACE[np.array(ASCII_WHITESPACE) + _NUM_BYTE_SPECIAL] = True

Generator = np.random.Generator | torch.Generator | int | None


def _as_rng(generator: Generator) -> np.random.Generator:
    """A numpy Generator from a numpy Generator (used as is), a torch Generator (one draw seeds a numpy one, so
    the torch generator advances deterministically), an int seed, or None (fresh OS entropy)."""
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    if generator is None or (isinstance(generator, Integral) and not isinstance(generator, bool)):
        return np.random.default_rng(generator)
    raise TypeError(f"generator: expected a numpy Generator, a torch Generator, an int seed or None, "
                    f"got {type(generator).__name__}")


def _as_int_array(name: str, value: object) -> np.ndarray:
    """``value`` (list, numpy array or torch tensor of integers, rank 1 or 2) as an int64 array."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer ids, got a tensor of dtype {value.dtype}")
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.size == 0:
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer ids, got elements of dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(f"{name}: expected shape [L] or [B, L], got {list(array.shape)}")
    return array.astype(np.int64, copy=False)


def _as_bool_array(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {list(shape)} (that of input_ids), got {list(array.shape)}")
    if array.dtype != bool and array.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected a bool or 0/1 integer array, got dtype {array.dtype}")
    return array.astype(bool, copy=False)


def word_ids(in_word: np.ndarray | torch.Tensor, word_starts: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Word index of every token: ``[L]`` or ``[B, L]`` int64, words numbered 0, 1, ... per row, -1 outside words.

    A word is a maximal run of ``in_word`` tokens, additionally split before every token where ``word_starts`` is
    True (SentencePiece pieces beginning with "▁").  Tokens with ``in_word`` False (special tokens, padding,
    whitespace bytes) end a word and get -1.

    Args:
        in_word: ``[L]`` or ``[B, L]`` bool: the token belongs to some word (can be masked).
        word_starts: same shape, bool, or None (words are the maximal runs of ``in_word``).
    """
    in_word = np.asarray(in_word.detach().cpu().numpy() if isinstance(in_word, torch.Tensor) else in_word)
    if in_word.ndim not in (1, 2):
        raise ValueError(f"in_word: expected shape [L] or [B, L], got {list(in_word.shape)}")
    in_word = _as_bool_array("in_word", in_word, in_word.shape)
    rows = in_word if in_word.ndim == 2 else in_word[None]
    previous = np.zeros_like(rows)
    previous[:, 1:] = rows[:, :-1]
    begins = rows & ~previous  # a run starts after a non-word token (or at the row start)
    if word_starts is not None:
        begins |= rows & _as_bool_array("word_starts", word_starts, in_word.shape).reshape(rows.shape)
    ids = np.cumsum(begins, axis=1, dtype=np.int64) - 1
    ids[~rows] = -1
    return ids.reshape(in_word.shape)


def byte_word_ids(input_ids: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
    """:func:`word_ids` for :class:`~perceiver_io.tokenizer.ByteTokenizer` ids (``[L]`` or ``[B, L]``): a word is a
    maximal run of non-whitespace bytes; special ids (0..5, padding included) and ASCII whitespace bytes get -1.

    Raises:
        TypeError, ValueError: non-integer ids, a rank other than 1 or 2, or an id outside ``[0, 262)``.
    """
    ids = _as_int_array("input_ids", input_ids)
    _check_range("input_ids", ids, ByteTokenizer.vocab_size)
    return word_ids((ids >= _NUM_BYTE_SPECIAL) & ~_BYTE_IS_SPACE[ids])


def _check_range(name: str, ids: np.ndarray, vocab_size: int) -> None:
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        where = tuple(int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"{name}: every id must be in [0, {vocab_size}), got {ids[where]} at index {list(where)}")


def whole_word_mask(
    input_ids: np.ndarray | torch.Tensor | Sequence[int],
    word_ids: np.ndarray | torch.Tensor,
    *,
    mask_token_id: int,
    random_range: tuple[int, int],
    counted: np.ndarray | torch.Tensor | None = None,
    mask_fraction: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: Generator = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """BERT-style whole-word masking of ``input_ids [L]`` or ``[B, L]``; returns ``(masked_ids, labels)``.

    Per row, the words are taken in random order and selected while they fit the budget ``mask_fraction *
    counted.sum()``; the word that crosses the budget is selected with probability equal to the part of it that
    fits, so the expected number of selected tokens is exactly the budget (no rounding bias on short rows).  A row
    with at least one word always gets at least one selected word, so a batch never has zero loss positions.
    Then each selected word draws once (see the module docstring): ``mask_prob`` -> all its tokens
    ``mask_token_id``; ``random_prob`` -> each token an independent uniform id in ``random_range``; otherwise
    unchanged.  Vectorised over all words of all rows (no Python loop over words or tokens).

    Args:
        input_ids: ``[L]`` or ``[B, L]`` integer ids (list, numpy array or torch tensor).
        word_ids: same shape, int: tokens with the same non-negative id in a row form one word (usually from
            :func:`word_ids` / :func:`byte_word_ids`); -1 = in no word, never selected.
        mask_token_id: the ``[MASK]`` id.
        random_range: ``(low, high)``: random replacements are uniform in ``[low, high)`` (the non-special ids).
        counted: same shape, bool: the tokens the budget is a fraction of (default: ``word_ids >= 0``).  Pass the
            non-special, non-padding tokens to make whitespace bytes count, as the byte helpers do.
        mask_fraction: fraction of counted tokens to select, in (0, 1].
        mask_prob, random_prob: per selected word, the probability of ``[MASK]`` and of random ids (the rest is
            unchanged); each in [0, 1], their sum at most 1.
        generator: a numpy ``Generator``, a torch ``Generator``, an int seed, or None (not reproducible).

    Returns:
        ``masked_ids`` and ``labels`` (int64; original id where selected, -100 elsewhere), of the input's shape,
        torch tensors for a tensor input and numpy arrays otherwise.

    Raises:
        TypeError, ValueError: wrong dtypes or shapes, probabilities out of range, an empty ``random_range``.
    """
    is_torch = isinstance(input_ids, torch.Tensor)
    device = input_ids.device if is_torch else None
    ids = _as_int_array("input_ids", input_ids)
    shape = ids.shape
    if isinstance(word_ids, torch.Tensor):
        word_ids = word_ids.detach().cpu().numpy()
    words = np.asarray(word_ids)
    if words.shape != shape:
        raise ValueError(f"word_ids: expected shape {list(shape)} (that of input_ids), got {list(words.shape)}")
    if words.size and words.dtype.kind not in "iu":
        raise TypeError(f"word_ids: expected integer word indices, got dtype {words.dtype}")
    words = words.astype(np.int64, copy=False)
    counted_arr = words >= 0 if counted is None else _as_bool_array("counted", counted, shape)
    mask_fraction = check_number("mask_fraction", mask_fraction, 0, 1, low_open=True)
    mask_prob = check_number("mask_prob", mask_prob, 0, 1)
    random_prob = check_number("random_prob", random_prob, 0, 1)
    if mask_prob + random_prob > 1 + 1e-9:
        raise ValueError(f"mask_prob + random_prob: expected at most 1, got {mask_prob} + {random_prob}")
    if (not isinstance(random_range, (tuple, list)) or len(random_range) != 2
            or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in random_range)
            or random_range[0] >= random_range[1]):
        raise ValueError(f"random_range: expected (low, high) ints with low < high, got {random_range!r}")
    if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, Integral):
        raise TypeError(f"mask_token_id: expected an int, got {type(mask_token_id).__name__}")
    rng = _as_rng(generator)

    ids2 = ids if ids.ndim == 2 else ids[None]
    words2 = words.reshape(ids2.shape)
    num_rows = ids2.shape[0]
    valid = words2 >= 0
    masked = ids2.copy()
    labels = np.full_like(ids2, IGNORE_INDEX)
    if valid.any():
        # One global index per (row, word): rows are offset so that word ids never collide across rows.
        stride = int(words2.max()) + 1
        keys = (np.arange(num_rows, dtype=np.int64)[:, None] * stride + words2)[valid]
        if keys.size > 1 and not (keys[1:] >= keys[:-1]).all():
            unique_keys, token_word = np.unique(keys, return_inverse=True)  # token_word: [num valid tokens]
        else:  # the usual case (ids from word_ids() grow along a row): no sort needed
            new_word = np.concatenate(([True], keys[1:] != keys[:-1]))
            unique_keys, token_word = keys[new_word], np.cumsum(new_word) - 1
        num_words = unique_keys.size
        word_row = unique_keys // stride
        word_len = np.bincount(token_word, minlength=num_words)
        budget = mask_fraction * counted_arr.reshape(ids2.shape).sum(1)  # [B]

        # Random word order within each row: sort by (row, random priority), then a running length per row.
        order = np.lexsort((rng.random(num_words), word_row))
        row_sorted, len_sorted = word_row[order], word_len[order]
        total = np.cumsum(len_sorted)
        first = np.searchsorted(row_sorted, np.arange(num_rows))  # index in `order` of each row's first word
        before = total - len_sorted - np.concatenate(([0], total))[first][row_sorted]
        row_budget = budget[row_sorted]
        fits = before + len_sorted <= row_budget
        crosses = (before < row_budget) & ~fits
        take = fits | (crosses & (rng.random(num_words) * len_sorted < row_budget - before))
        # At least one word per row that has one: its first word in the random order.
        has_word = first < num_words
        has_word[has_word] &= row_sorted[first[has_word]] == np.arange(num_rows)[has_word]
        none_taken = np.bincount(row_sorted, weights=take, minlength=num_rows) == 0
        take[first[has_word & none_taken]] = True

        selected_word = np.zeros(num_words, dtype=bool)
        selected_word[order] = take
        draw = rng.random(num_words)
        to_mask_word = selected_word & (draw < mask_prob)
        to_random_word = selected_word & (draw >= mask_prob) & (draw < mask_prob + random_prob)

        selected = np.zeros_like(valid)
        selected[valid] = selected_word[token_word]
        to_mask = np.zeros_like(valid)
        to_mask[valid] = to_mask_word[token_word]
        to_random = np.zeros_like(valid)
        to_random[valid] = to_random_word[token_word]
        labels[selected] = ids2[selected]
        masked[to_mask] = mask_token_id
        masked[to_random] = rng.integers(random_range[0], random_range[1], size=int(to_random.sum()))

    masked, labels = masked.reshape(shape), labels.reshape(shape)
    if is_torch:
        return torch.from_numpy(masked).to(device), torch.from_numpy(labels).to(device)
    return masked, labels


def mask_words(
    input_ids: np.ndarray | torch.Tensor | Sequence[int],
    tokenizer: Any = None,
    *,
    mask_fraction: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: Generator = None,
    unit: str = "word",
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """:func:`whole_word_mask` with the word rule and ids of ``tokenizer``.

    ``unit="token"`` selects and replaces single tokens instead of whole words (BERT's original masking; each
    token that could be in a word is its own "word"): with bytes, ``"h[MASK]llo"``, which a model can fill in from
    the neighbouring bytes. The default ``"word"`` is the paper's whole-word masking.

    ``tokenizer`` None or a :class:`~perceiver_io.tokenizer.ByteTokenizer`: words are whitespace-separated byte
    runs (:func:`byte_word_ids`), the budget counts every non-special byte, random ids are bytes (6..261).
    A :class:`~perceiver_io.data.sentencepiece_tokenizer.SentencePieceTokenizer`: words from its
    ``word_starts``, the budget counts every non-special piece, random ids are pieces (``first_piece_id`` ..
    ``vocab_size - 1``).  Special ids and padding are never masked.
    """
    check_choice("unit", unit, MASK_UNITS)
    ids = _as_int_array("input_ids", input_ids)
    if tokenizer is None or isinstance(tokenizer, ByteTokenizer):
        _check_range("input_ids", ids, ByteTokenizer.vocab_size)
        words = byte_word_ids(ids)
        counted = ids >= _NUM_BYTE_SPECIAL
        mask_id, random_range = ByteTokenizer.mask_token_id, (_NUM_BYTE_SPECIAL, ByteTokenizer.vocab_size)
    elif callable(getattr(tokenizer, "word_starts", None)):
        _check_range("input_ids", ids, tokenizer.vocab_size)
        counted = ids >= tokenizer.num_special
        words = word_ids(counted, tokenizer.word_starts(ids))
        mask_id, random_range = tokenizer.mask_token_id, (tokenizer.first_piece_id, tokenizer.vocab_size)
    else:
        raise TypeError(f"tokenizer: expected None, a ByteTokenizer or a SentencePieceTokenizer, "
                        f"got {type(tokenizer).__name__}")
    if unit == "token":
        words = np.where(words >= 0, np.arange(words.shape[-1]), -1)
    return whole_word_mask(input_ids, words, mask_token_id=mask_id, random_range=random_range, counted=counted,
                           mask_fraction=mask_fraction, mask_prob=mask_prob, random_prob=random_prob,
                           generator=generator)


def pack_documents(
    documents: Iterable[Sequence[int] | np.ndarray | torch.Tensor],
    window: int,
    *,
    separator: int | Sequence[int] = ByteTokenizer.sep_token_id,
    pad_id: int = ByteTokenizer.pad_token_id,
    drop_last: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Pack a stream of tokenised documents into windows of exactly ``window`` tokens (streaming: one document is
    read at a time and windows are yielded as soon as they are full).

    The token stream is ``doc_1 sep doc_2 sep doc_3 sep ...``: ``separator`` follows *every* document (the last
    one too), so a model always sees where a document ends, and a window may start inside a document or with its
    separator.  The stream is cut every ``window`` tokens: a document longer than the space left continues in
    the next window(s).  Empty documents are skipped (no double separators).

    Args:
        documents: 1-D integer id sequences (lists, numpy arrays, tensors), without special wrapping.
        window: tokens per window (2048 at paper scale for bytes).
        separator: id(s) after every document ([SEP] = 5 by default; e.g. ``()`` for none, or EOS = 2).
        pad_id: fills the tail of the last, partial window ([PAD] = 0).
        drop_last: drop the last partial window instead of padding it.

    Yields:
        ``{"input_ids": [window] int64, "attention_mask": [window] int64}``, the mask 1 on tokens and 0 on padding
        (only the last window can have padding).

    Raises:
        ValueError, TypeError: a bad ``window``/``separator``/``pad_id``, or a document that is not a 1-D integer
            sequence (named by its index).
    """
    if isinstance(window, bool) or not isinstance(window, Integral) or window < 1:
        raise ValueError(f"window: expected a positive int, got {window!r}")
    sep_ids = [separator] if isinstance(separator, Integral) else list(separator)
    if any(isinstance(s, bool) or not isinstance(s, Integral) for s in sep_ids):
        raise TypeError(f"separator: expected an id or a sequence of ids, got {separator!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, Integral):
        raise TypeError(f"pad_id: expected an int, got {type(pad_id).__name__}")
    if not isinstance(drop_last, bool):
        raise TypeError(f"drop_last: expected a bool, got {type(drop_last).__name__}")
    return _pack(documents, int(window), np.asarray(sep_ids, dtype=np.int64), int(pad_id), drop_last)


def _pack(documents: Iterable[Any], window: int, sep: np.ndarray, pad_id: int, drop_last: bool
          ) -> Iterator[dict[str, np.ndarray]]:
    full_mask = np.ones(window, dtype=np.int64)
    pending: list[np.ndarray] = []  # chunks not yet emitted, fewer than `window` tokens before a new document
    size = 0
    for index, doc in enumerate(documents):
        ids = _as_int_array(f"documents[{index}]", doc)
        if ids.ndim != 1:
            raise ValueError(f"documents[{index}]: expected a 1-D id sequence, got shape {list(ids.shape)}")
        if ids.size == 0:
            continue
        pending += [ids, sep]
        size += ids.size + sep.size
        if size >= window:
            stream = np.concatenate(pending)
            cut = size - size % window
            for start in range(0, cut, window):
                yield {"input_ids": stream[start:start + window].copy(), "attention_mask": full_mask.copy()}
            pending = [stream[cut:]] if size > cut else []
            size -= cut
    if size and not drop_last:
        rest = np.concatenate(pending)
        input_ids = np.full(window, pad_id, dtype=np.int64)
        input_ids[:size] = rest
        attention_mask = np.zeros(window, dtype=np.int64)
        attention_mask[:size] = 1
        yield {"input_ids": input_ids, "attention_mask": attention_mask}
