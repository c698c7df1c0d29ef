"""Multimodal adapters: a dict of single-modality adapters in, a dict of single-modality outputs out.

As the official ``MultimodalPreprocessor`` / ``MultimodalDecoder`` / ``MultimodalPostprocessor``:

* inputs: each modality's tokens ``[B, M_m, C_m]`` are padded channel-wise with a learned
  per-modality vector (which also tells the modalities apart) to a common width
  ``max_m C_m + min_padding_size``, optionally replaced by a learned mask token with probability
  ``mask_probs[m]``, and concatenated in sorted modality order;
* outputs: each modality's queries are padded the same way to a common width, all go through the
  one shared cross-attention decoder (chunked, in bounded memory), and each modality's adapter
  projects and lays out its own outputs.

The paper's Kinetics autoencoder is ``{"audio": audio, "image": video, "label": class label}`` of
these; video + audio without labels, or audio alone, is just another dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from ..core.init import trunc_normal_
from ..core.position import check_indices
from ..core.registry import build, register
from ..core.validation import check_choice, check_model_input, check_positive
from .base import DecodeContext, InputAdapter, InputAdapterConfig, OutputAdapter, OutputAdapterConfig

T = TypeVar("T")


def _learned_vector(num_channels: int) -> nn.Parameter:
    p = nn.Parameter(torch.empty(1, num_channels))
    trunc_normal_(p, std=0.02)
    return p


def _check_modalities(where: str, modalities: dict[str, T], base: type) -> dict[str, T]:
    if not isinstance(modalities, dict) or not modalities:
        raise ValueError(f"{where}: expected a non-empty dict of modality name -> adapter config")
    for name, config in modalities.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: modality names must be non-empty strings, got {name!r}")
        if not isinstance(config, base):
            raise TypeError(f"{where}[{name!r}]: expected a {base.__name__}, got {type(config).__name__}")
    return dict(sorted(modalities.items()))  # sorted: the official concatenation order


def _padding(widths: dict[str, int], common: int) -> nn.ParameterDict:
    return nn.ParameterDict({m: _learned_vector(common - c) for m, c in widths.items()})


def _pad(x: torch.Tensor, padding: nn.Parameter) -> torch.Tensor:
    return torch.cat([x, padding.to(x.dtype).expand(x.shape[0], x.shape[1], -1)], dim=-1)


@dataclass
class MultimodalInputAdapterConfig(InputAdapterConfig):
    """``modalities``: name -> input adapter config; ``mask_probs``: name -> probability of replacing
    each of that modality's tokens by its learned mask token (the Kinetics autoencoder masks the
    label always, 1.0, so that it must be inferred)."""

    modalities: dict[str, InputAdapterConfig]
    mask_probs: dict[str, float] = field(default_factory=dict)
    min_padding_size: int = 2

    def __post_init__(self) -> None:
        self.modalities = _check_modalities("modalities", self.modalities, InputAdapterConfig)
        check_positive("min_padding_size", self.min_padding_size, allow_zero=True)
        unknown = sorted(set(self.mask_probs) - set(self.modalities))
        if unknown:
            raise ValueError(f"mask_probs: unknown modalities {unknown}; the modalities are {list(self.modalities)}")
        for m, p in self.mask_probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"mask_probs: probability for {m!r} must be in [0, 1], got {p}")

    @property
    def num_input_channels(self) -> int:
        return max(c.num_input_channels for c in self.modalities.values()) + self.min_padding_size


@register("multimodal_input", MultimodalInputAdapterConfig)
class MultimodalInputAdapter(InputAdapter):
    """``{name: inputs}`` -> ``[B, sum_m M_m, C_common]`` (modalities in sorted name order)."""

    def __init__(self, config: MultimodalInputAdapterConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = nn.ModuleDict({m: build(mc) for m, mc in c.modalities.items()})
        widths = {m: mc.num_input_channels for m, mc in c.modalities.items()}
        self.padding = _padding(widths, c.num_input_channels)
        self.mask_token = nn.ParameterDict({m: _learned_vector(c.num_input_channels) for m in sorted(c.mask_probs)})

    def modality_tokens(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Each modality's tokens with positions, before padding: ``{m: [B, M_m, C_m]}``."""
        if not isinstance(inputs, dict) or set(inputs) != set(self.modalities):
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(f"inputs: expected a dict with keys {list(self.modalities)}, got {got}")
        tokens = {}
        for m, adapter in self.modalities.items():
            x = inputs[m]
            try:
                # Device and dtype against this adapter's own parameters: a modality adapter may have none (the label).
                x = check_model_input(f"inputs[{m!r}]", x, self) if isinstance(x, torch.Tensor) else x
                tokens[m] = adapter(x)
            except (TypeError, ValueError) as e:
                raise type(e)(f"inputs[{m!r}]: {e}") from None
        sizes = {t.shape[0] for t in tokens.values()}
        if len(sizes) > 1:
            raise ValueError(f"inputs: every modality needs the same batch size, got { {m: t.shape[0] for m, t in tokens.items()} }")
        return tokens

    def forward(self, inputs: dict[str, Any], mask_probs: dict[str, float] | None = None) -> torch.Tensor:
        """``inputs`` -> ``[B, M, C]``. ``mask_probs`` overrides the config's masking probabilities for
        this call (``{"label": 1.0}`` hides the label to classify; ``{"label": 0.0}`` shows it); only
        modalities that have a mask token (those named in the config's ``mask_probs``) can be masked."""
        probs = dict(self.config.mask_probs)
        if mask_probs:
            unknown = sorted(set(mask_probs) - set(self.mask_token))
            if unknown:
                raise ValueError(
                    f"mask_probs: {unknown} have no mask token; maskable modalities are {sorted(self.mask_token)} "
                    "(those in the config's mask_probs)"
                )
            for m, p in mask_probs.items():
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"mask_probs: probability for {m!r} must be in [0, 1], got {p}")
            probs.update(mask_probs)
        parts = []
        for m, x in self.modality_tokens(inputs).items():
            x = _pad(x, self.padding[m])
            p = probs.get(m, 0.0)
            if p > 0.0:
                b, n, _ = x.shape
                mask = torch.bernoulli(torch.full((b, n, 1), p, device=x.device, dtype=x.dtype))
                x = (1 - mask) * x + mask * self.mask_token[m].to(x.dtype)
            parts.append(x)
        return torch.cat(parts, dim=1)


@dataclass
class MultimodalOutputAdapterConfig(OutputAdapterConfig):
    """``modalities``: name -> output adapter config of an adapter that makes its own queries (video,
    audio, a classification adapter with a ``query``). Their queries are padded to
    ``max_m C_q,m + min_padding_size`` channels for the one shared decoder."""

    modalities: dict[str, OutputAdapterConfig]
    min_padding_size: int = 2

    def __post_init__(self) -> None:
        self.modalities = _check_modalities("modalities", self.modalities, OutputAdapterConfig)
        check_positive("min_padding_size", self.min_padding_size, allow_zero=True)

    def query_widths(self, input_adapter: InputAdapterConfig) -> dict[str, int]:
        widths = {}
        for m, mc in self.modalities.items():
            width = mc.num_query_channels(input_adapter)
            if width is None:
                raise ValueError(f"modalities[{m!r}]: a multimodal output needs adapters that make their own queries")
            widths[m] = width
        return widths

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return max(self.query_widths(input_adapter).values()) + self.min_padding_size


@register("multimodal_output", MultimodalOutputAdapterConfig)
class MultimodalOutputAdapter(OutputAdapter):
    """Decodes every modality through the shared decoder: ``{name: outputs}``.

    ``subsampled_output_points`` is a dict ``{name: flat indices}``; a modality it leaves out (or
    maps to None, as transformers' examples do for the label) is decoded whole.
    """

    def __init__(self, config: MultimodalOutputAdapterConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = nn.ModuleDict({m: build(mc) for m, mc in c.modalities.items()})
        widths = {m: a.num_query_channels for m, a in self.modalities.items()}
        self.num_query_channels = max(widths.values()) + c.min_padding_size
        self.padding = _padding(widths, self.num_query_channels)

    def check_modality(self, modality: object) -> str:
        """``modality`` if it names one of this adapter's modalities, else a ``ValueError`` listing them."""
        check_choice("modality", modality, list(self.modalities))
        return modality  # type: ignore[return-value]

    def check_points(self, points: Any) -> None:
        """``subsampled_output_points``: None, or a dict ``{modality: flat indices [n] or None}`` over known
        modalities; checked before any computation (the ranges, set by each modality's inputs, when decoding)."""
        if points is None:
            return
        if not isinstance(points, dict):
            raise TypeError(
                f"subsampled_output_points: expected a dict {{modality: indices [n]}} over the modalities "
                f"{list(self.modalities)}, got {type(points).__name__}"
                + (f" of shape {list(points.shape)}" if isinstance(points, torch.Tensor) else "")
            )
        unknown = sorted(set(points) - set(self.modalities), key=str)
        if unknown:
            raise ValueError(
                f"subsampled_output_points: unknown modalities {unknown}; the modalities are {list(self.modalities)}"
            )
        for m, p in points.items():
            if p is not None:
                check_indices(f"subsampled_output_points[{m!r}]", p, None)

    def modality_context(self, context: DecodeContext, modality: str) -> DecodeContext:
        inputs = context.inputs.get(modality) if isinstance(context.inputs, dict) else None
        points = context.subsampled_output_points
        return context.replace(inputs=inputs, subsampled_output_points=points.get(modality) if points else None)

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> dict[str, Any]:
        self.check_points(context.subsampled_output_points)
        return {m: self.decode_modality(decoder, latents, context, m) for m in self.modalities}

    def decode_modality(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext, modality: str) -> Any:
        """Decode one modality (its points ``context.subsampled_output_points[modality]``, all when missing)."""
        adapter = self.modalities[self.check_modality(modality)]
        modality_context = self.modality_context(context, modality)
        try:  # the modality's input sets its output grid: check it, named as the input adapter names it
            adapter.num_outputs(modality_context)  # type: ignore[operator]
        except (TypeError, ValueError) as e:
            raise type(e)(f"inputs[{modality!r}]: {e}") from None
        return adapter.decode_with(  # type: ignore[operator]
            decoder, latents, modality_context,
            wrap_queries=lambda q: _pad(q, self.padding[modality]), name=f"subsampled_output_points[{modality!r}]",
        )
