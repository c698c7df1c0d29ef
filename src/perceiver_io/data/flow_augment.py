"""Training augmentation for optical-flow pairs in the style of RAFT / AutoFlow: spatial (random zoom and stretch,
flips, a random crop of fixed size) and photometric (colour jitter, eraser), with the flow kept consistent with the
frames.

One call takes a pair of uint8 frames ``[2, 3, H, W]``, its flow ``[2, H, W]`` (x then y, pixels, frame 1 -> frame 2)
and optionally a validity mask ``[H, W]``, and returns all three cropped to ``crop_size``:

* Spatial: with probability ``spatial_prob`` both frames are resized by a zoom ``2**s``, ``s`` uniform in
  ``[min_scale, max_scale]`` (log-uniform zoom), each axis further stretched by ``2**t`` (``t`` uniform in
  ``[-max_stretch, max_stretch]``, drawn per axis) with probability ``stretch_prob``. The flow's x / y components are
  multiplied by the exact ratio of new to old width / height, so a point that moves by ``u`` pixels moves by
  ``u * new_w / old_w`` after the resize (``align_corners=False`` geometry: pixel centres at ``(i + 0.5) * ratio -
  0.5``). A side is never made smaller than the crop (frames smaller than the crop are enlarged just enough). Then
  a horizontal flip (probability ``hflip_prob``) mirrors frames, flow and mask and negates the flow's x component; a
  vertical flip (``vflip_prob``) negates y. Last, a uniformly placed ``crop_size`` window.
* Photometric, on the crop: torchvision-style colour jitter (brightness, contrast, saturation, hue, in a random
  order); with probability ``asymmetric_prob`` each frame gets its own jitter, else one jitter is drawn for both.
  With probability ``eraser_prob``, 1 to ``max_erased`` rectangles (sides uniform in ``eraser_size``) of frame 2
  are filled with its mean colour, which simulates occlusions that the flow does not explain.

Differences from RAFT (all small): the photometric steps run after the crop (cheaper on large frames; contrast
then uses the crop's mean grey, the eraser's rectangles and fill colour are those of the crop); each axis is
clamped to the crop separately instead of both to the larger minimum zoom, and without RAFT's extra 8-pixel margin;
the sparse crop is placed uniformly (RAFT lets it start up to 50 px outside the frame and then clamps it).

:class:`FlowAugmentation` is for dense ground truth (FlyingChairs, FlyingThings3D, Sintel): the flow is resized by
bilinear interpolation. :class:`SparseFlowAugmentation` is for sparse ground truth with a validity mask (KITTI,
HD1K): valid flow vectors are moved to their new positions instead (:func:`resize_sparse_flow`).

Every random draw comes from one ``torch.Generator`` (or an int seed), so a call is reproducible; the ops are
``torchvision.transforms.v2.functional`` ones on tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..core.validation import check_tensor

__all__ = ["FlowAugmentation", "SparseFlowAugmentation", "resize_dense_flow", "resize_sparse_flow"]

Generatorish = torch.Generator | int | None
_BILINEAR = InterpolationMode.BILINEAR
#: A resized mask value below this counts as touched by an invalid pixel (bilinear weights sum to 1 up to rounding).
_FULLY_VALID = 1.0 - 1e-3


# ---------------------------------------------------------------------------------------------------- flow resizing


def _check_size(name: str, size: object) -> tuple[int, int]:
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size))
    if not ok:
        raise ValueError(f"{name}: expected (height, width), two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _check_flow(flow: object, valid: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    flow = check_tensor("flow", flow, (2, "H", "W"), floating=True)
    if valid is not None:
        valid = check_tensor("valid", valid, tuple(flow.shape[1:]), boolean_or_integer=True)
        valid = valid if valid.dtype == torch.bool else valid != 0
    return flow, valid


def resize_dense_flow(flow: torch.Tensor, valid: torch.Tensor | None, size: tuple[int, int]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a dense flow field to ``size = (h, w)``: bilinear (anti-aliased when shrinking), values scaled.

    Args:
        flow: ``[2, H, W]`` float, x then y, in pixels.
        valid: ``[H, W]`` bool, or None (every pixel valid).
        size: the new ``(h, w)``.

    Returns:
        ``flow [2, h, w]`` float32, x multiplied by ``w / W`` and y by ``h / H`` (the exact ratio of the sizes, so
        the flow stays consistent with frames resized to the same size), and ``valid [h, w]`` bool: a new pixel is
        valid only where every old pixel it interpolates from was valid (invalid pixels hold 0 flow, which would
        otherwise leak into their neighbours).
    """
    flow, valid = _check_flow(flow, valid)
    new_h, new_w = _check_size("size", size)
    height, width = flow.shape[-2:]
    flow = flow.float()
    if valid is not None:
        flow = torch.where(valid, flow, 0.0)  # also keeps NaN / inf of invalid pixels from spreading
    scale = torch.tensor([new_w / width, new_h / height], dtype=torch.float32)[:, None, None]
    resized = TF.resize(flow, [new_h, new_w], interpolation=_BILINEAR, antialias=True) * scale
    if valid is None or bool(valid.all()):
        return resized, torch.ones(new_h, new_w, dtype=torch.bool)
    mask = TF.resize(valid[None].float(), [new_h, new_w], interpolation=_BILINEAR, antialias=True)[0]
    new_valid = mask >= _FULLY_VALID
    return torch.where(new_valid, resized, 0.0), new_valid


def resize_sparse_flow(flow: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a sparse flow field (KITTI, HD1K) to ``size = (h, w)`` by moving each valid vector to its new pixel.

    Interpolating sparse ground truth would be wrong: KITTI's invalid pixels hold no measurement (0 or -512 in the
    file), so a bilinear resize blends them into every valid neighbour, and a resized mask cannot tell which output
    values are genuine measurements. Instead each valid pixel ``(x, y)`` goes to the nearest new pixel to its exact
    new position ``((x + 0.5) * w / W - 0.5, (y + 0.5) * h / H - 0.5)`` with its flow scaled by ``(w / W, h / H)``;
    every other new pixel is invalid (0 flow). When shrinking, several vectors may land on one pixel: the one
    closest to the pixel centre wins (ties: the first in row-major order), so the result is deterministic. When
    enlarging, the valid pixels get sparser, as they are.

    Args:
        flow: ``[2, H, W]`` float, x then y, in pixels.
        valid: ``[H, W]`` bool (or 0/1).
        size: the new ``(h, w)``.

    Returns:
        ``flow [2, h, w]`` float32 (0 where invalid) and ``valid [h, w]`` bool.
    """
    flow, valid = _check_flow(flow, valid)
    if valid is None:
        raise ValueError("valid: a sparse flow field needs its [H, W] validity mask, got None")
    new_h, new_w = _check_size("size", size)
    height, width = flow.shape[-2:]
    scale_x, scale_y = new_w / width, new_h / height
    ys, xs = valid.nonzero(as_tuple=True)
    exact_x = (xs.double() + 0.5) * scale_x - 0.5
    exact_y = (ys.double() + 0.5) * scale_y - 0.5
    new_x, new_y = torch.round(exact_x).long(), torch.round(exact_y).long()
    inside = (new_x >= 0) & (new_x < new_w) & (new_y >= 0) & (new_y < new_h)
    xs, ys, new_x, new_y = xs[inside], ys[inside], new_x[inside], new_y[inside]
    distance = (exact_x[inside] - new_x) ** 2 + (exact_y[inside] - new_y) ** 2

    # The closest vector per target pixel: sort by distance (stable, so row-major order breaks ties), then keep
    # each target's first entry in that order.
    order = torch.argsort(distance, stable=True)
    target = (new_y * new_w + new_x)[order]
    unique, inverse = torch.unique(target, return_inverse=True)
    positions = torch.arange(len(target))
    first = torch.full((len(unique),), len(target), dtype=torch.long).scatter_reduce(0, inverse, positions, "amin")
    keep = order[first]

    out = torch.zeros(2, new_h, new_w, dtype=torch.float32)
    out_valid = torch.zeros(new_h, new_w, dtype=torch.bool)
    vectors = flow[:, ys[keep], xs[keep]].float() * torch.tensor([[scale_x], [scale_y]], dtype=torch.float32)
    out[:, new_y[keep], new_x[keep]] = vectors
    out_valid[new_y[keep], new_x[keep]] = True
    return out, out_valid


# ------------------------------------------------------------------------------------------------------ random draws


def _make_generator(generator: Generatorish) -> torch.Generator:
    """``generator`` itself, one seeded with an int, or (None) one seeded from the global torch RNG, so that
    ``seed_everything`` (or PyTorch's per-worker seeding) governs unseeded calls."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = int(torch.randint(0, 2**62, ()))
    if not isinstance(generator, int) or isinstance(generator, bool):
        raise TypeError(f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return torch.Generator().manual_seed(generator)


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * _rand(g)


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Uniform in ``[low, high)``."""
    return int(torch.randint(low, high, (), generator=g))


# ------------------------------------------------------------------------------------------------------ augmentation


class FlowAugmentation:
    """RAFT-style training augmentation of a flow pair with dense ground truth (see the module docstring).

    ``augment(frames, flow, valid=None, generator=None) -> (frames, flow, valid)``: ``frames [2, 3, H, W]`` uint8,
    ``flow [2, H, W]`` float (x, y pixels), ``valid [H, W]`` bool or None (all valid) in; ``frames [2, 3, h, w]``
    uint8, ``flow [2, h, w]`` float32 (0 where invalid) and ``valid [h, w]`` bool out, with ``(h, w) = crop_size``.
    ``generator``: a ``torch.Generator``, an int seed, or None (a seed drawn from the global torch RNG).

    The defaults are RAFT's dense (FlyingChairs / FlyingThings3D / Sintel) augmentor's; 0 turns a probability or a
    jitter strength off, so ``FlowAugmentation(crop, spatial_prob=0, hflip_prob=0, vflip_prob=0, brightness=0,
    contrast=0, saturation=0, hue=0, eraser_prob=0)`` is a plain random crop.

    Args:
        crop_size: ``(h, w)`` of the output.
        min_scale, max_scale: the range of ``log2`` of the zoom (-0.2, 0.5: about 0.87x to 1.41x).
        spatial_prob: probability of a zoom at all (0.8).
        stretch_prob: probability of an extra per-axis stretch when zooming (0.8).
        max_stretch: the range ``[-max_stretch, max_stretch]`` of ``log2`` of that stretch (0.2).
        hflip_prob, vflip_prob: probabilities of a horizontal (0.5) and a vertical (0.1) flip.
        brightness, contrast, saturation: jitter factors drawn from ``[max(0, 1 - v), 1 + v]`` (0.4 each).
        hue: hue shift drawn from ``[-hue, hue]``, at most 0.5 (0.5 / pi, as RAFT).
        asymmetric_prob: probability of jittering each frame independently (0.2).
        eraser_prob: probability of erasing rectangles of frame 2 (0.5).
        eraser_size: ``(min, max)`` side of an erased rectangle in pixels (50, 100).
        max_erased: at most this many rectangles (2); at least one when erasing.
    """

    sparse: bool = False
    """Whether the ground truth is sparse (resized with :func:`resize_sparse_flow` instead of interpolated)."""

    def __init__(
        self,
        crop_size: tuple[int, int],
        *,
        min_scale: float = -0.2,
        max_scale: float = 0.5,
        spatial_prob: float = 0.8,
        stretch_prob: float = 0.8,
        max_stretch: float = 0.2,
        hflip_prob: float = 0.5,
        vflip_prob: float = 0.1,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.5 / math.pi,
        asymmetric_prob: float = 0.2,
        eraser_prob: float = 0.5,
        eraser_size: tuple[int, int] = (50, 100),
        max_erased: int = 2,
    ) -> None:
        self.crop_size = _check_size("crop_size", crop_size)
        for name, value in (("min_scale", min_scale), ("max_scale", max_scale), ("max_stretch", max_stretch)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number (a log2 zoom), got {value!r}")
        if min_scale > max_scale:
            raise ValueError(f"min_scale, max_scale: expected min_scale <= max_scale, got {min_scale} > {max_scale}")
        if max_stretch < 0:
            raise ValueError(f"max_stretch: expected >= 0, got {max_stretch}")
        for name, value in (("spatial_prob", spatial_prob), ("stretch_prob", stretch_prob),
                            ("hflip_prob", hflip_prob), ("vflip_prob", vflip_prob),
                            ("asymmetric_prob", asymmetric_prob), ("eraser_prob", eraser_prob)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise ValueError(f"{name}: expected a finite jitter strength >= 0, got {value!r}")
        if not isinstance(hue, (int, float)) or isinstance(hue, bool) or not 0 <= hue <= 0.5:
            raise ValueError(f"hue: expected a hue shift bound in [0, 0.5], got {hue!r}")
        low, high = _check_size("eraser_size", eraser_size)
        if low > high:
            raise ValueError(f"eraser_size: expected (min, max) with min <= max, got {eraser_size!r}")
        if not isinstance(max_erased, int) or isinstance(max_erased, bool) or max_erased < 1:
            raise ValueError(f"max_erased: expected a positive int, got {max_erased!r}")
        self.min_scale, self.max_scale, self.max_stretch = float(min_scale), float(max_scale), float(max_stretch)
        self.spatial_prob, self.stretch_prob = float(spatial_prob), float(stretch_prob)
        self.hflip_prob, self.vflip_prob = float(hflip_prob), float(vflip_prob)
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)
        self.asymmetric_prob, self.eraser_prob = float(asymmetric_prob), float(eraser_prob)
        self.eraser_size, self.max_erased = (low, high), max_erased

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def __call__(
        self,
        frames: torch.Tensor,
        flow: torch.Tensor,
        valid: torch.Tensor | None = None,
        generator: Generatorish = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_tensor("frames", frames, (2, 3, "H", "W"))
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames: expected uint8 pixels (0-255), got dtype {frames.dtype}")
        flow, valid = _check_flow(flow, valid)
        if tuple(flow.shape[1:]) != tuple(frames.shape[2:]):
            raise ValueError(f"flow: expected the frames' size [2, {frames.shape[2]}, {frames.shape[3]}], "
                             f"got {list(flow.shape)}")
        if valid is None:
            if self.sparse:
                raise ValueError("valid: sparse flow needs its [H, W] validity mask, got None")
            valid = torch.ones(flow.shape[1:], dtype=torch.bool)
        g = _make_generator(generator)
        frames, flow, valid = self._spatial(frames, flow.float(), valid, g)
        frames = self._photometric(frames, g)
        return frames.contiguous(), torch.where(valid, flow, 0.0).contiguous(), valid.contiguous()

    # -- spatial

    def _resize_flow(self, flow: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        return resize_dense_flow(flow, valid, size)

    def _spatial(self, frames: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor, g: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = flow.shape[-2:]
        crop_h, crop_w = self.crop_size
        log_x = log_y = 0.0
        if _rand(g) < self.spatial_prob:
            log_x = log_y = _uniform(g, self.min_scale, self.max_scale)
            if _rand(g) < self.stretch_prob:
                log_x += _uniform(g, -self.max_stretch, self.max_stretch)
                log_y += _uniform(g, -self.max_stretch, self.max_stretch)
        # Never below the crop: a frame smaller than the crop is enlarged just enough to hold it.
        new_h, new_w = max(crop_h, round(height * 2.0**log_y)), max(crop_w, round(width * 2.0**log_x))
        if (new_h, new_w) != (height, width):
            frames = TF.resize(frames, [new_h, new_w], interpolation=_BILINEAR, antialias=True)
            flow, valid = self._resize_flow(flow, valid, (new_h, new_w))
        if _rand(g) < self.hflip_prob:  # x -> W - 1 - x, so a motion u becomes -u
            frames, flow, valid = TF.horizontal_flip(frames), TF.horizontal_flip(flow), TF.horizontal_flip(valid)
            flow = flow * torch.tensor([-1.0, 1.0])[:, None, None]
        if _rand(g) < self.vflip_prob:
            frames, flow, valid = TF.vertical_flip(frames), TF.vertical_flip(flow), TF.vertical_flip(valid)
            flow = flow * torch.tensor([1.0, -1.0])[:, None, None]
        top, left = _randint(g, 0, new_h - crop_h + 1), _randint(g, 0, new_w - crop_w + 1)
        return (TF.crop(frames, top, left, crop_h, crop_w), TF.crop(flow, top, left, crop_h, crop_w),
                TF.crop(valid, top, left, crop_h, crop_w))

    # -- photometric

    def _jitter(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One colour jitter (factors and op order drawn from ``g``) applied to ``images [..., 3, H, W]`` uint8."""
        ops: list[tuple[Callable[[torch.Tensor, float], torch.Tensor], float]] = []
        for op, strength in ((TF.adjust_brightness, self.brightness), (TF.adjust_contrast, self.contrast),
                             (TF.adjust_saturation, self.saturation)):
            if strength > 0:
                ops.append((op, _uniform(g, max(0.0, 1.0 - strength), 1.0 + strength)))
        if self.hue > 0:
            ops.append((TF.adjust_hue, _uniform(g, -self.hue, self.hue)))
        for i in torch.randperm(len(ops), generator=g).tolist():
            op, factor = ops[i]
            images = op(images, factor)
        return images

    def _photometric(self, frames: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if _rand(g) < self.asymmetric_prob:
            frames = torch.stack([self._jitter(frames[0], g), self._jitter(frames[1], g)])
        else:
            frames = self._jitter(frames, g)  # one draw for both frames
        if _rand(g) < self.eraser_prob:
            frames = frames.clone()  # crops are views of the caller's tensor
            second = frames[1]
            fill = second.float().mean((1, 2)).round().to(torch.uint8)[:, None, None]
            height, width = second.shape[-2:]
            low, high = self.eraser_size
            for _ in range(_randint(g, 1, self.max_erased + 1)):
                top, left = _randint(g, 0, height), _randint(g, 0, width)
                box_h, box_w = _randint(g, low, high + 1), _randint(g, low, high + 1)
                # TF.erase writes whole rows / columns of the slice: clip the box to the frame first.
                TF.erase(second, top, left, min(box_h, height - top), min(box_w, width - left), fill, inplace=True)
        return frames


class SparseFlowAugmentation(FlowAugmentation):
    """:class:`FlowAugmentation` for sparse ground truth with a validity mask (KITTI, HD1K).

    The flow is resized by moving each valid vector (:func:`resize_sparse_flow`), not interpolated, and ``valid`` is
    required. The defaults are RAFT's sparse augmentor's: zoom ``log2`` in [-0.2, 0.4], no stretch, no vertical
    flip (road scenes are never upside down), weaker jitter (0.3, hue 0.3 / pi), never asymmetric. Arguments: as
    :class:`FlowAugmentation`.
    """

    sparse = True

    def __init__(
        self,
        crop_size: tuple[int, int],
        *,
        min_scale: float = -0.2,
        max_scale: float = 0.4,
        spatial_prob: float = 0.8,
        stretch_prob: float = 0.0,
        max_stretch: float = 0.2,
        hflip_prob: float = 0.5,
        vflip_prob: float = 0.0,
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        hue: float = 0.3 / math.pi,
        asymmetric_prob: float = 0.0,
        eraser_prob: float = 0.5,
        eraser_size: tuple[int, int] = (50, 100),
        max_erased: int = 2,
    ) -> None:
        super().__init__(
            crop_size, min_scale=min_scale, max_scale=max_scale, spatial_prob=spatial_prob,
            stretch_prob=stretch_prob, max_stretch=max_stretch, hflip_prob=hflip_prob, vflip_prob=vflip_prob,
            brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
            asymmetric_prob=asymmetric_prob, eraser_prob=eraser_prob, eraser_size=eraser_size,
            max_erased=max_erased)

    def _resize_flow(self, flow: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        return resize_sparse_flow(flow, valid, size)
