"""Adapters turn a modality into the encoder's input array and decoded queries into task outputs.

A new modality is a new pair of adapters and nothing else. Each adapter takes one config
dataclass and is registered under a unique type name (``@register("image_input", ImageInputAdapterConfig)``,
:mod:`perceiver_io.core.registry`) so that a composed model serialises to JSON and is rebuilt from it.

* An :class:`InputAdapter` maps raw inputs to ``[B, M, C]``; its config states ``C``
  (``num_input_channels``), so the encoder's input width is derived, never typed.
* An :class:`OutputAdapter` decides how the decoder is queried (:meth:`OutputAdapter.decode`) and
  lays the decoded queries out as task outputs. It gets everything else it needs through one
  :class:`DecodeContext`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..core.config import ComponentConfig, with_sizes
from ..core.decoder import PerceiverDecoder
from ..core.init import linear
from ..core.position import FourierPositionEncoding, check_indices


class InputAdapterConfig(ComponentConfig):
    """Config of an input adapter: states the width of the array it produces."""

    @property
    def num_input_channels(self) -> int:
        """Channels ``C`` of the adapter's output ``[B, M, C]`` (the encoder's input width)."""
        raise NotImplementedError


class OutputAdapterConfig(ComponentConfig):
    """Config of an output adapter."""

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        """Channels of the queries this adapter gives the decoder, or None when the decoder's own
        query provider makes them (``input_adapter``: for adapters whose queries are the encoded inputs)."""
        return None

    def derived(self, input_adapter: InputAdapterConfig, num_decoder_channels: int | None) -> OutputAdapterConfig:
        """This config with the sizes it takes from the adjacent parts filled in (by default
        ``num_decoder_channels``, the decoder's output width, wherever a field of that name is None)."""
        return with_sizes(self, "output_adapter", num_decoder_channels=num_decoder_channels)


@dataclass
class DecodeContext:
    """What an output adapter may use besides the latents: the one context argument of decoding.

    Attributes:
        inputs: the raw inputs given to the model (a tensor, or a dict for multimodal models).
        encoded: the input adapter's output ``[B, M, C]`` (the encoder's input).
        input_adapter: the model's input adapter (an output tied to its weights reads them here,
            as the MLM's embedding decoder does).
        input_mask: ``[B, M]`` bool (True = real input) or None.
        subsampled_output_points: flat output indices to decode (a tensor, or a dict per modality),
            or None for all outputs.
        output_chunk_size: decode at most this many queries at a time (None: all at once).
        subsampled_positions: position every output by the subsampled-points rule even when all
            are decoded (the official full reconstruction decodes all points as subsampled ones).
    """

    inputs: Any
    encoded: torch.Tensor
    input_adapter: InputAdapter
    input_mask: torch.Tensor | None = None
    subsampled_output_points: Any = None
    output_chunk_size: int | None = None
    subsampled_positions: bool = False

    @property
    def batch_size(self) -> int:
        return self.encoded.shape[0]

    def replace(self, **changes: Any) -> DecodeContext:
        return replace(self, **changes)


class InputAdapter(nn.Module):
    """Maps raw inputs to the encoder's input array ``[B, M, num_input_channels]``."""

    config: InputAdapterConfig

    @property
    def num_input_channels(self) -> int:
        return self.config.num_input_channels

    def forward(self, inputs: Any) -> torch.Tensor:
        raise NotImplementedError


class OutputAdapter(nn.Module):
    """Maps decoded queries ``[B, O, C]`` to task outputs.

    :meth:`decode` runs the decoder; by default with the decoder's own queries (subsampled and
    chunked as the context asks). Adapters that bring their own queries (the flow model's encoded
    inputs, per-modality queries) override it. :meth:`forward` lays the decoded queries out.
    """

    config: OutputAdapterConfig

    def check_points(self, points: Any) -> None:
        """Validate ``subsampled_output_points`` before any computation (a model's forward calls this first):
        here a non-empty 1-D integer tensor or None. Their range, which may depend on the inputs, is checked
        when decoding."""
        if points is not None:
            check_indices("subsampled_output_points", points, None)

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> Any:
        """Decode ``latents [B, N, D]`` into the task outputs."""
        outputs = decoder(
            latents,
            subsampled_output_points=context.subsampled_output_points,
            chunk_size=context.output_chunk_size,
        )
        return self(outputs, context)

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> Any:
        raise NotImplementedError


class QueryingOutputAdapter(OutputAdapter):
    """An output adapter that makes its own queries and projects each decoded query itself
    (a modality of a multimodal decoder, as the official ``MultimodalDecoder`` parts are).

    ``queries(context, indices, subsampled)`` gives ``[B, O, C_q]`` for flat output ``indices``
    (all outputs when None); ``project`` maps decoded queries ``[B, O, C_dec]`` to ``[B, O, C]``
    per query (so chunked decoding stores only the projected values); ``forward`` lays them out.
    """

    num_query_channels: int

    def num_outputs(self, context: DecodeContext) -> int:
        raise NotImplementedError

    def queries(self, context: DecodeContext, indices: torch.Tensor | None, subsampled: bool) -> torch.Tensor:
        raise NotImplementedError

    def project(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> Any:
        return self.decode_with(decoder, latents, context)

    def decode_with(
        self,
        decoder: nn.Module,
        latents: torch.Tensor,
        context: DecodeContext,
        wrap_queries: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str = "subsampled_output_points",
    ) -> Any:
        """:meth:`decode`, with ``wrap_queries`` applied to every chunk of queries (a multimodal
        adapter pads them to the common width) and ``name`` used in error messages."""
        if not isinstance(decoder, PerceiverDecoder):
            raise ValueError(f"decoder: {type(self).__name__} needs a cross-attention decoder, got {type(decoder).__name__}")
        num_outputs = self.num_outputs(context)
        indices = context.subsampled_output_points
        subsampled = indices is not None or context.subsampled_positions
        if indices is None:
            indices = torch.arange(num_outputs, device=latents.device)
        else:
            indices = check_indices(name, indices, num_outputs).to(latents.device)
        wrap = wrap_queries or (lambda q: q)
        total = indices.numel()

        def chunk_queries(start: int, end: int) -> torch.Tensor:
            # The whole grid in one piece: indices None, so a Fourier query's full-grid cache serves it.
            whole = not subsampled and start == 0 and end == total
            return wrap(self.queries(context, None if whole else indices[start:end], subsampled))

        projected = decoder.decode_in_chunks(
            chunk_queries, latents, total, context.output_chunk_size or max(total, 1), project=self.project
        )
        return self(projected, context)


class FourierQueryOutputAdapter(QueryingOutputAdapter):
    """One query per point of a grid that the input sets (:meth:`grid`): Fourier features of the
    point's position, decoded, then projected per query by a Linear from the decoder's
    ``num_decoder_channels`` to ``num_channels_out`` (the official video and audio decoder parts).

    The config needs ``num_bands``, ``max_resolution`` and ``num_decoder_channels``.
    """

    def __init__(self, config: Any, num_dims: int, num_channels_out: int) -> None:
        super().__init__()
        if config.num_decoder_channels is None:
            raise ValueError("num_decoder_channels: required to build the adapter on its own (a model derives it)")
        self.config = config
        self.query = FourierPositionEncoding(None, config.num_bands, config.max_resolution, num_dims=num_dims)
        self.num_query_channels = self.query.num_channels
        self.projection = linear(config.num_decoder_channels, num_channels_out)

    def grid(self, context: DecodeContext) -> tuple[int, ...]:
        """The output grid of these inputs (``context.inputs`` is this modality's input)."""
        raise NotImplementedError

    def num_outputs(self, context: DecodeContext) -> int:
        return math.prod(self.grid(context))

    def queries(self, context: DecodeContext, indices: torch.Tensor | None, subsampled: bool) -> torch.Tensor:
        return self.query(context.batch_size, indices, subsampled, index_dims=self.grid(context))

    def project(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.projection(outputs)
