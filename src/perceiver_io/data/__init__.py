"""Lightning data modules: scikit-learn's digits and ImageNet-layout image folders (official ImageNet augmentation)."""

from .augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCropFraction,
    MixingCollate,
    MixUpCutMix,
    eval_transform,
    official_train_transform,
)
from .digits import DigitsDataModule
from .image_folder import CorruptImageWarning, ImageFolderDataModule, SafeImageFolder

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CenterCropFraction", "CorruptImageWarning", "DigitsDataModule",
    "ImageFolderDataModule", "MixUpCutMix", "MixingCollate", "SafeImageFolder", "eval_transform",
    "official_train_transform",
]
