"""``pipeline("fill-mask")``: :func:`perceiver_io.fill_mask.fill_mask` with plain dicts out.

Texts use fill_mask's markup (``[MASK]`` one token, ``[MASK*n]`` n tokens). A model loaded by path from a directory
that holds ``sentencepiece.model`` reads SentencePiece tokens, as ``perceiver-io fill-mask`` does; otherwise bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.validation import check_positive
from ..fill_mask import FillMaskResult, fill_mask
from .base import ModelLike, Pipeline

TEXT_INPUT = "a str with [MASK] / [MASK*n] spans (or its UTF-8 bytes)"


def result_dict(result: FillMaskResult) -> dict[str, Any]:
    """A :class:`~perceiver_io.fill_mask.FillMaskResult` as plain Python::

        {"text": input, "filled_text": str, "truncated": bool,
         "spans": [{"start": int, "end": int, "text": str, "token_ids": [int, ...],
                    "candidates": [[{"token": str, "token_id": int, "score": float}, ...] per position]}, ...]}

    ``start``/``end``: the mask markup is ``text[start:end]``; ``candidates``: per masked position the top-k tokens,
    best first, with the model's probabilities.
    """
    return {
        "text": result.text,
        "filled_text": result.filled_text,
        "truncated": result.truncated,
        "spans": [
            {"start": span.start, "end": span.end, "text": span.text, "token_ids": list(span.token_ids),
             "candidates": [[{"token": c.text, "token_id": c.token_id, "score": c.probability} for c in position]
                            for position in span.candidates]}
            for span in result.spans
        ],
    }


def _directory_tokenizer(model: ModelLike) -> Any:
    """The SentencePiece tokenizer saved beside a model directory's weights, if any (else None: bytes)."""
    if isinstance(model, (str, os.PathLike)) and (Path(model) / "sentencepiece.model").is_file():
        from ..fill_mask import _load_tokenizer

        return _load_tokenizer(Path(model), None)
    return None


class FillMaskPipeline(Pipeline):
    """``pipe(text)`` -> the text with its masks filled in, and each masked position's candidates (:func:`result_dict`).

    Args:
        model: a :class:`~perceiver_io.models.MaskedLanguageModel`, or a name or path for
            :func:`perceiver_io.from_pretrained`.
        tokenizer: None (bytes, or the ``sentencepiece.model`` of a model directory) or a SentencePiece tokenizer.
        top_k: candidates per masked position.
        add_special_tokens, allow_special, batch_size: as :func:`~perceiver_io.fill_mask.fill_mask`.
        device: where the model runs (default: where it is).
    """

    task = "fill-mask"

    def __init__(self, model: ModelLike, *, tokenizer: Any = None, top_k: int = 5, add_special_tokens: bool = False,
                 allow_special: bool = False, batch_size: int = 32, device: str | torch.device | None = None) -> None:
        super().__init__(model, device=device)
        self.tokenizer = tokenizer if tokenizer is not None else _directory_tokenizer(model)
        check_positive("top_k", top_k)  # fill_mask checks it against the vocabulary
        self.top_k = top_k
        self.options = {"add_special_tokens": add_special_tokens, "allow_special": allow_special,
                        "batch_size": batch_size}

    @classmethod
    def model_types(cls) -> tuple[type[nn.Module], ...]:
        from ..models import MaskedLanguageModel

        return (MaskedLanguageModel,)

    def results(self, text: Any, *, top_k: int | None = None) -> FillMaskResult | list[FillMaskResult]:
        """:func:`~perceiver_io.fill_mask.fill_mask`'s own results (one, or a list for a list of texts)."""
        if top_k is not None:
            check_positive("top_k", top_k)
        k = self.top_k if top_k is None else top_k
        if isinstance(text, (list, tuple)) and not text:
            return []
        return fill_mask(self.model, text, tokenizer=self.tokenizer, top_k=k, **self.options)

    def __call__(self, text: Any, *, top_k: int | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """Fill the masks of one text (a dict) or of each text of a list (a list of dicts, batched).

        Raises:
            TypeError, ValueError: a text that is not a str, has no mask or malformed markup (naming it, e.g.
                ``text[1]: no mask to fill in ...``); a bad ``top_k``.
        """
        found = self.results(text, top_k=top_k)
        return [result_dict(r) for r in found] if isinstance(found, list) else result_dict(found)
