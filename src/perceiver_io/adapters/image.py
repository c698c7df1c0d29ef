"""Image input adapter: raw pixels with 2D Fourier position features (the paper's ImageNet model)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.config import ComponentConfig
from ..core.position import FourierPositionEncoding
from ..core.validation import check_positive, check_tensor
from .base import InputAdapter, adapter


@dataclass
class ImageInputAdapterConfig(ComponentConfig):
    """Pixels ``[B, C, H, W]`` flattened to ``H*W`` tokens, concatenated with 2D Fourier features.

    ``max_resolution`` defaults to ``(H, W)``; the official model uses 64 bands at 224 x 224.
    """

    component_type = "image_input"
    image_shape: tuple[int, int, int]  # (C, H, W)
    num_bands: int = 64
    max_resolution: tuple[int, int] | None = None
    concat_pos: bool = True
    sine_only: bool = False

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape: expected (C, H, W), got {list(self.image_shape)}")
        for n in self.image_shape:
            check_positive("image_shape", n)
        check_positive("num_bands", self.num_bands)


@adapter(ImageInputAdapterConfig)
class ImageInputAdapter(InputAdapter):
    """``[B, C, H, W]`` -> ``[B, H*W, C + 2 + 4K]``: pixels then Fourier features (official order)."""

    def __init__(self, config: ImageInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        _, h, w = config.image_shape
        self.position_encoding = FourierPositionEncoding(
            (h, w), config.num_bands, config.max_resolution, config.concat_pos, config.sine_only
        )

    @property
    def num_input_channels(self) -> int:
        return self.config.image_shape[0] + self.position_encoding.num_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_tensor("pixel_values", inputs, ("B", *self.config.image_shape), floating=True)
        b, c = inputs.shape[:2]
        x = inputs.flatten(2).transpose(1, 2)
        return torch.cat([x, self.position_encoding(b).to(x.dtype)], dim=-1)
