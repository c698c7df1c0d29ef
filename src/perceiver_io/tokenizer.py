"""Byte-level UTF-8 tokenizer for Perceiver IO, id-for-id compatible with ``transformers.PerceiverTokenizer``.

Vocabulary (262 ids):

====  =========  ==========================================
id    token      meaning
====  =========  ==========================================
0     ``[PAD]``  padding (right side), attention mask 0
1     ``[BOS]``  reserved, unused by the encoder
2     ``[EOS]``  reserved, unused by the encoder
3     ``[MASK]`` masked-language-model mask
4     ``[CLS]``  prepended when ``add_special_tokens=True``
5     ``[SEP]``  appended when ``add_special_tokens=True``
6+b   byte b     every UTF-8 byte ``b`` in 0..255
====  =========  ==========================================

Behaviour matched to ``transformers.PerceiverTokenizer()`` (checked against transformers 5.x; the
tests compare both on random Unicode text):

* Encoding is ``text.encode("utf-8")`` with every byte shifted by 6, except that a *literal*
  special-token string occurring in the text (``"[PAD]"``, ``"[BOS]"``, ``"[EOS]"``, ``"[MASK]"``,
  ``"[CLS]"``, ``"[SEP]"``; case-sensitive, leftmost match, surrounding whitespace untouched) becomes
  its single special id, exactly as transformers' added-token splitting does.  ``"[UNK]"`` and
  ``"[mask]"`` are plain bytes.
* With ``add_special_tokens=True`` one text becomes ``[CLS] ids [SEP]``.
* Truncation (right side) keeps ``[CLS]``/``[SEP]`` and cuts the content to ``max_length - 2``;
  literal special tokens inside the text count as content.  ``truncation=True`` without
  ``max_length`` truncates to ``model_max_length`` (2048), and ``padding="max_length"`` without
  ``max_length`` pads to it, as in transformers.
* Decoding concatenates the bytes of all ids and decodes the result *once* with
  ``errors="replace"``; with ``skip_special_tokens=False`` each special id is rendered as its token
  string with no spaces around it (``[CLS]Hi[SEP]``) and is spliced into the byte stream, so a
  multi-byte character cut by a special token yields U+FFFD replacement characters, while with
  ``skip_special_tokens=True`` the special ids are dropped *before* decoding, so the bytes around
  them join up again.  No clean-up of tokenization spaces is ever applied: transformers'
  ``clean_up_tokenization_spaces`` defaults to ``False`` for this tokenizer in transformers 5.x
  (older 4.x releases defaulted to ``True``, which removes the space in e.g. ``" ."``), so
  :meth:`ByteTokenizer.decode` equals
  ``hf.decode(ids, skip_special_tokens=..., clean_up_tokenization_spaces=False)``.

Deliberate differences from transformers (all in the direction of failing loudly):

* ``decode`` defaults to ``skip_special_tokens=True`` (transformers: ``False``).
* ``__call__`` defaults to ``padding="longest"`` and ``return_tensors="pt"``.
* Ids outside ``[0, 262)`` raise ``ValueError`` naming ``ids`` (transformers raises an unrelated
  ``ValueError`` from ``bytes``/``chr``).
* ``max_length`` smaller than the number of special tokens added (2 with ``add_special_tokens``),
  or smaller than 1, raises ``ValueError`` (transformers silently returns sequences longer than
  ``max_length``, and treats ``max_length=0`` as "no limit").
* An empty batch raises ``ValueError`` (as transformers does) and a non-``str`` text raises
  ``TypeError`` (transformers' messages are less specific).
* Pairs of texts are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = ["ByteTokenizer"]

_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
_NUM_SPECIAL = len(_SPECIAL_TOKENS)
_VOCAB_SIZE = _NUM_SPECIAL + 256

# Literal special-token strings inside the text.  They are pure ASCII, and ASCII bytes never occur
# inside a multi-byte UTF-8 sequence, so matching on the UTF-8 bytes equals matching on characters.
# No token is a prefix of another, so leftmost matching equals transformers' trie split.
_SPECIAL_RE = re.compile(b"|".join(re.escape(t.encode("ascii")) for t in _SPECIAL_TOKENS))
_SPECIAL_ID_OF_BYTES: dict[bytes, int] = {t.encode("ascii"): i for i, t in enumerate(_SPECIAL_TOKENS)}


def _build_render_table() -> tuple[np.ndarray, np.ndarray]:
    """Byte rendering of every id for ``skip_special_tokens=False``.

    Returns ``(table, lengths)``: ``table`` uint8 [262, W] holds the bytes of id ``i`` in
    ``table[i, :lengths[i]]`` (W = longest special-token string = 6), ``lengths`` int64 [262].
    """
    width = max(len(t) for t in _SPECIAL_TOKENS)
    table = np.zeros((_VOCAB_SIZE, width), dtype=np.uint8)
    lengths = np.ones(_VOCAB_SIZE, dtype=np.int64)
    for i, tok in enumerate(_SPECIAL_TOKENS):
        raw = np.frombuffer(tok.encode("ascii"), dtype=np.uint8)
        table[i, : raw.size] = raw
        lengths[i] = raw.size
    table[_NUM_SPECIAL:, 0] = np.arange(256, dtype=np.uint8)
    return table, lengths


_RENDER_TABLE, _RENDER_LENGTHS = _build_render_table()
_RENDER_COLUMNS = np.arange(_RENDER_TABLE.shape[1])

_PADDING_CHOICES = ("longest", "max_length", "do_not_pad")
_TRUNCATION_CHOICES = {"longest_first": True, "only_first": True, "do_not_truncate": False}


def _type_name(value: object) -> str:
    return type(value).__name__


class ByteTokenizer:
    """UTF-8 byte tokenizer with the ids of ``transformers.PerceiverTokenizer``.

    Stateless apart from ``model_max_length``; all methods are pure functions of their input.
    Encoding and decoding are vectorised with NumPy (no Python loop over characters or bytes).

    Args:
        model_max_length: length used when ``truncation=True`` or ``padding="max_length"`` is
            requested without ``max_length`` (2048, the Perceiver IO language model's input length,
            as in transformers).
    """

    pad_token_id: ClassVar[int] = 0
    bos_token_id: ClassVar[int] = 1
    eos_token_id: ClassVar[int] = 2
    mask_token_id: ClassVar[int] = 3
    cls_token_id: ClassVar[int] = 4
    sep_token_id: ClassVar[int] = 5
    num_special_tokens: ClassVar[int] = _NUM_SPECIAL
    """Number of special ids (6); byte ``b`` has id ``b + num_special_tokens``."""
    vocab_size: ClassVar[int] = _VOCAB_SIZE
    """Total number of ids (262 = 6 special + 256 bytes); ``len(PerceiverTokenizer())``."""
    special_tokens: ClassVar[tuple[str, ...]] = _SPECIAL_TOKENS
    """Special-token strings, indexed by id: ``special_tokens[3] == "[MASK]"``."""

    def __init__(self, model_max_length: int = 2048) -> None:
        if isinstance(model_max_length, bool) or not isinstance(model_max_length, Integral):
            raise TypeError(f"model_max_length: expected an int, got {_type_name(model_max_length)}")
        if model_max_length < 2:
            raise ValueError(f"model_max_length: expected an int >= 2, got {model_max_length}")
        self.model_max_length = int(model_max_length)

    def __len__(self) -> int:
        """Vocabulary size (262), like ``len(transformers.PerceiverTokenizer())``."""
        return _VOCAB_SIZE

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={_VOCAB_SIZE}, model_max_length={self.model_max_length})"

    # ------------------------------------------------------------------ encoding

    def _encode_array(self, text: str, add_special_tokens: bool, name: str) -> np.ndarray:
        """Ids of one text as int64 [N] (N = UTF-8 bytes, minus 4-5 per literal special token, +2)."""
        if not isinstance(text, str):
            raise TypeError(f"{name}: expected a str, got {_type_name(text)}")
        data = text.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, as in transformers
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        ids += _NUM_SPECIAL
        if b"[" in data:
            matches = list(_SPECIAL_RE.finditer(data))
            if matches:
                keep = np.ones(ids.size, dtype=bool)
                for m in matches:  # one iteration per literal special token, not per byte
                    ids[m.start()] = _SPECIAL_ID_OF_BYTES[m.group()]
                    keep[m.start() + 1 : m.end()] = False
                ids = ids[keep]
        if add_special_tokens:
            out = np.empty(ids.size + 2, dtype=np.int64)
            out[0] = self.cls_token_id
            out[1:-1] = ids
            out[-1] = self.sep_token_id
            return out
        return ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Encode one text to ids.

        Args:
            text: any Unicode string (lone surrogates cannot be UTF-8 encoded and raise
                ``UnicodeEncodeError``).  Literal special-token strings become their special id.
            add_special_tokens: wrap as ``[CLS] ids [SEP]``.

        Returns:
            ``list[int]`` of length N (UTF-8 byte count, minus 4 or 5 per literal special token,
            plus 2 with ``add_special_tokens``), values in ``[0, 262)``.

        Raises:
            TypeError: ``text`` is not a ``str``.
        """
        return self._encode_array(text, add_special_tokens, "text").tolist()

    def _check_max_length(self, max_length: object, n_special: int) -> int | None:
        if max_length is None:
            return None
        if isinstance(max_length, bool) or not isinstance(max_length, Integral):
            raise TypeError(f"max_length: expected an int or None, got {_type_name(max_length)}")
        floor = max(1, n_special)
        if max_length < floor:
            why = "room for [CLS] and [SEP] with add_special_tokens=True" if n_special else "at least one token"
            raise ValueError(f"max_length: expected an int >= {floor} ({why}), got {max_length}")
        return int(max_length)

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool | str = False,
        padding: bool | str = "longest",
        return_tensors: str | None = "pt",
    ) -> dict[str, Any]:
        """Encode a text or a batch of texts into padded ``input_ids`` and ``attention_mask``.

        Args:
            texts: one ``str`` or a non-empty sequence (list/tuple) of ``str``.
            add_special_tokens: wrap every text as ``[CLS] ids [SEP]``.
            max_length: length limit for ``truncation`` and target for ``padding="max_length"``;
                at least 2 with ``add_special_tokens`` (at least 1 without).  Ignored by
                ``padding="longest"`` unless ``truncation`` is on, as in transformers.
            truncation: ``True`` (or ``"longest_first"``/``"only_first"``) cuts each sequence on
                the right to ``max_length`` (default ``model_max_length``), keeping ``[CLS]`` and
                ``[SEP]``; ``False`` (or ``"do_not_truncate"``) never truncates.
            padding: ``"longest"``/``True`` pads on the right with ``[PAD]`` (0) to the longest
                sequence of the batch; ``"max_length"`` pads every sequence to ``max_length``
                (default ``model_max_length``); ``False``/``"do_not_pad"`` does not pad.
            return_tensors: ``"pt"`` for ``torch.long`` tensors, ``"np"`` for ``int64`` arrays,
                ``None`` for Python lists.

        Returns:
            ``{"input_ids": ..., "attention_mask": ...}``.  With ``"pt"``/``"np"`` both are
            [B, L] (B = number of texts, B = 1 for a single ``str``); ``attention_mask`` is 1 on
            real tokens and 0 on padding.  With ``return_tensors=None`` both are ``list[list[int]]``
            (rows may differ in length without padding), or a flat ``list[int]`` for a single
            ``str`` as in transformers.

        Raises:
            TypeError: ``texts`` is not a ``str`` or a sequence of ``str`` (e.g. ``bytes`` or
                ``int``); ``max_length`` is not an int; a flag has the wrong type.
            ValueError: empty batch; ``max_length`` below the number of special tokens; unknown
                ``padding``/``truncation``/``return_tensors``; rows of unequal length requested
                as a tensor (no padding, or ``padding="max_length"`` without ``truncation`` and a
                text longer than ``max_length``).
        """
        single = isinstance(texts, str)
        if single:
            batch: Sequence[str] = [texts]  # type: ignore[list-item]
        elif isinstance(texts, (bytes, bytearray, memoryview)) or not isinstance(texts, Sequence):
            raise TypeError(
                f"texts: expected a str or a sequence (list/tuple) of str, got {_type_name(texts)}"
            )
        else:
            batch = texts
            if len(batch) == 0:
                raise ValueError("texts: expected a str or a non-empty sequence of str, got an empty sequence")
        if not isinstance(add_special_tokens, bool):
            raise TypeError(f"add_special_tokens: expected a bool, got {_type_name(add_special_tokens)}")

        if isinstance(truncation, bool):
            truncate = truncation
        elif isinstance(truncation, str) and truncation in _TRUNCATION_CHOICES:
            truncate = _TRUNCATION_CHOICES[truncation]
        else:
            raise ValueError(
                f"truncation: expected a bool or one of {sorted(_TRUNCATION_CHOICES)}, got {truncation!r}"
            )
        if padding is True:
            pad_mode = "longest"
        elif padding is False:
            pad_mode = "do_not_pad"
        elif isinstance(padding, str) and padding in _PADDING_CHOICES:
            pad_mode = padding
        else:
            raise ValueError(f"padding: expected a bool or one of {list(_PADDING_CHOICES)}, got {padding!r}")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors: expected 'pt', 'np' or None, got {return_tensors!r}")

        n_special = 2 if add_special_tokens else 0
        limit = self._check_max_length(max_length, n_special)
        if limit is None and (truncate or pad_mode == "max_length"):
            limit = self.model_max_length

        rows: list[np.ndarray] = []
        for i, text in enumerate(batch):  # loop over texts, not characters
            ids = self._encode_array(text, add_special_tokens, "texts" if single else f"texts[{i}]")
            if truncate and ids.size > limit:  # type: ignore[operator]
                if add_special_tokens:
                    ids = np.concatenate((ids[: limit - 1], ids[-1:]))  # type: ignore[operator]
                else:
                    ids = ids[:limit]
            rows.append(ids)

        lengths = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
        if pad_mode == "longest":
            targets = np.full_like(lengths, lengths.max())
        elif pad_mode == "max_length":
            targets = np.maximum(lengths, limit)  # a longer row is left as is, as in transformers
        else:
            targets = lengths

        if return_tensors is None:
            input_ids = [r.tolist() + [self.pad_token_id] * int(t - r.size) for r, t in zip(rows, targets)]
            attention = [[1] * int(n) + [0] * int(t - n) for n, t in zip(lengths, targets)]
            if single:
                return {"input_ids": input_ids[0], "attention_mask": attention[0]}
            return {"input_ids": input_ids, "attention_mask": attention}

        if np.any(targets != targets[0]):
            raise ValueError(
                f"texts: cannot stack rows of lengths {targets.tolist()} into a [B, L] tensor with "
                f"padding={padding!r}, truncation={truncation!r}, max_length={max_length!r}; use "
                "padding='longest', or truncation=True with padding='max_length', or return_tensors=None"
            )
        width = int(targets[0])
        input_arr = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        for b, r in enumerate(rows):  # loop over rows, not tokens
            input_arr[b, : r.size] = r
        mask_arr = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        if return_tensors == "pt":
            return {"input_ids": torch.from_numpy(input_arr), "attention_mask": torch.from_numpy(mask_arr)}
        return {"input_ids": input_arr, "attention_mask": mask_arr}

    # ------------------------------------------------------------------ decoding

    @staticmethod
    def _as_ids(ids: object, name: str, ndim: int) -> np.ndarray:
        """``ids`` as an int64 array of rank ``ndim`` with every value in ``[0, 262)``."""
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise TypeError(f"{name}: expected integer ids, got a tensor of dtype {ids.dtype}")
            arr = ids.detach().to("cpu").numpy()
        elif isinstance(ids, (str, bytes, bytearray)):
            raise TypeError(f"{name}: expected integer ids, got {_type_name(ids)}")
        else:
            try:
                arr = np.asarray(ids)
            except ValueError:  # ragged nesting
                raise ValueError(f"{name}: expected a {ndim}-D sequence of integer ids, got a ragged sequence") from None
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype == object:  # Python ints beyond int64/uint64 or mixed objects
            try:
                arr = np.asarray(ids, dtype=np.int64)
            except OverflowError:
                raise ValueError(
                    f"{name}: every id must be in [0, {_VOCAB_SIZE}), got an integer that does not fit in 64 bits"
                ) from None
            except (TypeError, ValueError):
                raise TypeError(f"{name}: expected integer ids, got elements that are not integers") from None
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer ids, got dtype {arr.dtype}")
        if arr.ndim != ndim:
            raise ValueError(f"{name}: expected a {ndim}-D sequence of ids, got shape {list(arr.shape)}")
        bad = (arr < 0) | (arr >= _VOCAB_SIZE)
        if bad.any():
            where = tuple(int(k) for k in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: every id must be in [0, {_VOCAB_SIZE}), got {int(arr[where])} at index "
                f"{where[0] if ndim == 1 else list(where)}"
            )
        return arr.astype(np.int64, copy=False)

    @staticmethod
    def _decode_array(arr: np.ndarray, skip_special_tokens: bool) -> str:
        """Text of a valid int64 [N] id array (see :meth:`decode`)."""
        special = arr < _NUM_SPECIAL
        if skip_special_tokens or not special.any():
            data = (arr[~special] - _NUM_SPECIAL).astype(np.uint8).tobytes()
        else:
            rows = _RENDER_TABLE[arr]  # [N, 6]: bytes of each id, left-aligned
            valid = _RENDER_COLUMNS[None, :] < _RENDER_LENGTHS[arr][:, None]
            data = rows[valid].tobytes()  # row-major: ids in order, each id's bytes in order
        return data.decode("utf-8", errors="replace")

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Decode one sequence of ids to text.

        Equals ``PerceiverTokenizer().decode(ids, skip_special_tokens=...,
        clean_up_tokenization_spaces=False)`` (the transformers 5.x default clean-up is ``False``
        too): the bytes of all ids are concatenated and decoded once as UTF-8 with
        ``errors="replace"`` (invalid or truncated sequences become U+FFFD).

        Args:
            ids: list of ints, 1-D integer NumPy array or 1-D integer torch tensor, shape [N],
                values in ``[0, 262)``.
            skip_special_tokens: drop ids 0..5 before decoding; if ``False`` they are rendered
                as ``"[PAD]"``, ``"[BOS]"``, ``"[EOS]"``, ``"[MASK]"``, ``"[CLS]"``, ``"[SEP]"``
                with no added spaces.

        Raises:
            TypeError: ``ids`` is not integer-typed.
            ValueError: ``ids`` is not 1-D, or an id is outside ``[0, 262)`` (the message names the
                offending value and its index).
        """
        return self._decode_array(self._as_ids(ids, "ids", 1), skip_special_tokens)

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        skip_special_tokens: bool = True,
    ) -> list[str]:
        """Decode a batch of id sequences; see :meth:`decode`.

        Args:
            sequences: 2-D integer tensor/array [B, N], or a list of B id lists (lengths may
                differ).
            skip_special_tokens: as in :meth:`decode`; ``True`` also drops ``[PAD]`` padding.

        Returns:
            ``list[str]`` of length B.

        Raises:
            TypeError: ``sequences`` is not a 2-D structure of integers.
            ValueError: wrong rank, or an id outside ``[0, 262)``.
        """
        if isinstance(sequences, (torch.Tensor, np.ndarray)):
            arr = self._as_ids(sequences, "sequences", 2)
            return [self._decode_array(row, skip_special_tokens) for row in arr]
        if isinstance(sequences, (str, bytes, bytearray)) or not isinstance(sequences, Sequence):
            raise TypeError(
                f"sequences: expected a 2-D tensor/array or a list of id lists, got {_type_name(sequences)}"
            )
        out = []
        for b, seq in enumerate(sequences):  # loop over sequences, not ids
            if isinstance(seq, Integral):
                raise ValueError(
                    "sequences: expected a 2-D tensor/array or a list of id lists, got a flat list of ids "
                    "(use decode for one sequence)"
                )
            out.append(self._decode_array(self._as_ids(seq, f"sequences[{b}]", 1), skip_special_tokens))
        return out
