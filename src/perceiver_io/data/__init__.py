"""Lightning data modules: scikit-learn's digits, ImageNet-layout image folders (official ImageNet augmentation),
the StarCraft-like unit sets and the audio-visual clips generated at run time, and Kinetics-style video folders."""

from .augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCropFraction,
    MixingCollate,
    MixUpCutMix,
    eval_transform,
    official_train_transform,
)
from .clips import SyntheticClips, SyntheticClipsDataModule
from .digits import DigitsDataModule
from .image_folder import CorruptImageWarning, ImageFolderDataModule, SafeImageFolder
from .kinetics import KineticsFolder, KineticsFolderDataModule, ShortClipWarning
from .unit_sets import UnitSetDataset, UnitSetsDataModule

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CenterCropFraction", "CorruptImageWarning", "DigitsDataModule",
    "ImageFolderDataModule", "KineticsFolder", "KineticsFolderDataModule", "MixUpCutMix", "MixingCollate",
    "SafeImageFolder", "ShortClipWarning", "SyntheticClips", "SyntheticClipsDataModule", "UnitSetDataset",
    "UnitSetsDataModule", "eval_transform", "official_train_transform",
]
