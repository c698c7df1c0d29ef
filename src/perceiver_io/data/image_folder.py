"""ImageNet-layout image folders (``root/{train,val[,test]}/<class>/<image>``) as a Lightning data module.

Training follows the official Perceiver IO ImageNet recipe (see :mod:`perceiver_io.data.augment`). Unreadable image
files are skipped with a warning instead of stopping a long run; malformed folders fail at once with a one-line
error naming the path.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import lightning.pytorch as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from .augment import (
    EVAL_CROP_FRACTION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MixingCollate,
    MixUpCutMix,
    eval_transform,
    official_train_transform,
)

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
#: What counts as an unreadable image: PIL's UnidentifiedImageError and truncated files are OSErrors; some broken
#: files raise SyntaxError or ValueError from PIL's decoders; huge files raise DecompressionBombError.
UNREADABLE_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CorruptImageWarning(UserWarning):
    """An image file could not be read and was skipped."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders of a split (hidden folders such as ``.ipynb_checkpoints`` excluded)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


class SafeImageFolder(ImageFolder):
    """``torchvision.datasets.ImageFolder`` that skips unreadable images and validates the folder layout.

    - ``root`` must exist and hold at least one class folder with images; every class folder must hold images.
      Otherwise ``FileNotFoundError`` / ``ValueError`` naming the folder.
    - ``class_to_idx`` (optional) fixes the label ids, e.g. the training split's for a validation split; the split's
      class folders must then be a subset of its keys. By default classes are the sorted folder names.
    - An image that cannot be read is found lazily in ``__getitem__``: a :class:`CorruptImageWarning` naming the
      file is issued once, the file is counted in :attr:`num_skipped`, and the next readable sample (in index
      order, wrapping) is returned instead. The record of skipped files lives in shared memory, so skips in
      DataLoader worker processes are counted in the main process too.
    - ``verify=True`` decodes every file up front and drops the unreadable ones (they count as skipped too). That
      is thorough but slow: use it for small data sets, not for ImageNet.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        class_to_idx: dict[str, int] | None = None,
        verify: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        folders = _class_folders(root)
        if not folders:
            raise ValueError(f"no class folders in {root} (expected {root}/<class>/<image>)")
        if class_to_idx is not None:
            unknown = [f for f in folders if f not in class_to_idx]
            if unknown:
                raise ValueError(f"class folder {root / unknown[0]} is not one of the {len(class_to_idx)} known "
                                 f"classes (the training split's)")
        self._fixed_class_to_idx = class_to_idx
        super().__init__(str(root), transform=transform, target_transform=target_transform, allow_empty=True)
        self.removed_files: list[str] = []
        if verify:
            self._verify()
        self._check_not_empty(root, folders)
        self._bad = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        """Sorted non-hidden folder names, or the fixed ``class_to_idx`` when one was given."""
        if self._fixed_class_to_idx is not None:
            mapping = dict(self._fixed_class_to_idx)
            return sorted(mapping, key=mapping.__getitem__), mapping
        classes = _class_folders(Path(directory))
        return classes, {name: i for i, name in enumerate(classes)}

    def _check_not_empty(self, root: Path, folders: Sequence[str]) -> None:
        if not self.samples:
            raise ValueError(f"no images in {root} (looked for {', '.join(IMG_EXTENSIONS)} files in its class folders)")
        counts = Counter(self.targets)
        empty = [f for f in folders if counts[self.class_to_idx[f]] == 0]
        if empty:
            more = f" (and {len(empty) - 1} more empty class folders)" if len(empty) > 1 else ""
            raise ValueError(f"no images in class folder {root / empty[0]}{more}")

    def _verify(self) -> None:
        keep = []
        for path, target in self.samples:
            try:
                self.loader(path)
            except UNREADABLE_IMAGE_ERRORS as error:
                warnings.warn(f"skipping unreadable image {path} ({_one_line(error)})", CorruptImageWarning,
                              stacklevel=3)
                self.removed_files.append(path)
            else:
                keep.append((path, target))
        self.samples = self.imgs = keep
        self.targets = [t for _, t in keep]

    @property
    def num_skipped(self) -> int:
        """How many distinct files were found unreadable (by ``verify`` or while loading)."""
        return len(self.removed_files) + int(self._bad.sum())

    @property
    def skipped_files(self) -> list[str]:
        """The unreadable files found so far."""
        return self.removed_files + [self.samples[i][0] for i in self._bad.nonzero().flatten().tolist()]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        for attempt in range(n):
            i = (index + attempt) % n
            if self._bad[i]:
                continue
            path, target = self.samples[i]
            try:
                image = self.loader(path)
            except UNREADABLE_IMAGE_ERRORS as error:
                if not self._bad[i]:
                    self._bad[i] = 1
                    warnings.warn(f"skipping unreadable image {path} ({_one_line(error)})", CorruptImageWarning,
                                  stacklevel=2)
                continue
            if self.transform is not None:
                image = self.transform(image)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return image, target
        raise RuntimeError(f"none of the {n} image files in {self.root} could be read")


def image_files(root: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``root`` (any depth, hidden files and folders left out), sorted; or ``[root]`` when
    ``root`` is an image file. ``FileNotFoundError`` / ``ValueError`` naming ``root`` when there is none."""
    root = Path(root)
    extensions = tuple(IMG_EXTENSIONS)
    if root.is_file():
        if not root.name.lower().endswith(extensions):
            raise ValueError(f"predict_root: {root} is not an image file (expected one of {', '.join(extensions)})")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"predict_root: no such file or folder: {root}")
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [Path(folder) / n for n in names if not n.startswith(".") and n.lower().endswith(extensions)]
    if not found:
        raise ValueError(f"predict_root: no images under {root} (looked for {', '.join(extensions)} files)")
    return sorted(found)


class ImageFiles(torch.utils.data.Dataset):
    """Image files in a fixed order, for prediction: item ``i`` is ``{"pixel_values": [3, S, S], "target": int
    (-1 when unknown), "error": str}``.

    An unreadable file does not stop the run or shift the later rows: its item holds a zero image and the reason in
    ``error`` (a :class:`CorruptImageWarning` names it once), so that a prediction writer can report it in its row.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], transform: Callable[[Any], torch.Tensor],
                 image_size: int, targets: Sequence[int] | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = list(targets) if targets is not None else [-1] * len(self.paths)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert("RGB"))
            error = ""
        except UNREADABLE_IMAGE_ERRORS as e:
            warnings.warn(f"unreadable image {path} ({_one_line(e)})", CorruptImageWarning, stacklevel=2)
            pixels, error = torch.zeros(3, self.image_size, self.image_size), _one_line(e)
        return {"pixel_values": pixels, "target": self.targets[index], "error": error}


class ImageFolderDataModule(pl.LightningDataModule):
    """ImageNet-layout folders with the official Perceiver IO training augmentation.

    Layout: ``root/train/<class>/<image>``, ``root/val/<class>/<image>`` and optionally ``root/test/<class>/...``
    (without ``test``, the test and predict loaders use ``val``, ImageNet's usual test set). Class ids are the
    sorted training class-folder names; ``val``/``test`` use the same ids and may hold a subset of the classes.

    Batches are tuples ``(pixel_values [B, 3, S, S] float32, targets)`` with ``S = image_size``. Validation, test and
    predict targets are class ids ``[B]`` (long). Training targets are soft ``[B, num_classes]`` (float, rows sum
    to 1) when MixUp/CutMix is on and ``mix_in_collate`` is true; else class ids, and the training step may call
    :attr:`batch_augment` itself (e.g. on the GPU). ``F.cross_entropy(logits, targets, label_smoothing=0.1)``
    takes either kind.

    ``augment="official"``: random resized crop (area 0.08-1, aspect 3/4-4/3, bicubic), horizontal flip,
    RandAugment (``randaugment_layers`` ops, ``randaugment_magnitude`` on the official 0..10 scale), normalise;
    MixUp (``mixup_alpha``) on half of each batch and CutMix (``cutmix_alpha``) on the other half (an alpha of 0
    turns that one off). ``augment="none"``: training uses the eval transform and no mixing.
    Eval: the central ``resize_ratio`` (224/256) of the short side, resized to ``image_size`` (bicubic) -- the same
    pixels as "resize the short side to 256, centre-crop 224" at 224 px, up to rounding.

    Unreadable image files are skipped with a :class:`CorruptImageWarning` (once per file) and counted in
    :attr:`num_skipped`; ``verify=True`` checks every file at setup instead (slow: small data sets only).

    Errors: a missing ``root``, ``root/train`` or ``root/val`` -> ``FileNotFoundError`` (at construction); a split
    without class folders -> ``ValueError`` (at construction for ``train``); a split or class folder without images
    -> ``ValueError`` (at ``setup``).

    Args:
        root: the data set folder.
        image_size: side of the square images the model sees.
        batch_size: images per batch.
        num_workers: DataLoader worker processes; ``None`` means ``min(8, os.cpu_count())``.
        augment: ``"official"`` or ``"none"`` (see above).
        randaugment_layers, randaugment_magnitude: RandAugment's N and M (official: 4 and 5; N=0 turns it off).
        mixup_alpha, cutmix_alpha: Beta parameters of MixUp and CutMix (official: 0.2 and 1.0; 0 turns one off).
        resize_ratio: the eval crop's fraction of the short side (official: 224/256).
        mean, std: per-channel normalisation of [0, 1] pixels (ImageNet's by default, as in the official code).
        verify: decode every image at setup and drop unreadable ones.
        mix_in_collate: apply MixUp/CutMix in the training DataLoader's collate function.
        drop_last: drop the last incomplete training batch.
        pin_memory: pin batches in page-locked memory (faster host-to-GPU copies).
        seed: seeds the training shuffle (and through it the DataLoader workers' augmentation RNGs).
        predict_root: a folder of images (any depth, no class folders needed) or one image file for ``predict``
            (e.g. ``perceiver-io image-classifier predict --data.predict_root my-photos``); without it ``predict``
            runs on the test split. With ``predict_root`` the data set folder ``root`` may be left out (the class
            names then come from the checkpoint).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int | None = None,
        augment: Literal["official", "none"] = "official",
        randaugment_layers: int = 4,
        randaugment_magnitude: int = 5,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 1.0,
        resize_ratio: float = EVAL_CROP_FRACTION,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        verify: bool = False,
        mix_in_collate: bool = True,
        drop_last: bool = False,
        pin_memory: bool = False,
        seed: int = 0,
        predict_root: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if root is None and predict_root is None:
            raise ValueError("root: give the data set folder (root/train, root/val), or predict_root for prediction "
                             "only")
        if augment not in ("official", "none"):
            raise ValueError(f"augment must be 'official' or 'none', got {augment!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 < resize_ratio <= 1:
            raise ValueError(f"resize_ratio must be in (0, 1], got {resize_ratio}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each and std > 0, got mean={mean}, std={std}")
        self.save_hyperparameters()
        self.root = Path(root) if root is not None else None
        self.predict_root = Path(predict_root) if predict_root is not None else None
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.augment = augment
        self.verify = verify
        self.mix_in_collate = mix_in_collate
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.seed = seed

        self.class_names: list[str] | None = None
        """The training class-folder names, sorted (class id order); None without ``root``."""
        self.class_to_idx: dict[str, int] = {}
        self.num_classes: int | None = None
        self.image_shape: tuple[int, int, int] = (3, image_size, image_size)
        if self.root is not None:
            self._scan_root(self.root)

        self.eval_transform = eval_transform(image_size, crop_fraction=resize_ratio, mean=mean, std=std)
        if augment == "official":
            self.train_transform = official_train_transform(
                image_size, randaugment_layers=randaugment_layers, randaugment_magnitude=randaugment_magnitude,
                mean=mean, std=std)
            mixing = ((mixup_alpha or 0) > 0 or (cutmix_alpha or 0) > 0) and self.num_classes is not None
            self.batch_augment: MixUpCutMix | None = (
                MixUpCutMix(self.num_classes, mixup_alpha, cutmix_alpha) if mixing else None)
        else:
            self.train_transform = self.eval_transform
            self.batch_augment = None
        self.datasets: dict[Split, SafeImageFolder] = {}
        self.predict_dataset: ImageFiles | None = None

    def _scan_root(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {root}")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise FileNotFoundError(f"'{split}' split folder not found: {root / split} "
                                        f"(expected {root}/{split}/<class>/<image>)")
        names = _class_folders(root / "train")
        if not names:
            raise ValueError(f"no class folders in {root / 'train'} (expected {root / 'train'}/<class>/<image>)")
        self.class_names = names
        self.class_to_idx = {name: i for i, name in enumerate(names)}
        self.num_classes = len(names)

    @property
    def test_split(self) -> Split:
        """``"test"`` when ``root/test`` exists, else ``"val"``."""
        return "test" if self.root is not None and (self.root / "test").is_dir() else "val"

    def dataset(self, split: Split) -> SafeImageFolder:
        """The split's dataset, scanned (and verified, if asked) on first use."""
        if split not in self.datasets:
            if split not in ("train", "val", "test"):
                raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
            if self.root is None:
                raise ValueError(f"root: the {split!r} split needs the data set folder (only predict_root was given)")
            folder = self.root / split
            if not folder.is_dir():
                raise FileNotFoundError(f"'{split}' split folder not found: {folder}")
            transform = self.train_transform if split == "train" else self.eval_transform
            self.datasets[split] = SafeImageFolder(folder, transform=transform, class_to_idx=self.class_to_idx,
                                                   verify=self.verify)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Scan the folders the stage needs (``fit``: train and val; ``validate``: val; ``test``/``predict``: test)."""
        splits: dict[str | None, tuple[Split, ...]] = {
            "fit": ("train", "val"), "validate": ("val",), "test": (self.test_split,),
            "predict": (self.test_split,), None: ("train", "val", self.test_split)}
        if stage not in splits:
            raise ValueError(f"unknown stage {stage!r}; expected one of fit, validate, test, predict")
        if stage == "predict":
            self.predict_dataset = self._predict_files()
            return
        for split in splits[stage]:
            self.dataset(split)

    def _predict_files(self) -> ImageFiles:
        if self.predict_root is not None:
            return ImageFiles(image_files(self.predict_root), self.eval_transform, self.image_size)
        labelled = self.dataset(self.test_split)
        return ImageFiles([p for p, _ in labelled.samples], self.eval_transform, self.image_size,
                          targets=[t for _, t in labelled.samples])

    @property
    def predict_identifiers(self) -> list[str]:
        """The file path of each predict item, in order (after ``setup("predict")``)."""
        if self.predict_dataset is None:
            self.predict_dataset = self._predict_files()
        return self.predict_dataset.paths

    def teardown(self, stage: str | None = None) -> None:
        """Log a summary of the unreadable files skipped so far."""
        if self.num_skipped:
            log.warning("skipped %d unreadable image files under %s", self.num_skipped, self.root)

    @property
    def num_skipped(self) -> int:
        """Unreadable image files skipped so far, over all splits (including those in DataLoader workers)."""
        return sum(ds.num_skipped for ds in self.datasets.values())

    @property
    def skipped_files(self) -> list[str]:
        """The unreadable image files skipped so far."""
        return [f for ds in self.datasets.values() for f in ds.skipped_files]

    def _loader(self, split: Split, *, train: bool = False) -> DataLoader:
        collate = None
        if train and self.batch_augment is not None and self.mix_in_collate:
            collate = MixingCollate(self.batch_augment)
        return DataLoader(
            self.dataset(split), batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
            collate_fn=collate, pin_memory=self.pin_memory, drop_last=train and self.drop_last,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches (soft targets when MixUp/CutMix is applied in collate)."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches (eval transform, class ids), in folder order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches from ``root/test`` (or ``root/val`` when there is no test folder)."""
        return self._loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        """Dict batches ``{"pixel_values" [B, 3, S, S], "target" [B] (-1: unlabelled), "error": list[str]}`` of the
        files under ``predict_root`` (any depth; no class folders needed), or of the test split (with its class
        ids), in a fixed order; :attr:`predict_identifiers` names their files."""
        if self.predict_dataset is None:
            self.predict_dataset = self._predict_files()
        return DataLoader(self.predict_dataset, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory)
