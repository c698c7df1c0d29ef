"""Classification output adapter: one class query's output -> logits ``[B, K]``.

On its own the class query and the final Linear belong to the decoder (the official
``ClassificationDecoder``); as one modality of a multimodal decoder the adapter brings its own
learned query and Linear (``query`` and ``num_decoder_channels``), as the official Kinetics
autoencoder's label part does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.config import with_sizes
from ..core.init import linear
from ..core.position import PositionEncodingConfig, build_position_encoding
from ..core.registry import register
from ..core.validation import check_positive, check_tensor
from .base import DecodeContext, InputAdapterConfig, OutputAdapter, OutputAdapterConfig, QueryingOutputAdapter


@dataclass
class ClassificationOutputAdapterConfig(OutputAdapterConfig):
    """``num_classes`` logits. ``query`` (a learned ``(1,)`` table) and ``num_decoder_channels``
    (the decoder's output width, derived when None) only when the adapter makes its own query."""

    num_classes: int
    query: PositionEncodingConfig | None = None
    num_decoder_channels: int | None = None

    def __post_init__(self) -> None:
        check_positive("num_classes", self.num_classes)
        if self.query is not None:
            self.query = self.query.on_grid((1,), "query")

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return self.query.output_channels if self.query is not None else None

    def derived(self, input_adapter: InputAdapterConfig, num_decoder_channels: int | None) -> OutputAdapterConfig:
        if self.query is None:  # the decoder's own Linear makes the logits
            if num_decoder_channels is not None and num_decoder_channels != self.num_classes:
                raise ValueError(
                    f"decoder.num_output_channels: expected {self.num_classes} (the classes), got {num_decoder_channels}"
                )
            return self
        return with_sizes(self, "output_adapter", num_decoder_channels=num_decoder_channels)


@register("classification_output", ClassificationOutputAdapterConfig)
class ClassificationOutputAdapter(QueryingOutputAdapter):
    """Decoded class query ``[B, 1, C]`` -> logits ``[B, num_classes]``."""

    def __init__(self, config: ClassificationOutputAdapterConfig) -> None:
        super().__init__()
        self.config = c = config
        self.query = build_position_encoding(c.query) if c.query is not None else None
        self.projection: nn.Linear | None = None
        if self.query is not None:
            if c.num_decoder_channels is None:
                raise ValueError("num_decoder_channels: required to build the adapter on its own (a model derives it)")
            self.num_query_channels = self.query.num_channels
            self.projection = linear(c.num_decoder_channels, c.num_classes)

    def check_points(self, points: Any) -> None:
        if points is not None:
            raise ValueError(f"subsampled_output_points: a classifier has one output (its class query), so there is "
                             f"nothing to subsample; pass None, got {type(points).__name__}")

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        if self.query is None:
            self.check_points(context.subsampled_output_points)
            return OutputAdapter.decode(self, decoder, latents, context)
        return self.decode_with(decoder, latents, context.replace(subsampled_output_points=None))

    def num_outputs(self, context: DecodeContext) -> int:
        return 1

    def queries(self, context: DecodeContext, indices: torch.Tensor | None, subsampled: bool) -> torch.Tensor:
        return self.query(context.batch_size, indices)  # type: ignore[misc]

    def project(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.projection(outputs) if self.projection is not None else outputs

    def forward(self, outputs: torch.Tensor, context: DecodeContext | None = None) -> torch.Tensor:
        check_tensor("outputs", outputs, ("B", 1, self.config.num_classes))
        return outputs[:, 0]
