"""Entity sets: Perceiver IO as a set encoder (the paper's StarCraft II unit sets) and its Transformer baseline.

Both models take a padded set of entities and return :class:`~perceiver_io.adapters.sets.SetOutputs`
(per-entity outputs, pointer logits over the entities, set-level logits) from the same adapters and
heads, so they differ only in the encoder: Perceiver IO's cross-attend / latent process / decode
(cost linear in the number of entities) against ``torch.nn.TransformerEncoder`` self-attention over
all entities (quadratic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters.sets import SetInputAdapter, SetInputAdapterConfig, SetOutputAdapter, SetOutputAdapterConfig, SetOutputs
from ..core.config import Config
from ..core.decoder import PerceiverDecoder
from ..core.registry import register
from ..core.validation import check_divisible, check_positive
from ..perceiver import PerceiverIO, PerceiverIOConfig
from ..serialization import PretrainedMixin


@register("set_perceiver_io", PerceiverIOConfig)
class SetPerceiverIO(PerceiverIO):
    """A set ``{"continuous": [B, M, F], "categorical": [B, M, K]}`` with ``mask [B, M]`` -> :class:`SetOutputs`.

    The decoder's queries are the set query and the encoded entities themselves (the paper's
    StarCraft setting), so each entity's output is decoded from the latents by its own features.
    Without positions the per-entity outputs are permutation-equivariant and the set logits invariant;
    padding changes neither the real entities' outputs nor what the pointer can select.
    """

    input_adapter_type = SetInputAdapter
    decoder_type = PerceiverDecoder
    output_adapter_type = SetOutputAdapter

    def forward(self, inputs: Any, mask: torch.Tensor | None = None) -> SetOutputs:  # type: ignore[override]
        """``inputs`` (see :class:`SetInputAdapter`), ``mask [B, M]`` (True = real entity) -> :class:`SetOutputs`."""
        mask = self.input_adapter.check_mask(inputs, mask)  # type: ignore[operator]
        return super().forward(inputs, mask)


@dataclass
class SetTransformerConfig(Config):
    """The Transformer baseline: the same adapters around ``num_layers`` pre-LayerNorm
    ``nn.TransformerEncoderLayer`` s of the entities' width (GELU MLP of ``widening_factor`` times it)."""

    input_adapter: SetInputAdapterConfig
    output_adapter: SetOutputAdapterConfig
    num_layers: int = 5
    num_heads: int = 4
    widening_factor: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.input_adapter, SetInputAdapterConfig):
            raise TypeError(f"input_adapter: expected a SetInputAdapterConfig, got {type(self.input_adapter).__name__}")
        if not isinstance(self.output_adapter, SetOutputAdapterConfig):
            raise TypeError(f"output_adapter: expected a SetOutputAdapterConfig, got {type(self.output_adapter).__name__}")
        for name in ("num_layers", "num_heads", "widening_factor"):
            check_positive(name, getattr(self, name))
        width = self.input_adapter.num_input_channels
        check_divisible("input_adapter.num_channels", width, self.num_heads)
        self.output_adapter = self.output_adapter.derived(self.input_adapter, width)  # type: ignore[assignment]


@register("set_transformer_baseline", SetTransformerConfig)
class SetTransformerBaseline(PretrainedMixin, nn.Module):
    """The same interface as :class:`SetPerceiverIO` with a Transformer encoder over all entities.

    The set query is prepended as a token (a [CLS] token) and padding is excluded with
    ``src_key_padding_mask``; no positions, so it is permutation-equivariant too.
    """

    def __init__(self, config: SetTransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        width = c.input_adapter.num_input_channels
        self.input_adapter = SetInputAdapter(c.input_adapter)
        layer = nn.TransformerEncoderLayer(
            width, c.num_heads, c.widening_factor * width, c.dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )
        # Nested tensors need post-LayerNorm layers; the padding mask does the same job here.
        self.encoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.output_adapter = SetOutputAdapter(c.output_adapter)  # type: ignore[arg-type]

    @classmethod
    def from_config(cls, config: SetTransformerConfig) -> SetTransformerBaseline:
        return cls(config)

    def forward(self, inputs: Any, mask: torch.Tensor | None = None) -> SetOutputs:
        """``inputs`` (see :class:`SetInputAdapter`), ``mask [B, M]`` (True = real entity) -> :class:`SetOutputs`."""
        mask = self.input_adapter.check_mask(inputs, mask)
        entities = self.input_adapter(inputs)
        padding = None
        if mask is not None:
            # Zeroed padding: the attention's 0 * value would carry a NaN of a padded entity to every output.
            entities = torch.where(mask[:, :, None], entities, 0.0)
        tokens = self.output_adapter.with_set_query(entities)  # [B, 1 + M, C]
        if mask is not None:
            padding = torch.cat([mask.new_zeros(mask.shape[0], 1), ~mask], dim=1)  # True = ignore
        # torch's attention cannot reshape an empty batch; with no set there is nothing to encode.
        out = self.encoder(tokens, src_key_padding_mask=padding) if tokens.shape[0] else tokens
        return self.output_adapter.heads(out[:, 1:], out[:, 0], mask)
