"""The data module shared by the data generated at run time (unit sets, audio-visual clips, optical-flow pairs).

Each split is a dataset of ``num_<split>`` items generated from the seed alone (nothing is downloaded or stored);
items are generated on access, so building the datasets is cheap. A subclass says how to build one split
(:meth:`GeneratedDataModule.make_dataset`) and, if its items need it, how to batch them (``collate_fn``).

Training batches come from a :class:`ResumableDataLoader` (also used by the digits), which Lightning checkpoints
mid-epoch: a run resumed from a checkpoint continues with the next batch of the interrupted epoch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sized
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from ..core.validation import check_positive

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


class ResumableRandomSampler(RandomSampler):
    """torch's ``RandomSampler`` (the same order from the same generator) that can start a pass where an interrupted
    run would have been.

    Lightning tells it the epoch (``set_epoch``). :attr:`resume` (set by :meth:`ResumableDataLoader.load_state_dict`)
    places the next pass: a pass of the interrupted epoch draws its order from the generator state that epoch drew
    it from and skips the items already trained on; a pass of the epoch after it starts from the generator state
    that epoch would have started from; a pass of any other epoch is left alone.
    """

    def __init__(self, data_source: Sized, generator: torch.Generator) -> None:
        super().__init__(data_source, generator=generator)
        self.epoch = 0
        self.pass_epoch: int | None = None
        """The epoch of the latest pass (None before the first)."""
        self.pass_start: torch.Tensor | None = None
        """The generator's state when the latest pass drew its order."""
        self.skipped = 0
        """Items the latest pass skipped at its start."""
        self.resume: dict[str, Any] | None = None
        """For the next pass: ``epoch`` (the interrupted one), ``pass_start`` and ``skip`` (its order and the items
        already trained on), ``next_pass_start`` (where the epoch after it starts)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        skip = 0
        resume, self.resume = self.resume, None
        if resume is not None and self.epoch == resume["epoch"]:
            self.generator.set_state(resume["pass_start"])  # type: ignore[union-attr]
            skip = resume["skip"]
        elif resume is not None and self.epoch == resume["epoch"] + 1:
            self.generator.set_state(resume["next_pass_start"])  # type: ignore[union-attr]
        self.pass_epoch, self.pass_start = self.epoch, self.generator.get_state()  # type: ignore[union-attr]
        self.skipped = skip
        # islice drops the skipped indices before batching: no batch is built (or augmented) for them.
        yield from itertools.islice(super().__iter__(), skip, None)


class ResumableDataLoader(DataLoader):
    """A shuffling ``DataLoader`` (``shuffle=True`` with ``generator``: torch's order, unchanged) that Lightning
    checkpoints mid-epoch.

    Lightning stores :meth:`state_dict` in every checkpoint of a ``fit``, and :meth:`load_state_dict` takes it back
    before a resumed run draws its first batch (:class:`~perceiver_io.training.resume.ExactResume` sees to it where
    Lightning does not). A run resumed inside an epoch draws that epoch's order again and skips the batches already
    trained on (a plain ``DataLoader`` restarts the epoch from its first batch, in another order); a run resumed at
    an epoch's end (Lightning starts the next one) draws the next epoch's order the uninterrupted run draws.
    With ``num_workers=0``, random augmentation drawn from the global generators (whose states
    :class:`~perceiver_io.training.resume.ExactResume` keeps) gives the resumed run the very batches of the
    uninterrupted one. Worker processes draw from generators of their own, which no checkpoint holds, and start
    their pass before a resumed run has restored anything: with workers, a resumed epoch is another order.

    Args:
        dataset: the training items.
        generator: orders every pass (seed it for a reproducible order).
        sampler: None (the resumable shuffle); Lightning passes its own when it re-creates the loader (DDP).
        **kwargs: ``DataLoader`` arguments (``batch_size``, ``num_workers``, ``collate_fn``, ...).
    """

    def __init__(self, dataset: Dataset, *, generator: torch.Generator, sampler: Sampler | None = None,
                 **kwargs: Any) -> None:
        if sampler is None:
            sampler = ResumableRandomSampler(dataset, generator)  # type: ignore[arg-type]
        super().__init__(dataset, sampler=sampler, generator=generator, **kwargs)
        self.batches_handed_out = 0
        """Batches of the current pass returned so far, those a resumed pass skipped included."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.batches_handed_out = 0
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for returned, batch in enumerate(batches, 1):  # the sampler starts (and skips) while the first is built
            skipped = self.sampler.skipped if isinstance(self.sampler, ResumableRandomSampler) else 0
            self.batches_handed_out = skipped // (self.batch_size or 1) + returned
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where the training data stand (``{}`` before the first pass, and when Lightning replaced the sampler: DDP,
        which is not resumed mid-epoch)."""
        sampler = self.sampler
        if not isinstance(sampler, ResumableRandomSampler) or sampler.pass_start is None:
            return {}
        # The epoch after this one starts from the generator as it is now, once a new iterator has drawn its
        # workers' base seed from it (one int64, as torch's DataLoader does); persistent workers keep their iterator.
        following = torch.Generator()
        following.set_state(self.generator.get_state())
        if not (self.persistent_workers and self.num_workers > 0):
            torch.empty((), dtype=torch.int64).random_(generator=following)
        return {"epoch": sampler.pass_epoch, "pass_start": sampler.pass_start, "batches": self.batches_handed_out,
                "next_pass_start": following.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Place the next pass where ``state_dict`` (from :meth:`state_dict`) says: the rest of its epoch if
        Lightning resumes inside that epoch, the next epoch's order if it starts the next one."""
        if not state_dict or not isinstance(self.sampler, ResumableRandomSampler):
            return
        self.sampler.resume = {"epoch": state_dict["epoch"], "pass_start": state_dict["pass_start"],
                               "skip": state_dict["batches"] * (self.batch_size or 1),
                               "next_pass_start": state_dict["next_pass_start"]}


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
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "num_workers": self.num_workers,
                                  "persistent_workers": self.num_workers > 0, "collate_fn": self.collate_fn}
        if shuffle:
            return ResumableDataLoader(self.datasets[split], generator=torch.Generator().manual_seed(self.seed),
                                       **kwargs)
        return DataLoader(self.datasets[split], **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (the order is fixed by ``seed`` for a fresh DataLoader; resumable mid-epoch)."""
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
