"""Text adapters: byte or token embeddings plus learned positions in (added, as the MLM model), and
logits through the tied input embedding out (the official ``EmbeddingDecoder``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import with_sizes
from ..core.init import trunc_normal_
from ..core.position import TrainablePositionEncoding, check_indices
from ..core.registry import register
from ..core.validation import check_model_input, check_not_empty, check_number, check_positive, check_tensor
from .base import DecodeContext, InputAdapter, InputAdapterConfig, OutputAdapter, OutputAdapterConfig


@dataclass
class TextInputAdapterConfig(InputAdapterConfig):
    """Token ids ``[B, L]`` (``L <= max_seq_len``) -> embeddings + learned positions ``[B, L, num_channels]``.

    ``init_scale`` is the std of the position table's truncated-normal initialisation and ``embedding_init_scale``
    that of the token embedding (the official model: 0.02 and 1.0). Both only change how a fresh model starts.
    With the official 1.0 the embedding outweighs the positions fifty to one after the cross-attention's LayerNorm,
    so the latents cannot tell positions apart at first; the small CPU presets start the embedding at 0.02, the
    positions' scale (``models.presets.SMALL_EMBEDDING_INIT_SCALE`` has the measurement).
    """

    vocab_size: int = 262
    max_seq_len: int = 2048
    num_channels: int = 768
    init_scale: float = 0.02
    embedding_init_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_seq_len", "num_channels"):
            check_positive(name, getattr(self, name))
        for name in ("init_scale", "embedding_init_scale"):  # stds
            check_number(name, getattr(self, name), 0, math.inf, low_open=True, high_open=True)

    @property
    def num_input_channels(self) -> int:
        return self.num_channels


@register("text_input", TextInputAdapterConfig)
class TextInputAdapter(InputAdapter):
    def __init__(self, config: TextInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.num_channels)
        trunc_normal_(self.embedding.weight, std=config.embedding_init_scale)
        self.position_encoding = TrainablePositionEncoding(config.max_seq_len, config.num_channels, config.init_scale)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``input_ids [B, L]`` of any integer dtype (used as long), ``1 <= L <= max_seq_len`` -> ``[B, L, C]``."""
        check_tensor("input_ids", inputs, ("B", "L"), integer=True)
        b, length = inputs.shape
        check_not_empty("input_ids", inputs, 1, "token L")
        if length > self.config.max_seq_len:
            raise ValueError(f"input_ids: expected at most max_seq_len={self.config.max_seq_len} tokens, got {length}")
        inputs = check_model_input("input_ids", inputs, self)
        # The value check reads the ids back (a data-dependent branch export and compile cannot trace): eager only.
        if (not torch.compiler.is_compiling() and inputs.numel()
                and (int(inputs.min()) < 0 or int(inputs.max()) >= self.config.vocab_size)):
            raise ValueError(
                f"input_ids: expected ids in [0, {self.config.vocab_size}), got values in "
                f"[{int(inputs.min())}, {int(inputs.max())}]"
            )
        positions = self.position_encoding(b, torch.arange(length, device=inputs.device))
        return self.embedding(inputs) + positions


@dataclass
class TiedEmbeddingOutputAdapterConfig(OutputAdapterConfig):
    """Logits from the input embedding matrix (tied): ``outputs @ E^T + bias``; ``vocab_size``
    defaults to the text input adapter's."""

    vocab_size: int | None = None

    def __post_init__(self) -> None:
        if self.vocab_size is not None:
            check_positive("vocab_size", self.vocab_size)

    def derived(self, input_adapter: InputAdapterConfig, num_decoder_channels: int | None) -> TiedEmbeddingOutputAdapterConfig:
        if not isinstance(input_adapter, TextInputAdapterConfig):
            raise ValueError(
                f"output_adapter: a tied embedding output needs a text input adapter (its embedding), "
                f"got {type(input_adapter).__name__}"
            )
        if num_decoder_channels is not None and num_decoder_channels != input_adapter.num_channels:
            raise ValueError(
                f"decoder: the tied embedding needs outputs of {input_adapter.num_channels} channels (the "
                f"embedding's), the decoder gives {num_decoder_channels}"
            )
        return with_sizes(self, "output_adapter", vocab_size=input_adapter.vocab_size)


@register("tied_embedding_output", TiedEmbeddingOutputAdapterConfig)
class TiedEmbeddingOutputAdapter(OutputAdapter):
    """Decoder outputs ``[B, L, C]`` -> logits ``[B, L, V]`` through the input embedding ``[V, C]``.

    The decoder's queries are its learned positions ``0 .. L-1`` (``L`` = the input length), or
    only the positions ``subsampled_output_points [n]`` (e.g. the masked ones, whose logits a
    masked-language-model loss needs: ``[B, n, V]``). The queries of padded positions are masked as
    the official model does (transformers' port ignores that query mask, so the two agree at real
    positions only). The embedding is read from
    the context's input adapter, so the tied matrix has one owner and one name in the state dict.
    """

    def __init__(self, config: TiedEmbeddingOutputAdapterConfig) -> None:
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("vocab_size: required to build the adapter on its own (a model derives it)")
        self.config = config
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        length = context.encoded.shape[1]
        positions, mask = context.subsampled_output_points, context.input_mask
        if positions is None:
            positions = torch.arange(length, device=latents.device)
        else:
            positions = check_indices("subsampled_output_points", positions, length).to(latents.device)
            mask = mask[:, positions] if mask is not None else None
        outputs = decoder(latents, query_mask=mask, subsampled_output_points=positions,
                          chunk_size=context.output_chunk_size)
        return self(outputs, context)

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        return outputs @ context.input_adapter.embedding.weight.t() + self.bias
