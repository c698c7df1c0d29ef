"""Position encodings against values computed independently (numpy, float64) from the formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perceiver_io.core.position import (
    FourierPositionEncoding,
    PositionEncodingConfig,
    ProjectedPositionEncoding,
    TrainablePositionEncoding,
    build_position_encoding,
    fourier_features,
    grid_positions,
    subsampled_positions,
)


def numpy_fourier(pos: np.ndarray, num_bands: int, max_resolution, concat_pos=True, sine_only=False) -> np.ndarray:
    """DESIGN.md: freq[d] = linspace(1, res_d / 2, K); f = pos[:, d] * freq[d, k] d-major; [pos, sin(pi f), cos(pi f)]."""
    n, d = pos.shape
    cols = []
    for dim in range(d):
        freqs = np.linspace(1.0, max_resolution[dim] / 2.0, num_bands)
        for k in range(num_bands):
            cols.append(pos[:, dim] * freqs[k])
    f = np.stack(cols, axis=1)
    parts = [np.sin(np.pi * f)] if sine_only else [np.sin(np.pi * f), np.cos(np.pi * f)]
    if concat_pos:
        parts.insert(0, pos)
    return np.concatenate(parts, axis=1)


def numpy_grid(index_dims) -> np.ndarray:
    axes = [np.linspace(-1.0, 1.0, n) for n in index_dims]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(index_dims))


@pytest.mark.parametrize(
    "index_dims,num_bands,max_res,concat_pos,sine_only",
    [((7, 5), 6, None, True, False), ((224, 224), 64, None, True, False), ((4, 6, 5), 3, (8, 12, 10), False, False),
     ((30,), 16, (60,), True, True), ((16, 23), 8, (56, 56), True, False)],
)
def test_fourier_grid_matches_formula(index_dims, num_bands, max_res, concat_pos, sine_only):
    enc = FourierPositionEncoding(index_dims, num_bands, max_res, concat_pos, sine_only)
    got = enc(2)
    expected = numpy_fourier(numpy_grid(index_dims), num_bands, max_res or index_dims, concat_pos, sine_only)
    assert got.shape == (2, *expected.shape) and enc.num_channels == expected.shape[1]
    # float32 rounds the argument pi * f (up to ~350 at 224 px): allow that rounding, nothing more
    max_arg = np.pi * max(max_res or index_dims) / 2
    np.testing.assert_allclose(got[1].double().numpy(), expected, atol=1e-6 + 2.4e-7 * max_arg, rtol=0)


def test_imagenet_fourier_has_258_channels():
    assert FourierPositionEncoding((224, 224), 64).num_channels == 258  # 3 pixels + 258 = the paper's 261


def test_grid_positions_row_major_inclusive_linspace():
    pos = grid_positions((3, 4))
    np.testing.assert_allclose(pos.numpy(), numpy_grid((3, 4)), atol=1e-7)
    assert pos[0].tolist() == [-1.0, -1.0] and pos[-1].tolist() == [1.0, 1.0]
    assert pos[1].tolist()[0] == -1.0  # last dim varies fastest
    idx = torch.tensor([0, 5, 11, 7])
    torch.testing.assert_close(grid_positions((3, 4), idx), pos[idx])


def test_subsampled_positions_follow_official_rule():
    dims = (4, 6, 5)
    idx = torch.tensor([0, 1, 7, 33, 119])
    coords = np.stack(np.unravel_index(idx.numpy(), dims), axis=1)
    expected = -1 + 2 * coords / np.array(dims)
    np.testing.assert_allclose(subsampled_positions(dims, idx).numpy(), expected, atol=1e-7)
    enc = FourierPositionEncoding(dims, 4)
    np.testing.assert_allclose(
        enc(3, idx, subsampled=True)[2].double().numpy(), numpy_fourier(expected, 4, dims), atol=2e-5
    )
    # not the full grid's inclusive linspace positions
    assert not torch.allclose(enc(1, idx, subsampled=True), enc(1)[:, idx])
    torch.testing.assert_close(enc(1, idx), enc(1)[:, idx])


def test_fourier_features_on_explicit_batched_positions():
    pos = torch.rand(2, 9, 3) * 2 - 1
    got = fourier_features(pos, 5, (10, 20, 30))
    for b in range(2):
        np.testing.assert_allclose(got[b].double().numpy(), numpy_fourier(pos[b].double().numpy(), 5, (10, 20, 30)), atol=2e-5)


def test_trainable_encoding_and_projection():
    enc = TrainablePositionEncoding(10, 4, init_scale=0.02)
    assert enc.embeddings.abs().max() <= 0.04 + 1e-6  # truncated at two std
    assert enc(3).shape == (3, 10, 4)
    torch.testing.assert_close(enc(2, torch.tensor([3, 1]))[1], enc.embeddings[[3, 1]])
    proj = build_position_encoding(PositionEncodingConfig("fourier", (5, 5), num_bands=2, project_pos_dim=7))
    assert isinstance(proj, ProjectedPositionEncoding) and proj(2).shape == (2, 25, 7)
    torch.testing.assert_close(proj(1)[0], proj.projection(proj.base(1)[0]))


def test_position_config_errors():
    with pytest.raises(ValueError, match="kind"):
        PositionEncodingConfig("sinusoid", (4,))
    with pytest.raises(ValueError, match="max_resolution: expected 2 entries"):
        PositionEncodingConfig("fourier", (4, 4), num_bands=2, max_resolution=(4,))
    with pytest.raises(ValueError, match="num_channels"):
        PositionEncodingConfig("trainable", (4,))


def test_fourier_follows_module_device_and_dtype():
    enc = FourierPositionEncoding((4, 4), 2).double()
    assert enc(1).dtype == torch.float64
    assert enc(1, torch.tensor([1, 2])).dtype == torch.float64


def test_fourier_features_follow_the_grid_and_cache_a_few_grids_only():
    from perceiver_io.core.position import _MAX_CACHED_GRIDS, FourierPositionEncoding, fourier_features, grid_positions

    enc = FourierPositionEncoding((4, 5), num_bands=3, max_resolution=(8, 8))
    for h in range(2, 2 + 2 * _MAX_CACHED_GRIDS):
        got = enc(1, index_dims=(h, 5))[0]
        torch.testing.assert_close(got, fourier_features(grid_positions((h, 5)), 3, (8, 8)))
    assert len(enc._cache) == _MAX_CACHED_GRIDS  # bounded, whatever sizes come in
    enc(1, index_dims=(2 * _MAX_CACHED_GRIDS, 5))  # a hit moves that grid to the most recent end
    assert next(reversed(enc._cache))[2] == (2 * _MAX_CACHED_GRIDS, 5)
