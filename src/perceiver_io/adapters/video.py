"""Video adapters: space-to-depth patches + 3D Fourier features in, one query per pixel out
(the official Kinetics autoencoder's image parts). Any ``T x H x W``: positions follow the input."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.position import FourierPositionEncoding, fourier_channels
from ..core.registry import register
from ..core.validation import check_model_input, check_positive, check_tensor
from .base import DecodeContext, FourierQueryOutputAdapter, InputAdapter, InputAdapterConfig, OutputAdapterConfig


def video_patches(video: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Space-to-depth: ``[B, T, C, H, W] -> [B, T, H/p, W/p, p*p*C]``, channels ordered (row, column, channel)."""
    b, t, c, h, w = video.shape
    x = video.reshape(b, t, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.permute(0, 1, 3, 5, 4, 6, 2).reshape(b, t, h // patch_size, w // patch_size, patch_size * patch_size * c)


def _resolution(value: tuple[int, ...] | None, size: int, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    value = tuple(value)
    if len(value) != size:
        raise ValueError(f"{name}: expected {size} entries, got {list(value)}")
    return value


@dataclass
class VideoInputAdapterConfig(InputAdapterConfig):
    """Video ``[B, T, C, H, W]`` -> ``[B, T*(H/p)*(W/p), p*p*C + C_pos]``: ``patch_size`` x ``patch_size``
    space-to-depth patches plus 3D Fourier features of the patch grid (``max_resolution``: the
    official model's ``(16, 56, 56)``; None follows the input's patch grid)."""

    num_channels: int = 3
    patch_size: int = 4
    num_bands: int = 32
    max_resolution: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("num_channels", "patch_size", "num_bands"):
            check_positive(name, getattr(self, name))
        self.max_resolution = _resolution(self.max_resolution, 3, "max_resolution")  # type: ignore[assignment]

    @property
    def num_input_channels(self) -> int:
        return self.patch_size**2 * self.num_channels + fourier_channels(3, self.num_bands)


@register("video_input", VideoInputAdapterConfig)
class VideoInputAdapter(InputAdapter):
    def __init__(self, config: VideoInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.position_encoding = FourierPositionEncoding(None, config.num_bands, config.max_resolution, num_dims=3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        c, p = self.config.num_channels, self.config.patch_size
        check_tensor("video", inputs, ("B", "T", c, "H", "W"), floating=True)
        b, t, _, h, w = inputs.shape
        if t == 0 or h < p or w < p:
            raise ValueError(f"video: expected at least one frame of at least {p}x{p} pixels (one patch), "
                             f"got {t} frames of {h}x{w}")
        if h % p or w % p:
            raise ValueError(f"video: height and width must divide by patch_size={p}, got {h}x{w}")
        check_model_input("video", inputs, self)
        tokens = video_patches(inputs, p).flatten(1, 3)
        pos = self.position_encoding(b, index_dims=(t, h // p, w // p)).to(tokens.dtype)
        return torch.cat([tokens, pos], dim=-1)


@dataclass
class VideoOutputAdapterConfig(OutputAdapterConfig):
    """One query per pixel of the input video: 3D Fourier features of ``(t, y, x)`` (``max_resolution``:
    the official ``(16, 56, 56)``), decoded and projected by a Linear from ``num_decoder_channels``
    (derived) to ``num_channels``."""

    num_channels: int = 3
    num_bands: int = 32
    max_resolution: tuple[int, int, int] | None = None
    num_decoder_channels: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_channels", "num_bands"):
            check_positive(name, getattr(self, name))
        self.max_resolution = _resolution(self.max_resolution, 3, "max_resolution")  # type: ignore[assignment]

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return fourier_channels(3, self.num_bands)


@register("video_output", VideoOutputAdapterConfig)
class VideoOutputAdapter(FourierQueryOutputAdapter):
    """Decodes pixels of the input video: all of them as ``[B, T, C, H, W]``, or the flat
    ``(t, y, x)`` indices ``subsampled_output_points`` as ``[B, n, C]``."""

    def __init__(self, config: VideoOutputAdapterConfig) -> None:
        super().__init__(config, num_dims=3, num_channels_out=config.num_channels)

    def grid(self, context: DecodeContext) -> tuple[int, int, int]:
        video = context.inputs
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            raise ValueError("video: the input video [B, T, C, H, W] sets the output grid; none was given")
        t, _, h, w = video.shape[1:]
        return t, h, w

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        if context.subsampled_output_points is not None:
            return outputs
        t, h, w = self.grid(context)
        return outputs.unflatten(1, (t, h, w)).permute(0, 1, 4, 2, 3)  # not reshape(B, t, h, w, -1): B may be 0
