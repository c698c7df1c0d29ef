"""Lightning data modules: scikit-learn's digits, ImageNet-layout image folders (official ImageNet augmentation),
the StarCraft-like unit sets, audio-visual clips and optical-flow pairs generated at run time, and Kinetics-style
video folders. Flow file formats (.flo, .pfm, KITTI PNG): :mod:`perceiver_io.data.flow_io`."""

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
from .flow_pairs import SyntheticFlowDataModule, SyntheticFlowPairs
from .image_folder import CorruptImageWarning, ImageFolderDataModule, SafeImageFolder
from .kinetics import KineticsFolder, KineticsFolderDataModule, ShortClipWarning
from .unit_sets import UnitSetDataset, UnitSetsDataModule

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CenterCropFraction", "CorruptImageWarning", "DigitsDataModule",
    "ImageFolderDataModule", "KineticsFolder", "KineticsFolderDataModule", "MixUpCutMix", "MixingCollate",
    "SafeImageFolder", "ShortClipWarning", "SyntheticClips", "SyntheticClipsDataModule", "SyntheticFlowDataModule",
    "SyntheticFlowPairs", "UnitSetDataset",
    "UnitSetsDataModule", "eval_transform", "official_train_transform",
]
