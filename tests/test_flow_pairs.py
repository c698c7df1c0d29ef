"""Generated FlyingChairs-style flow pairs: the flow is exact (warping frame 2 back with it reproduces frame 1), a pure
background pair has the analytic affine flow, determinism by seed/split/index, shapes and ranges, the valid mask, the
flow bound, argument errors and the data module."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perceiver_io.data.flow_pairs import (
    SyntheticFlowDataModule,
    SyntheticFlowPairs,
    render_pair,
    sample_photos,
)


def _pixel_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")


def _warp_back(frame2: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]``: frame 2 sampled (bilinear) at ``p + flow(p)``, i.e. frame 2 warped onto frame 1."""
    height, width = flow.shape[-2:]
    ys, xs = _pixel_grid(height, width)
    grid = torch.stack([(xs + flow[0]) * 2 / (width - 1) - 1, (ys + flow[1]) * 2 / (height - 1) - 1], -1)
    return F.grid_sample(frame2[None], grid[None], mode="bilinear", align_corners=True)[0]


def _same_layer_footprint(pair: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[H, W]`` bool: all four frame-2 pixels that bilinear sampling at ``p + flow(p)`` reads show the layer visible
    at ``p`` in frame 1, i.e. ``p`` is away from the segment outlines (whose hard edges no interpolation reproduces)."""
    layers, flow = pair["layers"], pair["flow"]
    height, width = flow.shape[-2:]
    ys, xs = _pixel_grid(height, width)
    x0, y0 = torch.floor(xs + flow[0]).long(), torch.floor(ys + flow[1]).long()
    same = torch.ones(height, width, dtype=torch.bool)
    for dx in (0, 1):
        for dy in (0, 1):
            same &= layers[1][(y0 + dy).clamp(0, height - 1), (x0 + dx).clamp(0, width - 1)] == layers[0]
    return same


def test_sample_photos_are_the_two_sklearn_jpegs_cached():
    photos = sample_photos()
    assert photos.shape == (2, 3, 427, 640) and photos.dtype == torch.float32
    assert photos.min() >= 0 and photos.max() <= 1 and photos.std() > 0.1
    assert not torch.equal(photos[0], photos[1])
    photos.zero_()  # a copy: the cache is untouched
    assert sample_photos().max() > 0.5


@pytest.mark.parametrize("size", [(64, 96), (40, 56)])
def test_render_pair_shapes_dtypes_ranges(size):
    pair = render_pair(np.random.default_rng(3), size)
    height, width = size
    assert set(pair) == {"frames", "flow", "valid"}
    assert pair["frames"].shape == (2, 3, height, width) and pair["frames"].dtype == torch.float32
    assert pair["flow"].shape == (2, height, width) and pair["flow"].dtype == torch.float32
    assert pair["valid"].shape == (height, width) and pair["valid"].dtype == torch.bool
    frames = pair["frames"]
    assert frames.min() >= -1 and frames.max() <= 1 and frames.min() < 0 < frames.max()
    assert torch.isfinite(pair["flow"]).all()
    assert not torch.equal(frames[0], frames[1])


@pytest.mark.parametrize("seed", range(5))
def test_flow_warps_frame2_back_onto_frame1(seed):
    pair = render_pair(np.random.default_rng(seed), return_layers=True)
    assert pair["layers"][0].max() >= 1  # segments are present
    error = (_warp_back(pair["frames"][1], pair["flow"]) - pair["frames"][0]).abs().mean(0)  # [H, W], [-1, 1] scale
    valid = pair["valid"]
    # All valid pixels, segment outlines included (there hard edges are resampled, so a few pixels err a lot).
    assert error[valid].mean() < 0.03
    assert error[valid].quantile(0.95) < 0.08
    # Away from the outlines only the bilinear resampling of the texture remains.
    interior = valid & _same_layer_footprint(pair)
    assert interior.float().mean() > 0.6
    assert error[interior].mean() < 0.02
    assert error[interior].quantile(0.95) < 0.05
    # A wrong flow (zero) is much worse, so the check has teeth.
    still = (pair["frames"][1] - pair["frames"][0]).abs().mean(0)
    assert still[interior].mean() > 2 * error[interior].mean()


def test_pure_background_pair_has_the_analytic_affine_flow():
    height, width = 48, 80
    pair = render_pair(np.random.default_rng(11), (height, width), 6.0, num_segments=0, return_layers=True)
    assert (pair["layers"] == 0).all() and pair["motions"].shape == (1, 3, 3)
    motion = pair["motions"][0].numpy()
    # A rotation-zoom about a point plus a translation: a similarity with a small angle and a zoom near 1.
    linear = motion[:2, :2]
    assert np.allclose(linear[0, 0], linear[1, 1]) and np.allclose(linear[0, 1], -linear[1, 0])
    assert np.allclose(motion[2], [0, 0, 1])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    expected = np.stack([motion[0, 0] * xs + motion[0, 1] * ys + motion[0, 2] - xs,
                         motion[1, 0] * xs + motion[1, 1] * ys + motion[1, 2] - ys])
    np.testing.assert_allclose(pair["flow"].numpy(), expected, atol=1e-4)
    assert np.abs(expected).max() > 0.1  # it does move
    # With nothing to occlude, valid is exactly "lands inside frame 2".
    target_x, target_y = np.round(xs + expected[0]), np.round(ys + expected[1])
    inside = (target_x >= 0) & (target_x < width) & (target_y >= 0) & (target_y < height)
    np.testing.assert_array_equal(pair["valid"].numpy(), inside)
    error = (_warp_back(pair["frames"][1], pair["flow"]) - pair["frames"][0]).abs().mean(0)
    assert error[pair["valid"]].mean() < 0.02


def test_segment_flow_is_the_affine_flow_of_the_visible_layer():
    pair = render_pair(np.random.default_rng(5), num_segments=4, return_layers=True)
    motions, layers = pair["motions"].numpy(), pair["layers"][0].numpy()
    assert motions.shape == (5, 3, 3) and len(np.unique(layers)) >= 3
    ys, xs = np.mgrid[0:64, 0:96].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)])  # [3, H, W]
    flow_per_layer = np.einsum("lij,jhw->lihw", motions[:, :2], points) - points[None, :2]
    expected = np.take_along_axis(flow_per_layer, layers[None, None].repeat(2, 1), 0)[0]
    np.testing.assert_allclose(pair["flow"].numpy(), expected, atol=1e-4)
    # Distinct layers really move differently.
    assert not np.allclose(motions[0], motions[1])


def test_translation_pairs_move_every_layer_rigidly():
    max_flow = 4.0
    pair = render_pair(np.random.default_rng(8), (32, 48), max_flow, num_segments=3, motion="translation",
                       return_layers=True)
    motions, layers, flow = pair["motions"].numpy(), pair["layers"][0], pair["flow"]
    np.testing.assert_allclose(motions[:, :2, :2], np.broadcast_to(np.eye(2), (4, 2, 2)))  # no rotation or zoom
    assert (np.linalg.norm(motions[:, :2, 2], axis=1) <= max_flow).all()
    for layer in layers.unique():  # one flow vector per visible layer: its translation
        vectors = flow[:, layers == layer]
        torch.testing.assert_close(vectors, torch.tensor(motions[layer, :2, 2], dtype=torch.float32)[:, None]
                                   .expand_as(vectors), rtol=0, atol=1e-5)
    error = (_warp_back(pair["frames"][1], flow) - pair["frames"][0]).abs().mean(0)
    interior = pair["valid"] & _same_layer_footprint(pair)
    assert error[interior].mean() < 0.02
    data = SyntheticFlowDataModule(size=(32, 48), max_flow=max_flow, motion="translation", batch_size=2, num_train=2,
                                   num_val=2, num_test=2)
    data.setup("fit")
    assert data.datasets["train"].motion == "translation"


def test_valid_share_and_flow_bound():
    max_flow = 8.0
    pairs = [render_pair(np.random.default_rng([7, i]), max_flow=max_flow) for i in range(12)]
    valid = torch.stack([p["valid"] for p in pairs]).float()
    assert valid.mean() > 0.7 and valid.mean((1, 2)).min() > 0.5 and valid.mean() < 1.0
    magnitude = torch.stack([p["flow"] for p in pairs]).norm(dim=1)
    assert (magnitude <= max_flow).float().mean() > 0.99
    assert magnitude.max() <= 1.1 * max_flow and magnitude.mean() > 0.1 * max_flow
    small = torch.stack([render_pair(np.random.default_rng(i), max_flow=1.5)["flow"] for i in range(4)]).norm(dim=1)
    assert (small <= 1.5).float().mean() > 0.99


def test_render_pair_is_fast():
    render_pair(np.random.default_rng(0))  # textures resized and cached on the first call
    start = time.perf_counter()
    for i in range(10):
        render_pair(np.random.default_rng(i))
    assert (time.perf_counter() - start) / 10 < 0.05


def test_dataset_deterministic_by_seed_split_index():
    data = SyntheticFlowPairs(6, seed=4, split="val")
    assert len(data) == 6
    first, again = data[2], SyntheticFlowPairs(6, seed=4, split="val")[2]
    expected = render_pair(np.random.default_rng([4, 1, 2]))
    for key in ("frames", "flow", "valid"):
        assert torch.equal(first[key], again[key]) and torch.equal(first[key], expected[key])
    assert torch.equal(data[-1]["flow"], data[5]["flow"])
    assert not torch.equal(data[0]["frames"], data[1]["frames"])
    for other in (SyntheticFlowPairs(6, seed=4, split="train"), SyntheticFlowPairs(6, seed=4, split="test"),
                  SyntheticFlowPairs(6, seed=5, split="val")):
        assert not torch.equal(other[2]["frames"], first["frames"])
    with pytest.raises(IndexError, match="index"):
        data[6]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: render_pair(np.random.default_rng(0), (64,)), "size"),
        (lambda: render_pair(np.random.default_rng(0), (4, 96)), "size"),
        (lambda: render_pair(np.random.default_rng(0), (64.0, 96)), "size"),
        (lambda: render_pair(np.random.default_rng(0), max_flow=0.0), "max_flow"),
        (lambda: render_pair(np.random.default_rng(0), max_flow=float("nan")), "max_flow"),
        (lambda: render_pair(np.random.default_rng(0), num_segments=-1), "num_segments"),
        (lambda: SyntheticFlowPairs(0), "num_pairs"),
        (lambda: SyntheticFlowPairs(4, seed=-1), "seed"),
        (lambda: SyntheticFlowPairs(4, split="dev"), "split"),
        (lambda: SyntheticFlowPairs(4, max_flow=-2), "max_flow"),
        (lambda: SyntheticFlowPairs(4, motion="shear"), "motion"),
        (lambda: render_pair(np.random.default_rng(0), motion="zoom"), "motion"),
        (lambda: SyntheticFlowDataModule(batch_size=0), "batch_size"),
        (lambda: SyntheticFlowDataModule(num_val=0), "num_val"),
        (lambda: SyntheticFlowDataModule(size=(64, 2)), "size"),
        (lambda: SyntheticFlowDataModule(num_workers=-1), "num_workers"),
    ],
)
def test_argument_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected"):
        call()


def test_data_module_batches_and_shuffle():
    module = SyntheticFlowDataModule(size=(32, 48), batch_size=3, num_train=7, num_val=4, num_test=5, seed=2)
    assert module.image_shape == (3, 32, 48)
    assert module.hparams.batch_size == 3 and module.hparams.size == (32, 48)
    module.setup()
    assert {k: len(v) for k, v in module.datasets.items()} == {"train": 7, "val": 4, "test": 5}
    batch = next(iter(module.val_dataloader()))
    assert batch["frames"].shape == (3, 2, 3, 32, 48) and batch["flow"].shape == (3, 2, 32, 48)
    assert batch["valid"].shape == (3, 32, 48) and batch["valid"].dtype == torch.bool
    assert torch.equal(batch["flow"][1], module.datasets["val"][1]["flow"])
    first = next(iter(module.train_dataloader()))["flow"]
    assert torch.equal(first, next(iter(module.train_dataloader()))["flow"])  # the shuffle is seeded
    in_order = torch.stack([module.datasets["train"][i]["flow"] for i in range(3)])
    assert not torch.equal(first, in_order)  # ... and does shuffle (seed 2 does not draw 0, 1, 2 first)
    assert sum(len(b["valid"]) for b in module.test_dataloader()) == 5
