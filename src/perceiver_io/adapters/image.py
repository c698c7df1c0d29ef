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

from ..core.init import trunc_normal_
from ..core.position import PositionEncodingConfig, build_position_encoding
from ..core.validation import check_choice, check_model_input, check_positive, check_tensor
from ..core.registry import register
from .base import InputAdapter, InputAdapterConfig
from .conv import PADDINGS, ConvDownsample, conv_output_size, conv_size

PREP_TYPES = ("pixels", "conv1x1", "conv")


@dataclass
class ImageInputAdapterConfig(InputAdapterConfig):
    """Pixels ``[B, C, H, W]`` -> tokens ``[B, h*w, C_tok]`` (row-major) combined with position features.

    ``image_shape`` is the size the model is built for: it fixes the channels and the grid of a
    learned position table. Fourier positions are computed for each input's own token grid (any
    ``H, W``), as the official code does. ``position_encoding`` defaults to the paper's 2D Fourier
    features (64 bands); its ``index_dims`` default to the token grid of ``image_shape``.
    ``concat_or_add_pos``: ``"concat"`` appends the features after the token channels (official
    order); ``"add"`` adds them. ``conv_padding`` picks the official TensorFlow 'SAME' padding or
    transformers' variant for ``prep_type="conv"``. ``interpolate_pos_encoding``: resize a learned
    table (bicubic, as transformers' option of that name) to another input size instead of refusing it.
    """

    image_shape: tuple[int, int, int]  # (C, H, W)
    prep_type: str = "pixels"
    num_conv_channels: int = 64
    position_encoding: PositionEncodingConfig | None = None
    concat_or_add_pos: str = "concat"
    conv_padding: str = "tf_same"
    use_batchnorm: bool = True
    interpolate_pos_encoding: bool = False

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape: expected (C, H, W), got {list(self.image_shape)}")
        for n in self.image_shape:
            check_positive("image_shape", n)
        check_choice("prep_type", self.prep_type, PREP_TYPES)
        check_choice("concat_or_add_pos", self.concat_or_add_pos, ("concat", "add"))
        check_choice("conv_padding", self.conv_padding, PADDINGS)
        if self.position_encoding is None:
            self.position_encoding = PositionEncodingConfig("fourier", num_bands=64)
        pe = self.position_encoding.on_grid(self.token_grid(*self.image_shape[1:]), "position_encoding")
        self.position_encoding = pe
        if self.concat_or_add_pos == "add" and pe.output_channels != self.token_channels:
            raise ValueError(
                f"position_encoding: adding positions needs {self.token_channels} channels (the tokens'), "
                f"got {pe.output_channels}"
            )

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the token grid of a ``height x width`` image after preprocessing."""
        if self.prep_type == "conv":
            return conv_output_size(height, self.conv_padding), conv_output_size(width, self.conv_padding)
        return height, width

    @property
    def token_channels(self) -> int:
        return self.image_shape[0] if self.prep_type == "pixels" else self.num_conv_channels

    @property
    def num_input_channels(self) -> int:
        pe = self.position_encoding
        if pe is None or pe.kind == "none" or self.concat_or_add_pos == "add":
            return self.token_channels
        return self.token_channels + pe.output_channels


@register("image_input", ImageInputAdapterConfig)
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
    def learned_positions(self) -> bool:
        return self.config.position_encoding.kind == "trainable"  # type: ignore[union-attr]

    def check_size(self, inputs: torch.Tensor) -> tuple[int, int]:
        """Validate ``pixel_values [B, C, H, W]`` before any computation; returns the token grid."""
        c = self.config
        check_tensor("pixel_values", inputs, ("B", c.image_shape[0], "H", "W"), floating=True)
        grid = c.token_grid(*inputs.shape[-2:])
        if min(grid) < 1:
            raise ValueError(f"pixel_values: an image of {list(inputs.shape[-2:])} pixels is too small for prep_type={c.prep_type!r}")
        # In training, the stem's BatchNorm normalises by batch statistics: one value per channel has none.
        conv_pixels = conv_size(inputs.shape[-2], c.conv_padding) * conv_size(inputs.shape[-1], c.conv_padding)
        if self.training and c.prep_type == "conv" and c.use_batchnorm and inputs.shape[0] * conv_pixels == 1:
            raise ValueError(
                f"pixel_values: in training mode the stem's BatchNorm needs more than one value per channel, and "
                f"one image of {inputs.shape[-2]}x{inputs.shape[-1]} pixels gives it one; pass two or more "
                f"images, larger images, or call .eval()"
            )
        if self.learned_positions and not c.interpolate_pos_encoding and grid != c.position_encoding.index_dims:  # type: ignore[union-attr]
            raise ValueError(
                f"pixel_values: expected images of {c.image_shape[1]}x{c.image_shape[2]} pixels (the learned position "
                f"table covers that grid), got {inputs.shape[-2]}x{inputs.shape[-1]}; build the adapter with "
                f"interpolate_pos_encoding=True to resize the table"
            )
        check_model_input("pixel_values", inputs, self)
        return grid

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        grid = self.check_size(inputs)
        x = inputs if self.stem is None else self.stem(inputs)
        x = x.flatten(2).transpose(1, 2)
        if self.position_encoding is None:
            return x
        options = {"interpolate": True} if self.learned_positions and self.config.interpolate_pos_encoding else {}
        pos = self.position_encoding(x.shape[0], index_dims=grid, **options).to(x.dtype)
        return x + pos if self.config.concat_or_add_pos == "add" else torch.cat([x, pos], dim=-1)
