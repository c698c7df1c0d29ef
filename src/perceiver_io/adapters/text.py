"""Text input adapter: byte or token embeddings plus learned positions (added), as in the MLM model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import ComponentConfig
from ..core.init import trunc_normal_
from ..core.position import TrainablePositionEncoding
from ..core.validation import check_positive, check_tensor
from .base import InputAdapter, OutputAdapter, adapter


@dataclass
class TextInputAdapterConfig(ComponentConfig):
    """Token ids ``[B, L]`` (``L <= max_seq_len``) -> embeddings + learned positions ``[B, L, num_channels]``."""

    component_type = "text_input"
    vocab_size: int = 262
    max_seq_len: int = 2048
    num_channels: int = 768
    init_scale: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_seq_len", "num_channels"):
            check_positive(name, getattr(self, name))


@adapter(TextInputAdapterConfig)
class TextInputAdapter(InputAdapter):
    def __init__(self, config: TextInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.num_channels)
        trunc_normal_(self.embedding.weight, std=1.0)
        self.position_encoding = TrainablePositionEncoding(config.max_seq_len, config.num_channels, config.init_scale)

    @property
    def num_input_channels(self) -> int:
        return self.config.num_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_tensor("input_ids", inputs, ("B", "L"), integer=True)
        b, length = inputs.shape
        if length > self.config.max_seq_len:
            raise ValueError(f"input_ids: expected at most max_seq_len={self.config.max_seq_len} tokens, got {length}")
        if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= self.config.vocab_size):
            raise ValueError(
                f"input_ids: expected ids in [0, {self.config.vocab_size}), got values in "
                f"[{int(inputs.min())}, {int(inputs.max())}]"
            )
        positions = self.position_encoding(b, torch.arange(length, device=inputs.device))
        return self.embedding(inputs) + positions


@dataclass
class TiedEmbeddingOutputAdapterConfig(ComponentConfig):
    """Logits from the input embedding matrix (tied): ``outputs @ E^T + bias``."""

    component_type = "tied_embedding_output"
    vocab_size: int = 262

    def __post_init__(self) -> None:
        check_positive("vocab_size", self.vocab_size)


@adapter(TiedEmbeddingOutputAdapterConfig)
class TiedEmbeddingOutputAdapter(OutputAdapter):
    """``[B, L, C]`` decoder outputs and the ``[V, C]`` input embedding -> logits ``[B, L, V]`` (official ``EmbeddingDecoder``).

    The embedding is passed at call time rather than registered here, so the tied matrix has one
    owner (the input adapter) and one name in the state dict.
    """

    def __init__(self, config: TiedEmbeddingOutputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, outputs: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return outputs @ embedding.t() + self.bias
