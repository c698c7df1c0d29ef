"""Optical-flow adapters: 3x3 patches of a frame pair in, per-pixel flow out (official flow model)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.config import ComponentConfig
from ..core.init import linear
from ..core.position import FourierPositionEncoding
from ..core.validation import check_positive, check_tensor
from .base import InputAdapter, OutputAdapter, adapter


def frame_patches(frames: torch.Tensor) -> torch.Tensor:
    """Official ``patches_for_flow``: zero-pad 1 px, 3x3 patches. ``[B, T, C, H, W] -> [B, T, 9C, H, W]``.

    Channels are ordered (row, column, channel) of the patch, as TensorFlow's ``extract_patches``.
    """
    b, t, c, h, w = frames.shape
    patches = F.unfold(frames.reshape(b * t, c, h, w), kernel_size=3, padding=1)  # [BT, C*9, HW], C-major
    return patches.view(b, t, c, 9, h, w).transpose(2, 3).reshape(b, t, 9 * c, h, w)


@dataclass
class FlowInputAdapterConfig(ComponentConfig):
    """Frame pair ``[B, 2, C, H, W]`` (values in [-1, 1]) -> ``[B, H*W, num_patch_channels + C_pos]``.

    Both frames' 3x3 patches are stacked (``2 * 9C`` channels), projected by a Linear to
    ``num_patch_channels`` and concatenated with 2D Fourier features (``max_resolution`` defaults
    to the frame size, which the official model trains at: 368 x 496).
    """

    component_type = "flow_input"
    image_shape: tuple[int, int, int] = (3, 368, 496)
    num_patch_channels: int = 64
    num_bands: int = 64
    max_resolution: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape: expected (C, H, W), got {list(self.image_shape)}")
        for n in (*self.image_shape, self.num_patch_channels, self.num_bands):
            check_positive("image_shape/num_patch_channels/num_bands", n)
        if self.max_resolution is not None:
            self.max_resolution = tuple(self.max_resolution)  # type: ignore[assignment]


@adapter(FlowInputAdapterConfig)
class FlowInputAdapter(InputAdapter):
    def __init__(self, config: FlowInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        c, h, w = config.image_shape
        self.patches_linear = linear(2 * 9 * c, config.num_patch_channels)
        self.position_encoding = FourierPositionEncoding((h, w), config.num_bands, config.max_resolution or (h, w))

    @property
    def num_input_channels(self) -> int:
        return self.config.num_patch_channels + self.position_encoding.num_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_tensor("frames", inputs, ("B", 2, *self.config.image_shape), floating=True)
        b = inputs.shape[0]
        patches = frame_patches(inputs)  # [B, 2, 9C, H, W]
        tokens = patches.flatten(1, 2).flatten(2).transpose(1, 2)  # [B, HW, 2*9C], frame-major channels
        x = self.patches_linear(tokens)
        return torch.cat([x, self.position_encoding(b).to(x.dtype)], dim=-1)


@dataclass
class FlowOutputAdapterConfig(ComponentConfig):
    """Decoder output ``[B, H*W, 2]`` -> flow ``[B, 2, H, W]`` in pixels: ``/ rescale_factor * flow_scale_factor``."""

    component_type = "flow_output"
    output_shape: tuple[int, int] = (368, 496)
    rescale_factor: float = 100.0
    flow_scale_factor: float = 20.0

    def __post_init__(self) -> None:
        self.output_shape = tuple(self.output_shape)  # type: ignore[assignment]


@adapter(FlowOutputAdapterConfig)
class FlowOutputAdapter(OutputAdapter):
    def __init__(self, config: FlowOutputAdapterConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        h, w = self.config.output_shape
        check_tensor("outputs", outputs, ("B", h * w, 2))
        flow = outputs / self.config.rescale_factor * self.config.flow_scale_factor
        return flow.transpose(1, 2).reshape(outputs.shape[0], 2, h, w)
