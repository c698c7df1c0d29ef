"""Fill-mask inference with a masked language model: write the text with masked spans, get the predicted tokens.

Mask syntax (the only markup in the text; everything else is literal text):

* ``[MASK]``: one masked token (one byte for a byte-level model, one piece for a SentencePiece model);
* ``[MASK*n]``: ``n`` masked tokens in a row (``n`` a positive decimal integer), e.g. ``[MASK*9]`` for 9 bytes.

Anything else that begins with ``[MASK`` (``[MASK*0]``, ``[MASK*x]``, ``[MASK*3`` without ``]``, ``[MASK 3]``) is a
syntax error that names its character position. There is no escape: a text cannot contain a literal ``[MASK``.
Lower case ``[mask]`` is ordinary text. The official transformers example, which masks bytes 51..59 (``" missing."``)
of ``"This is an incomplete sentence where some words are missing."``, is written
``"This is an incomplete sentence where some words are[MASK*9]"``.

The text around the masks is encoded as the pre-training data is
(:class:`~perceiver_io.data.MaskedLanguageModelingDataModule`): UTF-8 bytes + 6 for a byte model, or each stretch of
text with the SentencePiece model (each stretch separately, so a mask inside a word splits the word's pieces),
without ``[CLS]``/``[SEP]`` unless ``add_special_tokens=True`` (the transformers example's ``[CLS] text [SEP]``; the
official colab and this library's pre-training use none).

A masked position is filled with the highest-scoring token; special tokens (``[PAD]``, ``[SEP]``, ...) are not
candidates unless ``allow_special=True`` (then the prediction is the plain argmax of the official model, and special
tokens predicted are dropped from the filled text). Each position also gets its ``top_k`` candidates with the
model's probabilities (softmax over the whole vocabulary). Positions are predicted independently, in one forward pass.

Command line (:func:`add_fill_mask_parser`, :func:`run_fill_mask`)::

    perceiver-io fill-mask MODEL_DIR "This is an incomplete sentence where some words are[MASK*9]" --top-k 3
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .tokenizer import ByteTokenizer

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Candidate",
    "FillMaskResult",
    "FilledSpan",
    "MaskSpan",
    "add_fill_mask_parser",
    "fill_mask",
    "format_result",
    "parse_masked_text",
    "predict_tokens",
    "run_fill_mask",
]

_NUM_SPECIAL = 6  # [PAD] [BOS] [EOS] [MASK] [CLS] [SEP]: the same first ids for bytes and SentencePiece
_MASK_ID = ByteTokenizer.mask_token_id
_CLS_ID, _SEP_ID, _PAD_ID = ByteTokenizer.cls_token_id, ByteTokenizer.sep_token_id, ByteTokenizer.pad_token_id
_SPECIAL_NAMES = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
_MASK_START = re.compile(r"\[MASK")
_MASK_TOKEN = re.compile(r"\[MASK(?:\*([0-9]+))?\]")
#: Model inputs per forward pass in :func:`fill_mask`.
DEFAULT_BATCH_SIZE = 32


# ------------------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class MaskSpan:
    """One mask in a text: the markup is ``text[start:end]`` (``"[MASK]"`` or ``"[MASK*n]"``), ``length`` tokens."""

    start: int
    end: int
    length: int


def parse_masked_text(text: str, *, name: str = "text") -> tuple[list[str], list[MaskSpan]]:
    """Split ``text`` at its masks: ``(pieces, spans)`` with ``len(pieces) == len(spans) + 1``; the text is
    ``pieces[0] + mask 0 + pieces[1] + ... + pieces[-1]``.

    Raises:
        TypeError: ``text`` is not a ``str``.
        ValueError: ``text`` is empty, has no mask, or has malformed mask markup (the message gives the character
            position and what is there).
    """
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected a str, got {type(text).__name__}")
    if not text:
        raise ValueError(f"{name}: empty text, nothing to fill; write e.g. 'Hello [MASK*5]!'")
    pieces: list[str] = []
    spans: list[MaskSpan] = []
    cursor = 0
    for found in _MASK_START.finditer(text):  # one step per mask, not per character
        start = found.start()
        match = _MASK_TOKEN.match(text, start)
        if match is None or (match.group(1) is not None and int(match.group(1)) < 1):
            shown = text[start:start + 12] + ("..." if len(text) > start + 12 else "")
            why = "n must be >= 1" if match is not None else "unterminated or unknown mask markup"
            raise ValueError(f"{name}: malformed mask at character {start}: {shown!r} ({why}); expected [MASK] "
                             f"(one token) or [MASK*n] (n tokens, n >= 1)")
        pieces.append(text[cursor:start])
        spans.append(MaskSpan(start, match.end(), 1 if match.group(1) is None else int(match.group(1))))
        cursor = match.end()
    if not spans:
        raise ValueError(f"{name}: no mask to fill in {text[:40]!r}{'...' if len(text) > 40 else ''}; mark the "
                         f"tokens to predict with [MASK] (one token) or [MASK*n] (n tokens)")
    pieces.append(text[cursor:])
    return pieces, spans


def _as_text(value: object, name: str) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{name}: invalid UTF-8 at byte {err.start} "
                             f"({bytes(value)[err.start:err.start + 1]!r}: {err.reason})") from None
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str (or UTF-8 bytes), got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Candidate:
    """A candidate token at one masked position: its id, how it reads, and the model's probability."""

    token_id: int
    text: str
    """The byte as a character if printable ASCII, else ``"\\xNN"``; the piece for SentencePiece;
    ``"[SEP]"`` etc. for special ids."""
    probability: float


@dataclass(frozen=True)
class FilledSpan:
    """The prediction for one :class:`MaskSpan`."""

    start: int
    end: int
    """The mask markup is ``text[start:end]`` of the input text."""
    positions: tuple[int, ...]
    """Its token positions in the model input."""
    token_ids: tuple[int, ...]
    """The predicted id at each position."""
    text: str
    """The predicted tokens as text (bytes decoded as UTF-8 with replacement; special ids dropped)."""
    data: bytes | None
    """The predicted bytes (byte models; special ids dropped), None for SentencePiece."""
    candidates: tuple[tuple[Candidate, ...], ...]
    """``top_k`` candidates per position, best first."""


@dataclass(frozen=True)
class FillMaskResult:
    """:func:`fill_mask`'s answer for one text."""

    text: str
    """The input text, mask markup included."""
    filled_text: str
    """The text with every mask replaced by its predicted tokens (SentencePiece: the decoded, normalised text)."""
    spans: tuple[FilledSpan, ...]
    input_ids: tuple[int, ...]
    """What the model read (masks as the ``[MASK]`` id 3), after truncation."""
    truncated: bool
    """True if the text was cut to the model's ``max_seq_len``."""


# ------------------------------------------------------------------------------------------------------ tokens


def _byte_display(token_id: int) -> str:
    if token_id < _NUM_SPECIAL:
        return _SPECIAL_NAMES[token_id]
    b = token_id - _NUM_SPECIAL
    return chr(b) if 32 <= b < 127 else f"\\x{b:02x}"


class _Encoding:
    """Tokens of one masked text: ids (masks = 3) and, per span, its positions."""

    def __init__(self, text: str, pieces: list[str], spans: list[MaskSpan], tokenizer: Any,
                 add_special_tokens: bool) -> None:
        self.text, self.pieces, self.spans, self.tokenizer = text, pieces, spans, tokenizer
        self.is_bytes = isinstance(tokenizer, ByteTokenizer)
        self.truncated = False
        ids: list[int] = [_CLS_ID] if add_special_tokens else []
        self.piece_ids: list[list[int]] = []
        self.span_positions: list[list[int]] = []
        for index, piece in enumerate(pieces):
            encoded = self._encode(piece)
            self.piece_ids.append(encoded)
            ids.extend(encoded)
            if index < len(spans):
                self.span_positions.append(list(range(len(ids), len(ids) + spans[index].length)))
                ids.extend([_MASK_ID] * spans[index].length)
        if add_special_tokens:
            ids.append(_SEP_ID)
        self.ids = ids

    def _encode(self, piece: str) -> list[int]:
        if not piece:
            return []
        if self.is_bytes:  # raw bytes: a literal "[SEP]" in the text stays text, as in the pre-training data
            return [b + _NUM_SPECIAL for b in piece.encode("utf-8")]
        return list(self.tokenizer.encode(piece, add_special_tokens=False))

    def display(self, token_id: int) -> str:
        if self.is_bytes:
            return _byte_display(token_id)
        return self.tokenizer.id_to_piece(token_id)

    def filled(self, predictions: list[list[int]]) -> tuple[str, list[str], list[bytes | None]]:
        """The filled text and, per span, its text and bytes (special ids dropped)."""
        if self.is_bytes:
            span_bytes = [bytes(i - _NUM_SPECIAL for i in ids if i >= _NUM_SPECIAL) for ids in predictions]
            whole = bytearray()
            for index, piece in enumerate(self.pieces):
                whole += piece.encode("utf-8")
                if index < len(span_bytes):
                    whole += span_bytes[index]
            texts = [b.decode("utf-8", errors="replace") for b in span_bytes]
            return bytes(whole).decode("utf-8", errors="replace"), texts, list(span_bytes)
        ids: list[int] = []
        for index, piece_ids in enumerate(self.piece_ids):
            ids.extend(piece_ids)
            if index < len(predictions):
                ids.extend(predictions[index])
        texts = ["".join(self.tokenizer.id_to_piece(i) for i in p if i >= _NUM_SPECIAL).replace("\u2581", " ")
                 for p in predictions]
        return self.tokenizer.decode(ids, skip_special_tokens=True), texts, [None] * len(predictions)


# ------------------------------------------------------------------------------------------------------ model


def _check_model(model: object) -> tuple[int, int]:
    """``(vocab_size, max_seq_len)`` of a masked language model."""
    from .models.language import MaskedLanguageModel

    if not isinstance(model, MaskedLanguageModel):
        raise TypeError(f"model: expected a MaskedLanguageModel (e.g. perceiver_io.create_model("
                        f"'language_perceiver_bytes') or from_pretrained of one), got {type(model).__name__}")
    config = model.input_adapter.config
    return config.vocab_size, config.max_seq_len


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low or (high is not None and value > high):
        bound = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(f"{name}: expected {bound}, got {value!r}")
    return int(value)


@torch.no_grad()
def predict_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    positions: Sequence[Sequence[int]],
    *,
    top_k: int = 1,
    allow_special: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The model's top-``k`` tokens at chosen positions of each row, in one forward pass that decodes only the union
    of the positions.

    Args:
        model: a :class:`~perceiver_io.models.MaskedLanguageModel` (run in eval mode; its mode is restored).
        input_ids: ``[B, L]`` ids (``L`` at most the model's ``max_seq_len``).
        attention_mask: ``[B, L]`` (1 = token, 0 = padding) or None.
        positions: per row, the positions to predict (each in ``[0, L)``).
        top_k: candidates per position (at least 1).
        allow_special: let the special ids 0..5 be candidates (the plain argmax); else the best non-special ids.

    Returns:
        Per row, ``(ids [n, top_k] int64, probabilities [n, top_k] float32)`` for its ``n`` positions, best first;
        probabilities are the softmax over the whole vocabulary.

    Raises:
        TypeError, ValueError: not a masked language model; ``positions`` not one list per row or out of range;
            ``top_k`` out of range.
    """
    vocab_size, _ = _check_model(model)
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids: expected a [B, L] integer tensor, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected shape [B, L], got {list(input_ids.shape)}")
    batch, length = input_ids.shape
    if len(positions) != batch:
        raise ValueError(f"positions: expected one list of positions per row ({batch}), got {len(positions)}")
    rows = [torch.as_tensor(list(p), dtype=torch.long) for p in positions]
    for b, row in enumerate(rows):
        if row.numel() and (int(row.min()) < 0 or int(row.max()) >= length):
            raise ValueError(f"positions[{b}]: expected positions in [0, {length}), got values in "
                             f"[{int(row.min())}, {int(row.max())}]")
    candidates = vocab_size if allow_special else vocab_size - _NUM_SPECIAL
    top_k = _check_int("top_k", top_k, 1, candidates)
    device = next(model.parameters()).device
    union = torch.unique(torch.cat(rows)) if rows else torch.zeros(0, dtype=torch.long)
    if union.numel() == 0:
        return [(torch.zeros(0, top_k, dtype=torch.long), torch.zeros(0, top_k)) for _ in rows]
    was_training = model.training
    model.eval()
    try:
        mask = attention_mask.to(device) if attention_mask is not None else None
        logits = model(input_ids.to(device), mask, union.to(device)).float().cpu()  # [B, n, V]
    finally:
        model.train(was_training)
    probabilities = logits.softmax(-1)
    scores = logits if allow_special else logits[..., _NUM_SPECIAL:]
    out = []
    for b, row in enumerate(rows):
        columns = torch.searchsorted(union, row)
        top = scores[b, columns].topk(top_k, dim=-1).indices  # [n, k]
        ids = top if allow_special else top + _NUM_SPECIAL
        out.append((ids, probabilities[b, columns].gather(-1, ids)))
    return out


def fill_mask(
    model: nn.Module,
    text: str | bytes | Sequence[str | bytes],
    *,
    tokenizer: Any = None,
    top_k: int = 5,
    add_special_tokens: bool = False,
    truncation: bool = True,
    allow_special: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> FillMaskResult | list[FillMaskResult]:
    """Predict the masked spans of one text or a batch of texts (mask syntax: the module docstring).

    Args:
        model: a :class:`~perceiver_io.models.MaskedLanguageModel`.
        text: a ``str`` (or UTF-8 ``bytes``), or a list/tuple of them (one result each, batched
            ``batch_size`` texts per forward pass).
        tokenizer: None for bytes (:class:`~perceiver_io.tokenizer.ByteTokenizer`; the model must embed 262 ids), or
            a :class:`~perceiver_io.data.SentencePieceTokenizer` with the model's vocabulary size.
        top_k: candidates listed per masked position (at least 1).
        add_special_tokens: read ``[CLS] text [SEP]`` (the transformers example) instead of the bare text.
        truncation: a text longer than the model's ``max_seq_len`` tokens is cut on the right with a warning
            (its masks must lie in the part kept); False: such a text is an error.
        allow_special: let special ids be predicted (see the module docstring).
        batch_size: texts per forward pass.

    Returns:
        A :class:`FillMaskResult` for a single text, a list of them for a list.

    Raises:
        TypeError: a wrong model, tokenizer or text type.
        ValueError: an empty text or list, invalid UTF-8 bytes, a text without a mask or with malformed mask markup
            (with its character position), a text too long (``truncation=False``) or a mask beyond the model's
            ``max_seq_len``, a tokenizer whose vocabulary differs from the model's; the text's index is named.
    """
    vocab_size, max_seq_len = _check_model(model)
    if tokenizer is None:
        tokenizer = ByteTokenizer()
    if not callable(getattr(tokenizer, "encode", None)) or not hasattr(tokenizer, "vocab_size"):
        raise TypeError(f"tokenizer: expected None (bytes), a ByteTokenizer or a SentencePieceTokenizer, got "
                        f"{type(tokenizer).__name__}")
    if tokenizer.vocab_size != vocab_size:
        hint = ""
        if isinstance(tokenizer, ByteTokenizer):
            hint = " (a SentencePiece model: pass its SentencePieceTokenizer)"
        raise ValueError(f"tokenizer: has vocab_size={tokenizer.vocab_size}, the model embeds vocab_size={vocab_size}"
                         f"{hint}")
    flags = {"add_special_tokens": add_special_tokens, "truncation": truncation, "allow_special": allow_special}
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{flag}: expected a bool, got {type(value).__name__}")
    batch_size = _check_int("batch_size", batch_size, 1)
    top_k = _check_int("top_k", top_k, 1, vocab_size if allow_special else vocab_size - _NUM_SPECIAL)
    single = isinstance(text, (str, bytes, bytearray))
    if single:
        texts, names = [text], ["text"]
    elif isinstance(text, (list, tuple)):
        if not text:
            raise ValueError("text: expected a str or a non-empty list of str, got an empty list")
        texts, names = list(text), [f"text[{i}]" for i in range(len(text))]
    else:
        raise TypeError(f"text: expected a str, UTF-8 bytes or a list of them, got {type(text).__name__}")

    encodings = []
    for value, name in zip(texts, names):
        value = _as_text(value, name)
        pieces, spans = parse_masked_text(value, name=name)
        encodings.append(_Encoding(value, pieces, spans, tokenizer, add_special_tokens))
        _fit_length(encodings[-1], max_seq_len, truncation, name)

    results: list[FillMaskResult] = []
    for first in range(0, len(encodings), batch_size):
        chunk = encodings[first:first + batch_size]
        width = max(len(e.ids) for e in chunk)
        input_ids = torch.full((len(chunk), width), _PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, e in enumerate(chunk):
            input_ids[b, : len(e.ids)] = torch.tensor(e.ids)
            attention_mask[b, : len(e.ids)] = 1
        positions = [[p for span in e.span_positions for p in span] for e in chunk]
        predicted = predict_tokens(model, input_ids, attention_mask, positions, top_k=top_k,
                                   allow_special=allow_special)
        for e, (ids, probs) in zip(chunk, predicted):
            results.append(_result(e, ids, probs))
    return results[0] if single else results


def _fit_length(encoding: _Encoding, max_seq_len: int, truncation: bool, name: str) -> None:
    if len(encoding.ids) <= max_seq_len:
        return
    if not truncation:
        raise ValueError(f"{name}: {len(encoding.ids)} tokens, the model reads at most max_seq_len={max_seq_len}; "
                         f"shorten the text or pass truncation=True (cuts on the right)")
    for span, positions in zip(encoding.spans, encoding.span_positions):
        if positions[-1] >= max_seq_len:
            raise ValueError(f"{name}: the mask at character {span.start} covers token positions "
                             f"{positions[0]}..{positions[-1]}, beyond the model's max_seq_len={max_seq_len}; "
                             f"shorten the text before the mask")
    kept = encoding.ids[:max_seq_len]
    if encoding.ids[-1] == _SEP_ID and encoding.ids[0] == _CLS_ID:
        kept[-1] = _SEP_ID
    warnings.warn(f"{name}: {len(encoding.ids)} tokens cut to the model's max_seq_len={max_seq_len} (its masks "
                  f"are kept; the text after token {max_seq_len} is not read)", UserWarning, stacklevel=3)
    encoding.ids = kept
    encoding.truncated = True


def _result(encoding: _Encoding, ids: torch.Tensor, probs: torch.Tensor) -> FillMaskResult:
    predictions: list[list[int]] = []
    span_candidates: list[tuple[tuple[Candidate, ...], ...]] = []
    row = 0
    for positions in encoding.span_positions:
        n = len(positions)
        span_ids, span_probs = ids[row:row + n].tolist(), probs[row:row + n].tolist()
        row += n
        predictions.append([top[0] for top in span_ids])
        span_candidates.append(tuple(
            tuple(Candidate(int(i), encoding.display(int(i)), float(p)) for i, p in zip(top_ids, top_probs))
            for top_ids, top_probs in zip(span_ids, span_probs)))
    filled_text, texts, data = encoding.filled(predictions)
    spans = tuple(
        FilledSpan(span.start, span.end, tuple(positions), tuple(prediction), span_text, span_data, candidates)
        for span, positions, prediction, span_text, span_data, candidates in zip(
            encoding.spans, encoding.span_positions, predictions, texts, data, span_candidates))
    return FillMaskResult(encoding.text, filled_text, spans, tuple(encoding.ids), encoding.truncated)


# ------------------------------------------------------------------------------------------------------ command line


def add_fill_mask_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``fill-mask`` to ``perceiver-io``'s subcommands; :func:`run_fill_mask` runs it."""
    parser = subparsers.add_parser(
        "fill-mask", help="predict the masked spans of a text with a saved masked language model",
        description="Fill the masks of TEXT with the masked language model saved in MODEL_DIR (save_pretrained, "
        "perceiver-io export or convert). Mask syntax: [MASK] is one masked token (one byte for byte models), "
        "[MASK*n] n tokens, e.g. \"This is an incomplete sentence where some words are[MASK*9]\". Prints each "
        "text with the predicted tokens filled in, then per mask its prediction and the top-k candidates of each "
        "position with their probabilities.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved MaskedLanguageModel directory")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="text with [MASK] / [MASK*n] spans (one or more)")
    parser.add_argument("--top-k", type=int, default=3, metavar="K",
                        help="candidates shown per masked position (default 3; 1 shows the filled text only)")
    parser.add_argument("--tokenizer", metavar="FILE.model",
                        help="a SentencePiece model for a SentencePiece MLM (default: MODEL_DIR/sentencepiece.model "
                        "if present, else bytes)")
    parser.add_argument("--add-special-tokens", action="store_true",
                        help="read [CLS] TEXT [SEP] (as the transformers example) instead of the bare text")
    parser.add_argument("--no-truncation", action="store_true",
                        help="a text longer than the model's max_seq_len is an error (default: cut with a warning)")
    parser.add_argument("--allow-special", action="store_true",
                        help="let special tokens ([SEP], [PAD], ...) be predicted (the plain argmax)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    return parser


def _load_tokenizer(model_dir: Path, path: str | None) -> Any:
    candidate = Path(path) if path is not None else model_dir / "sentencepiece.model"
    if path is None and not candidate.is_file():
        return None
    from .data.sentencepiece_tokenizer import SentencePieceTokenizer

    return SentencePieceTokenizer(candidate)


def format_result(result: FillMaskResult, top_k: int, unit: str) -> str:
    """The lines :func:`run_fill_mask` prints for one text."""
    lines = [result.filled_text]
    for number, span in enumerate(result.spans, 1):
        lines.append(f"  [{number}] characters {span.start}-{span.end} ({len(span.positions)} {unit}): "
                     f"{span.text!r}")
        if top_k > 1:
            for position, candidates in zip(span.positions, span.candidates):
                shown = "  ".join(f"{c.text!r} {c.probability:.3f}" for c in candidates)
                lines.append(f"      {position}: {shown}")
    return "\n".join(lines)


def run_fill_mask(args: argparse.Namespace) -> int:
    """Run ``perceiver-io fill-mask`` (arguments from :func:`add_fill_mask_parser`); returns the exit code. Errors are
    one line on stderr, exit code 1."""
    try:
        from .pretrained import from_pretrained

        model_dir = Path(args.model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"MODEL_DIR: no directory {str(model_dir)!r}")
        tokenizer = _load_tokenizer(model_dir, args.tokenizer)
        model = from_pretrained(model_dir, map_location=args.device).eval()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = fill_mask(model, list(args.texts), tokenizer=tokenizer, top_k=args.top_k,
                                add_special_tokens=args.add_special_tokens, truncation=not args.no_truncation,
                                allow_special=args.allow_special)
        for warning in caught:
            print(f"perceiver-io fill-mask: warning: {warning.message}", file=sys.stderr)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f"perceiver-io fill-mask: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    unit = "tokens" if tokenizer is not None else "bytes"
    print("\n\n".join(format_result(r, args.top_k, unit) for r in results))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m perceiver_io.fill_mask MODEL_DIR TEXT ...``: the ``fill-mask`` command on its own."""
    parser = argparse.ArgumentParser(prog="perceiver-io")
    add_fill_mask_parser(parser.add_subparsers(dest="command", required=True))
    return run_fill_mask(parser.parse_args(["fill-mask", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
