"""Language task models: masked language modelling and text classification."""

from __future__ import annotations

import torch

from ..adapters.classification import ClassificationOutputAdapter
from ..adapters.text import TextInputAdapter, TiedEmbeddingOutputAdapter
from ..core.decoder import PerceiverDecoder
from ..core.perceiver import PerceiverIO
from ..serialization import register_model
from .base import require


@register_model
class MaskedLanguageModel(PerceiverIO):
    """Bytes or tokens ``[B, L]`` -> logits ``[B, L, vocab]``.

    Embeddings plus learned positions in; one learned query per position out, decoded through
    the input embedding matrix (tied) plus a bias.
    """

    def __init__(self, input_adapter, encoder, decoder, output_adapter) -> None:  # type: ignore[no-untyped-def]
        require(self, "input_adapter", input_adapter, TextInputAdapter)
        require(self, "decoder", decoder, PerceiverDecoder)
        require(self, "output_adapter", output_adapter, TiedEmbeddingOutputAdapter)
        super().__init__(input_adapter, encoder, decoder, output_adapter)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``input_ids [B, L]``, ``attention_mask [B, L]`` (1 = real token) -> logits ``[B, L, vocab]``."""
        x = self.input_adapter(input_ids)
        latents = self.encoder(x, attention_mask)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # As the official model: padded positions are masked queries too (their attention output is
        # zero). transformers' port ignores this query mask, so only its real positions agree.
        outputs = self.decoder(latents, query_mask=attention_mask, subsampled_output_points=positions)
        return self.output_adapter(outputs, self.input_adapter.embedding.weight)


@register_model
class TextClassifier(PerceiverIO):
    """Bytes or tokens ``[B, L]`` -> class logits ``[B, num_labels]`` through one class query."""

    def __init__(self, input_adapter, encoder, decoder, output_adapter) -> None:  # type: ignore[no-untyped-def]
        require(self, "input_adapter", input_adapter, TextInputAdapter)
        require(self, "output_adapter", output_adapter, ClassificationOutputAdapter)
        super().__init__(input_adapter, encoder, decoder, output_adapter)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``input_ids [B, L]``, ``attention_mask [B, L]`` -> logits ``[B, num_labels]``."""
        return super().forward(input_ids, attention_mask)
