"""``PerceiverIO``: input adapter -> encoder -> decoder -> output adapter, with one forward.

The composition sits above :mod:`perceiver_io.core` (which knows no modality) and the adapters.
Sizes that one part implies for the next are derived here, so a config never types them:
the encoder's input width comes from the input adapter, the decoder's latent width from the
encoder, its query width from its query encoding or the output adapter, and an output adapter's
input width from the decoder's output. A size given explicitly must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .adapters.base import DecodeContext, InputAdapter, InputAdapterConfig, OutputAdapter, OutputAdapterConfig
from .core.config import Config, with_sizes
from .core.decoder import AverageDecoderConfig, DecoderConfig
from .core.encoder import EncoderConfig, PerceiverEncoder
from .core.position import check_indices
from .core.registry import build, register
from .core.validation import check_positive
from .serialization import PretrainedMixin


@dataclass
class PerceiverIOConfig(Config):
    """A composed model: adapter configs (polymorphic, by ``type``) plus encoder and decoder configs.

    Derived sizes (``encoder.num_input_channels``, ``decoder.num_latent_channels``,
    ``decoder.num_query_channels``, an output adapter's ``num_decoder_channels``) are filled in when
    left ``None``; an explicit value that disagrees is a ``ValueError`` naming it.
    """

    input_adapter: InputAdapterConfig
    encoder: EncoderConfig
    decoder: DecoderConfig | AverageDecoderConfig
    output_adapter: OutputAdapterConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.input_adapter, InputAdapterConfig):
            raise TypeError(f"input_adapter: expected an input adapter config, got {type(self.input_adapter).__name__}")
        if self.output_adapter is not None and not isinstance(self.output_adapter, OutputAdapterConfig):
            raise TypeError(
                f"output_adapter: expected an output adapter config, got {type(self.output_adapter).__name__}"
            )
        self.encoder = with_sizes(self.encoder, "encoder", num_input_channels=self.input_adapter.num_input_channels)
        queries = None
        if self.output_adapter is not None:
            queries = self.output_adapter.num_query_channels(self.input_adapter)
        self.decoder = with_sizes(
            self.decoder, "decoder", num_latent_channels=self.encoder.num_latent_channels, num_query_channels=queries
        )
        if isinstance(self.decoder, DecoderConfig) and self.decoder.num_query_channels is None:
            raise ValueError(
                "decoder.num_query_channels: unknown; give the decoder a query encoding, an output adapter "
                "that makes queries, or set num_query_channels"
            )
        if self.output_adapter is not None:
            self.output_adapter = self.output_adapter.derived(self.input_adapter, self.decoder.output_channels)


@register("perceiver_io", PerceiverIOConfig)
class PerceiverIO(PretrainedMixin, nn.Module):
    """Generic Perceiver IO: a new modality is a new pair of adapters and nothing else.

    ``forward(inputs, input_mask)``: ``input_adapter(inputs) -> [B, M, C]`` -> encoder -> latents
    ``[B, N, D]`` -> ``output_adapter.decode(decoder, latents, context)`` (the decoder's outputs
    ``[B, O, C_out]`` when there is no output adapter).

    Task models subclass this with a typed ``forward`` and name the parts they need in
    ``input_adapter_type`` / ``decoder_type`` / ``output_adapter_type``.
    """

    input_adapter_type: ClassVar[type[nn.Module]] = InputAdapter
    decoder_type: ClassVar[type[nn.Module]] = nn.Module
    output_adapter_type: ClassVar[type[nn.Module] | None] = None

    def __init__(
        self,
        input_adapter: InputAdapter,
        encoder: PerceiverEncoder,
        decoder: nn.Module,
        output_adapter: OutputAdapter | None = None,
    ) -> None:
        super().__init__()
        for name, part, expected in (
            ("input_adapter", input_adapter, self.input_adapter_type),
            ("decoder", decoder, self.decoder_type),
            ("output_adapter", output_adapter, self.output_adapter_type or OutputAdapter),
        ):
            if part is None and name == "output_adapter" and self.output_adapter_type is None:
                continue
            if not isinstance(part, expected):
                raise ValueError(f"{name}: {type(self).__name__} needs a {expected.__name__}, got {type(part).__name__}")
        # The config re-derives every size: a part built for other sizes is a clear error here.
        PerceiverIOConfig(
            input_adapter.config, encoder.config, decoder.config,  # type: ignore[arg-type]
            output_adapter.config if output_adapter is not None else None,
        )
        self.input_adapter = input_adapter
        self.encoder = encoder
        self.decoder = decoder
        self.output_adapter = output_adapter

    @classmethod
    def from_config(cls, config: PerceiverIOConfig) -> PerceiverIO:
        """Build the model (freshly initialised) that ``config`` describes."""
        return cls(
            build(config.input_adapter),  # type: ignore[arg-type]
            PerceiverEncoder(config.encoder),
            build(config.decoder),
            build(config.output_adapter) if config.output_adapter is not None else None,  # type: ignore[arg-type]
        )

    @property
    def config(self) -> PerceiverIOConfig:  # type: ignore[override]
        return PerceiverIOConfig(
            self.input_adapter.config,
            self.encoder.config,
            self.decoder.config,  # type: ignore[arg-type]
            self.output_adapter.config if self.output_adapter is not None else None,
        )

    def check_points(self, points: Any) -> None:
        """Validate ``subsampled_output_points`` before any computation (the output adapter's rule, or flat
        indices ``[O]`` for the decoder); the range is checked when decoding."""
        if self.output_adapter is not None:
            self.output_adapter.check_points(points)
        elif points is not None:
            check_indices("subsampled_output_points", points, None)

    def encode(self, inputs: Any, input_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``[B, N, D]`` of ``inputs`` (``input_mask [B, M]``: True = real input)."""
        return self.encoder(self.input_adapter(inputs), input_mask)

    def forward(
        self,
        inputs: Any,
        input_mask: torch.Tensor | None = None,
        *,
        subsampled_output_points: Any = None,
        output_chunk_size: int | None = None,
    ) -> Any:
        """Run the model.

        Args:
            inputs: what the input adapter takes (a tensor, or a dict for multimodal models).
            input_mask: ``[B, M]``, True (or 1) = a real input; masked inputs are not attended to.
            subsampled_output_points: decode only these flat output indices (``[O]``, or a dict
                per modality); positions follow the official rule ``-1 + 2 idx / dim``.
            output_chunk_size: decode at most this many queries at a time; the result equals the
                one-shot decode with memory bounded by the chunk.
        """
        if output_chunk_size is not None:
            check_positive("output_chunk_size", output_chunk_size)
        self.check_points(subsampled_output_points)
        encoded = self.input_adapter(inputs)
        latents = self.encoder(encoded, input_mask)
        if self.output_adapter is None:
            return self.decoder(latents, subsampled_output_points=subsampled_output_points, chunk_size=output_chunk_size)
        context = DecodeContext(inputs, encoded, self.input_adapter, input_mask, subsampled_output_points, output_chunk_size)
        return self.output_adapter.decode(self.decoder, latents, context)
