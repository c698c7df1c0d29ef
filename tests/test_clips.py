"""Synthetic audio-visual clips: the class really sets colour, shape, motion and pitch; determinism and split
independence; shapes, dtypes and ranges; argument errors; the data module's batches."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from perceiver_io.data.clips import (
    COLOURS,
    MAX_CLASSES,
    SHAPES,
    SyntheticClips,
    SyntheticClipsDataModule,
    clip_class,
    render_clip,
)

#: Shape areas in units of radius squared (see ``_shape_distance``).
AREAS = {
    "circle": math.pi,
    "square": 1.6**2,
    "triangle": 3 * math.sqrt(3) / 4 * 1.1**2,
    "plus": 2 * 2.0 * 0.7 - 0.7**2,
    "diamond": 2 * 1.1**2,
    "ring": math.pi * (1.0**2 - 0.5**2),
    "cross": 2 * 2.0 * 0.7 - 0.7**2,
    "frame": 1.6**2 - 0.8**2,
}


def chroma(image: torch.Tensor) -> np.ndarray:
    """``[..., H, W]``: max - min over the channel axis (-3). Zero (up to noise) on the grey background."""
    x = image.numpy()
    return x.max(-3) - x.min(-3)


def coverage(image: torch.Tensor, label: int, num_classes: int) -> np.ndarray:
    """How much of each pixel the shape covers, from its chroma relative to the class colour's; noise zeroed."""
    colour = np.array(clip_class(label, num_classes).colour)
    c = chroma(image) / (colour.max() - colour.min())
    return np.where(c > 0.25, np.clip(c, 0.0, 1.0), 0.0)


def centre_of_mass(weights: np.ndarray) -> np.ndarray:
    """``[T, 2]`` (row, column) centre of mass of ``weights [T, H, W]`` in pixel coordinates (centres at +0.5)."""
    rows = np.arange(weights.shape[-2]) + 0.5
    cols = np.arange(weights.shape[-1]) + 0.5
    total = weights.sum((-2, -1))
    return np.stack([(weights.sum(-1) * rows).sum(-1) / total, (weights.sum(-2) * cols).sum(-1) / total], -1)


def all_classes(num_classes: int, seed: int = 0, **kwargs) -> list[dict[str, torch.Tensor]]:
    return [render_clip(k, np.random.default_rng([seed, k]), num_classes=num_classes, **kwargs)
            for k in range(num_classes)]


# --------------------------------------------------------------------------------------------------- the classes


def test_class_table():
    assert len(SHAPES) == 8 and len(COLOURS) == MAX_CLASSES == 16
    colours = np.array(COLOURS)
    assert ((colours >= 0) & (colours <= 1)).all()
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + np.eye(16) * 9
    assert distances.min() > 0.3  # all distinct
    combos = {(clip_class(k, 16).shape, clip_class(k, 16).colour) for k in range(16)}
    assert len(combos) == 16
    pitches = [clip_class(k, 8).pitch for k in range(8)]
    assert all(0 < a < b <= 0.375 for a, b in itertools.pairwise(pitches))
    assert clip_class(2, 8).angle == pytest.approx(math.pi / 2)


@pytest.mark.parametrize("num_classes", [8, 16])
def test_shape_pixels_have_the_class_colour(num_classes):
    for k, clip in enumerate(all_classes(num_classes)):
        colour = np.array(clip_class(k, num_classes).colour)
        image = clip["image"].numpy()  # [T, 3, H, W]
        inside = coverage(clip["image"], k, num_classes) > 0.9  # [T, H, W]: well inside the shape
        assert inside.sum() > 8 * 10
        mean = image.transpose(1, 0, 2, 3)[:, inside].mean(1)  # [3]
        assert np.abs(mean - colour).max() < 0.08, (k, mean, colour)
        nearest = np.linalg.norm(np.array(COLOURS[:num_classes]) - mean, axis=1).argmin()
        assert nearest == k


@pytest.mark.parametrize("num_classes", [8, 16])
def test_shape_area_matches_the_class_shape(num_classes):
    size = 32
    for k, clip in enumerate(all_classes(num_classes, image_size=size)):
        # The radius is the first draw from the clip's rng (render_clip's docstring).
        radius = size * np.random.default_rng([0, k]).uniform(0.12, 0.20)
        area = coverage(clip["image"], k, num_classes).sum((-2, -1))  # [T]
        expected = AREAS[clip_class(k, num_classes).shape] * radius**2
        np.testing.assert_allclose(area, expected, rtol=0.2, err_msg=f"class {k}")  # thin shapes lose edges


def test_ring_has_a_hole_and_circle_does_not():
    circle, ring = (clip_class(k, 8).shape for k in (0, 5))
    assert (circle, ring) == ("circle", "ring")
    clips = all_classes(8)
    for k, hollow in ((0, False), (5, True)):
        cover = coverage(clips[k]["image"], k, 8)
        com = centre_of_mass(cover)
        row, col = np.floor(com[0]).astype(int)
        assert (cover[0, row, col] < 0.1) == hollow


@pytest.mark.parametrize("num_classes", [8, 16])
def test_centre_of_mass_moves_in_the_class_direction(num_classes):
    size, frames = 32, 8
    for k, clip in enumerate(all_classes(num_classes, image_size=size, num_frames=frames)):
        cls = clip_class(k, num_classes)
        com = centre_of_mass(coverage(clip["image"], k, num_classes))
        d_row, d_col = com[-1] - com[0]
        moved = np.array([d_col, -d_row])  # (right, up)
        direction = np.array([math.cos(cls.angle), math.sin(cls.angle)])
        distance = np.linalg.norm(moved)
        assert moved @ direction / distance > 0.98, (k, moved, direction)
        nominal = cls.speed * size * (frames - 1)
        assert 0.8 * nominal < distance < 1.2 * nominal  # +/-10% jitter
        steps = np.diff(com, axis=0)  # constant velocity: every frame moves the same
        np.testing.assert_allclose(steps, np.broadcast_to(steps.mean(0), steps.shape), atol=0.5)


def test_long_clips_bounce_and_keep_the_whole_shape_in_frame():
    size, frames = 24, 64
    for k in range(8):
        cls = clip_class(k, 8)
        clip = render_clip(k, np.random.default_rng(k), num_frames=frames, image_size=size, num_classes=8)
        cover = coverage(clip["image"], k, 8)
        area = cover.sum((-2, -1))  # [64]
        np.testing.assert_allclose(area, area.mean(), rtol=0.25)  # thin shapes vary a little with sub-pixel position
        # Never cut by a border: the centre stays 1.15 radii (the farthest point of any shape) inside the frame.
        radius = size * np.random.default_rng(k).uniform(0.12, 0.20)
        com = centre_of_mass(cover)
        assert (com > 1.15 * radius - 0.5).all() and (com < size - 1.15 * radius + 0.5).all()
        # It travels further than the frame allows in a straight line, so it must have bounced.
        assert cls.speed * 0.9 * size * (frames - 1) > size
        step = np.diff(com, axis=0) @ np.array([-math.sin(cls.angle), math.cos(cls.angle)])  # along the velocity
        assert (step > 0.3).any() and (step < -0.3).any()  # it came back after hitting a wall


@pytest.mark.parametrize("num_classes", [8, 16])
def test_dominant_audio_frequency_is_the_class_pitch(num_classes):
    samples = 8 * 64
    bins = []
    for k, clip in enumerate(all_classes(num_classes)):
        spectrum = np.abs(np.fft.rfft(clip["audio"][:, 0].numpy()))
        cls = clip_class(k, num_classes)
        peak = int(spectrum.argmax())
        assert peak == cls.tone_bin(samples) == round(cls.pitch * samples)
        assert peak < 0.8 * samples / 2  # well inside Nyquist
        bins.append(peak)
    assert len(set(bins)) == num_classes  # every class its own pitch


def test_pitch_is_the_same_across_clips_of_a_class():
    peaks = {int(np.abs(np.fft.rfft(render_clip(3, np.random.default_rng(s))["audio"][:, 0].numpy())).argmax())
             for s in range(5)}
    assert peaks == {clip_class(3, 8).tone_bin(512)}


# ------------------------------------------------------------------------------------ shapes, ranges, determinism


def test_shapes_dtypes_and_ranges():
    clip = render_clip(4, np.random.default_rng(0), num_frames=3, image_size=12, audio_samples_per_frame=16,
                       num_classes=5)
    assert clip["image"].shape == (3, 3, 12, 12) and clip["image"].dtype == torch.float32
    assert clip["audio"].shape == (48, 1) and clip["audio"].dtype == torch.float32
    assert clip["label"].shape == () and clip["label"].dtype == torch.int64 and int(clip["label"]) == 4
    for clip in all_classes(8) + [render_clip(1, np.random.default_rng(1), image_size=8, num_frames=1,
                                              audio_samples_per_frame=8)]:
        assert 0 <= clip["image"].min() and clip["image"].max() <= 1
        assert -1 <= clip["audio"].min() and clip["audio"].max() <= 1
        assert torch.isfinite(clip["image"]).all() and torch.isfinite(clip["audio"]).all()


def test_per_clip_randomness():
    a, b = (render_clip(2, np.random.default_rng(s)) for s in (0, 1))
    assert not torch.equal(a["image"], b["image"]) and not torch.equal(a["audio"], b["audio"])
    c = render_clip(2, np.random.default_rng(0))
    assert torch.equal(a["image"], c["image"]) and torch.equal(a["audio"], c["audio"])


def test_dataset_is_deterministic_balanced_and_splits_differ():
    kwargs = {"num_clips": 20, "num_frames": 4, "image_size": 16, "audio_samples_per_frame": 16, "num_classes": 6}
    first, again = SyntheticClips(**kwargs, seed=3), SyntheticClips(**kwargs, seed=3)
    assert len(first) == 20
    for i in (0, 7, 19):
        x, y = first[i], again[i]
        assert all(torch.equal(x[key], y[key]) for key in ("image", "audio", "label"))
    assert torch.equal(first[-1]["image"], first[19]["image"])
    assert [int(first[i]["label"]) for i in range(20)] == [i % 6 for i in range(20)]
    assert [first.label(i) for i in range(20)] == [i % 6 for i in range(20)]
    others = [SyntheticClips(**kwargs, seed=3, split="val"), SyntheticClips(**kwargs, seed=3, split="test"),
              SyntheticClips(**kwargs, seed=4)]
    for other in others:
        assert int(other[5]["label"]) == int(first[5]["label"])  # same class, different clip
        assert not torch.equal(other[5]["image"], first[5]["image"])
        assert not torch.equal(other[5]["audio"], first[5]["audio"])
    with pytest.raises(IndexError, match="index"):
        first[20]


# ------------------------------------------------------------------------------------------------ argument errors


@pytest.mark.parametrize(
    "kwargs, name, got",
    [
        ({"image_size": 7}, "image_size", "7"),
        ({"num_frames": 0}, "num_frames", "0"),
        ({"num_classes": 1}, "num_classes", "1"),
        ({"num_classes": 17}, "num_classes", "17"),
        ({"audio_samples_per_frame": 4}, "audio_samples_per_frame", "4"),
        ({"image_size": 16.0}, "image_size", "16.0"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, name, got):
    for build in (lambda: render_clip(0, np.random.default_rng(0), **kwargs),
                  lambda: SyntheticClips(4, **kwargs),
                  lambda: SyntheticClipsDataModule(**kwargs)):
        with pytest.raises(ValueError, match=name) as error:
            build()
        assert f"got {got}" in str(error.value) and "expected" in str(error.value)


def test_other_argument_errors():
    with pytest.raises(ValueError, match=r"label: expected an int in \[0, 8\), got 8"):
        render_clip(8, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        render_clip(0, 0)
    for kwargs, name in (({"num_clips": 0}, "num_clips"), ({"num_clips": 4, "split": "dev"}, "split"),
                         ({"num_clips": 4, "seed": -1}, "seed")):
        with pytest.raises(ValueError, match=name):
            SyntheticClips(**kwargs)
    for kwargs, name in (({"batch_size": 0}, "batch_size"), ({"num_val": 0}, "num_val"),
                         ({"num_workers": -1}, "num_workers")):
        with pytest.raises(ValueError, match=name):
            SyntheticClipsDataModule(**kwargs)


# ---------------------------------------------------------------------------------------------------- data module


def test_data_module_batches():
    dm = SyntheticClipsDataModule(num_frames=4, image_size=16, audio_samples_per_frame=32, num_classes=5,
                                  batch_size=6, num_train=30, num_val=10, num_test=12, seed=1)
    assert (dm.num_frames, dm.image_size, dm.audio_samples_per_frame, dm.num_classes) == (4, 16, 32, 5)
    assert dm.audio_samples == 128 and dm.hparams.batch_size == 6
    dm.setup("fit")
    assert {split: len(ds) for split, ds in dm.datasets.items()} == {"train": 30, "val": 10, "test": 12}
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        batch = next(iter(loader))
        assert batch["image"].shape == (6, 4, 3, 16, 16) and batch["image"].dtype == torch.float32
        assert batch["audio"].shape == (6, 128, 1) and batch["audio"].dtype == torch.float32
        assert batch["label"].shape == (6,) and batch["label"].dtype == torch.int64
    assert next(iter(dm.val_dataloader()))["label"].tolist() == [0, 1, 2, 3, 4, 0]
    first, again = (next(iter(dm.train_dataloader())) for _ in range(2))
    assert torch.equal(first["label"], again["label"]) and torch.equal(first["image"], again["image"])
    unshuffled = torch.stack([dm.datasets["train"][i]["image"] for i in range(6)])
    assert not torch.equal(first["image"], unshuffled)
