"""scikit-learn's handwritten digits (8x8, 10 classes, 1,797 images) as a Lightning data module.

The data ship inside scikit-learn, so nothing is downloaded. DESIGN.md ("Small-data behaviour") measures a small
Perceiver IO on this set; with ``val_fraction=0`` the training split is the 1,437 images used there.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, default_collate

from .generated import ResumableDataLoader

Split = Literal["train", "val", "test"]


def random_affine(
    images: torch.Tensor, rotate: float = 0.0, scale: float = 0.0, shear: float = 0.0, translate: float = 0.0,
    background: float = 0.0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A different random affine warp of each image in ``images [B, C, H, W]`` (bilinear, ``background`` fill).

    Per image: a rotation in ``[-rotate, rotate]`` degrees, a horizontal shear in ``[-shear, shear]`` degrees, an
    isotropic zoom by a factor in ``[1 - scale, 1 + scale]`` and a translation in ``[-translate, translate]`` pixels
    per axis, all uniform and about the image centre. One ``affine_grid`` + ``grid_sample`` for the whole batch.
    """
    b, _, h, w = images.shape
    u = torch.rand(b, 5, generator=generator, dtype=torch.float64) * 2 - 1  # U[-1, 1]
    angle, shear_angle = torch.deg2rad(u[:, 0] * rotate), torch.deg2rad(u[:, 1] * shear)
    zoom = 1 + u[:, 2] * scale
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear_angle)
    # Output -> input sampling map in normalised coordinates: rotation @ shear / zoom, then the shift.
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos / zoom, (cos * tan - sin) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = sin / zoom, (sin * tan + cos) / zoom
    theta[:, 0, 2], theta[:, 1, 2] = u[:, 3] * translate * 2 / w, u[:, 4] * translate * 2 / h
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped + background


class RandomAffineCollate:
    """A DataLoader ``collate_fn``: stacks ``(image, label)`` pairs, then warps the batch with :func:`random_affine`."""

    def __init__(self, rotate: float, scale: float, shear: float, translate: float, background: float) -> None:
        self.rotate, self.scale, self.shear, self.translate = rotate, scale, shear, translate
        self.background = background

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(batch)
        return random_affine(images, self.rotate, self.scale, self.shear, self.translate, self.background), labels


class DigitsDataModule(pl.LightningDataModule):
    """Fixed, stratified train / val / test splits of ``sklearn.datasets.load_digits``.

    Batches are tuples ``(pixel_values [B, 1, 8, 8] float32, labels [B] long)``. Pixels (0..16) are scaled to
    [0, 1], and then to [-1, 1] when ``normalize`` is true.

    Both fractions are of the whole data set (1,797 images), rounded up as scikit-learn does: the defaults give
    360 test, 180 validation and 1,257 training images. The split depends only on ``seed`` and the fractions, so
    every instance built with the same arguments sees the same images. ``val_fraction=0`` gives no validation
    split (an empty ``val_dataloader``) and 1,437 training images.

    Args:
        batch_size: images per batch.
        num_workers: DataLoader worker processes (the data are tiny; 0 is usually fastest).
        val_fraction: fraction of all images held out for validation, in [0, 1).
        test_fraction: fraction of all images held out for testing, in (0, 1).
        seed: seeds the split and the training shuffle.
        normalize: scale pixels to [-1, 1] (else [0, 1]).
        rotate, scale, shear, translate: training augmentation, a random affine warp of each training image
            (:func:`random_affine`): rotation up to ``rotate`` degrees, zoom by up to ``1 +/- scale``, horizontal
            shear up to ``shear`` degrees, translation up to ``translate`` pixels (bilinear, background fill),
            drawn anew every time it is loaded. All 0 = no augmentation.
    """

    num_classes: int = 10
    image_shape: tuple[int, int, int] = (1, 8, 8)
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        normalize: bool = True,
        rotate: float = 0.0,
        scale: float = 0.0,
        shear: float = 0.0,
        translate: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value, high in (("rotate", rotate, 45.0), ("scale", scale, 0.5), ("shear", shear, 45.0),
                                  ("translate", translate, 3.0)):
            if not 0 <= value <= high:
                raise ValueError(f"{name} must be in [0, {high:g}], got {value}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1 to leave training data, "
                             f"got {val_fraction} + {test_fraction}")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.normalize = normalize
        self.affine = (float(rotate), float(scale), float(shear), float(translate))
        self.datasets: dict[Split, TensorDataset] = {}
        self.indices: dict[Split, np.ndarray] = {}

    def prepare_data(self) -> None:
        """Nothing to download: the digits ship with scikit-learn."""

    def setup(self, stage: str | None = None) -> None:
        """Load the digits and split them (idempotent; every stage gets all three splits)."""
        if self.datasets:
            return
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.asarray(digits.images, dtype=np.float32)  # [N, 8, 8], values 0..16
        labels = np.asarray(digits.target, dtype=np.int64)
        n = len(labels)
        n_test = math.ceil(self.test_fraction * n)
        n_val = math.ceil(self.val_fraction * n)
        for name, count in (("test", n_test), ("val", n_val)):
            if 0 < count < self.num_classes:
                raise ValueError(f"{name} split of {count} images is too small to stratify over "
                                 f"{self.num_classes} classes; raise {name}_fraction")
        index = np.arange(n)
        rest, test = train_test_split(index, test_size=n_test, stratify=labels, random_state=self.seed)
        if n_val:
            train, val = train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=self.seed)
        else:
            train, val = rest, rest[:0]
        pixels = torch.from_numpy(images / 16.0).unsqueeze(1)  # [N, 1, 8, 8] in [0, 1]
        if self.normalize:
            pixels = pixels * 2.0 - 1.0
        targets = torch.from_numpy(labels)
        for split, idx in (("train", train), ("val", val), ("test", test)):
            self.indices[split] = np.sort(idx)
            t = torch.from_numpy(self.indices[split])
            self.datasets[split] = TensorDataset(pixels[t].contiguous(), targets[t].contiguous())

    @property
    def background(self) -> float:
        """The value of a blank pixel (what a warp fills in): -1 when ``normalize``, else 0."""
        return -1.0 if self.normalize else 0.0

    def augment(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``images [B, 1, 8, 8]`` warped by this module's training augmentation (:func:`random_affine` with
        ``rotate``, ``scale``, ``shear``, ``translate``), one random warp per image; the images themselves when
        all four are 0. Test-time augmentation uses it (``ImageClassificationTask(test_views=...)``)."""
        if not any(self.affine):
            return images
        return random_affine(images, *self.affine, background=self.background, generator=generator)

    def _loader(self, split: Split, shuffle: bool) -> DataLoader:
        collate = None
        if split == "train" and any(self.affine):
            collate = RandomAffineCollate(*self.affine, background=self.background)
        self.setup()
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "num_workers": self.num_workers,
                                  "persistent_workers": self.num_workers > 0, "collate_fn": collate}
        if shuffle:
            return ResumableDataLoader(self.datasets[split], generator=torch.Generator().manual_seed(self.seed),
                                       **kwargs)
        return DataLoader(self.datasets[split], **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (the order is fixed by ``seed`` for a fresh DataLoader; resumable mid-epoch:
        :class:`~perceiver_io.data.generated.ResumableDataLoader`)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in a fixed order (empty when ``val_fraction=0``)."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches, in a fixed order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test images (with their labels), in a fixed order."""
        return self._loader("test", shuffle=False)
