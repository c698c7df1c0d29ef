"""Optical flow: every pixel of the first frame is an output query."""

from __future__ import annotations

import itertools

import torch

from ..adapters.flow import FlowInputAdapter, FlowOutputAdapter
from ..core.decoder import PerceiverDecoder
from ..core.registry import register
from ..core.validation import check_positive, check_tensor
from ..perceiver import PerceiverIO, PerceiverIOConfig


def tile_origins(size: int, tile: int, min_overlap: int) -> list[int]:
    """Official tiling along one axis: a step of ``tile - min_overlap``, the last tile flush with the edge.

    Where the official rule would place a tile past the edge (it then fails), the tile is moved
    back to end at the edge.
    """
    origins = list(range(0, size, tile - min_overlap))
    origins[-1] = size - tile
    return [min(o, size - tile) for o in origins]


def tent_weights(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """``[H, W]`` weights that fall linearly to 1 at the tile border (official stitching)."""
    y = torch.arange(height, device=device)
    x = torch.arange(width, device=device)
    wy = torch.minimum(y + 1, height - y)
    wx = torch.minimum(x + 1, width - x)
    return torch.minimum(wy[:, None], wx[None, :]).float()


@register("optical_flow", PerceiverIOConfig)
class OpticalFlow(PerceiverIO):
    """A frame pair ``[B, 2, C, H, W]`` (values in [-1, 1]) -> flow ``[B, 2, H, W]`` in pixels.

    The decoder's queries are the preprocessed inputs themselves (patch features + positions), so
    any frame size runs (Fourier positions follow the frames). :meth:`predict_tiled` runs frames
    larger than the training size the official way: training-size tiles, stitched.
    """

    input_adapter_type = FlowInputAdapter
    decoder_type = PerceiverDecoder
    output_adapter_type = FlowOutputAdapter

    @classmethod
    def from_config(cls, config: PerceiverIOConfig) -> OpticalFlow:
        model = super().from_config(config)
        with torch.no_grad():  # the official flow head starts at zero
            model.decoder.output.weight.zero_()
            model.decoder.output.bias.zero_()
        return model  # type: ignore[return-value]

    def forward(  # type: ignore[override]
        self, frames: torch.Tensor, output_chunk_size: int | None = None,
        subsampled_output_points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``frames [B, 2, C, H, W]`` -> flow ``[B, 2, H, W]`` (x then y, pixels); with
        ``subsampled_output_points`` (flat pixel indices ``[n]``) only those pixels: ``[B, n, 2]``."""
        return super().forward(frames, output_chunk_size=output_chunk_size,
                               subsampled_output_points=subsampled_output_points)

    @torch.no_grad()
    def predict_tiled(self, frames: torch.Tensor, min_overlap: int = 20) -> torch.Tensor:
        """Flow for frames larger than the training size: overlapping tiles stitched with tent weights.

        ``frames [B, 2, C, H, W]`` with ``H, W >=`` the training size -> ``[B, 2, H, W]``.
        """
        c, th, tw = self.input_adapter.config.image_shape
        check_tensor("frames", frames, ("B", 2, c, "H", "W"), floating=True)
        check_positive("min_overlap", min_overlap)
        h, w = frames.shape[-2:]
        if h < th or w < tw:
            raise ValueError(f"frames: expected at least the training size {th}x{tw}, got {h}x{w}")
        if min_overlap >= min(th, tw):
            raise ValueError(f"min_overlap: expected less than the tile size {th}x{tw}, got {min_overlap}")
        flow = frames.new_zeros(frames.shape[0], 2, h, w)
        count = frames.new_zeros(h, w)
        weights = tent_weights(th, tw, frames.device).to(frames.dtype)
        for y, x in itertools.product(tile_origins(h, th, min_overlap), tile_origins(w, tw, min_overlap)):
            piece = self(frames[..., y : y + th, x : x + tw])
            flow[..., y : y + th, x : x + tw] += piece * weights
            count[y : y + th, x : x + tw] += weights
        return flow / count
