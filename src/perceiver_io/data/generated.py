"""The data module shared by the data generated at run time (unit sets, audio-visual clips, optical-flow pairs).

Each split is a dataset of ``num_<split>`` items generated from the seed alone (nothing is downloaded or stored);
items are generated on access, so building the datasets is cheap. A subclass says how to build one split
(:meth:`GeneratedDataModule.make_dataset`) and, if its items need it, how to batch them (``collate_fn``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.validation import check_positive

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


class GeneratedDataModule(pl.LightningDataModule):
    """Train / val / test datasets generated from ``seed``; the training order is shuffled by a generator seeded
    with ``seed`` (the same for a fresh DataLoader); predict uses the test split.

    Args:
        batch_size: items per batch.
        num_train, num_val, num_test: items per split.
        seed: seeds every split and the training shuffle (non-negative).
        num_workers: DataLoader worker processes.
    """

    collate_fn: Callable[[list[Any]], Any] | None = None
    """How items are batched (None: ``default_collate``; a subclass sets ``staticmethod(fn)``)."""

    def __init__(self, batch_size: int, num_train: int, num_val: int, num_test: int, seed: int,
                 num_workers: int) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("num_train", num_train), ("num_val", num_val),
                            ("num_test", num_test)):
            check_positive(name, value)
        check_positive("seed", seed, allow_zero=True)  # numpy's SeedSequence takes non-negative ints only
        check_positive("num_workers", num_workers, allow_zero=True)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.sizes: dict[Split, int] = {"train": num_train, "val": num_val, "test": num_test}
        self.datasets: dict[Split, Dataset] = {}

    def make_dataset(self, split: Split, size: int) -> Dataset:
        """The ``size`` items of ``split``."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Nothing to download: items are generated on access."""

    def setup(self, stage: str | None = None) -> None:
        """Build the three split datasets (idempotent; cheap, since nothing is generated until accessed)."""
        if not self.datasets:
            self.datasets = {split: self.make_dataset(split, self.sizes[split]) for split in SPLITS}

    def _loader(self, split: Split, shuffle: bool) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=self.collate_fn)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (the order is fixed by ``seed`` for a fresh DataLoader)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in a fixed order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches, in a fixed order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test items (with their targets), in a fixed order."""
        return self._loader("test", shuffle=False)
