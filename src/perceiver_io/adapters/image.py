"""Image input adapter: the paper's three ImageNet preprocessings.

* ``pixels``: raw pixels, one token per pixel, with 2D Fourier features (the Fourier model);
* ``conv1x1``: a 1x1 conv to ``num_conv_channels`` plus trainable positions (the learned-position model);
* ``conv``: conv 7x7/2 + BatchNorm + ReLU + max-pool 3x3/2, one token per 4x4 block, with Fourier features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import ComponentConfig
from ..core.init import trunc_normal_
from ..core.position import PositionEncodingConfig, build_position_encoding
from ..core.validation import check_choice, check_positive, check_tensor
from .base import InputAdapter, adapter
from .conv import PADDINGS, ConvDownsample, conv_output_size

PREP_TYPES = ("pixels", "conv1x1", "conv")


@dataclass
class ImageInputAdapterConfig(ComponentConfig):
    """Pixels ``[B, C, H, W]`` -> tokens ``[B, h*w, C_tok]`` (row-major) combined with position features.

    ``position_encoding`` defaults to the paper's 2D Fourier features (64 bands) over the token
    grid ``token_grid``; any :class:`PositionEncodingConfig` over that grid works.
    ``concat_or_add_pos``: ``"concat"`` appends the features after the token channels (official
    order); ``"add"`` adds them. ``conv_padding`` picks the official TensorFlow 'SAME' padding or
    transformers' variant for ``prep_type="conv"``.
    """

    component_type = "image_input"
    image_shape: tuple[int, int, int]  # (C, H, W)
    prep_type: str = "pixels"
    num_conv_channels: int = 64
    position_encoding: PositionEncodingConfig | None = None
    concat_or_add_pos: str = "concat"
    conv_padding: str = "tf_same"
    use_batchnorm: bool = True

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape: expected (C, H, W), got {list(self.image_shape)}")
        for n in self.image_shape:
            check_positive("image_shape", n)
        check_choice("prep_type", self.prep_type, PREP_TYPES)
        check_choice("concat_or_add_pos", self.concat_or_add_pos, ("concat", "add"))
        check_choice("conv_padding", self.conv_padding, PADDINGS)
        h, w = self.token_grid
        if self.position_encoding is None:
            self.position_encoding = PositionEncodingConfig("fourier", (h, w), num_bands=64)
        pe = self.position_encoding
        wrong_grid = pe.index_dims != (h, w) if pe.kind == "fourier" else pe.num_positions != h * w
        if pe.kind != "none" and wrong_grid:
            raise ValueError(
                f"position_encoding: expected index_dims covering the {h}x{w} token grid, got {list(pe.index_dims)}"
            )
        if self.concat_or_add_pos == "add" and pe.output_channels != self.token_channels:
            raise ValueError(
                f"position_encoding: adding positions needs {self.token_channels} channels (the tokens'), "
                f"got {pe.output_channels}"
            )

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the token grid after preprocessing."""
        _, h, w = self.image_shape
        if self.prep_type == "conv":
            return conv_output_size(h, self.conv_padding), conv_output_size(w, self.conv_padding)
        return h, w

    @property
    def token_channels(self) -> int:
        return self.image_shape[0] if self.prep_type == "pixels" else self.num_conv_channels


@adapter(ImageInputAdapterConfig)
class ImageInputAdapter(InputAdapter):
    """``[B, C, H, W]`` -> ``[B, h*w, C_tok + C_pos]`` (concat) or ``[B, h*w, C_tok]`` (add)."""

    def __init__(self, config: ImageInputAdapterConfig) -> None:
        super().__init__()
        self.config = c = config
        in_channels = c.image_shape[0]
        self.stem: nn.Module | None = None
        if c.prep_type == "conv":
            self.stem = ConvDownsample(in_channels, c.num_conv_channels, c.use_batchnorm, c.conv_padding)
        elif c.prep_type == "conv1x1":
            self.stem = nn.Conv2d(in_channels, c.num_conv_channels, kernel_size=1)
            trunc_normal_(self.stem.weight, 1.0 / math.sqrt(in_channels))
            nn.init.zeros_(self.stem.bias)
        self.position_encoding = build_position_encoding(c.position_encoding)  # type: ignore[arg-type]

    @property
    def num_input_channels(self) -> int:
        if self.position_encoding is None or self.config.concat_or_add_pos == "add":
            return self.config.token_channels
        return self.config.token_channels + self.position_encoding.num_channels

    def tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """Preprocessed tokens without positions, ``[B, h*w, C_tok]``."""
        check_tensor("pixel_values", inputs, ("B", *self.config.image_shape), floating=True)
        x = inputs if self.stem is None else self.stem(inputs)
        return x.flatten(2).transpose(1, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.tokens(inputs)
        if self.position_encoding is None:
            return x
        pos = self.position_encoding(x.shape[0]).to(x.dtype)
        return x + pos if self.config.concat_or_add_pos == "add" else torch.cat([x, pos], dim=-1)
