"""Audio adapters: patches of raw samples + 1D Fourier features in, one query per patch out
(the official ``AudioPreprocessor`` / ``AudioPostprocessor``). Any number of samples that divides
into patches: positions follow the input."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.position import FourierPositionEncoding, fourier_channels
from ..core.registry import register
from ..core.validation import check_model_input, check_not_empty, check_positive, check_tensor
from .base import DecodeContext, FourierQueryOutputAdapter, InputAdapter, InputAdapterConfig, OutputAdapterConfig


def _check_audio(audio: object, samples_per_patch: int) -> torch.Tensor:
    check_tensor("audio", audio, ("B", "S", 1), floating=True)
    check_not_empty("audio", audio, 1, "sample S")  # type: ignore[arg-type]
    if audio.shape[1] % samples_per_patch:  # type: ignore[union-attr]
        raise ValueError(
            f"audio: the number of samples must divide by samples_per_patch={samples_per_patch}, got {audio.shape[1]}"  # type: ignore[union-attr]
        )
    return audio  # type: ignore[return-value]


def _resolution(value: tuple[int] | None) -> tuple[int] | None:
    if value is not None and len(tuple(value)) != 1:
        raise ValueError(f"max_resolution: expected 1 entry, got {list(value)}")
    return tuple(value) if value is not None else None  # type: ignore[return-value]


@dataclass
class AudioInputAdapterConfig(InputAdapterConfig):
    """Audio ``[B, S, 1]`` -> ``[B, S / samples_per_patch, samples_per_patch + C_pos]``: patches of
    samples plus 1D Fourier features of the patch index (``max_resolution``: the official Kinetics
    model's ``(30720,)``, its number of samples; None follows the number of patches)."""

    samples_per_patch: int = 16
    num_bands: int = 192
    max_resolution: tuple[int] | None = None

    def __post_init__(self) -> None:
        check_positive("samples_per_patch", self.samples_per_patch)
        check_positive("num_bands", self.num_bands)
        self.max_resolution = _resolution(self.max_resolution)

    @property
    def num_input_channels(self) -> int:
        return self.samples_per_patch + fourier_channels(1, self.num_bands)


@register("audio_input", AudioInputAdapterConfig)
class AudioInputAdapter(InputAdapter):
    def __init__(self, config: AudioInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.position_encoding = FourierPositionEncoding(None, config.num_bands, config.max_resolution, num_dims=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        spp = self.config.samples_per_patch
        audio = _check_audio(inputs, spp)
        check_model_input("audio", audio, self)
        b, n = audio.shape[0], audio.shape[1] // spp
        tokens = audio.reshape(b, n, spp)
        return torch.cat([tokens, self.position_encoding(b, index_dims=(n,)).to(tokens.dtype)], dim=-1)


@dataclass
class AudioOutputAdapterConfig(OutputAdapterConfig):
    """One query per audio patch of the input (1D Fourier features, ``max_resolution`` as the input
    side's), decoded and projected by a Linear from ``num_decoder_channels`` (derived) to
    ``samples_per_patch`` samples."""

    samples_per_patch: int = 16
    num_bands: int = 192
    max_resolution: tuple[int] | None = None
    num_decoder_channels: int | None = None

    def __post_init__(self) -> None:
        check_positive("samples_per_patch", self.samples_per_patch)
        check_positive("num_bands", self.num_bands)
        self.max_resolution = _resolution(self.max_resolution)

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return fourier_channels(1, self.num_bands)


@register("audio_output", AudioOutputAdapterConfig)
class AudioOutputAdapter(FourierQueryOutputAdapter):
    """Decodes the input's audio patches: all of them as ``[B, S, 1]``, or the patch indices
    ``subsampled_output_points`` as ``[B, n * samples_per_patch]``."""

    def __init__(self, config: AudioOutputAdapterConfig) -> None:
        super().__init__(config, num_dims=1, num_channels_out=config.samples_per_patch)

    def grid(self, context: DecodeContext) -> tuple[int]:
        spp = self.config.samples_per_patch
        return (_check_audio(context.inputs, spp).shape[1] // spp,)

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        samples = outputs.flatten(1)  # not reshape(B, -1): ambiguous for an empty batch
        return samples if context.subsampled_output_points is not None else samples[:, :, None]
