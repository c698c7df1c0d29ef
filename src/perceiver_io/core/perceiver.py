"""``PerceiverIO``: input adapter -> encoder -> decoder -> output adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters.base import InputAdapter, OutputAdapter, build_adapter
from ..serialization import PretrainedMixin, register_model
from .config import ComponentConfig, Config
from .decoder import AverageDecoder, AverageDecoderConfig, DecoderConfig, PerceiverDecoder, build_decoder
from .encoder import EncoderConfig, PerceiverEncoder


@dataclass
class PerceiverIOConfig(Config):
    """A composed model: adapter configs (polymorphic, by ``type``) plus encoder and decoder configs."""

    input_adapter: ComponentConfig
    encoder: EncoderConfig
    decoder: DecoderConfig | AverageDecoderConfig
    output_adapter: ComponentConfig | None = None


@register_model
class PerceiverIO(PretrainedMixin, nn.Module):
    """Generic Perceiver IO: a new modality is a new pair of adapters and nothing else.

    ``forward(inputs)``: ``input_adapter(inputs) -> [B, M, C]`` -> encoder -> latents
    ``[B, N, D]`` -> decoder -> ``[B, O, C_out]`` -> ``output_adapter`` (identity if None).
    """

    config_class = PerceiverIOConfig

    def __init__(
        self,
        input_adapter: InputAdapter,
        encoder: PerceiverEncoder,
        decoder: PerceiverDecoder | AverageDecoder,
        output_adapter: OutputAdapter | None = None,
    ) -> None:
        super().__init__()
        if input_adapter.num_input_channels != encoder.config.num_input_channels:
            raise ValueError(
                f"encoder: num_input_channels={encoder.config.num_input_channels} but the input adapter "
                f"produces {input_adapter.num_input_channels} channels"
            )
        if decoder.config.num_latent_channels != encoder.config.num_latent_channels:
            raise ValueError(
                f"decoder: num_latent_channels={decoder.config.num_latent_channels} but the encoder has "
                f"{encoder.config.num_latent_channels} latent channels"
            )
        self.input_adapter = input_adapter
        self.encoder = encoder
        self.decoder = decoder
        self.output_adapter = output_adapter

    @classmethod
    def from_config(cls, config: PerceiverIOConfig) -> PerceiverIO:
        return cls(
            build_adapter(config.input_adapter),  # type: ignore[arg-type]
            PerceiverEncoder(config.encoder),
            build_decoder(config.decoder),
            build_adapter(config.output_adapter) if config.output_adapter is not None else None,  # type: ignore[arg-type]
        )

    @property
    def config(self) -> PerceiverIOConfig:  # type: ignore[override]
        return PerceiverIOConfig(
            self.input_adapter.config,
            self.encoder.config,
            self.decoder.config,
            self.output_adapter.config if self.output_adapter is not None else None,
        )

    def forward(
        self,
        inputs: Any,
        input_mask: torch.Tensor | None = None,
        *,
        queries: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        subsampled_output_points: torch.Tensor | None = None,
        output_chunk_size: int | None = None,
    ) -> Any:
        """Run the model. ``input_mask [B, M]`` marks real inputs; the decoder arguments are those
        of :meth:`PerceiverDecoder.forward`."""
        latents = self.encoder(self.input_adapter(inputs), input_mask)
        outputs = self.decoder(
            latents,
            queries,
            query_mask=query_mask,
            subsampled_output_points=subsampled_output_points,
            chunk_size=output_chunk_size,
        )
        return self.output_adapter(outputs) if self.output_adapter is not None else outputs
