"""Image input adapter: raw pixels with position features (the paper's ImageNet model uses 2D Fourier)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.config import ComponentConfig
from ..core.position import PositionEncodingConfig, build_position_encoding
from ..core.validation import check_choice, check_positive, check_tensor
from .base import InputAdapter, adapter


@dataclass
class ImageInputAdapterConfig(ComponentConfig):
    """Pixels ``[B, C, H, W]`` flattened row-major to ``H*W`` tokens, combined with position features.

    ``position_encoding`` defaults to the paper's 2D Fourier features (64 bands, max resolution
    ``(H, W)``); any :class:`PositionEncodingConfig` over ``(H, W)`` works (trainable, projected).
    ``concat_or_add_pos``: ``"concat"`` appends the features after the pixel channels (official
    order); ``"add"`` adds them (the encoding must then have ``C`` channels).
    """

    component_type = "image_input"
    image_shape: tuple[int, int, int]  # (C, H, W)
    position_encoding: PositionEncodingConfig | None = None
    concat_or_add_pos: str = "concat"

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape: expected (C, H, W), got {list(self.image_shape)}")
        for n in self.image_shape:
            check_positive("image_shape", n)
        check_choice("concat_or_add_pos", self.concat_or_add_pos, ("concat", "add"))
        c, h, w = self.image_shape
        if self.position_encoding is None:
            self.position_encoding = PositionEncodingConfig("fourier", (h, w), num_bands=64)
        pe = self.position_encoding
        wrong_grid = pe.index_dims != (h, w) if pe.kind == "fourier" else pe.num_positions != h * w
        if pe.kind != "none" and wrong_grid:
            raise ValueError(
                f"position_encoding: expected index_dims covering {h}x{w} pixels, got {list(pe.index_dims)}"
            )
        if self.concat_or_add_pos == "add" and pe.output_channels != c:
            raise ValueError(
                f"position_encoding: adding positions needs {c} channels (the image's), got {pe.output_channels}"
            )


@adapter(ImageInputAdapterConfig)
class ImageInputAdapter(InputAdapter):
    """``[B, C, H, W]`` -> ``[B, H*W, C + C_pos]`` (concat) or ``[B, H*W, C]`` (add)."""

    def __init__(self, config: ImageInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.position_encoding = build_position_encoding(config.position_encoding)  # type: ignore[arg-type]

    @property
    def num_input_channels(self) -> int:
        c = self.config.image_shape[0]
        if self.position_encoding is None or self.config.concat_or_add_pos == "add":
            return c
        return c + self.position_encoding.num_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_tensor("pixel_values", inputs, ("B", *self.config.image_shape), floating=True)
        x = inputs.flatten(2).transpose(1, 2)
        if self.position_encoding is None:
            return x
        pos = self.position_encoding(x.shape[0]).to(x.dtype)
        return x + pos if self.config.concat_or_add_pos == "add" else torch.cat([x, pos], dim=-1)
