"""The paper's second optical-flow model (Table 1 / Table 7, "conv+maxpool"): both frames through a shared
conv + max-pool stem with 3D Fourier features, flow decoded at 1/4 resolution and convex-upsampled as RAFT does.

Input: ``[B, 2, C, H, W]`` -> each frame through one :class:`~perceiver_io.adapters.conv.ConvDownsample`
(TensorFlow 'SAME' padding, so the token grid is ``h = ceil(ceil(H / 2) / 2)``) -> the tokens of frame 1, then
of frame 2, each with Fourier features of its position on the ``(2, h, w)`` grid.

Output: the encoded tokens of frame 1 are the decoder's queries (one per 4 x 4 block of the first frame); each
decodes ``2 + 9 * 4 * 4`` channels, a low-resolution flow vector and the logits of a convex combination of its
3 x 3 low-resolution neighbours for each of the 16 full-resolution pixels of its block (:func:`convex_upsample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.position import FourierPositionEncoding, fourier_channels
from ..core.registry import register
from ..core.validation import check_model_input, check_positive, check_tensor
from .base import DecodeContext, InputAdapter, InputAdapterConfig, OutputAdapter, OutputAdapterConfig
from .conv import ConvDownsample, conv_output_size

# The stem (conv stride 2, max-pool stride 2) shrinks each side by this factor; the decoded flow is upsampled by it.
STEM_STRIDE = 4
# One token covers at most a STEM_STRIDE x STEM_STRIDE block; a smaller frame side would give a token of padding
# with nothing to upsample.
MIN_FRAME_SIZE = STEM_STRIDE
NUM_FLOW_CHANNELS = 2
NUM_NEIGHBOURS = 9  # the 3 x 3 low-resolution neighbourhood of convex upsampling


def num_convex_channels(factor: int = STEM_STRIDE) -> int:
    """Decoder output channels of the conv flow model: 2 flow + ``9 * factor**2`` convex-mask logits (146 at 4)."""
    return NUM_FLOW_CHANNELS + NUM_NEIGHBOURS * factor * factor


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """RAFT's learned convex upsampling: ``flow [B, 2, h, w]``, ``mask [B, 9 * r * r, h, w]`` -> ``[B, 2, r*h, r*w]``.

    Full-resolution pixel ``(r*y + i, r*x + j)`` is ``r`` times a convex combination of the low-resolution flow at
    the 3 x 3 neighbours ``(y + dy, x + dx)`` of its cell: the weights are the softmax over ``k`` of the logits
    ``mask[:, k * r * r + i * r + j, y, x]``, ``k = 3 * (dy + 1) + (dx + 1)`` (row-major, ``F.unfold``'s order).
    The factor ``r`` converts low-resolution pixels to full-resolution ones.

    Unlike RAFT, neighbours outside the grid get no weight (their logits are masked out of the softmax) instead of
    contributing zero flow through the zero padding: every output is then a convex combination of real flow vectors,
    so a constant flow field comes back exactly (times ``r``) for any logits, also at the border.
    """
    check_positive("factor", factor)
    check_tensor("flow", flow, ("B", NUM_FLOW_CHANNELS, "h", "w"), floating=True)
    b, _, h, w = flow.shape
    check_tensor("mask", mask, (b, NUM_NEIGHBOURS * factor * factor, h, w), floating=True)
    r = factor
    logits = mask.view(b, 1, NUM_NEIGHBOURS, r, r, h, w)
    # Which of the 9 neighbours of each cell lie inside the grid (the centre always does, so no row is all -inf).
    inside = F.unfold(flow.new_ones(1, 1, h, w), kernel_size=3, padding=1).view(1, 1, NUM_NEIGHBOURS, 1, 1, h, w) > 0
    weights = logits.masked_fill(~inside, float("-inf")).softmax(dim=2)
    neighbours = F.unfold(r * flow, kernel_size=3, padding=1).view(b, NUM_FLOW_CHANNELS, NUM_NEIGHBOURS, 1, 1, h, w)
    up = (weights * neighbours).sum(dim=2)  # [B, 2, r, r, h, w]: (i, j) within the cell, then the cell
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, NUM_FLOW_CHANNELS, r * h, r * w)


@dataclass
class ConvFlowInputAdapterConfig(InputAdapterConfig):
    """Frame pair ``[B, 2, C, H, W]`` (values in [-1, 1]) -> ``[B, 2*h*w, num_conv_channels + C_pos]``.

    Each frame goes through one shared conv 7x7/2 + BatchNorm + ReLU + max-pool 3x3/2 stem (TensorFlow 'SAME'
    padding: ``h = ceil(ceil(H / 2) / 2)``); the tokens of frame 1 come first, then those of frame 2, row-major
    within a frame. Each token is concatenated with 3D Fourier features of its position on the ``(2, h, w)`` grid
    (``num_bands`` per axis, raw positions included), computed for each input's own grid, so any ``H, W >= 4`` runs.

    ``image_shape`` is the training size ``(C, H, W)`` (the channels; the tile size of tiled inference).
    ``max_resolution`` ``(T, h, w)`` sets the highest frequency per axis on the token grid; None follows each
    input's grid (the official default). On a 2-frame axis the frequencies are all 1 (``linspace(1, 2 / 2, K)``)
    and ``sin(pi * +-1) = 0``, ``cos(pi * +-1) = -1``: the frames differ only by the raw time coordinate.

    ``num_input_channels`` is ``64 + 3 * (1 + 2 * 64) = 451`` at the paper's settings; the paper's table states 450.
    The one channel of difference is not explained by the paper and the model's code is not released; this adapter
    keeps the library's Fourier features (a raw coordinate for every axis) rather than drop a channel to match.
    """

    image_shape: tuple[int, int, int] = (3, 368, 496)
    num_conv_channels: int = 64
    num_bands: int = 64
    max_resolution: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape: expected (C, H, W), got {list(self.image_shape)}")
        for n in self.image_shape:
            check_positive("image_shape", n)
        check_positive("num_conv_channels", self.num_conv_channels)
        check_positive("num_bands", self.num_bands)
        if self.max_resolution is not None:
            self.max_resolution = tuple(self.max_resolution)  # type: ignore[assignment]
            if len(self.max_resolution) != 3:
                raise ValueError(
                    f"max_resolution: expected (T, h, w) of the token grid (3 entries), got {list(self.max_resolution)}"
                )
            for n in self.max_resolution:
                check_positive("max_resolution", n)

    @staticmethod
    def token_grid(height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of one frame's token grid after the stem (``ceil(ceil(n / 2) / 2)`` per side)."""
        return conv_output_size(height, "tf_same"), conv_output_size(width, "tf_same")

    @property
    def num_input_channels(self) -> int:
        return self.num_conv_channels + fourier_channels(3, self.num_bands)


@register("conv_flow_input", ConvFlowInputAdapterConfig)
class ConvFlowInputAdapter(InputAdapter):
    """``frames [B, 2, C, H, W]`` -> ``[B, 2*h*w, C_conv + C_pos]`` (frame 1's ``h*w`` tokens first)."""

    def __init__(self, config: ConvFlowInputAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = ConvDownsample(config.image_shape[0], config.num_conv_channels, use_batchnorm=True, padding="tf_same")
        h, w = config.token_grid(*config.image_shape[1:])
        self.position_encoding = FourierPositionEncoding((2, h, w), config.num_bands, config.max_resolution)

    def check_frames(self, frames: torch.Tensor) -> tuple[int, int]:
        """Validate ``frames [B, 2, C, H, W]`` before any computation; returns one frame's token grid ``(h, w)``."""
        check_tensor("frames", frames, ("B", 2, self.config.image_shape[0], "H", "W"), floating=True)
        height, width = frames.shape[-2:]
        if height < MIN_FRAME_SIZE or width < MIN_FRAME_SIZE:
            raise ValueError(
                f"frames: expected frames of at least {MIN_FRAME_SIZE}x{MIN_FRAME_SIZE} pixels (the conv stem "
                f"downsamples by {STEM_STRIDE}), got {height}x{width}"
            )
        check_model_input("frames", frames, self)
        return self.config.token_grid(height, width)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        h, w = self.check_frames(inputs)
        b, t, c = inputs.shape[:3]
        # One stem for both frames, in one batch (BatchNorm's training statistics cover both frames).
        x = self.stem(inputs.reshape(b * t, c, *inputs.shape[-2:]))  # [B*2, C_conv, h, w]
        tokens = x.reshape(b, t, x.shape[1], h * w).transpose(2, 3).reshape(b, t * h * w, x.shape[1])
        pos = self.position_encoding(b, index_dims=(t, h, w)).to(tokens.dtype)
        return torch.cat([tokens, pos], dim=-1)


@dataclass
class ConvFlowOutputAdapterConfig(OutputAdapterConfig):
    """Decoded frame-1 tokens ``[B, h*w, 2 + 9*4*4]`` -> flow ``[B, 2, H, W]`` in full-resolution pixels.

    Channels ``[:2]`` are the low-resolution flow (x then y) in the official scaling, ``/ rescale_factor *
    flow_scale_factor``, in low-resolution pixels; channels ``[2:]`` are the convex-upsampling logits
    (:func:`convex_upsample`'s layout). The decoder must end in ``2 + 9 * 4 * 4 = 146`` channels.
    """

    rescale_factor: float = 100.0
    flow_scale_factor: float = 20.0

    def __post_init__(self) -> None:
        for name in ("rescale_factor", "flow_scale_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        # The queries are the input adapter's frame-1 tokens: only the conv flow input lays them out that way.
        if not isinstance(input_adapter, ConvFlowInputAdapterConfig):
            raise TypeError(
                f"input_adapter: the conv flow output decodes the tokens of a ConvFlowInputAdapterConfig, "
                f"got {type(input_adapter).__name__}"
            )
        return input_adapter.num_input_channels

    def derived(self, input_adapter: InputAdapterConfig, num_decoder_channels: int | None) -> OutputAdapterConfig:
        expected = num_convex_channels()
        if num_decoder_channels != expected:
            raise ValueError(
                f"decoder.num_output_channels: the conv flow output needs {expected} channels "
                f"({NUM_FLOW_CHANNELS} flow + {NUM_NEIGHBOURS} * {STEM_STRIDE} * {STEM_STRIDE} convex-mask logits), "
                f"got {num_decoder_channels}"
            )
        return self


@register("conv_flow_output", ConvFlowOutputAdapterConfig)
class ConvFlowOutputAdapter(OutputAdapter):
    """Decodes one query per token of the first frame (its encoded input) and convex-upsamples the flow 4x.

    Every full-resolution pixel depends on a 3 x 3 block of low-resolution queries, so single pixels cannot be
    decoded alone: ``subsampled_output_points`` is refused. ``output_chunk_size`` chunks the ``h*w`` queries.
    """

    def __init__(self, config: ConvFlowOutputAdapterConfig) -> None:
        super().__init__()
        self.config = config

    def check_points(self, points: Any) -> None:
        if points is not None:
            raise ValueError(
                "subsampled_output_points: not supported by the conv flow model (flow is decoded at 1/4 resolution "
                "and convex-upsampled, so a full-resolution pixel has no query of its own); decode all pixels"
            )

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        self.check_points(context.subsampled_output_points)
        h, w = ConvFlowInputAdapterConfig.token_grid(*context.inputs.shape[-2:])
        if context.encoded.shape[1] != 2 * h * w:
            raise ValueError(
                f"encoded: expected {2 * h * w} tokens (2 frames of {h}x{w}), got {context.encoded.shape[1]}"
            )
        queries = context.encoded[:, : h * w]  # frame 1's tokens
        return self(decoder(latents, queries, chunk_size=context.output_chunk_size), context)

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        """``outputs [B, h*w, 146]`` -> flow ``[B, 2, H, W]`` (pixels of the frames ``context.inputs``)."""
        height, width = context.inputs.shape[-2:]
        h, w = ConvFlowInputAdapterConfig.token_grid(height, width)
        check_tensor("outputs", outputs, ("B", h * w, num_convex_channels()), floating=True)
        grid = outputs.transpose(1, 2).reshape(outputs.shape[0], outputs.shape[2], h, w)
        flow = grid[:, :NUM_FLOW_CHANNELS] / self.config.rescale_factor * self.config.flow_scale_factor
        up = convex_upsample(flow, grid[:, NUM_FLOW_CHANNELS:], STEM_STRIDE)  # [B, 2, 4h, 4w], 4h >= H
        return up[..., :height, :width]

