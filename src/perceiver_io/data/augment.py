"""Image augmentation for the official Perceiver IO ImageNet recipe (DESIGN.md, "Official ImageNet training recipe").

Per image (train): random resized crop (area 0.08-1, aspect 3/4-4/3, bicubic), horizontal flip, RandAugment
(4 layers, magnitude 5), ImageNet mean/std normalisation. Per image (eval): the central ``224/256`` of the short
side, bicubic resize. Per batch (train): MixUp (alpha 0.2) on the first half of the batch, CutMix (alpha 1.0) on the
second half, giving soft targets ``[B, num_classes]``.

Built on ``torchvision.transforms.v2``. Known differences from the official TensorFlow pipeline (all small):

- Order: the official code runs RandAugment on the crop at its native resolution and resizes afterwards; here the
  crop is resized first (torchvision's ``RandomResizedCrop``), so RandAugment's translations are relative to
  ``image_size`` (torchvision: up to 150/331 of the side; official: up to 100 px of the native crop).
- RandAugment's op list is torchvision's (Identity, shears, translations, rotate, brightness, color, contrast,
  sharpness, posterize, solarize, autocontrast, equalize); the official list also has Invert, Cutout and
  SolarizeAdd and no Identity. The magnitude scale is the official one (0..10, via ``num_magnitude_bins=11``, so
  magnitude 5 is half of each op's maximum), not torchvision's default 0..30; empty pixels are filled with grey 128
  as in the official code.
- MixUp / CutMix: torchvision draws one mixing ratio (one box) per half batch and pairs each image with its
  neighbour in that half (``roll(1)``); the official code draws a ratio per image and mixes with images from a
  second batch.
- The random crop's fallback after 10 failed draws is torchvision's (whole image, clamped aspect), not the official
  centre crop. Bicubic resizes of uint8 images are clamped to 0..255 (the official float resize is not).

Label smoothing (0.1 in the recipe) belongs to the loss: ``F.cross_entropy(logits, soft_targets,
label_smoothing=0.1)`` accepts the soft targets returned here.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import default_collate
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RANDAUGMENT_MAX_LEVEL = 10  # the official RandAugment magnitude scale is 0..10
EVAL_CROP_FRACTION = 224 / 256  # the official eval crop: 224 / (224 + 32) of the short side


class CenterCropFraction(torch.nn.Module):
    """Crop a centred square whose side is ``fraction`` of the image's short side, then resize it to ``size``.

    This is the official ImageNet eval crop (``fraction = 224/256``). The offsets follow the official code,
    ``((H - crop) + 1) // 2``, which differs from ``v2.CenterCrop``'s rounding by at most a pixel.
    Works on PIL images and on ``[..., H, W]`` tensors.
    """

    def __init__(self, size: int, fraction: float = EVAL_CROP_FRACTION,
                 interpolation: InterpolationMode = InterpolationMode.BICUBIC) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
        if size < 1:
            raise ValueError(f"crop output size must be >= 1, got {size}")
        self.size = int(size)
        self.fraction = float(fraction)
        self.interpolation = interpolation

    def forward(self, image: Any) -> Any:
        height, width = TF.get_size(image)
        crop = max(1, int(self.fraction * min(height, width)))
        top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
        image = TF.crop(image, top, left, crop, crop)
        return TF.resize(image, [self.size, self.size], interpolation=self.interpolation, antialias=True)

    def extra_repr(self) -> str:
        return f"size={self.size}, fraction={self.fraction:.4f}, interpolation={self.interpolation.value}"


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[torch.nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
            v2.ToPureTensor()]


def official_train_transform(
    image_size: int = 224,
    *,
    randaugment_layers: int = 4,
    randaugment_magnitude: int = 5,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The official per-image train augmentation: PIL image (or uint8 tensor) -> float tensor ``[3, S, S]``.

    ``randaugment_layers=0`` turns RandAugment off; ``randaugment_magnitude`` is on the official 0..10 scale.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if randaugment_layers < 0:
        raise ValueError(f"randaugment_layers must be >= 0, got {randaugment_layers}")
    if not 0 <= randaugment_magnitude <= RANDAUGMENT_MAX_LEVEL:
        raise ValueError(f"randaugment_magnitude must be in 0..{RANDAUGMENT_MAX_LEVEL} (the official scale), "
                         f"got {randaugment_magnitude}")
    steps: list[torch.nn.Module] = [
        v2.RandomResizedCrop(image_size, scale=crop_scale, ratio=crop_ratio,
                             interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if randaugment_layers > 0:
        steps.append(v2.RandAugment(num_ops=randaugment_layers, magnitude=randaugment_magnitude,
                                    num_magnitude_bins=RANDAUGMENT_MAX_LEVEL + 1, fill=[128, 128, 128]))
    return v2.Compose(steps + _to_normalized_tensor(mean, std))


def eval_transform(
    image_size: int = 224,
    *,
    crop_fraction: float = EVAL_CROP_FRACTION,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The official (deterministic) eval transform: central ``crop_fraction`` of the short side, bicubic resize to
    ``image_size``, normalise. With the defaults this is the usual "resize to 256, centre-crop 224" up to rounding."""
    return v2.Compose([CenterCropFraction(image_size, crop_fraction)] + _to_normalized_tensor(mean, std))


class MixUpCutMix:
    """Batch-level MixUp on the first half of the batch and CutMix on the second half (the official recipe).

    ``mix(images [B, C, H, W], labels [B] long) -> (images [B, C, H, W], soft targets [B, num_classes] float)``.
    Each row of the targets sums to 1. An alpha of 0 (or None) turns that half's mixing off (its targets are
    then one-hot); with both off the batch is only one-hot encoded. The first ``B // 2`` images get MixUp.
    Uses the global torch RNG (seeded per DataLoader worker by PyTorch).
    """

    def __init__(self, num_classes: int, mixup_alpha: float | None = 0.2, cutmix_alpha: float | None = 1.0) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if alpha is not None and alpha < 0:
                raise ValueError(f"{name} must be >= 0 (0 or None turns it off), got {alpha}")
        self.num_classes = int(num_classes)
        self.mixup_alpha = float(mixup_alpha or 0.0)
        self.cutmix_alpha = float(cutmix_alpha or 0.0)
        self._mixup = v2.MixUp(alpha=self.mixup_alpha, num_classes=num_classes) if self.mixup_alpha > 0 else None
        self._cutmix = v2.CutMix(alpha=self.cutmix_alpha, num_classes=num_classes) if self.cutmix_alpha > 0 else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4:
            raise ValueError(f"MixUpCutMix expects images [B, C, H, W], got shape {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype != torch.long:
            raise ValueError(f"MixUpCutMix expects integer labels [B={images.shape[0]}] (torch.long), "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        half = images.shape[0] // 2
        out_images, out_targets = [], []
        for mix, part in ((self._mixup, slice(0, half)), (self._cutmix, slice(half, None))):
            x, y = images[part], labels[part]
            if x.shape[0] == 0:
                continue
            if mix is None:
                y = torch.nn.functional.one_hot(y, self.num_classes).to(torch.float32)
            else:
                x, y = mix(x, y)
            out_images.append(x)
            out_targets.append(y)
        return torch.cat(out_images), torch.cat(out_targets)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
                f"cutmix_alpha={self.cutmix_alpha})")


class MixingCollate:
    """A picklable DataLoader ``collate_fn``: ``default_collate`` then a batch function such as :class:`MixUpCutMix`."""

    def __init__(self, batch_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batch_fn = batch_fn

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(samples)
        return self.batch_fn(images, labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.batch_fn!r})"
