"""Position encodings: trainable tables and Fourier features, as the official code builds them.

Positions live in [-1, 1]. A full grid is the inclusive ``linspace(-1, 1, n)`` per dimension,
meshgrid 'ij', flattened row-major. Subsampled output points (flat indices into the grid) map to
``-1 + 2 * idx / n`` instead, exactly as the official decoder does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .config import Config
from .init import trunc_normal_
from .validation import check_choice, check_positive, check_tensor


# Full-grid features up to this size are kept between calls (an ImageNet grid is 13M floats);
# a decoder's grid of a million points is recomputed instead of pinned in memory.
_MAX_CACHED_ELEMENTS = 16 * 2**20


def grid_positions(
    index_dims: Sequence[int], indices: torch.Tensor | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Positions of a full grid, ``[prod(index_dims), d]``, or of the flat ``indices [n]`` of it, ``[n, d]``."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in index_dims]
    if indices is None:
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(index_dims))
    coords = unravel_index(indices, index_dims)
    return torch.stack([axis[c] for axis, c in zip(axes, coords)], dim=-1)


def subsampled_positions(index_dims: Sequence[int], indices: torch.Tensor) -> torch.Tensor:
    """Official positions of subsampled output points: flat ``indices [n]`` -> ``-1 + 2 * idx / dim``, ``[n, d]``."""
    coords = unravel_index(indices, index_dims)
    dims = torch.tensor(list(index_dims), dtype=torch.float32, device=indices.device)
    return -1 + 2 * torch.stack(coords, dim=-1).float() / dims


def unravel_index(indices: torch.Tensor, index_dims: Sequence[int]) -> list[torch.Tensor]:
    """Row-major unravel of flat ``indices`` over ``index_dims`` (one tensor per dimension)."""
    coords = []
    rest = indices
    for n in reversed(list(index_dims)):
        coords.append(rest % n)
        rest = torch.div(rest, n, rounding_mode="floor")
    return coords[::-1]


def fourier_features(
    pos: torch.Tensor,
    num_bands: int,
    max_resolution: Sequence[int],
    concat_pos: bool = True,
    sine_only: bool = False,
) -> torch.Tensor:
    """Fourier features of positions ``pos [..., d]`` -> ``[..., d + 2 d K]`` (``d + d K`` if ``sine_only``).

    ``freq[d] = linspace(1, max_resolution[d] / 2, K)``; features ``pos[d] * freq[d, k]`` flattened
    d-major; output ``[pos, sin(pi f), cos(pi f)]``.
    """
    freqs = torch.stack(
        [torch.linspace(1.0, r / 2, num_bands, device=pos.device, dtype=pos.dtype) for r in max_resolution]
    )
    f = (pos[..., :, None] * freqs).flatten(-2)
    parts = [torch.sin(math.pi * f)] if sine_only else [torch.sin(math.pi * f), torch.cos(math.pi * f)]
    if concat_pos:
        parts.insert(0, pos)
    return torch.cat(parts, dim=-1)


def fourier_channels(num_dims: int, num_bands: int, concat_pos: bool = True, sine_only: bool = False) -> int:
    """Number of channels :func:`fourier_features` produces."""
    return num_dims * (int(concat_pos) + num_bands * (1 if sine_only else 2))


@dataclass
class PositionEncodingConfig(Config):
    """Official ``build_position_encoding`` arguments.

    ``kind``: ``"trainable"`` (a table of ``prod(index_dims) x num_channels``), ``"fourier"``
    (``num_bands`` per dimension up to ``max_resolution``, default ``index_dims``) or ``"none"``.
    ``project_pos_dim > 0`` adds a Linear projection of the encoding to that many channels.
    """

    kind: str
    index_dims: tuple[int, ...]
    num_channels: int = 0
    init_scale: float = 0.02
    num_bands: int = 0
    max_resolution: tuple[int, ...] | None = None
    concat_pos: bool = True
    sine_only: bool = False
    project_pos_dim: int = -1

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ("trainable", "fourier", "none"))
        self.index_dims = tuple(self.index_dims)
        for n in self.index_dims:
            check_positive("index_dims", n)
        if self.kind == "trainable":
            check_positive("num_channels", self.num_channels)
        if self.kind == "fourier":
            check_positive("num_bands", self.num_bands)
            if self.max_resolution is not None:
                self.max_resolution = tuple(self.max_resolution)
                if len(self.max_resolution) != len(self.index_dims):
                    raise ValueError(
                        f"max_resolution: expected {len(self.index_dims)} entries (one per index dim), "
                        f"got {list(self.max_resolution)}"
                    )

    @property
    def num_positions(self) -> int:
        return math.prod(self.index_dims)

    @property
    def output_channels(self) -> int:
        if self.project_pos_dim > 0:
            return self.project_pos_dim
        if self.kind == "trainable":
            return self.num_channels
        if self.kind == "fourier":
            return fourier_channels(len(self.index_dims), self.num_bands, self.concat_pos, self.sine_only)
        return 0


class PositionEncoding(nn.Module):
    """Base: ``forward(batch_size, indices=None, subsampled=False) -> [B, n, C]``.

    ``indices [n]`` selects flat grid points (all of them when None). With ``subsampled=True``
    Fourier positions of those points follow the official subsampled-output rule.
    """

    num_channels: int

    def forward(self, batch_size: int, indices: torch.Tensor | None = None, subsampled: bool = False) -> torch.Tensor:
        raise NotImplementedError


class TrainablePositionEncoding(PositionEncoding):
    """A learned ``[n, C]`` table (truncated normal, std ``init_scale``), broadcast over the batch."""

    def __init__(self, num_positions: int, num_channels: int, init_scale: float = 0.02) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.init_scale = init_scale
        self.embeddings = nn.Parameter(torch.empty(num_positions, num_channels))
        trunc_normal_(self.embeddings, std=init_scale)

    def forward(self, batch_size: int, indices: torch.Tensor | None = None, subsampled: bool = False) -> torch.Tensor:
        table = self.embeddings if indices is None else self.embeddings[indices]
        return table.expand(batch_size, -1, -1)


class FourierPositionEncoding(PositionEncoding):
    """Fourier features of a grid of ``index_dims`` (no parameters; features cached per device and dtype)."""

    def __init__(
        self,
        index_dims: Sequence[int],
        num_bands: int,
        max_resolution: Sequence[int] | None = None,
        concat_pos: bool = True,
        sine_only: bool = False,
    ) -> None:
        super().__init__()
        self.index_dims = tuple(index_dims)
        self.num_bands = num_bands
        self.max_resolution = tuple(max_resolution or index_dims)
        self.concat_pos = concat_pos
        self.sine_only = sine_only
        self.num_channels = fourier_channels(len(self.index_dims), num_bands, concat_pos, sine_only)
        # Empty buffer: tells forward which device and dtype the module was moved to.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def features(self, pos: torch.Tensor) -> torch.Tensor:
        """Fourier features of explicit positions ``pos [..., d]``."""
        return fourier_features(pos, self.num_bands, self.max_resolution, self.concat_pos, self.sine_only)

    def forward(self, batch_size: int, indices: torch.Tensor | None = None, subsampled: bool = False) -> torch.Tensor:
        device, dtype = self._anchor.device, self._anchor.dtype
        if indices is None:
            key = (device, dtype)
            enc = self._cache.get(key)
            if enc is None:
                enc = self.features(grid_positions(self.index_dims, device=device)).to(dtype)
                if enc.numel() <= _MAX_CACHED_ELEMENTS:
                    self._cache[key] = enc
        else:
            indices = indices.to(device)
            pos = (
                subsampled_positions(self.index_dims, indices)
                if subsampled
                else grid_positions(self.index_dims, indices, device=device)
            )
            enc = self.features(pos).to(dtype)
        return enc.expand(batch_size, -1, -1)


class ProjectedPositionEncoding(PositionEncoding):
    """A base encoding followed by a Linear projection to ``num_channels`` (official ``PositionEncodingProjector``)."""

    def __init__(self, base: PositionEncoding, num_channels: int) -> None:
        super().__init__()
        self.base = base
        self.num_channels = num_channels
        self.projection = nn.Linear(base.num_channels, num_channels)

    def forward(self, batch_size: int, indices: torch.Tensor | None = None, subsampled: bool = False) -> torch.Tensor:
        return self.projection(self.base(batch_size, indices, subsampled))


def build_position_encoding(config: PositionEncodingConfig) -> PositionEncoding | None:
    """Build the encoding a :class:`PositionEncodingConfig` describes (None for ``kind="none"``)."""
    enc: PositionEncoding
    if config.kind == "none":
        return None
    if config.kind == "trainable":
        enc = TrainablePositionEncoding(config.num_positions, config.num_channels, config.init_scale)
    else:
        enc = FourierPositionEncoding(
            config.index_dims, config.num_bands, config.max_resolution, config.concat_pos, config.sine_only
        )
    if config.project_pos_dim > 0:
        enc = ProjectedPositionEncoding(enc, config.project_pos_dim)
    return enc


def check_indices(name: str, indices: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Validate flat output indices ``[n]`` (integers in ``[0, num_positions)``)."""
    if isinstance(indices, np.ndarray):
        indices = torch.from_numpy(indices)
    check_tensor(name, indices, ("n",), integer=True)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_positions):
        raise ValueError(
            f"{name}: expected indices in [0, {num_positions}), got values in "
            f"[{int(indices.min())}, {int(indices.max())}]"
        )
    return indices.long()
