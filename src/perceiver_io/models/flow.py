"""Optical flow: every pixel of the first frame is an output query."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from ..adapters.flow import FlowInputAdapter, FlowOutputAdapter
from ..core.decoder import PerceiverDecoder
from ..core.registry import register
from ..core.validation import check_choice, check_positive, check_tensor
from ..perceiver import PerceiverIO, PerceiverIOConfig

TILING_MODES = ("auto", "native", "tiled")


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


def training_size(model: nn.Module) -> tuple[int, int] | None:
    """A flow model's training size ``(H, W)``, the tile size of tiled inference; None where the model has none.

    Read from ``model.input_adapter.config.image_shape`` (``(C, H, W)``, as :class:`OpticalFlow` keeps it); a model
    without one (a convolutional flow model, say) has no tile size and runs at native resolution.
    """
    config = getattr(getattr(model, "input_adapter", None), "config", None)
    shape = getattr(config, "image_shape", None)
    if shape is None or len(shape) != 3:
        return None
    return int(shape[1]), int(shape[2])


def use_tiling(tiling: str, frame_size: tuple[int, int], tile_size: tuple[int, int] | None) -> bool:
    """Whether frames of ``frame_size (H, W)`` go through :func:`predict_tiled` (True) or the model at once (False).

    ``tiling``: ``"native"`` never tiles; ``"tiled"`` always does (an error when the model has no ``tile_size``);
    ``"auto"`` tiles exactly when the frames are at least the tile size on both sides and larger on one: frames of
    the tile size give the same flow either way (one tile, weights divided out) and run faster at once, and frames
    smaller than a tile on either side cannot be tiled, so they run at their native resolution (the model takes
    any size).
    """
    check_choice("tiling", tiling, TILING_MODES)
    if tiling == "native":
        return False
    if tile_size is None:
        if tiling == "tiled":
            raise ValueError("tiling: 'tiled' needs the model's training size (the tile size) and this model has "
                             "none; use 'native' or 'auto'")
        return False
    if tiling == "tiled":
        return True
    (h, w), (th, tw) = frame_size, tile_size
    return h >= th and w >= tw and (h > th or w > tw)


@torch.no_grad()
def predict_tiled(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    tile_size: tuple[int, int],
    min_overlap: int = 20,
    tile_batch_size: int | None = None,
) -> torch.Tensor:
    """Flow for frames larger than the training size: overlapping tiles stitched with tent weights (official).

    Tiles of ``tile_size`` start at :func:`tile_origins` on each axis; their flows are weighted by
    :func:`tent_weights` and the weighted sum is divided by the summed weights. The tiles go through ``model_fn``
    in batches, tiles of every frame pair together; the stitching then adds them in the order of the official
    one-tile-at-a-time loop, so the result is that loop's (up to the rounding a batched matmul may change).

    Args:
        model_fn: any flow model's forward, ``frames [N, 2, C, th, tw] -> flow [N, 2, th, tw]`` (pixels).
        frames: ``[B, 2, C, H, W]`` floating, ``H, W >= tile_size``.
        tile_size: ``(th, tw)``, the model's training size.
        min_overlap: the least overlap of neighbouring tiles in pixels, less than the tile size.
        tile_batch_size: at most this many tiles (counting each pair's tile once) per ``model_fn`` call; None:
            all tiles of all pairs in one call. Memory grows with it, the result does not change.

    Returns:
        flow ``[B, 2, H, W]`` in ``frames``' dtype.
    """
    check_tensor("frames", frames, ("B", 2, "C", "H", "W"), floating=True)
    if not isinstance(tile_size, (tuple, list)) or len(tile_size) != 2:
        raise ValueError(f"tile_size: expected (H, W), got {tile_size!r}")
    th, tw = tile_size
    check_positive("tile_size", th)
    check_positive("tile_size", tw)
    check_positive("min_overlap", min_overlap)
    if tile_batch_size is not None:
        check_positive("tile_batch_size", tile_batch_size)
    b, h, w = frames.shape[0], frames.shape[-2], frames.shape[-1]
    if h < th or w < tw:
        raise ValueError(f"frames: expected at least the training size {th}x{tw}, got {h}x{w} (tiles are "
                         f"{th}x{tw}; run smaller frames through the model at their native size)")
    if min_overlap >= min(th, tw):
        raise ValueError(f"min_overlap: expected less than the tile size {th}x{tw}, got {min_overlap}")
    if b == 0:  # no frame pair, no tile: the batching below would step by 0
        return frames.new_zeros(0, 2, h, w)
    origins = list(itertools.product(tile_origins(h, th, min_overlap), tile_origins(w, tw, min_overlap)))
    # Tile-major: entry t * B + i is tile t of pair i, so a batch of the model's output splits back per tile.
    tiles = torch.stack([frames[..., y : y + th, x : x + tw] for y, x in origins]).flatten(0, 1)
    step = tiles.shape[0] if tile_batch_size is None else tile_batch_size
    pieces = []
    for start in range(0, tiles.shape[0], step):
        chunk = tiles[start : start + step]
        piece = model_fn(chunk)
        if not isinstance(piece, torch.Tensor) or tuple(piece.shape) != (chunk.shape[0], 2, th, tw):
            got = list(piece.shape) if isinstance(piece, torch.Tensor) else type(piece).__name__
            raise ValueError(f"model_fn: expected flow [{chunk.shape[0]}, 2, {th}, {tw}] for {chunk.shape[0]} "
                             f"tiles, got {got}")
        pieces.append(piece)
    flows = torch.cat(pieces).unflatten(0, (len(origins), b))  # [T, B, 2, th, tw]
    flow = frames.new_zeros(b, 2, h, w)
    count = frames.new_zeros(h, w)
    weights = tent_weights(th, tw, frames.device).to(frames.dtype)
    for (y, x), piece in zip(origins, flows):
        flow[..., y : y + th, x : x + tw] += piece.to(frames.dtype) * weights
        count[y : y + th, x : x + tw] += weights
    return flow / count


def zero_flow_head(model: PerceiverIO) -> PerceiverIO:
    """Zero the decoder's output Linear in place (the official flow head starts at zero: flow 0); returns ``model``."""
    with torch.no_grad():
        model.decoder.output.weight.zero_()
        model.decoder.output.bias.zero_()
    return model


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
        return zero_flow_head(super().from_config(config))  # type: ignore[return-value]

    def forward(  # type: ignore[override]
        self, frames: torch.Tensor, output_chunk_size: int | None = None,
        subsampled_output_points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``frames [B, 2, C, H, W]`` -> flow ``[B, 2, H, W]`` (x then y, pixels); with
        ``subsampled_output_points`` (flat pixel indices ``[n]``) only those pixels: ``[B, n, 2]``."""
        return super().forward(frames, output_chunk_size=output_chunk_size,
                               subsampled_output_points=subsampled_output_points)

    def predict_tiled(
        self, frames: torch.Tensor, min_overlap: int = 20, tile_batch_size: int | None = None
    ) -> torch.Tensor:
        """Flow for frames larger than the training size: overlapping training-size tiles stitched with tent
        weights (:func:`predict_tiled`, batched over tiles).

        ``frames [B, 2, C, H, W]`` with ``H, W >=`` the training size -> ``[B, 2, H, W]``. Frames smaller than the
        training size are an error: run them through the model directly (any size runs natively).
        """
        c = self.input_adapter.config.image_shape[0]
        check_tensor("frames", frames, ("B", 2, c, "H", "W"), floating=True)
        return predict_tiled(self, frames, training_size(self), min_overlap, tile_batch_size)  # type: ignore[arg-type]
