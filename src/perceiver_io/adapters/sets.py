"""Entity-set adapters: a padded set of entities in, one output per entity plus set-level outputs.

The paper's StarCraft II experiment (Tables 1 and 7) swaps AlphaStar's entity Transformer for
Perceiver IO: the units go in as a set, and the encoded units themselves are the output queries,
so every unit gets an output that a pointer network consumes. Nothing here is StarCraft-specific:
any "set of entities in, per-entity or set-level decisions out" problem fits.

* :class:`SetInputAdapter`: per-entity continuous features (a Linear) plus categorical features
  (one embedding table each, summed), then residual MLP blocks. No positions: the model is
  permutation-equivariant. Padding is given as the model's ``mask`` (True = real entity).
* :class:`SetOutputAdapter`: one learned set query beside the entity queries; a pointer head
  (scaled dot-product logits from every entity over all entities, padding never selectable) and
  a set-level classification head on the set query's output. The Transformer baseline uses the
  same heads on its own outputs (:meth:`SetOutputAdapter.heads`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from ..core.attention import LAYER_NORM_EPS
from ..core.config import with_sizes
from ..core.init import linear, trunc_normal_
from ..core.registry import register
from ..core.validation import check_mask, check_model_input, check_positive, check_tensor
from .base import DecodeContext, InputAdapter, InputAdapterConfig, OutputAdapter, OutputAdapterConfig


class SetOutputs(NamedTuple):
    """What a set model returns.

    Attributes:
        entities: per-entity outputs ``[B, M, C]`` (after the heads' LayerNorm).
        pointer_logits: ``[B, M, M]``: row ``i`` scores every entity ``j`` as entity ``i``'s pointer
            target; padding columns are ``-inf`` (never selected). Padding rows are meaningless.
        set_logits: set-level class logits ``[B, num_classes]``.
    """

    entities: torch.Tensor
    pointer_logits: torch.Tensor
    set_logits: torch.Tensor


@dataclass
class SetInputAdapterConfig(InputAdapterConfig):
    """A set of at most ``max_set_size`` entities, each with ``num_continuous`` real features and one id
    per entry of ``categories`` (its vocabulary size), -> ``[B, M, num_channels]``.

    ``num_mlp_layers`` residual MLP blocks (pre-LayerNorm, hidden width ``widening_factor *
    num_channels``) follow the sum of the feature projection and the embeddings.
    """

    num_continuous: int
    categories: tuple[int, ...] = ()
    num_channels: int = 128
    max_set_size: int = 512
    num_mlp_layers: int = 1
    widening_factor: int = 2

    def __post_init__(self) -> None:
        self.categories = tuple(self.categories)
        check_positive("num_continuous", self.num_continuous, allow_zero=bool(self.categories))
        for i, size in enumerate(self.categories):
            check_positive(f"categories[{i}]", size)
        for name in ("num_channels", "max_set_size", "widening_factor"):
            check_positive(name, getattr(self, name))
        check_positive("num_mlp_layers", self.num_mlp_layers, allow_zero=True)

    @property
    def num_input_channels(self) -> int:
        return self.num_channels


class ResidualMLP(nn.Module):
    """``x + Linear(GELU(Linear(LayerNorm(x))))`` per entity: ``[B, M, C] -> [B, M, C]``."""

    def __init__(self, channels: int, widening_factor: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.hidden = linear(channels, widening_factor * channels)
        self.activation = nn.GELU()
        self.output = linear(widening_factor * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.output(self.activation(self.hidden(self.norm(x))))


@register("set_input", SetInputAdapterConfig)
class SetInputAdapter(InputAdapter):
    """``{"continuous": [B, M, F] float, "categorical": [B, M, K] int}`` -> ``[B, M, C]``.

    With no categorical features, a plain ``[B, M, F]`` tensor is accepted too.
    """

    def __init__(self, config: SetInputAdapterConfig) -> None:
        super().__init__()
        self.config = c = config
        self.continuous = linear(c.num_continuous, c.num_channels) if c.num_continuous else None
        self.embeddings = nn.ModuleList(nn.Embedding(size, c.num_channels) for size in c.categories)
        for table in self.embeddings:
            trunc_normal_(table.weight, std=0.02)
        self.mlp = nn.Sequential(*(ResidualMLP(c.num_channels, c.widening_factor) for _ in range(c.num_mlp_layers)))

    def split(self, inputs: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Check ``inputs`` (before any computation) and return ``(continuous, categorical)``."""
        c = self.config
        if isinstance(inputs, torch.Tensor) and not c.categories:
            inputs = {"continuous": inputs}
        if not isinstance(inputs, dict):
            raise TypeError(
                "inputs: expected a dict with 'continuous' [B, M, F] and 'categorical' [B, M, K] tensors, "
                f"got {type(inputs).__name__}"
            )
        expected = {"continuous"} if c.num_continuous else set()
        expected |= {"categorical"} if c.categories else set()
        if set(inputs) != expected:
            raise ValueError(f"inputs: expected the keys {sorted(expected)}, got {sorted(inputs)}")
        continuous = inputs.get("continuous")
        categorical = inputs.get("categorical")
        first = continuous if continuous is not None else categorical
        check_tensor("inputs", first, ("B", "M", None))
        b, m = first.shape[:2]  # type: ignore[union-attr]
        if continuous is not None:
            check_tensor("inputs['continuous']", continuous, (b, m, c.num_continuous), floating=True)
            continuous = check_model_input("inputs['continuous']", continuous, self)
        if categorical is not None:
            check_tensor("inputs['categorical']", categorical, (b, m, len(c.categories)), integer=True)
            categorical = check_model_input("inputs['categorical']", categorical, self)
            if categorical.numel():
                low = categorical.amin(dim=(0, 1))
                high = categorical.amax(dim=(0, 1))
                for i, size in enumerate(c.categories):
                    if low[i] < 0 or high[i] >= size:
                        raise ValueError(
                            f"inputs['categorical'][..., {i}]: ids must be in [0, {size}), "
                            f"got values in [{int(low[i])}, {int(high[i])}]"
                        )
        if m > c.max_set_size:
            raise ValueError(f"inputs: a set of {m} entities is larger than max_set_size={c.max_set_size}")
        if m == 0:
            raise ValueError("inputs: the sets are empty (0 entities)")
        return continuous, categorical

    def check_mask(self, inputs: Any, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Check the padding ``mask [B, M]`` (True = real entity; every set needs one) against ``inputs``.

        The inputs themselves are checked by :meth:`forward` (once: the id range check reads every id); here only
        their ``[B, M]``, unless they are not even tensors, which :meth:`split` then reports."""
        if mask is None:
            return None
        first = inputs.get("continuous", inputs.get("categorical")) if isinstance(inputs, dict) else inputs
        if not isinstance(first, torch.Tensor) or first.dim() < 2:
            self.split(inputs)  # raises the error that names what is wrong with the inputs
        mask = check_mask("mask", mask, first.shape[:2])  # type: ignore[union-attr]
        check_model_input("mask", mask, self)  # type: ignore[arg-type]
        if mask is not None and mask.numel() and not bool(mask.any(dim=1).all()):
            empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"mask: every set needs at least one real entity; sets {empty[:5]} are all padding")
        return mask

    def forward(self, inputs: Any) -> torch.Tensor:
        continuous, categorical = self.split(inputs)
        x: torch.Tensor | None = self.continuous(continuous) if self.continuous is not None else None
        for i, table in enumerate(self.embeddings):
            e = table(categorical[..., i])  # type: ignore[index]
            x = e if x is None else x + e
        return self.mlp(x)


@dataclass
class SetOutputAdapterConfig(OutputAdapterConfig):
    """Pointer logits over the entities and ``num_classes`` set-level logits.

    ``num_pointer_channels``: width of the pointer's query and key projections. The sizes taken
    from the adjacent parts are derived when None: ``num_entity_channels`` (the encoded entities'
    width, which the set query shares) and ``num_decoder_channels`` (the decoded width).
    """

    num_classes: int = 2
    num_pointer_channels: int = 64
    num_entity_channels: int | None = None
    num_decoder_channels: int | None = None

    def __post_init__(self) -> None:
        check_positive("num_classes", self.num_classes)
        check_positive("num_pointer_channels", self.num_pointer_channels)

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return input_adapter.num_input_channels

    def derived(self, input_adapter: InputAdapterConfig, num_decoder_channels: int | None) -> OutputAdapterConfig:
        return with_sizes(
            self, "output_adapter",
            num_entity_channels=input_adapter.num_input_channels, num_decoder_channels=num_decoder_channels,
        )


@register("set_output", SetOutputAdapterConfig)
class SetOutputAdapter(OutputAdapter):
    """The decoder's queries are the set query followed by the encoded entities (``[B, 1 + M, C]``);
    their outputs feed the pointer and set-level heads (:meth:`heads`)."""

    def __init__(self, config: SetOutputAdapterConfig) -> None:
        super().__init__()
        for name in ("num_entity_channels", "num_decoder_channels"):
            if getattr(config, name) is None:
                raise ValueError(f"{name}: required to build the adapter on its own (a model derives it)")
        self.config = c = config
        self.set_query = nn.Parameter(torch.empty(1, c.num_entity_channels))  # type: ignore[arg-type]
        trunc_normal_(self.set_query, std=0.02)
        d = c.num_decoder_channels
        self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)  # type: ignore[arg-type]
        self.pointer_query = linear(d, c.num_pointer_channels)  # type: ignore[arg-type]
        self.pointer_key = linear(d, c.num_pointer_channels)  # type: ignore[arg-type]
        self.classifier = linear(d, c.num_classes)  # type: ignore[arg-type]

    def with_set_query(self, entities: torch.Tensor) -> torch.Tensor:
        """``[B, M, C]`` -> ``[B, 1 + M, C]``: the learned set query first."""
        query = self.set_query.to(entities.dtype).expand(entities.shape[0], -1, -1)
        return torch.cat([query, entities], dim=1)

    def check_points(self, points: Any) -> None:
        if points is not None:
            raise ValueError("subsampled_output_points: a set model decodes every entity (give a smaller set instead)")

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> SetOutputs:
        self.check_points(context.subsampled_output_points)
        entities, mask = context.encoded, context.input_mask
        if mask is not None:
            # Padding rows are queries too: zeroed, a NaN in a padded entity stays out of the outputs.
            entities = torch.where(mask[:, :, None], entities, 0.0)
        queries = self.with_set_query(entities)
        return self(decoder(latents, queries, chunk_size=context.output_chunk_size), context)

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> SetOutputs:
        """``outputs [B, 1 + M, C]`` (set query first) -> :class:`SetOutputs`."""
        return self.heads(outputs[:, 1:], outputs[:, 0], context.input_mask)

    def heads(self, entities: torch.Tensor, summary: torch.Tensor, mask: torch.Tensor | None) -> SetOutputs:
        """Per-entity outputs ``[B, M, C]``, the set query's output ``[B, C]`` and the padding mask
        ``[B, M]`` (True = real, or None) -> :class:`SetOutputs`."""
        entities = self.norm(entities)
        query = self.pointer_query(entities)
        key = self.pointer_key(entities)
        logits = torch.matmul(query * query.shape[-1] ** -0.5, key.transpose(1, 2))
        if mask is not None:  # padding is never a target
            logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        return SetOutputs(entities, logits, self.classifier(self.norm(summary)))
