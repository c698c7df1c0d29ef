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
from .flow_augment import FlowAugmentation, SparseFlowAugmentation
from .flow_datasets import FLOW_DATASETS, FlowDataModule, FlowPairs, open_flow_dataset
from .glue import GLUE_TASKS, GlueDataModule, GlueDataset, GlueTruncationWarning, TaskSampler, encode_glue_example, load_glue
from .flow_pairs import SyntheticFlowDataModule, SyntheticFlowPairs
from .masking import byte_word_ids, mask_words, pack_documents, whole_word_mask
from .mlm import MaskedLanguageModelingDataModule
from .sentencepiece_tokenizer import SentencePieceTokenizer, train_sentencepiece
from .stdlib_topics import StdlibTopicsDataModule
from .text_corpus import iter_text, stdlib_corpus
from .image_folder import CorruptImageWarning, ImageFolderDataModule, SafeImageFolder
from .kinetics import KineticsFolder, KineticsFolderDataModule, ShortClipWarning
from .unit_sets import UnitSetDataset, UnitSetsDataModule

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CenterCropFraction", "CorruptImageWarning", "DigitsDataModule", "FLOW_DATASETS",
    "FlowAugmentation", "FlowDataModule", "FlowPairs", "GLUE_TASKS", "GlueDataModule", "GlueDataset",
    "GlueTruncationWarning", "SparseFlowAugmentation", "TaskSampler", "encode_glue_example", "load_glue",
    "open_flow_dataset",
    "ImageFolderDataModule", "MaskedLanguageModelingDataModule", "SentencePieceTokenizer",
    "byte_word_ids", "iter_text", "mask_words", "pack_documents", "stdlib_corpus", "train_sentencepiece",
    "whole_word_mask", "KineticsFolder", "KineticsFolderDataModule", "MixUpCutMix", "MixingCollate",
    "SafeImageFolder", "StdlibTopicsDataModule", "ShortClipWarning", "SyntheticClips", "SyntheticClipsDataModule", "SyntheticFlowDataModule",
    "SyntheticFlowPairs", "UnitSetDataset",
    "UnitSetsDataModule", "eval_transform", "official_train_transform",
]
