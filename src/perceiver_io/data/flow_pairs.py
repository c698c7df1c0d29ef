"""FlyingChairs-style optical-flow pairs, generated at run time from the two photographs that ship with scikit-learn
(``china.jpg`` and ``flower.jpg``, :func:`sample_photos`), as a dataset and a Lightning data module.

A pair is a stack of layers composited in a fixed depth order: a background (a crop of one photo) and 2-4 foreground
segments on top of it, each a shape (an ellipse, a star-shaped polygon or a "chair", a smooth random blob) filled with
a colour-jittered texture cut from a photo. Every layer ``l`` has its own random affine motion ``B_l`` (a small
rotation and zoom about its centre plus a translation, in frame-pixel coordinates) from frame 1 to frame 2:

* Both frames are rendered by *backward* warping: a pixel ``p`` of frame ``k`` of layer ``l`` shows the layer's
  texture at ``G_l(A_kl^-1(p))`` (bilinear ``grid_sample``), where ``A_1l`` places the layer's object coordinates in
  frame 1, ``A_2l = B_l A_1l`` and ``G_l`` maps object coordinates to texture pixels. The shape test is analytic in
  object coordinates, so a segment's outline moves exactly with its texture.
* The forward flow at a pixel ``p`` of frame 1 is ``A_2l(A_1l^-1(p)) - p = B_l(p) - p`` for the topmost layer ``l``
  covering ``p`` in frame 1: exact, from the affine maps, not estimated.
* ``valid`` is False where the point is occluded or leaves the frame: where ``p + flow(p)`` (rounded to the nearest
  pixel) falls outside frame 2, or frame 2 shows another layer there.

Pairs are generated from a seed alone (numpy draws the scene, torch renders whole images at once), so every split is
deterministic and nothing is downloaded or stored; a 64x96 pair takes a few milliseconds on one CPU thread.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..core.validation import check_choice, check_positive
from .generated import SPLITS, GeneratedDataModule, Split

__all__ = ["MOTIONS", "SyntheticFlowDataModule", "SyntheticFlowPairs", "render_pair", "sample_photos"]

MIN_SIDE = 8  # the smallest frame side: below this a segment is a pixel or two and the flow says little
_NUM_SEGMENTS = (2, 4)  # inclusive range of foreground segments per pair
_SHAPES = ("ellipse", "polygon", "chair")
MOTIONS = ("affine", "translation")
"""Layer motion models of :func:`render_pair`."""
#: The photos are resized (anti-aliased) so a frame covers about half of each side of the texture: the background crop
#: then shows a recognisable part of a photo, and texture magnifications near 1 avoid aliasing and blur.
_TEXTURE_SCALE = 2.0
_TEXTURE_BLUR = 0.7  # Gaussian sigma in texture pixels, see _textures
_TEXTURE_TRIES = 6  # random texture spots per segment, the busiest is used (see _texture_detail)
# Shares of max_flow a motion may spend on translation, rotation and zoom at its largest radius; they add to 1, so
# |B(p) - p| <= max_flow on the layer (|R(a) s - I| <= |s - 1| + s |a|, and s <= 1 + 0.15 keeps the sum near 1).
_TRANSLATION_SHARE, _ROTATION_SHARE, _ZOOM_SHARE = 0.6, 0.25, 0.13


@functools.lru_cache(maxsize=1)
def _decoded_photos() -> torch.Tensor:
    # Imported here: scikit-learn is only needed for the photos, and its import takes about a second.
    from sklearn.datasets import load_sample_images

    images = np.stack(load_sample_images().images)  # [2, 427, 640, 3] uint8: china, flower
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def sample_photos() -> torch.Tensor:
    """``[2, 3, 427, 640]`` float32 in ``[0, 1]``: scikit-learn's ``china.jpg`` and ``flower.jpg``, RGB.

    The JPEGs are decoded once per process and cached; each call returns a fresh copy, so callers may modify it.
    """
    return _decoded_photos().clone()


@functools.lru_cache(maxsize=8)
def _textures(height: int, width: int) -> torch.Tensor:
    """``[2, 3, h, w]`` float32: the photos resized (aspect kept) so a ``height x width`` frame covers about half of
    each side (:data:`_TEXTURE_SCALE`). Cached per frame size; read only."""
    photos = _decoded_photos()
    factor = _TEXTURE_SCALE * max(height / photos.shape[-2], width / photos.shape[-1])
    size = (round(photos.shape[-2] * factor), round(photos.shape[-1] * factor))
    textures = F.interpolate(photos, size=size, mode="bilinear", antialias=factor < 1, align_corners=False)
    # A slight blur (sigma _TEXTURE_BLUR texture pixels) removes the near-Nyquist detail that bilinear resampling
    # attenuates differently at every sub-pixel offset: without it, the two frames of a pair differ by more than the
    # motion (warping frame 2 back with the exact flow would leave visible residuals on busy texture).
    radius = math.ceil(3 * _TEXTURE_BLUR)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / _TEXTURE_BLUR) ** 2)
    taps = (taps / taps.sum()).expand(3, 1, -1)
    textures = F.conv2d(F.pad(textures, (radius, radius, 0, 0), mode="reflect"), taps[:, :, None], groups=3)
    textures = F.conv2d(F.pad(textures, (0, 0, radius, radius), mode="reflect"), taps[:, :, :, None], groups=3)
    return textures.clamp_(0, 1).contiguous()


@functools.lru_cache(maxsize=8)
def _texture_detail(height: int, width: int) -> np.ndarray:
    """``[2, h, w]`` float32: the local standard deviation (grey level, over a window about a segment wide) of
    :func:`_textures`, to cut segment textures from busy parts of the photos. Cached per frame size; read only."""
    grey = _textures(height, width).mean(1, keepdim=True)  # [2, 1, h, w]
    window = 2 * max(1, round(0.15 * min(height, width))) + 1
    mean = F.avg_pool2d(grey, window, 1, window // 2, count_include_pad=False)
    square = F.avg_pool2d(grey * grey, window, 1, window // 2, count_include_pad=False)
    return (square - mean * mean).clamp_(min=0).sqrt_()[:, 0].numpy()


def _check_size(size: object) -> tuple[int, int]:
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= MIN_SIDE for s in size))
    if not ok:
        raise ValueError(f"size: expected (height, width), two ints >= {MIN_SIDE}, got {size!r}")
    return int(size[0]), int(size[1])


def _check_max_flow(max_flow: object) -> float:
    ok = isinstance(max_flow, (int, float)) and not isinstance(max_flow, bool) and math.isfinite(max_flow)
    if not ok or max_flow <= 0:
        raise ValueError(f"max_flow: expected a positive finite number of pixels, got {max_flow!r}")
    return float(max_flow)


def _affine(angle: float = 0.0, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``[3, 3]`` float64 homogeneous map ``x -> shift + scale * R(angle) x`` on ``(x, y)`` column vectors."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]], [0.0, 0.0, 1.0]])


def _motion(rng: np.random.Generator, centre: np.ndarray, radius: float, max_flow: float,
            kind: str = "affine") -> np.ndarray:
    """``[3, 3]`` float64: a random frame-1 -> frame-2 motion that rotates and zooms about ``centre`` and translates,
    moving no point within ``radius`` of ``centre`` by much more than ``max_flow`` pixels; ``kind="translation"``:
    a translation of up to ``max_flow`` pixels only (one flow vector per layer)."""
    if kind == "translation":
        direction = rng.uniform(0, 2 * math.pi)
        length = max_flow * math.sqrt(rng.uniform())  # uniform over the disc of radius max_flow
        return _affine(shift=(length * math.cos(direction), length * math.sin(direction)))
    radius = max(radius, 1.0)
    # Clipped so a large max_flow does not spin or blow up a layer: beyond this it should translate instead.
    angle = rng.uniform(-1, 1) * min(_ROTATION_SHARE * max_flow / radius, 0.3)
    zoom = 1.0 + rng.uniform(-1, 1) * min(_ZOOM_SHARE * max_flow / radius, 0.2)
    direction = rng.uniform(0, 2 * math.pi)
    # sqrt: uniform over the disc, so small and large translations are both common (as in FlyingChairs).
    length = _TRANSLATION_SHARE * max_flow * math.sqrt(rng.uniform())
    shift = centre + length * np.array([math.cos(direction), math.sin(direction)])
    return _affine(angle, zoom, tuple(shift)) @ _affine(shift=tuple(-centre))


def _shape_params(rng: np.random.Generator, kind: str, radius: float) -> dict[str, np.ndarray | float | str]:
    """The random outline of a segment in its object coordinates (centred on 0, inside the disc of ``radius``)."""
    if kind == "ellipse":
        return {"kind": kind, "a": radius, "b": radius * rng.uniform(0.4, 1.0)}
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        # Gaps within 0.7-1.3 of the mean keep every sector under pi, so the polygon stays star-shaped about 0.
        gaps = rng.uniform(0.7, 1.3, n)
        angles = np.cumsum(gaps / gaps.sum() * 2 * math.pi) - rng.uniform(0, 2 * math.pi / n)
        angles = np.sort(np.mod(angles, 2 * math.pi))
        radii = radius * rng.uniform(0.5, 1.0, n)
        vertices = np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)  # [n, 2], counter-clockwise
        return {"kind": kind, "angles": angles, "vertices": vertices}
    # "chair": a star-shaped blob whose radius is a random low-order Fourier series in the polar angle.
    k = np.arange(1, 5)
    amplitude = rng.uniform(0, 0.35, 4) / k
    phase = rng.uniform(0, 2 * math.pi, 4)
    theta = np.linspace(0, 2 * math.pi, 512, endpoint=False)
    profile = 1.0 + (amplitude[:, None] * np.cos(k[:, None] * theta + phase[:, None])).sum(0)
    # Normalised so the largest radius is `radius` (the motion's flow bound assumes the segment fits that disc).
    return {"kind": kind, "k": k, "amplitude": amplitude, "phase": phase, "scale": radius / profile.max()}


def _inside(shape: dict, xy: torch.Tensor) -> torch.Tensor:
    """``[...]`` bool: whether the object coordinates ``xy [..., 2]`` lie inside ``shape`` (:func:`_shape_params`)."""
    x, y = xy[..., 0], xy[..., 1]
    if shape["kind"] == "ellipse":
        return (x / shape["a"]) ** 2 + (y / shape["b"]) ** 2 <= 1.0
    theta = torch.atan2(y, x).remainder(2 * math.pi)
    if shape["kind"] == "polygon":
        angles = torch.from_numpy(shape["angles"]).to(xy.dtype)
        vertices = torch.from_numpy(shape["vertices"]).to(xy.dtype)
        n = len(angles)
        # The sector between vertices j and j+1 holding the point; a point before the first vertex is in the last.
        j = (torch.bucketize(theta, angles, right=True) - 1).remainder(n)
        start, end = vertices[j], vertices[(j + 1) % n]
        edge, offset = end - start, xy - start
        # Left of (or on) the counter-clockwise edge = on the origin's side of it.
        return edge[..., 0] * offset[..., 1] - edge[..., 1] * offset[..., 0] >= 0
    k = torch.from_numpy(shape["k"]).to(xy.dtype)
    harmonics = torch.cos(theta[..., None] * k + torch.from_numpy(shape["phase"]).to(xy.dtype))
    radius = shape["scale"] * (1.0 + harmonics @ torch.from_numpy(shape["amplitude"]).to(xy.dtype))
    return x * x + y * y <= radius * radius


def render_pair(
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 96),
    max_flow: float = 8.0,
    *,
    num_segments: int | None = None,
    motion: str = "affine",
    return_layers: bool = False,
) -> dict[str, torch.Tensor]:
    """One random pair of frames with its exact forward flow, drawn from ``rng`` alone.

    Args:
        rng: the only source of randomness (the same state gives the same pair).
        size: ``(H, W)``, both at least :data:`MIN_SIDE`.
        max_flow: the flow magnitude bound in pixels: every layer's motion moves the points of that layer by at most
            about ``max_flow`` (translation up to ``0.6 max_flow`` plus rotation and zoom about the layer's centre).
        num_segments: foreground segments; None draws 2-4, 0 gives a pure background pair (one global affine flow).
        motion: ``"affine"`` (each layer rotates and zooms about its centre and translates, as FlyingChairs'
            segments do) or ``"translation"`` (each layer only translates, by up to ``max_flow`` pixels: piecewise
            constant flow, an easier problem).
        return_layers: also return ``layers [2, H, W]`` int64 (the layer visible at each pixel of each frame: 0 the
            background, ``1..n`` the segments bottom to top) and ``motions [n + 1, 3, 3]`` float64 (each layer's
            frame-1 -> frame-2 map ``B_l`` on homogeneous ``(x, y, 1)`` pixel coordinates), for tests and debugging.

    Returns:
        ``frames [2, 3, H, W]`` float32 in ``[-1, 1]`` (the flow model's input range), ``flow [2, H, W]`` float32
        (x then y, in pixels, frame 1 -> frame 2; pixel centres at integer coordinates) and ``valid [H, W]`` bool
        (the point is visible in both frames and stays inside frame 2).
    """
    height, width = _check_size(size)
    max_flow = _check_max_flow(max_flow)
    if num_segments is None:
        num_segments = int(rng.integers(_NUM_SEGMENTS[0], _NUM_SEGMENTS[1] + 1))
    check_positive("num_segments", num_segments, allow_zero=True)
    check_choice("motion", motion, MOTIONS)
    motion_kind = motion  # the name `motion` is the list of layer motions below
    textures = _textures(height, width)
    tex_h, tex_w = textures.shape[-2:]
    frame_centre = np.array([(width - 1) / 2, (height - 1) / 2])

    # Per layer: which photo, frame-1 placement A_1 (object -> frame), motion B (frame 1 -> frame 2),
    # texture map G (object -> texture pixels), outline (None = everywhere) and a colour jitter.
    photo, place, motion, texture_map, outlines, gain, bias = [], [], [], [], [], [], []

    # Background: object coordinates are frame-1 pixels; G is a random similarity onto a crop of a photo.
    photo.append(int(rng.integers(2)))
    place.append(np.eye(3))
    motion.append(_motion(rng, frame_centre, float(np.hypot(*frame_centre)), max_flow, motion_kind))
    angle, scale = rng.uniform(-0.2, 0.2), rng.uniform(0.8, 1.25)
    # The crop's centre keeps the rotated, scaled frame inside the texture when it fits (else reflection covers it).
    half_w = 0.5 * scale * (width * abs(math.cos(angle)) + height * abs(math.sin(angle)))
    half_h = 0.5 * scale * (width * abs(math.sin(angle)) + height * abs(math.cos(angle)))
    centre = [rng.uniform(min(half, (n - 1) / 2), max(n - 1 - half, (n - 1) / 2))
              for half, n in ((half_w, tex_w), (half_h, tex_h))]
    texture_map.append(_affine(angle, scale, tuple(centre)) @ _affine(shift=tuple(-frame_centre)))
    outlines.append(None)
    gain.append(np.ones(3))
    bias.append(np.zeros(3))

    for _ in range(num_segments):
        radius = min(height, width) * rng.uniform(0.15, 0.35)
        centre = np.array([rng.uniform(0.1, 0.9) * (width - 1), rng.uniform(0.1, 0.9) * (height - 1)])
        outlines.append(_shape_params(rng, _SHAPES[int(rng.integers(len(_SHAPES)))], radius))
        photo.append(int(rng.integers(2)))
        place.append(_affine(rng.uniform(0, 2 * math.pi), 1.0, tuple(centre)))
        motion.append(_motion(rng, centre, radius, max_flow, motion_kind))
        scale = rng.uniform(0.8, 1.25)
        reach = radius * scale
        # The busiest of a few random spots: flat patches (sky, blurred background) would make featureless segments
        # whose motion is ambiguous (the aperture problem).
        spots = np.stack([rng.uniform(reach, tex_w - 1 - reach, _TEXTURE_TRIES),
                          rng.uniform(reach, tex_h - 1 - reach, _TEXTURE_TRIES)], 1)  # [tries, 2] (x, y)
        detail = _texture_detail(height, width)[photo[-1]]
        cells = np.round(spots).astype(np.int64)
        spot = tuple(spots[int(detail[cells[:, 1], cells[:, 0]].argmax())])
        texture_map.append(_affine(rng.uniform(0, 2 * math.pi), scale, spot))
        # new = bias + gain * old with bias <= 1 - gain stays in [0, 1] and, being affine, commutes with bilinear
        # sampling, so jittering after sampling equals jittering the texture.
        g = rng.uniform(0.7, 1.0, 3)  # no lower: weaker contrast washes the texture out
        gain.append(g)
        bias.append(rng.uniform(0, 1, 3) * (1 - g))

    num_layers = num_segments + 1
    place_np, motion_np, texture_np = np.stack(place), np.stack(motion), np.stack(texture_map)  # [L, 3, 3] each
    # frame k -> object coordinates: A_k^-1, with A_1 = place and A_2 = B A_1.
    to_object = np.stack([np.linalg.inv(place_np), np.linalg.inv(motion_np @ place_np)])  # [2, L, 3, 3]
    to_texture = texture_np[None] @ to_object  # [2, L, 3, 3]

    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # [H, W, 3] homogeneous (x, y, 1)
    object_xy = torch.einsum("klij,hwj->klhwi", torch.from_numpy(to_object[..., :2, :]), pixels)  # [2, L, H, W, 2]
    texture_xy = torch.einsum("klij,hwj->klhwi", torch.from_numpy(to_texture[..., :2, :]), pixels)

    # grid_sample with align_corners=True puts -1 / +1 on the centres of the first / last texture pixel; reflection
    # padding keeps the texture a fixed (continuous) function of its coordinates, so warps stay consistent off-crop.
    norm = torch.tensor([2.0 / (tex_w - 1), 2.0 / (tex_h - 1)], dtype=torch.float64)
    grid = (texture_xy * norm - 1.0).float().reshape(2 * num_layers, height, width, 2)
    source = textures[torch.tensor(photo)].repeat(2, 1, 1, 1)  # [2L, 3, h, w], frame-major like `grid`
    colour = F.grid_sample(source, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    colour = colour.reshape(2, num_layers, 3, height, width)
    colour = colour * torch.tensor(np.stack(gain), dtype=torch.float32)[:, :, None, None]
    colour = colour + torch.tensor(np.stack(bias), dtype=torch.float32)[:, :, None, None]

    covered = torch.ones(2, num_layers, height, width, dtype=torch.bool)
    for layer in range(1, num_layers):  # one whole-image test per segment (at most 4)
        covered[:, layer] = _inside(outlines[layer], object_xy[:, layer])
    # Later layers lie on top, so the visible layer is the highest index covering the pixel (the background covers all).
    layers = (covered * torch.arange(num_layers)[:, None, None]).amax(1)  # [2, H, W] int64
    frames = colour.gather(1, layers[:, None, None].expand(2, 1, 3, height, width)).squeeze(1)  # [2, 3, H, W]

    # Each layer's exact flow B_l(p) - p, then the one of the layer visible in frame 1.
    moved = torch.einsum("lij,hwj->lihw", torch.from_numpy(motion_np[:, :2, :]), pixels)  # [L, 2, H, W]
    layer_flow = moved - pixels[..., :2].permute(2, 0, 1)
    flow = layer_flow.gather(0, layers[0][None, None].expand(1, 2, height, width)).squeeze(0)  # [2, H, W] float64

    target_x, target_y = torch.round(xs + flow[0]).long(), torch.round(ys + flow[1]).long()
    inside = (target_x >= 0) & (target_x < width) & (target_y >= 0) & (target_y < height)
    seen = layers[1][target_y.clamp(0, height - 1), target_x.clamp(0, width - 1)]
    valid = inside & (seen == layers[0])

    pair = {"frames": (frames * 2.0 - 1.0).clamp_(-1.0, 1.0), "flow": flow.float(), "valid": valid}
    if return_layers:
        pair["layers"] = layers
        pair["motions"] = torch.from_numpy(motion_np)
    return pair


class SyntheticFlowPairs(Dataset):
    """``num_pairs`` generated flow pairs of one split; item ``i`` is the same on every call and in every process.

    Pair ``i`` is :func:`render_pair` with ``np.random.default_rng([seed, split_index, i])`` (``split_index`` 0/1/2
    for train/val/test, so the splits are independent streams). Items are rendered on access (no caching): a 64x96
    pair takes a few milliseconds.

    Items are dicts ``frames [2, 3, H, W]`` float32 in ``[-1, 1]``, ``flow [2, H, W]`` float32 (x, y pixels, frame 1
    -> frame 2) and ``valid [H, W]`` bool.
    """

    def __init__(self, num_pairs: int, size: tuple[int, int] = (64, 96), max_flow: float = 8.0, seed: int = 0,
                 split: Split = "train", motion: str = "affine") -> None:
        check_positive("num_pairs", num_pairs)
        self.size = _check_size(size)
        self.max_flow = _check_max_flow(max_flow)
        check_positive("seed", seed, allow_zero=True)  # numpy's SeedSequence takes non-negative ints only
        check_choice("split", split, SPLITS)
        check_choice("motion", motion, MOTIONS)
        self.num_pairs, self.seed, self.split, self.motion = num_pairs, seed, split, motion

    def __len__(self) -> int:
        return self.num_pairs

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.num_pairs <= index < self.num_pairs:
            raise IndexError(f"index: expected in [{-self.num_pairs}, {self.num_pairs}), got {index}")
        index = int(index) % self.num_pairs
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        return render_pair(rng, self.size, self.max_flow, motion=self.motion)


class SyntheticFlowDataModule(GeneratedDataModule):
    """Generated FlyingChairs-style flow pairs (:class:`SyntheticFlowPairs`), batched by ``default_collate``.

    Batches are dicts ``frames [B, 2, 3, H, W]`` (in ``[-1, 1]``), ``flow [B, 2, H, W]`` and ``valid [B, H, W]``.
    The three splits are fixed by ``seed``; the training order is shuffled by a generator seeded with ``seed`` (the
    same for a fresh DataLoader).

    Args:
        size: ``(H, W)`` of the frames.
        max_flow: the flow magnitude bound in pixels (see :func:`render_pair`).
        motion: ``"affine"`` or ``"translation"`` layer motions (see :func:`render_pair`).
        batch_size: pairs per batch.
        num_train, num_val, num_test: pairs per split.
        seed: seeds the pairs of every split and the training shuffle (non-negative).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        size: tuple[int, int] = (64, 96),
        max_flow: float = 8.0,
        motion: str = "affine",
        batch_size: int = 8,
        num_train: int = 4096,
        num_val: int = 128,
        num_test: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_train, num_val, num_test, seed, num_workers)
        self.size = _check_size(size)
        self.max_flow = _check_max_flow(max_flow)
        check_choice("motion", motion, MOTIONS)
        self.motion = motion
        self.save_hyperparameters()
        self.image_shape: tuple[int, int, int] = (3, *self.size)

    def make_dataset(self, split: Split, size: int) -> SyntheticFlowPairs:
        return SyntheticFlowPairs(size, self.size, self.max_flow, self.seed, split, self.motion)
