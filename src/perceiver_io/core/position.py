"""Position encodings: trainable tables and Fourier features, as the official code builds them.

Positions live in [-1, 1]. A full grid is the inclusive ``linspace(-1, 1, n)`` per dimension,
meshgrid 'ij', flattened row-major. Subsampled output points (flat indices into the grid) map to
``-1 + 2 * idx / n`` instead, exactly as the official decoder does.
"""

from __future__ import annotations

import dataclasses
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
# Inputs of many sizes (any-resolution inference) must not pin one grid's features each: keep the
# most recently used few.
_MAX_CACHED_GRIDS = 4


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
    (``num_bands`` per dimension) or ``"none"``. ``index_dims`` is the grid the encoding covers; an
    input adapter fills it in from its input size when left ``None``. Fourier features are computed
    for whatever grid the input has at run time (as the official code does); ``max_resolution``
    sets their highest frequency and, left ``None``, follows that grid (official default).
    ``project_pos_dim > 0`` adds a Linear projection of the encoding to that many channels.
    """

    kind: str
    index_dims: tuple[int, ...] | None = None
    num_channels: int = 0
    init_scale: float = 0.02
    num_bands: int = 0
    max_resolution: tuple[int, ...] | None = None
    concat_pos: bool = True
    sine_only: bool = False
    project_pos_dim: int = -1

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ("trainable", "fourier", "none"))
        if self.index_dims is not None:
            self.index_dims = tuple(self.index_dims)
            for n in self.index_dims:
                check_positive("index_dims", n)
        if self.kind == "trainable":
            check_positive("num_channels", self.num_channels)
        if self.kind == "fourier":
            check_positive("num_bands", self.num_bands)
            if self.max_resolution is not None:
                self.max_resolution = tuple(self.max_resolution)
                if self.index_dims is not None and len(self.max_resolution) != len(self.index_dims):
                    raise ValueError(
                        f"max_resolution: expected {len(self.index_dims)} entries (one per index dim), "
                        f"got {list(self.max_resolution)}"
                    )

    @property
    def num_positions(self) -> int:
        if self.index_dims is None:
            raise ValueError("index_dims: not set (the grid this encoding covers)")
        return math.prod(self.index_dims)

    def num_dims(self, default: int | None = None) -> int:
        """Number of position dimensions (of ``index_dims``, ``max_resolution`` or ``default``)."""
        dims = self.index_dims or self.max_resolution
        if dims is None:
            if default is None:
                raise ValueError("index_dims: not set, so the number of position dimensions is unknown")
            return default
        return len(dims)

    @property
    def output_channels(self) -> int:
        return self.channels_for(None)

    def channels_for(self, num_dims: int | None) -> int:
        """Channels of the encoding over a grid of ``num_dims`` dimensions (None: from ``index_dims``)."""
        if self.project_pos_dim > 0:
            return self.project_pos_dim
        if self.kind == "trainable":
            return self.num_channels
        if self.kind == "fourier":
            return fourier_channels(self.num_dims(num_dims), self.num_bands, self.concat_pos, self.sine_only)
        return 0

    def on_grid(self, index_dims: Sequence[int], where: str = "position_encoding") -> PositionEncodingConfig:
        """This config over ``index_dims`` (filled in when unset; a different explicit grid is an error)."""
        index_dims = tuple(index_dims)
        if self.index_dims is None:
            return dataclasses.replace(self, index_dims=index_dims)
        if self.index_dims != index_dims:
            raise ValueError(f"{where}: expected index_dims {list(index_dims)} (the input grid), got {list(self.index_dims)}")
        return self


class PositionEncoding(nn.Module):
    """Base: ``forward(batch_size, indices=None, subsampled=False, index_dims=None) -> [B, n, C]``.

    ``indices [n]`` selects flat grid points (all of them when None). With ``subsampled=True``
    Fourier positions of those points follow the official subsampled-output rule. ``index_dims``
    is the grid of this call (default: the configured one).
    """

    num_channels: int
    index_dims: tuple[int, ...]

    def forward(
        self,
        batch_size: int,
        indices: torch.Tensor | None = None,
        subsampled: bool = False,
        index_dims: Sequence[int] | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


class TrainablePositionEncoding(PositionEncoding):
    """A learned ``[n, C]`` table (truncated normal, std ``init_scale``), broadcast over the batch.

    With ``index_dims`` different from the table's grid, :meth:`resized` interpolates the table
    (bicubic, as transformers' ``interpolate_pos_encoding``); ``forward`` refuses other grids.
    """

    def __init__(self, index_dims: int | Sequence[int], num_channels: int, init_scale: float = 0.02) -> None:
        super().__init__()
        self.index_dims = (index_dims,) if isinstance(index_dims, int) else tuple(index_dims)
        self.num_channels = num_channels
        self.init_scale = init_scale
        self.embeddings = nn.Parameter(torch.empty(math.prod(self.index_dims), num_channels))
        trunc_normal_(self.embeddings, std=init_scale)

    def resized(self, index_dims: Sequence[int]) -> torch.Tensor:
        """The table resized to a 2D grid ``index_dims``: ``[h * w, C]`` (bicubic, align_corners=False)."""
        index_dims = tuple(index_dims)
        if index_dims == self.index_dims:
            return self.embeddings
        if len(self.index_dims) != 2 or len(index_dims) != 2:
            raise ValueError(f"index_dims: only 2D tables can be resized, got {list(self.index_dims)} -> {list(index_dims)}")
        h, w = self.index_dims
        grid = self.embeddings.reshape(1, h, w, self.num_channels).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, size=index_dims, mode="bicubic", align_corners=False)
        return grid.reshape(self.num_channels, -1).t()

    def forward(
        self,
        batch_size: int,
        indices: torch.Tensor | None = None,
        subsampled: bool = False,
        index_dims: Sequence[int] | None = None,
        interpolate: bool = False,
    ) -> torch.Tensor:
        table = self.embeddings
        if index_dims is not None and tuple(index_dims) != self.index_dims:
            if not interpolate:
                raise ValueError(
                    f"index_dims: the learned table covers {list(self.index_dims)}, got {list(index_dims)}"
                )
            table = self.resized(index_dims)
        table = table if indices is None else table[indices]
        return table.expand(batch_size, -1, -1)


class FourierPositionEncoding(PositionEncoding):
    """Fourier features of a grid (no parameters; full-grid features cached per grid, device and dtype).

    ``index_dims`` is the default grid (None: every call passes its grid; ``num_dims`` then states
    its dimensionality). ``max_resolution`` None means "the grid of the call", as in the official code.
    """

    def __init__(
        self,
        index_dims: Sequence[int] | None,
        num_bands: int,
        max_resolution: Sequence[int] | None = None,
        concat_pos: bool = True,
        sine_only: bool = False,
        num_dims: int | None = None,
    ) -> None:
        super().__init__()
        self.index_dims = tuple(index_dims) if index_dims is not None else ()  # type: ignore[assignment]
        self.num_bands = num_bands
        self.max_resolution = tuple(max_resolution) if max_resolution is not None else None
        self.concat_pos = concat_pos
        self.sine_only = sine_only
        num_dims = num_dims or len(self.index_dims or self.max_resolution or ())
        self.num_channels = fourier_channels(num_dims, num_bands, concat_pos, sine_only) if num_dims else 0
        # Empty buffer: tells forward which device and dtype the module was moved to.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self._cache: dict[tuple[torch.device, torch.dtype, tuple[int, ...]], torch.Tensor] = {}

    def channels(self, num_dims: int) -> int:
        """Channels of the features of a ``num_dims``-dimensional grid."""
        return fourier_channels(num_dims, self.num_bands, self.concat_pos, self.sine_only)

    def features(self, pos: torch.Tensor, index_dims: Sequence[int] | None = None) -> torch.Tensor:
        """Fourier features of explicit positions ``pos [..., d]`` (frequencies up to ``max_resolution``,
        or ``index_dims`` when that is None)."""
        resolution = self.max_resolution or tuple(index_dims or self.index_dims)
        if len(resolution) != pos.shape[-1]:
            raise ValueError(
                f"index_dims: a {pos.shape[-1]}-dimensional grid, but max_resolution has {len(resolution)} entries"
            )
        return fourier_features(pos, self.num_bands, resolution, self.concat_pos, self.sine_only)

    def forward(
        self,
        batch_size: int,
        indices: torch.Tensor | None = None,
        subsampled: bool = False,
        index_dims: Sequence[int] | None = None,
    ) -> torch.Tensor:
        dims = tuple(index_dims) if index_dims is not None else self.index_dims
        if not dims:
            raise ValueError("index_dims: this Fourier encoding has no default grid; pass index_dims")
        device, dtype = self._anchor.device, self._anchor.dtype
        if indices is None and torch.compiler.is_compiling():  # torch.compile and torch.export trace this
            # No cache: the graph computes the features itself. A tensor stored on the module while tracing is an
            # unregistered constant to torch.export (it warns), and a changed cache makes torch.compile recompile.
            enc = self.features(grid_positions(dims, device=device), dims).to(dtype)
        elif indices is None:
            key = (device, dtype, dims)
            enc = self._cache.get(key)
            if enc is None:
                enc = self.features(grid_positions(dims, device=device), dims).to(dtype)
                if enc.numel() <= _MAX_CACHED_ELEMENTS:
                    if len(self._cache) >= _MAX_CACHED_GRIDS:
                        self._cache.pop(next(iter(self._cache)))  # the least recently used
                    self._cache[key] = enc
            else:
                self._cache[key] = self._cache.pop(key)  # now the most recently used
        else:
            indices = indices.to(device)
            pos = subsampled_positions(dims, indices) if subsampled else grid_positions(dims, indices, device=device)
            enc = self.features(pos, dims).to(dtype)
        return enc.expand(batch_size, -1, -1)


class ProjectedPositionEncoding(PositionEncoding):
    """A base encoding followed by a Linear projection to ``num_channels`` (official ``PositionEncodingProjector``)."""

    def __init__(self, base: PositionEncoding, num_channels: int) -> None:
        super().__init__()
        self.base = base
        self.index_dims = base.index_dims
        self.num_channels = num_channels
        self.projection = nn.Linear(base.num_channels, num_channels)

    def forward(self, batch_size: int, indices: torch.Tensor | None = None, subsampled: bool = False,
                index_dims: Sequence[int] | None = None, **kwargs: bool) -> torch.Tensor:
        return self.projection(self.base(batch_size, indices, subsampled, index_dims, **kwargs))


def build_position_encoding(config: PositionEncodingConfig) -> PositionEncoding | None:
    """Build the encoding a :class:`PositionEncodingConfig` describes (None for ``kind="none"``)."""
    enc: PositionEncoding
    if config.kind == "none":
        return None
    if config.kind == "trainable":
        if config.index_dims is None:
            raise ValueError("index_dims: required for a learned position table (the grid it covers)")
        enc = TrainablePositionEncoding(config.index_dims, config.num_channels, config.init_scale)
    else:
        enc = FourierPositionEncoding(
            config.index_dims, config.num_bands, config.max_resolution, config.concat_pos, config.sine_only
        )
    if config.project_pos_dim > 0:
        enc = ProjectedPositionEncoding(enc, config.project_pos_dim)
    return enc


def check_indices(name: str, indices: torch.Tensor, num_positions: int | None) -> torch.Tensor:
    """Validate flat output indices ``[n]`` (``n >= 1`` integers in ``[0, num_positions)``; any range when
    ``num_positions`` is None, for a check before the grid is known); returns them as long."""
    if isinstance(indices, np.ndarray):
        indices = torch.from_numpy(indices)
    check_tensor(name, indices, ("n",), integer=True)
    if indices.device.type == "meta":  # indices on any real device are moved to the model's
        raise ValueError(f"{name}: expected indices with values, got a tensor on the meta device")
    if indices.numel() == 0:
        # Nothing to decode: an empty output is more likely a bug upstream than a request.
        raise ValueError(f"{name}: expected at least one index, got an empty tensor (pass None to decode every point)")
    # The range check reads values: torch.export cannot branch on them and torch.compile would break its graph
    # here, so only eager runs it (a compiled or exported gather still rejects an index out of range).
    if num_positions is not None and not torch.compiler.is_compiling() and (
        int(indices.min()) < 0 or int(indices.max()) >= num_positions
    ):
        raise ValueError(
            f"{name}: expected indices in [0, {num_positions}), got values in "
            f"[{int(indices.min())}, {int(indices.max())}]"
        )
    return indices.long()
