"""Byte-level UTF-8 tokenizer for Perceiver IO, id-for-id compatible with ``transformers.PerceiverTokenizer``.

Ids: 0 ``[PAD]``, 1 ``[BOS]``, 2 ``[EOS]``, 3 ``[MASK]``, 4 ``[CLS]``, 5 ``[SEP]``, and ``6 + b`` for
every UTF-8 byte ``b``; 262 in all.  Outputs and defaults equal ``transformers.PerceiverTokenizer()``
(transformers 5.x; the tests compare both on random Unicode text and random ids):

* Encoding is ``text.encode("utf-8")`` shifted by 6, except that a literal special-token string in
  the text (``"[MASK]"`` etc., case-sensitive, leftmost match) becomes its id.  With
  ``add_special_tokens=True`` (default) a text becomes ``[CLS] ids [SEP]``.
* ``__call__`` defaults to ``padding=False``, ``truncation=None``, ``max_length=None``,
  ``return_tensors=None``; ``truncation=None`` with ``max_length`` and no padding truncates;
  ``truncation=True`` or ``padding="max_length"`` without ``max_length`` uses ``model_max_length``
  (2048).  Truncation is on the right and keeps ``[CLS]``/``[SEP]``; padding is on the right with 0.
* ``decode``/``batch_decode`` default to ``skip_special_tokens=False``: special ids render as
  ``"[CLS]"``, ``"[SEP]"``, ``"[MASK]"``, ``"[PAD]"``, ... with no spaces, spliced into the byte
  stream, which is decoded once with ``errors="replace"``; ``skip_special_tokens=True`` drops ids
  0..5 before decoding.  No tokenization-space clean-up (transformers 5.x default).

Differences, all failing loudly where transformers would return something: ``vocab_size`` is 262
(transformers' ``vocab_size`` is 256, its ``len()`` 262); no text pairs; ``padding`` accepts
``True``/``False``/``"longest"``/``"max_length"``, ``truncation`` ``True``/``False``/``None``,
``return_tensors`` ``"pt"``/``None``; ``decode`` takes one 1-D sequence (batches go to
``batch_decode``); ``max_length`` below 2 (1 without special tokens), ids outside ``[0, 262)``, an
empty batch and non-``str`` text raise errors that name the argument.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch

__all__ = ["ByteTokenizer"]

_SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
_NUM_SPECIAL = len(_SPECIAL_TOKENS)
_VOCAB_SIZE = _NUM_SPECIAL + 256

# The special strings are ASCII, which never occurs inside a multi-byte UTF-8 sequence, so matching
# on bytes equals matching on characters; none is a prefix of another, so leftmost matching equals
# transformers' trie split.
_SPECIAL_RE = re.compile(b"|".join(re.escape(t.encode("ascii")) for t in _SPECIAL_TOKENS))
_SPECIAL_ID = {t.encode("ascii"): i for i, t in enumerate(_SPECIAL_TOKENS)}

# Bytes of every id for skip_special_tokens=False: id i renders as _RENDER[i, :_RENDER_LEN[i]].
_RENDER = np.zeros((_VOCAB_SIZE, max(map(len, _SPECIAL_TOKENS))), dtype=np.uint8)
_RENDER_LEN = np.ones(_VOCAB_SIZE, dtype=np.int64)
for _i, _t in enumerate(_SPECIAL_TOKENS):
    _RENDER[_i, : len(_t)] = np.frombuffer(_t.encode("ascii"), dtype=np.uint8)
    _RENDER_LEN[_i] = len(_t)
_RENDER[_NUM_SPECIAL:, 0] = np.arange(256, dtype=np.uint8)


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {_type_name(value)}")


def _as_ids(ids: object, name: str, ndim: int) -> np.ndarray:
    """``ids`` as an int64 array of rank ``ndim`` with every value in ``[0, 262)``."""
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer ids, got a tensor of dtype {ids.dtype}")
        ids = ids.detach().cpu().numpy()
    elif isinstance(ids, (str, bytes, bytearray)):
        raise TypeError(f"{name}: expected integer ids, got {_type_name(ids)}")
    try:
        arr = np.asarray(ids)
    except ValueError:
        raise ValueError(f"{name}: expected a {ndim}-D sequence of integer ids, got a ragged sequence") from None
    if arr.size == 0:
        arr = arr.astype(np.int64)
    elif arr.dtype == object and all(isinstance(v, Integral) and not isinstance(v, bool) for v in arr.flat):
        pass  # Python ints too large for int64: the range check below reports them
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer ids, got elements of dtype {arr.dtype}")
    if arr.ndim != ndim:
        hint = " (use batch_decode for a batch)" if ndim == 1 and arr.ndim == 2 else ""
        raise ValueError(f"{name}: expected a {ndim}-D sequence of ids, got shape {list(arr.shape)}{hint}")
    bad = (arr < 0) | (arr >= _VOCAB_SIZE)
    if bad.any():
        where = tuple(int(k) for k in np.argwhere(bad)[0])
        index = where[0] if ndim == 1 else list(where)
        raise ValueError(f"{name}: every id must be in [0, {_VOCAB_SIZE}), got {arr[where]} at index {index}")
    return arr.astype(np.int64)


def _decode_array(arr: np.ndarray, skip_special_tokens: bool) -> str:
    """Text of a valid int64 [N] id array (see :meth:`ByteTokenizer.decode`)."""
    special = arr < _NUM_SPECIAL
    if skip_special_tokens or not special.any():
        data = (arr[~special] - _NUM_SPECIAL).astype(np.uint8).tobytes()
    else:  # [N, 6] rendered bytes, keep each row's first _RENDER_LEN, in row-major order
        data = _RENDER[arr][np.arange(_RENDER.shape[1]) < _RENDER_LEN[arr][:, None]].tobytes()
    return data.decode("utf-8", errors="replace")


MAX_LENGTH_LIMIT = 2**31 - 1
"""The largest ``max_length`` (padding to more would not fit a tensor dimension anyway)."""


class ByteTokenizer:
    """UTF-8 byte tokenizer with the ids and defaults of ``transformers.PerceiverTokenizer``.

    Args:
        model_max_length: length used by ``truncation=True`` or ``padding="max_length"`` without
            ``max_length`` (2048, as in transformers).
    """

    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    mask_token_id = 3
    cls_token_id = 4
    sep_token_id = 5
    vocab_size = _VOCAB_SIZE
    """Number of ids, 262 (6 special + 256 bytes) = ``len(transformers.PerceiverTokenizer())``."""

    def __init__(self, model_max_length: int = 2048) -> None:
        if isinstance(model_max_length, bool) or not isinstance(model_max_length, Integral):
            raise TypeError(f"model_max_length: expected an int, got {_type_name(model_max_length)}")
        if model_max_length < 2:
            raise ValueError(f"model_max_length: expected an int >= 2, got {model_max_length}")
        self.model_max_length = int(model_max_length)

    def __len__(self) -> int:
        return _VOCAB_SIZE

    # ------------------------------------------------------------------ encoding

    def _encode_array(self, text: object, add_special_tokens: bool, name: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"{name}: expected a str, got {_type_name(text)}")
        data = text.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, as in transformers
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + _NUM_SPECIAL
        if b"[" in data:
            keep = np.ones(ids.size, dtype=bool)
            for m in _SPECIAL_RE.finditer(data):  # one step per literal special token, not per byte
                ids[m.start()] = _SPECIAL_ID[m.group()]
                keep[m.start() + 1 : m.end()] = False
            ids = ids[keep]
        if add_special_tokens:
            ids = np.concatenate(([self.cls_token_id], ids, [self.sep_token_id]))
        return ids

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Ids of one text: ``[CLS] bytes+6 [SEP]`` (without the wrap if ``add_special_tokens=False``).

        Raises:
            TypeError: ``text`` is not a ``str``, or ``add_special_tokens`` is not a bool.
        """
        _check_bool("add_special_tokens", add_special_tokens)
        return self._encode_array(text, add_special_tokens, "text").tolist()

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """Encode one text or a batch into ``{"input_ids": ..., "attention_mask": ...}``.

        Args:
            text: a ``str`` or a non-empty list/tuple of ``str``.
            add_special_tokens: wrap every text as ``[CLS] ids [SEP]``.
            padding: ``False`` (default) no padding; ``True``/``"longest"`` right-pad with 0 to the
                longest row; ``"max_length"`` right-pad to ``max_length`` (default
                ``model_max_length``), leaving longer rows as they are.
            truncation: ``True`` cuts rows on the right to ``max_length`` (default
                ``model_max_length``), keeping ``[CLS]``/``[SEP]``; ``False`` never cuts; ``None``
                (default) cuts only if ``max_length`` is given and ``padding=False``.
            max_length: at least 2 (1 with ``add_special_tokens=False``).  When it has no effect
                (no truncation and ``padding`` not ``"max_length"``) a ``UserWarning`` says so.
            return_tensors: ``None`` (default) for Python lists, flat for a single ``str``;
                ``"pt"`` for ``torch.long`` tensors [B, L] (B = 1 for a single ``str``).

        Returns:
            ``input_ids`` and ``attention_mask`` (1 on tokens, 0 on padding), same shape.

        Raises:
            TypeError: ``text`` is not a ``str`` or a list/tuple of ``str``; a flag or
                ``max_length`` has the wrong type.
            ValueError: empty batch; ``max_length`` too small; unknown ``padding``,
                ``truncation`` or ``return_tensors``; ``return_tensors="pt"`` with rows of unequal
                length.
        """
        single = isinstance(text, str)
        if single:
            batch: Sequence[str] = [text]  # type: ignore[list-item]
        elif isinstance(text, (list, tuple)):
            if not text:
                raise ValueError(f"text: expected a str or a non-empty list/tuple of str, got an empty {_type_name(text)}")
            batch = text
        else:
            raise TypeError(f"text: expected a str or a list/tuple of str, got {_type_name(text)}")
        _check_bool("add_special_tokens", add_special_tokens)
        if padding not in (True, False, "longest", "max_length") or not isinstance(padding, (bool, str)):
            raise ValueError(f"padding: expected True, False, 'longest' or 'max_length', got {padding!r}")
        if truncation is not None and not isinstance(truncation, bool):
            raise ValueError(f"truncation: expected True, False or None, got {truncation!r}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors: expected 'pt' or None, got {return_tensors!r}")
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, Integral):
                raise TypeError(f"max_length: expected an int or None, got {_type_name(max_length)}")
            floor = 2 if add_special_tokens else 1
            if max_length < floor:
                why = "[CLS] and [SEP] with add_special_tokens=True" if add_special_tokens else "one token"
                raise ValueError(f"max_length: expected an int >= {floor} (room for {why}), got {max_length}")
            if max_length > MAX_LENGTH_LIMIT:
                raise ValueError(f"max_length: expected at most 2**31 - 1 (a tensor's length), got {max_length}")

        truncate = truncation is True or (truncation is None and max_length is not None and padding is False)
        if max_length is not None and not truncate and padding != "max_length":
            warnings.warn(
                f"max_length={max_length} is ignored: it applies only with truncation or padding='max_length'",
                UserWarning,
                stacklevel=2,
            )
        limit = self.model_max_length if max_length is None else int(max_length)

        rows = []
        for i, t in enumerate(batch):  # loop over texts, not characters
            ids = self._encode_array(t, add_special_tokens, "text" if single else f"text[{i}]")
            if truncate and ids.size > limit:
                ids = np.concatenate((ids[: limit - 1], ids[-1:])) if add_special_tokens else ids[:limit]
            rows.append(ids)
        lengths = np.array([r.size for r in rows])
        if padding == "max_length":
            widths = np.maximum(lengths, limit)
        elif padding is False:
            widths = lengths
        else:
            widths = np.full_like(lengths, lengths.max())

        if return_tensors is None:
            ids_out = [r.tolist() + [self.pad_token_id] * int(w - r.size) for r, w in zip(rows, widths)]
            mask_out = [[1] * int(n) + [0] * int(w - n) for n, w in zip(lengths, widths)]
            if single:
                return {"input_ids": ids_out[0], "attention_mask": mask_out[0]}
            return {"input_ids": ids_out, "attention_mask": mask_out}

        if np.any(widths != widths[0]):
            raise ValueError(
                f"text: cannot stack rows of lengths {widths.tolist()} into one tensor with padding={padding!r}, "
                f"truncation={truncation!r}, max_length={max_length!r}; use padding=True (or truncation=True "
                "with padding='max_length'), or return_tensors=None"
            )
        input_ids = torch.full((len(rows), int(widths[0])), self.pad_token_id, dtype=torch.long)
        for b, r in enumerate(rows):  # loop over rows, not tokens
            input_ids[b, : r.size] = torch.from_numpy(r)
        attention_mask = (torch.arange(input_ids.shape[1]) < torch.from_numpy(lengths)[:, None]).long()
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------ decoding

    def decode(self, token_ids: Sequence[int] | np.ndarray | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of one id sequence; equals ``transformers.PerceiverTokenizer().decode``.

        Args:
            token_ids: list of ints, or 1-D integer NumPy array / torch tensor, values in ``[0, 262)``.
            skip_special_tokens: ``False`` (default) renders ids 0..5 as ``"[PAD]"``, ``"[BOS]"``,
                ``"[EOS]"``, ``"[MASK]"``, ``"[CLS]"``, ``"[SEP]"`` (no spaces); ``True`` drops them.
                Bytes are decoded as UTF-8 with ``errors="replace"``.

        Raises:
            TypeError: non-integer ids, or ``skip_special_tokens`` not a bool.
            ValueError: not 1-D, or an id outside ``[0, 262)`` (value and index in the message).
        """
        _check_bool("skip_special_tokens", skip_special_tokens)
        return _decode_array(_as_ids(token_ids, "token_ids", 1), skip_special_tokens)

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        skip_special_tokens: bool = False,
    ) -> list[str]:
        """Texts of a batch: a 2-D integer tensor/array [B, N] or a list of B id sequences; see :meth:`decode`."""
        _check_bool("skip_special_tokens", skip_special_tokens)
        if isinstance(sequences, (torch.Tensor, np.ndarray)):
            return [_decode_array(row, skip_special_tokens) for row in _as_ids(sequences, "sequences", 2)]
        if not isinstance(sequences, (list, tuple)):
            raise TypeError(
                f"sequences: expected a 2-D tensor/array or a list of id sequences, got {_type_name(sequences)}"
            )
        if any(isinstance(s, Integral) for s in sequences):
            raise ValueError("sequences: expected a list of id sequences, got a flat list of ids (use decode)")
        return [_decode_array(_as_ids(s, f"sequences[{b}]", 1), skip_special_tokens) for b, s in enumerate(sequences)]
