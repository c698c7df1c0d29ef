"""Optical-flow adapters: 3x3 patches of a frame pair in, per-pixel flow out (official flow model)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.init import linear
from ..core.position import FourierPositionEncoding, check_indices, fourier_channels
from ..core.registry import register
from ..core.validation import check_model_input, check_positive, check_tensor
from .base import DecodeContext, InputAdapter, InputAdapterConfig, OutputAdapter, OutputAdapterConfig


def frame_patches(frames: torch.Tensor) -> torch.Tensor:
    """Official ``patches_for_flow``: zero-pad 1 px, 3x3 patches. ``[B, T, C, H, W] -> [B, T, 9C, H, W]``.

    Channels are ordered (row, column, channel) of the patch, as TensorFlow's ``extract_patches``.
    """
    b, t, c, h, w = frames.shape
    patches = F.unfold(frames.reshape(b * t, c, h, w), kernel_size=3, padding=1)  # [BT, C*9, HW], C-major
    return patches.view(b, t, c, 9, h, w).transpose(2, 3).reshape(b, t, 9 * c, h, w)


@dataclass
class FlowInputAdapterConfig(InputAdapterConfig):
    """Frame pair ``[B, 2, C, H, W]`` (values in [-1, 1]) -> ``[B, H*W, num_patch_channels + C_pos]``.

    Both frames' 3x3 patches are stacked (``2 * 9C`` channels), projected by a Linear to
    ``num_patch_channels`` and concatenated with 2D Fourier features of the frames' own grid (any
    ``H, W``). ``image_shape`` is the training size (the tile size of tiled inference);
    ``max_resolution`` sets the highest frequency (the official model: the training size, 368 x
    496; None follows each input's grid, the official default).
    """

    image_shape: tuple[int, int, int] = (3, 368, 496)
    num_patch_channels: int = 64
    num_bands: int = 64
    max_resolution: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape: expected (C, H, W), got {list(self.image_shape)}")
        for name, n in (("image_shape", self.image_shape), ("num_patch_channels", (self.num_patch_channels,)),
                        ("num_bands", (self.num_bands,))):
            for v in n:
                check_positive(name, v)
        if self.max_resolution is not None:
            self.max_resolution = tuple(self.max_resolution)  # type: ignore[assignment]
            if len(self.max_resolution) != 2:
                raise ValueError(f"max_resolution: expected (H, W), got {list(self.max_resolution)}")

    @property
    def num_input_channels(self) -> int:
        return self.num_patch_channels + fourier_channels(2, self.num_bands)


@register("flow_input", FlowInputAdapterConfig)
class FlowInputAdapter(InputAdapter):
    def __init__(self, config: FlowInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        c, h, w = config.image_shape
        self.patches_linear = linear(2 * 9 * c, config.num_patch_channels)
        self.position_encoding = FourierPositionEncoding((h, w), config.num_bands, config.max_resolution)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_tensor("frames", inputs, ("B", 2, self.config.image_shape[0], "H", "W"), floating=True)
        b, h, w = inputs.shape[0], inputs.shape[-2], inputs.shape[-1]
        if h == 0 or w == 0:
            raise ValueError(f"frames: expected frames of at least 1x1 pixels, got {h}x{w}")
        check_model_input("frames", inputs, self)
        patches = frame_patches(inputs)  # [B, 2, 9C, H, W]
        tokens = patches.flatten(1, 2).flatten(2).transpose(1, 2)  # [B, HW, 2*9C], frame-major channels
        x = self.patches_linear(tokens)
        return torch.cat([x, self.position_encoding(b, index_dims=(h, w)).to(x.dtype)], dim=-1)


@dataclass
class FlowOutputAdapterConfig(OutputAdapterConfig):
    """Decoded pixel queries ``[B, H*W, 2]`` -> flow ``[B, 2, H, W]`` in pixels:
    ``/ rescale_factor * flow_scale_factor``. The queries are the encoded inputs (one per pixel)."""

    rescale_factor: float = 100.0
    flow_scale_factor: float = 20.0

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return input_adapter.num_input_channels


@register("flow_output", FlowOutputAdapterConfig)
class FlowOutputAdapter(OutputAdapter):
    """Decodes one query per pixel of the first frame (its encoded input) into its flow.

    With ``subsampled_output_points`` (flat pixel indices ``[n]``) only those pixels are decoded
    and the flow comes back as ``[B, n, 2]``.
    """

    def __init__(self, config: FlowOutputAdapterConfig) -> None:
        super().__init__()
        self.config = config

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        queries = context.encoded
        points = context.subsampled_output_points
        if points is not None:
            queries = queries[:, check_indices("subsampled_output_points", points, queries.shape[1]).to(queries.device)]
        return self(decoder(latents, queries, chunk_size=context.output_chunk_size), context)

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        flow = outputs / self.config.rescale_factor * self.config.flow_scale_factor
        if context.subsampled_output_points is not None:
            return flow
        h, w = context.inputs.shape[-2:]
        return flow.transpose(1, 2).reshape(outputs.shape[0], 2, h, w)
