"""Language task models: masked language modelling and text classification."""

from __future__ import annotations

import torch

from ..adapters.classification import ClassificationOutputAdapter
from ..adapters.text import TextInputAdapter, TiedEmbeddingOutputAdapter
from ..core.decoder import PerceiverDecoder
from ..core.registry import register
from ..perceiver import PerceiverIO, PerceiverIOConfig


@register("masked_language_model", PerceiverIOConfig)
class MaskedLanguageModel(PerceiverIO):
    """Bytes or tokens ``[B, L]`` -> logits ``[B, L, vocab]``.

    Embeddings plus learned positions in; one learned query per position out, decoded through
    the input embedding matrix (tied) plus a bias. Padded positions' queries are masked, as in the
    official model.
    """

    input_adapter_type = TextInputAdapter
    decoder_type = PerceiverDecoder
    output_adapter_type = TiedEmbeddingOutputAdapter

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        subsampled_output_points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids [B, L]``, ``attention_mask [B, L]`` (1 = real token) -> logits ``[B, L, vocab]``,
        or ``[B, n, vocab]`` at the positions ``subsampled_output_points [n]`` only."""
        return super().forward(input_ids, attention_mask, subsampled_output_points=subsampled_output_points)


@register("text_classifier", PerceiverIOConfig)
class TextClassifier(PerceiverIO):
    """Bytes or tokens ``[B, L]`` -> class logits ``[B, num_labels]`` through one class query."""

    input_adapter_type = TextInputAdapter
    output_adapter_type = ClassificationOutputAdapter

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``input_ids [B, L]``, ``attention_mask [B, L]`` (1 = real token) -> logits ``[B, num_labels]``."""
        return super().forward(input_ids, attention_mask)
