"""Synthetic audio-visual clips, generated at run time, for multimodal autoencoding (and a Lightning data module).

A clip is ``num_frames`` video frames of one coloured shape moving over a grey, slightly noisy background, and a pure
tone (plus a little noise) as its sound track. The class (``0 .. num_classes - 1``, :func:`clip_class`) sets

* the shape (:data:`SHAPES`, ``label % 8``) and the colour (:data:`COLOURS`, one per class, all saturated so they
  stand out against any grey background), so shape x colour gives up to :data:`MAX_CLASSES` = 16 distinct classes;
* the direction of motion, ``2 pi label / num_classes`` counter-clockwise from "right" as the image is displayed
  (up = decreasing row), and a class-specific speed;
* the pitch of the tone, evenly spaced between 0 and 3/4 of the Nyquist frequency of the clip's audio rate.

Each clip also has its own randomness, drawn from the clip's ``np.random.Generator`` alone (:func:`render_clip`):
start position, size, a small speed jitter, background brightness and pixel noise, tone phase and amplitude and a
little audio noise. Everything is generated from a seed (numpy), so every split is deterministic and nothing is
downloaded or stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.validation import check_choice, check_positive
from .generated import SPLITS, GeneratedDataModule, Split


SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "plus", "diamond", "ring", "cross", "frame")
#: One RGB colour per class (in [0, 1]). All are saturated (max - min channel >= 0.45), so a shape's pixels are told
#: apart from the grey background by their chroma; the first eight are the most distinct.
COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.10, 0.10),  # red
    (0.10, 0.80, 0.10),  # green
    (0.15, 0.30, 1.00),  # blue
    (0.95, 0.85, 0.10),  # yellow
    (0.90, 0.10, 0.90),  # magenta
    (0.10, 0.85, 0.90),  # cyan
    (1.00, 0.50, 0.00),  # orange
    (0.55, 0.15, 0.95),  # violet
    (0.60, 1.00, 0.20),  # lime
    (1.00, 0.45, 0.70),  # pink
    (0.00, 0.55, 0.50),  # teal
    (0.65, 0.25, 0.00),  # brown
    (0.10, 0.10, 0.55),  # navy
    (0.55, 0.55, 0.00),  # olive
    (0.55, 0.00, 0.15),  # maroon
    (0.40, 0.70, 1.00),  # sky
)
MIN_CLASSES, MAX_CLASSES = 2, len(COLOURS)
MIN_IMAGE_SIZE = 8
MIN_AUDIO_SAMPLES_PER_FRAME = 8

_RADIUS_RANGE = (0.12, 0.20)  # shape radius, as a fraction of image_size
_REACH = 1.15  # every shape lies within _REACH * radius of its centre (the square's corners reach 0.8 * sqrt 2)
_SPEED_JITTER = 0.1  # the clip's speed is the class speed times U[1 - jitter, 1 + jitter]
_BACKGROUND_RANGE = (0.10, 0.40)  # grey level of the background
_PIXEL_NOISE = 0.02  # std of the Gaussian noise on every pixel and channel
_AMPLITUDE_RANGE = (0.3, 0.7)  # tone amplitude; with the noise it stays well inside [-1, 1]
_AUDIO_NOISE = 0.02  # std of the Gaussian noise on every audio sample
_MAX_PITCH = 0.375  # cycles per audio sample: 3/4 of Nyquist (0.5)


@dataclass(frozen=True)
class ClipClass:
    """What a class fixes in every clip of it (see :func:`clip_class`).

    Fields:
        shape: the name of the shape, one of :data:`SHAPES`.
        colour: ``(r, g, b)`` in [0, 1], one of :data:`COLOURS`.
        angle: direction of motion in radians, counter-clockwise from "right" as displayed (up = decreasing row).
        speed: nominal speed in image sizes per frame (each clip jitters it by up to +/-10%).
        pitch: nominal tone frequency in cycles per audio sample, in ``(0, 0.375]`` (Nyquist is 0.5).
    """

    shape: str
    colour: tuple[float, float, float]
    angle: float
    speed: float
    pitch: float

    def tone_bin(self, num_samples: int) -> int:
        """The rfft bin (whole cycles per clip) that a clip of ``num_samples`` audio samples plays: ``pitch`` rounded
        to the nearest bin, at least 1. It is also the argmax of ``abs(np.fft.rfft(audio))``."""
        return max(1, round(self.pitch * num_samples))


def clip_class(label: int, num_classes: int = 8) -> ClipClass:
    """The shape, colour, motion and pitch of class ``label`` out of ``num_classes`` (in [2, 16]).

    Shape ``SHAPES[label % 8]``, colour ``COLOURS[label]``; direction ``2 pi label / num_classes``; speed
    ``(0.025 + 0.01 * (label % 3))`` image sizes per frame (so neighbouring directions also differ in speed); pitch
    ``0.375 (label + 1) / (num_classes + 1)`` cycles per sample, so the classes' tones are evenly spaced and distinct.
    """
    _check_num_classes(num_classes)
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or not 0 <= label < num_classes:
        raise ValueError(f"label: expected an int in [0, {num_classes}), got {label!r}")
    label = int(label)
    return ClipClass(
        shape=SHAPES[label % len(SHAPES)],
        colour=COLOURS[label],
        angle=2 * math.pi * label / num_classes,
        speed=0.025 + 0.01 * (label % 3),
        pitch=_MAX_PITCH * (label + 1) / (num_classes + 1),
    )


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from the points ``(u, v)`` to ``shape``, all in units of the radius.

    ``u`` points right and ``v`` up. Polygons use the max over their edges' half-plane distances, exact along the
    edges and slightly short of the corners, which is all the one-pixel anti-aliasing ramp needs.
    """
    if shape == "circle":
        return np.hypot(u, v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if shape == "triangle":  # equilateral, flat base, pointing up, centroid at the centre, corners 1.1 from it
        normals = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        return np.max([nx * u + ny * v for nx, ny in normals], axis=0) - 0.55
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.1) / math.sqrt(2)
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.75) - 0.25
    if shape == "frame":  # a hollow square
        return np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.6) - 0.2
    if shape == "cross":  # a plus turned by 45 degrees
        u, v = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
    if shape in ("plus", "cross"):
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 1.0, av - 0.35), np.maximum(au - 0.35, av - 1.0))
    raise ValueError(f"shape: expected one of {list(SHAPES)}, got {shape!r}")


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """``position`` folded into ``[low, high]`` as if reflected at both ends (a triangle wave; identity inside)."""
    span = high - low
    return low + span - np.abs(np.mod(position - low, 2 * span) - span)


def render_clip(
    label: int, rng: np.random.Generator, num_frames: int = 8, image_size: int = 32, audio_samples_per_frame: int = 64,
    num_classes: int = 8,
) -> dict[str, torch.Tensor]:
    """One clip of class ``label``: ``{"image": [T, 3, H, W] float32 in [0, 1], "audio": [T * A, 1] float32 in
    [-1, 1], "label": int64 scalar tensor}`` with ``T = num_frames``, ``H = W = image_size``,
    ``A = audio_samples_per_frame``.

    From ``rng``, in this order: the radius, ``image_size * U[0.12, 0.20]``; the speed jitter, ``U[0.9, 1.1]``; the
    start position; the background grey level, ``U[0.1, 0.4]``; the pixel noise, ``N(0, 0.02^2)`` per pixel, channel
    and frame; the tone amplitude ``U[0.3, 0.7]`` and phase ``U[0, 2 pi)``; the audio noise, ``N(0, 0.02^2)`` per
    sample. Then the values are clipped to their ranges.

    The shape moves with constant velocity (:func:`clip_class`) and bounces off the borders: its centre stays where
    the whole shape is inside the frame. Where the straight path of the clip fits inside the frame (always, for the
    defaults), the start is uniform over the positions from which it never bounces, so the centre moves exactly in the
    class direction; otherwise (long clips) it is uniform over the frame and the shape bounces. Edges are anti-aliased
    (pixel coverage of a one-pixel ramp across the outline).

    The tone is a sine of a whole number of cycles per clip (:meth:`ClipClass.tone_bin`), so its spectrum is one FFT
    bin. With fewer than ``(num_classes + 1) / 0.375`` samples per clip neighbouring classes may share that bin.
    """
    _check_clip_args(num_frames, image_size, audio_samples_per_frame, num_classes)
    cls = clip_class(label, num_classes)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")

    # Geometry in pixel units; pixel (row i, column j) covers [i, i + 1] x [j, j + 1], so its centre is at +0.5.
    radius = image_size * rng.uniform(*_RADIUS_RANGE)
    speed = image_size * cls.speed * rng.uniform(1 - _SPEED_JITTER, 1 + _SPEED_JITTER)
    velocity = speed * np.array([-math.sin(cls.angle), math.cos(cls.angle)])  # (row, column) per frame; up = -row
    low, high = _REACH * radius, image_size - _REACH * radius  # where the centre keeps the whole shape in frame
    travel = velocity * (num_frames - 1)
    fits = np.abs(travel) <= high - low
    start_low = np.where(fits, low + np.maximum(-travel, 0.0), low)
    start_high = np.where(fits, high - np.maximum(travel, 0.0), high)
    start = rng.uniform(start_low, start_high)  # [2]
    t = np.arange(num_frames)
    centre = _bounce(start[None, :] + t[:, None] * velocity[None, :], low, high)  # [T, 2]

    grid = np.arange(image_size) + 0.5
    u = (grid[None, None, :] - centre[:, 1, None, None]) / radius  # [T, 1, W], right = +u
    v = (centre[:, 0, None, None] - grid[None, :, None]) / radius  # [T, H, 1], up = +v
    u, v = np.broadcast_arrays(u, v)  # [T, H, W]
    coverage = np.clip(0.5 - _shape_distance(cls.shape, u, v) * radius, 0.0, 1.0)[:, None]  # [T, 1, H, W]

    background = rng.uniform(*_BACKGROUND_RANGE)
    colour = np.asarray(cls.colour)[None, :, None, None]  # [1, 3, 1, 1]
    image = background + coverage * (colour - background)
    image = image + rng.normal(0.0, _PIXEL_NOISE, image.shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)

    num_samples = num_frames * audio_samples_per_frame
    amplitude = rng.uniform(*_AMPLITUDE_RANGE)
    phase = rng.uniform(0.0, 2 * math.pi)
    # A whole number of cycles per clip keeps the tone periodic over the clip: no spectral leakage, one FFT bin.
    frequency = cls.tone_bin(num_samples) / num_samples
    audio = amplitude * np.sin(2 * math.pi * frequency * np.arange(num_samples) + phase)
    audio = audio + rng.normal(0.0, _AUDIO_NOISE, num_samples)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)[:, None]

    return {
        "image": torch.from_numpy(image),
        "audio": torch.from_numpy(audio),
        "label": torch.tensor(int(label), dtype=torch.int64),
    }


def _check_num_classes(num_classes: object) -> None:
    ok = isinstance(num_classes, int) and not isinstance(num_classes, bool)
    if not ok or not MIN_CLASSES <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes: expected an int in [{MIN_CLASSES}, {MAX_CLASSES}] (one colour per class), "
                         f"got {num_classes!r}")


def _check_clip_args(num_frames: object, image_size: object, audio_samples_per_frame: object,
                     num_classes: object) -> None:
    check_positive("num_frames", num_frames)
    for name, value, low, why in (
        ("image_size", image_size, MIN_IMAGE_SIZE, "shapes need a few pixels"),
        ("audio_samples_per_frame", audio_samples_per_frame, MIN_AUDIO_SAMPLES_PER_FRAME, "distinct pitches"),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: expected an int >= {low} ({why}), got {value!r}")
    _check_num_classes(num_classes)


class SyntheticClips(Dataset):
    """``num_clips`` generated clips of one split; item ``i`` is the same on every call and in every process.

    Clip ``i`` has class ``i % num_classes`` (so every split is balanced, and the first ``num_classes`` items show
    every class once) and is rendered by :func:`render_clip` from ``np.random.default_rng([seed, split_index, i])``
    (``split_index`` 0/1/2 for train/val/test, so the splits are independent streams). Items are generated on access
    (no caching): a default clip takes well under a millisecond.

    Items are :func:`render_clip` dicts: ``image [T, 3, H, W] float32``, ``audio [T * A, 1] float32`` and ``label``
    (int64 scalar tensor).
    """

    def __init__(
        self, num_clips: int, num_frames: int = 8, image_size: int = 32, audio_samples_per_frame: int = 64,
        num_classes: int = 8, seed: int = 0, split: str = "train",
    ) -> None:
        check_positive("num_clips", num_clips)
        _check_clip_args(num_frames, image_size, audio_samples_per_frame, num_classes)
        check_positive("seed", seed, allow_zero=True)  # numpy's SeedSequence takes non-negative ints only
        check_choice("split", split, SPLITS)
        self.num_clips, self.num_frames, self.image_size = num_clips, num_frames, image_size
        self.audio_samples_per_frame, self.num_classes = audio_samples_per_frame, num_classes
        self.seed, self.split = seed, split

    def __len__(self) -> int:
        return self.num_clips

    def label(self, index: int) -> int:
        """The class of item ``index`` (without rendering it)."""
        return self._index(index) % self.num_classes

    def _index(self, index: int) -> int:
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"index: expected in [{-self.num_clips}, {self.num_clips}), got {index}")
        return int(index) % self.num_clips

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._index(index)
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        return render_clip(index % self.num_classes, rng, self.num_frames, self.image_size,
                           self.audio_samples_per_frame, self.num_classes)


class SyntheticClipsDataModule(GeneratedDataModule):
    """Generated audio-visual clips (:class:`SyntheticClips`), batched by ``default_collate``.

    Batches are dicts ``image [B, T, 3, H, W]`` float32 in [0, 1], ``audio [B, T * A, 1]`` float32 in [-1, 1] and
    ``label [B]`` int64. The three splits are fixed by ``seed``; the training order is shuffled by a generator seeded
    with ``seed`` (the same for a fresh DataLoader).

    Args:
        num_frames: video frames per clip (T, >= 1).
        image_size: frame height and width (H = W, >= 8).
        audio_samples_per_frame: audio samples per video frame (A, >= 8); the clip has ``T * A`` samples.
        num_classes: classes in [2, 16] (16 distinct shape x colour combinations).
        batch_size: clips per batch.
        num_train, num_val, num_test: clips per split (each split is balanced over the classes).
        seed: seeds the clips of every split and the training shuffle (non-negative).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        num_frames: int = 8,
        image_size: int = 32,
        audio_samples_per_frame: int = 64,
        num_classes: int = 8,
        batch_size: int = 16,
        num_train: int = 2048,
        num_val: int = 128,
        num_test: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_train, num_val, num_test, seed, num_workers)
        _check_clip_args(num_frames, image_size, audio_samples_per_frame, num_classes)
        self.save_hyperparameters()
        self.num_frames, self.image_size = num_frames, image_size
        self.audio_samples_per_frame, self.num_classes = audio_samples_per_frame, num_classes
        self.audio_samples = num_frames * audio_samples_per_frame

    def make_dataset(self, split: Split, size: int) -> SyntheticClips:
        return SyntheticClips(size, self.num_frames, self.image_size, self.audio_samples_per_frame, self.num_classes,
                              self.seed, split)
