"""Real optical-flow datasets (FlyingChairs, FlyingThings3D, Sintel, KITTI-2015, HD1K) through torchvision, as a
Lightning data module with RAFT-style training augmentation.

The files are found and paired by ``torchvision.datasets`` (``FlyingChairs``, ``FlyingThings3D``, ``Sintel``,
``KittiFlow``, ``HD1K``); nothing is downloaded, ``root`` must already hold the data in torchvision's layout
(:data:`LAYOUTS`). Two of torchvision's readers are replaced, in thin subclasses:

* frames are decoded by torchvision's loader (PIL) as before, but returned as uint8 tensors ``[3, H, W]``, and an
  unreadable image raises ``ValueError`` naming the file instead of PIL's anonymous error;
* flow files are read by :mod:`perceiver_io.data.flow_io` (the same values), which checks every file and names it in
  its errors. torchvision's readers do not: its ``.pfm`` reader raises a bare ``Exception``, its ``.flo`` reader
  accepts files with missing or extra data as long as numpy can reshape them, and its KITTI PNG reader goes straight
  to libpng, which crashes the process on some corrupt files.

Batches are the format of :class:`~perceiver_io.data.SyntheticFlowDataModule`: dicts ``frames [B, 2, 3, H, W]``
float32 in ``[-1, 1]``, ``flow [B, 2, H, W]`` float32 (x then y, pixels, frame 1 -> frame 2; 0 where invalid) and
``valid [B, H, W]`` bool. Benchmark test splits without ground truth (Sintel, KITTI, HD1K) give ``frames`` only, in
:meth:`FlowDataModule.predict_dataloader`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision import datasets as tv_datasets
from torchvision.transforms.v2 import functional as TF

from ..core.validation import check_choice, check_positive
from .flow_augment import FlowAugmentation, SparseFlowAugmentation, _check_size
from .flow_io import read_flow
from .image_folder import UNREADABLE_IMAGE_ERRORS, _one_line

__all__ = ["FLOW_DATASETS", "LAYOUTS", "FlowDataModule", "FlowPairs", "open_flow_dataset"]

FLOW_DATASETS: tuple[str, ...] = ("chairs", "things", "sintel", "kitti", "hd1k")
Stage = Literal["train", "val", "test", "predict"]
#: ``(frames [2, 3, H, W] uint8, flow [2, H, W] float32, valid [H, W] bool, generator) -> the same, transformed``.
PairTransform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator],
                         tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

#: What torchvision expects under ``root``, per dataset (shown in the errors about a missing or empty root).
LAYOUTS: dict[str, str] = {
    "chairs": "{root}/FlyingChairs/data/00001_img1.ppm, 00001_img2.ppm, 00001_flow.flo, ... and "
              "{root}/FlyingChairs/FlyingChairs_train_val.txt (one line per pair: 1 = train, 2 = val)",
    "things": "{root}/FlyingThings3D/frames_cleanpass/{TRAIN,TEST}/<A|B|C>/<NNNN>/left/*.png (and frames_finalpass) "
              "with {root}/FlyingThings3D/optical_flow/{TRAIN,TEST}/<A|B|C>/<NNNN>/into_{future,past}/left/*.pfm",
    "sintel": "{root}/Sintel/training/{clean,final}/<scene>/frame_NNNN.png with "
              "{root}/Sintel/training/flow/<scene>/frame_NNNN.flo (one fewer than frames per scene), and "
              "{root}/Sintel/test/{clean,final}/<scene>/frame_NNNN.png",
    "kitti": "{root}/KittiFlow/training/image_2/NNNNNN_10.png, NNNNNN_11.png with "
             "{root}/KittiFlow/training/flow_occ/NNNNNN_10.png (16-bit PNG), and {root}/KittiFlow/testing/image_2/...",
    "hd1k": "{root}/hd1k/hd1k_input/image_2/SSSSSS_FFFF.png with {root}/hd1k/hd1k_flow_gt/flow_occ/SSSSSS_FFFF.png "
            "(16-bit PNG, one fewer than frames per sequence), and "
            "{root}/hd1k/hd1k_challenge/image_2/NNNNNN_1{0,1}.png",
}


# ------------------------------------------------------------------------------------- torchvision with checked reads


class _CheckedReads:
    """Mixin for torchvision's flow datasets: frames as uint8 ``[3, H, W]`` tensors, flow through
    :func:`~perceiver_io.data.flow_io.read_flow`, and every unreadable file reported by its path."""

    _has_builtin_flow_mask: bool

    def _read_img(self, file_name: str) -> torch.Tensor:
        try:
            image = super()._read_img(file_name)  # type: ignore[misc]  # torchvision's loader (PIL, RGB)
            return TF.pil_to_tensor(image) if isinstance(image, Image.Image) else torch.as_tensor(image)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"frame not found: {file_name}") from err
        except UNREADABLE_IMAGE_ERRORS as err:
            raise ValueError(f"{file_name}: corrupt or unreadable image ({_one_line(err)})") from err

    def _read_flow(self, file_name: str) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        flow, valid = read_flow(file_name)  # its errors name the file
        if self._has_builtin_flow_mask:
            if valid is None:
                raise ValueError(f"{file_name}: expected a KITTI-format flow PNG with a validity channel")
            return flow, valid
        return flow


class _Chairs(_CheckedReads, tv_datasets.FlyingChairs):
    pass


class _Things(_CheckedReads, tv_datasets.FlyingThings3D):
    pass


class _Sintel(_CheckedReads, tv_datasets.Sintel):
    pass


class _Kitti(_CheckedReads, tv_datasets.KittiFlow):
    pass


class _HD1K(_CheckedReads, tv_datasets.HD1K):
    pass


def _scene_folder(path: str) -> str:
    """Sintel's holdout group: the scene folder (``alley_1``) of a frame."""
    return Path(path).parent.name


def _things_scene(path: str) -> str:
    """FlyingThings3D's holdout group: ``A/0000`` of ``.../TRAIN/A/0000/left/0006.png``."""
    return "/".join(Path(path).parts[-4:-2])


def _name_prefix(path: str) -> str:
    """KITTI's, HD1K's and FlyingChairs' holdout group: the file name up to the first ``_`` (pair or sequence)."""
    return Path(path).name.split("_")[0]


@dataclass(frozen=True)
class _Spec:
    cls: type
    folder: str  # torchvision's folder under root
    splits: tuple[str, ...]  # torchvision's split names
    ground_truth: tuple[str, ...]  # the splits with flow files
    passes: bool  # has clean / final render passes
    sparse: bool  # flow with a validity mask (KITTI PNG)
    default_val: str | float
    test_split: str | None  # the benchmark test split, if it has ground truth
    predict_split: str
    crop_size: tuple[int, int]  # RAFT's training crops
    scale_range: tuple[float, float]  # RAFT's per-dataset log2 zoom ranges
    group: Callable[[str], str]  # holdout group (scene, sequence, pair) of a pair, from its first frame
    group_kind: str


_SPECS: dict[str, _Spec] = {
    "chairs": _Spec(_Chairs, "FlyingChairs", ("train", "val"), ("train", "val"), False, False, "val", None, "val",
                    (368, 496), (-0.1, 1.0), _name_prefix, "pair number (00001)"),
    "things": _Spec(_Things, "FlyingThings3D", ("train", "test"), ("train", "test"), True, False, "test", "test",
                    "test", (400, 720), (-0.4, 0.8), _things_scene, "scene (A/0000)"),
    "sintel": _Spec(_Sintel, "Sintel", ("train", "test"), ("train",), True, False, 0.1, None, "test",
                    (368, 768), (-0.2, 0.6), _scene_folder, "scene (alley_1)"),
    "kitti": _Spec(_Kitti, "KittiFlow", ("train", "test"), ("train",), False, True, 0.1, None, "test",
                   (288, 960), (-0.2, 0.4), _name_prefix, "pair number (000000)"),
    "hd1k": _Spec(_HD1K, "hd1k", ("train", "test"), ("train",), False, True, 0.1, None, "test",
                  (368, 768), (-0.5, 0.2), _name_prefix, "sequence (000000)"),
}


def _spec(dataset: object) -> _Spec:
    check_choice("dataset", dataset, FLOW_DATASETS)
    return _SPECS[dataset]  # type: ignore[index]


def _layout(dataset: str, root: Path) -> str:
    return LAYOUTS[dataset].replace("{root}", str(root))


def _resolve_root(dataset: str, root: str | os.PathLike[str]) -> Path:
    """The folder holding the dataset's folder (torchvision's ``root``); the dataset's own folder is accepted too."""
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"root: dataset root not found: {path}")
    folder = _spec(dataset).folder
    if not (path / folder).is_dir() and path.name == folder:
        return path.parent
    if not (path / folder).is_dir():
        raise FileNotFoundError(f"root: {path} holds no '{folder}' folder; {dataset} expects {_layout(dataset, path)}")
    return path


def _pair_files(source: Any, index: int) -> tuple[str, str, str | None]:
    """``(frame 1, frame 2, flow file or None)`` of torchvision's pair ``index``, from its (private, but stable since
    torchvision 0.12) file lists: the only record of which files make up a pair."""
    first, second = source._image_list[index]
    return str(first), str(second), str(source._flow_list[index]) if source._flow_list else None


def _check_chairs(root: Path) -> None:
    # torchvision pairs images[2i], images[2i + 1] with flows[i] and the i-th line of the split file without checking
    # the counts, so a missing file would silently shift every later pair.
    data = root / "FlyingChairs" / "data"
    images, flows = sorted(data.glob("*.ppm")), sorted(data.glob("*.flo"))
    if len(images) != 2 * len(flows):
        raise ValueError(f"{data}: {len(images)} .ppm frames for {len(flows)} .flo flows (expected two frames per "
                         f"flow: NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo)")
    split_file = root / "FlyingChairs" / "FlyingChairs_train_val.txt"
    if split_file.is_file():
        lines = [line for line in split_file.read_text().split() if line.strip()]
        if len(lines) != len(flows) or not set(lines) <= {"1", "2"}:
            raise ValueError(f"{split_file}: expected one 1 (train) or 2 (val) per pair, {len(flows)} lines, "
                             f"got {len(lines)} lines with values {sorted(set(lines))[:5]}")


def open_flow_dataset(dataset: str, root: str | os.PathLike[str], split: str = "train",
                      pass_name: str | None = None) -> Any:
    """torchvision's dataset (with checked reads, see the module docstring) for one split, checked to be non-empty.

    Args:
        dataset: one of :data:`FLOW_DATASETS`.
        root: the folder holding the dataset's folder (``FlyingChairs``, ``FlyingThings3D``, ``Sintel``,
            ``KittiFlow``, ``hd1k``: torchvision's ``root``), or that folder itself.
        split: torchvision's split name (chairs: train / val; the others: train / test).
        pass_name: Sintel and FlyingThings3D: ``"clean"`` (None), ``"final"`` or ``"both"``; None for the others.

    Returns:
        The torchvision dataset: item ``i`` is ``(frame1 [3, H, W] uint8, frame2, flow [2, H, W] float32 or None)``,
        plus ``valid [H, W]`` bool (or None) for KITTI and HD1K.
    """
    spec = _spec(dataset)
    check_choice("split", split, spec.splits)
    if spec.passes:
        pass_name = "clean" if pass_name is None else pass_name
        check_choice("pass_name", pass_name, ("clean", "final", "both"))
    elif pass_name is not None:
        raise ValueError(f"pass_name: {dataset} has no render passes, expected None, got {pass_name!r}")
    base = _resolve_root(dataset, root)
    if dataset == "chairs":
        _check_chairs(base)
    kwargs = {"pass_name": pass_name} if spec.passes else {}
    try:
        source = spec.cls(str(base), split=split, **kwargs)
    except (FileNotFoundError, IndexError, ValueError) as err:
        raise FileNotFoundError(f"{dataset} ({split} split) not found under {base}: {_one_line(err)}; expected "
                                f"{_layout(dataset, base)}") from err
    if len(source) == 0:
        raise ValueError(f"no {dataset} frame pairs for the {split} split under {base / spec.folder}; expected "
                         f"{_layout(dataset, base)}")
    if split in spec.ground_truth and len(source._flow_list) != len(source._image_list):
        raise ValueError(f"{base / spec.folder}: {len(source._image_list)} frame pairs but "
                         f"{len(source._flow_list)} flow files in the {split} split (a flow file missing or extra); "
                         f"expected {_layout(dataset, base)}")
    return source


# ---------------------------------------------------------------------------------------------------------- dataset


def _item_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class FlowPairs(Dataset):
    """Some pairs of a torchvision flow dataset (:func:`open_flow_dataset`) as model-ready dicts.

    Items: ``frames [2, 3, H, W]`` float32 in ``[-1, 1]`` (uint8 / 127.5 - 1); where the split has ground truth also
    ``flow [2, H, W]`` float32 (0 where invalid) and ``valid [H, W]`` bool: the file's mask (KITTI, HD1K) and the
    flow finite with both components below ``max_flow`` pixels (FlyingThings3D has a few absurd values; a NaN would
    poison a masked loss). The pairs are ordered by their frame paths, so the order does not depend on the file
    system's listing order.

    ``transform`` (training) maps ``(frames uint8, flow, valid, generator)`` to the same, e.g. a
    :class:`~perceiver_io.data.flow_augment.FlowAugmentation`. Its generator is seeded by the key: ``dataset[(i,
    seed)]`` (what :class:`FlowDataModule`'s training sampler passes: a new seed per item and epoch) or ``dataset[i]``
    (a seed fixed by ``seed`` and ``i``).

    Args:
        source: a torchvision flow dataset from :func:`open_flow_dataset`.
        indices: which of its pairs (None: all).
        transform: applied to pairs with ground truth (None: native resolution, unchanged).
        max_flow: flow components at or above this many pixels are invalid.
        seed: seeds the transform for plain integer keys.
    """

    def __init__(self, source: Any, indices: Sequence[int] | None = None, transform: PairTransform | None = None,
                 max_flow: float = 1000.0, seed: int = 0) -> None:
        if not (isinstance(max_flow, (int, float)) and not isinstance(max_flow, bool) and max_flow > 0):
            raise ValueError(f"max_flow: expected a positive number of pixels, got {max_flow!r}")
        self.source, self.transform, self.max_flow, self.seed = source, transform, float(max_flow), seed
        chosen = range(len(source)) if indices is None else indices
        self.indices: list[int] = sorted(chosen, key=lambda i: _pair_files(source, i)[:2])

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def has_flow(self) -> bool:
        """Whether the pairs come with ground-truth flow (False for benchmark test splits)."""
        return bool(self.source._flow_list)

    def files(self, position: int) -> tuple[str, str, str | None]:
        """``(frame 1, frame 2, flow file or None)`` of item ``position``."""
        return _pair_files(self.source, self.indices[position])

    def load(self, position: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Item ``position`` untransformed: ``(frames [2, 3, H, W] uint8, flow [2, H, W] float32 or None,
        valid [H, W] bool or None)``, flow 0 where invalid."""
        sample = self.source[self.indices[position]]
        first, second, flow = sample[0], sample[1], sample[2]
        mask = sample[3] if len(sample) > 3 else None
        if first.shape != second.shape or first.shape[0] != 3:
            one, two, _ = self.files(position)
            raise ValueError(f"{one}, {two}: the frames of a pair must be RGB images of one size, got "
                             f"{list(first.shape)} and {list(second.shape)}")
        frames = torch.stack([first, second])
        if flow is None:
            return frames, None, None
        flow = torch.as_tensor(flow, dtype=torch.float32)
        if tuple(flow.shape) != (2, *first.shape[1:]):
            raise ValueError(f"{self.files(position)[2]}: expected flow of the frames' size "
                             f"[2, {first.shape[1]}, {first.shape[2]}], got {list(flow.shape)}")
        valid = torch.isfinite(flow).all(0) & (flow.abs() < self.max_flow).all(0)
        if mask is not None:
            valid &= torch.as_tensor(mask, dtype=torch.bool)
        return frames, torch.where(valid, flow, 0.0), valid

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        position, seed = key if isinstance(key, tuple) else (key, None)
        if not -len(self) <= position < len(self):
            raise IndexError(f"index: expected in [{-len(self)}, {len(self)}), got {position}")
        position = int(position) % len(self)
        frames, flow, valid = self.load(position)
        if flow is None:
            return {"frames": frames.float() / 127.5 - 1.0}
        if self.transform is not None:
            seed = _item_seed(self.seed, position) if seed is None else seed
            try:
                frames, flow, valid = self.transform(frames, flow, valid, torch.Generator().manual_seed(seed))
            except ValueError as err:
                one, two, flow_file = self.files(position)
                raise ValueError(f"{one}, {two}, {flow_file}: {err}") from err
        return {"frames": frames.float() / 127.5 - 1.0, "flow": flow, "valid": valid}


class _CentreCrop:
    """The training transform without augmentation: the central ``crop_size`` window (so that batches stack)."""

    def __init__(self, crop_size: tuple[int, int]) -> None:
        self.crop_size = crop_size

    def __call__(self, frames: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (crop_h, crop_w), (height, width) = self.crop_size, frames.shape[-2:]
        if height < crop_h or width < crop_w:
            raise ValueError(f"frames of {height}x{width} are smaller than crop_size {crop_h}x{crop_w}; use a smaller "
                             f"crop_size, or augment=True (which enlarges small frames)")
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return (TF.crop(frames, top, left, crop_h, crop_w).contiguous(),
                TF.crop(flow, top, left, crop_h, crop_w).contiguous(),
                TF.crop(valid, top, left, crop_h, crop_w).contiguous())


class _EpochSampler(Sampler[tuple[int, int]]):
    """Training order and per-item augmentation seeds, both drawn from ``(seed, epoch)``: ``(position, item seed)``.

    Lightning calls :meth:`set_epoch` before each epoch; without it each pass uses the next epoch. The result does not
    depend on the number of DataLoader workers.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        g = torch.Generator().manual_seed(_item_seed(self.seed, epoch))
        order = torch.randperm(self.num_items, generator=g).tolist()
        seeds = torch.randint(0, 2**62, (self.num_items,), generator=g).tolist()
        return iter(zip(order, seeds))


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    sizes = {tuple(item["frames"].shape) for item in items}
    if len(sizes) > 1:
        raise ValueError(f"frames of different sizes in one batch ({sorted(sizes)}): evaluation keeps each pair's "
                         f"native resolution, so use eval_batch_size=1 for this dataset")
    return default_collate(items)


# ------------------------------------------------------------------------------------------------------ data module


class FlowDataModule(pl.LightningDataModule):
    """A real optical-flow dataset (through torchvision) with RAFT-style training augmentation.

    Batches are the format of :class:`~perceiver_io.data.SyntheticFlowDataModule` (see the module docstring).
    Training pairs are augmented (:class:`~perceiver_io.data.flow_augment.FlowAugmentation`, or
    :class:`~perceiver_io.data.flow_augment.SparseFlowAugmentation` for KITTI / HD1K, with RAFT's zoom range for the
    dataset) and cropped to ``crop_size``; ``augment=False`` takes the central ``crop_size`` window instead. Evaluation
    pairs are at native resolution, unaugmented, so sizes differ between datasets (and within KITTI): the evaluation
    batch size is 1 by default.

    Splits (training: ``train_split``, torchvision's ``"train"`` by default; validation: ``val_split``, None picks
    the dataset's default):

    * ``chairs``: validation on torchvision's ``val`` (FlyingChairs_train_val.txt); no test split (the test loader
      raises); predict: ``val``.
    * ``things``: validation, test and predict on ``TEST`` (it has ground truth); the left camera (torchvision's
      default), both flow directions.
    * ``sintel``: validation on 10% of the training scenes, held out; predict: ``test`` (frames only).
    * ``kitti``: validation on 10% of the training pairs, held out; predict: ``testing`` (frames only).
    * ``hd1k``: validation on 10% of the sequences, held out; predict: ``hd1k_challenge`` (frames only).

    ``val_split`` may be a torchvision split name with ground truth (e.g. ``"val"``, ``"test"``, or ``"train"`` to
    evaluate on the training pairs themselves), a fraction in (0, 1) of the training split's groups held out (scenes
    for Sintel and FlyingThings3D, sequences for HD1K, pairs for KITTI and FlyingChairs; ``round(fraction * groups)``
    of them, at least one, chosen by ``seed``), or a list of group names to hold out (e.g. ``["alley_1",
    "market_2"]`` for Sintel, ``["000003"]`` for HD1K). Held-out groups are removed from training. Benchmark test
    splits have no ground-truth flow: :meth:`test_dataloader` raises for them (their flow is on the benchmark's
    server) and :meth:`predict_dataloader` gives their ``frames`` only, in the order of :meth:`predict_files`.

    Errors: an unknown ``dataset`` (listing the known ones), a ``root`` that does not exist or lacks the dataset's
    folder (``FileNotFoundError``, with the expected layout) or holds no pairs (``ValueError``, with the layout), and
    any corrupt frame or flow file (``ValueError`` naming the file, when it is loaded).

    Args:
        dataset: one of ``"chairs"``, ``"things"``, ``"sintel"``, ``"kitti"``, ``"hd1k"``.
        root: the folder holding the dataset's folder, as torchvision expects (see :data:`LAYOUTS`), or that folder.
        pass_name: Sintel / FlyingThings3D render pass: ``"clean"`` (None), ``"final"`` or ``"both"``.
        train_split: torchvision's split for training.
        val_split: see above.
        crop_size: ``(H, W)`` of training pairs; None: RAFT's crop for the dataset (chairs 368x496, things 400x720,
            sintel 368x768, kitti 288x960, hd1k 368x768).
        augment: True (RAFT-style defaults for the dataset), False (central crop only), or a configured
            :class:`~perceiver_io.data.flow_augment.FlowAugmentation` (its ``crop_size`` is used).
        batch_size: training pairs per batch.
        eval_batch_size: pairs per validation / test / predict batch (pairs of one batch must share a size).
        num_workers: DataLoader worker processes.
        max_flow: flow components at or above this many pixels are marked invalid.
        seed: seeds the held-out groups, the training order and the augmentation (per item and epoch).
        drop_last: drop the last incomplete training batch.
        pin_memory: pin batches in page-locked memory.
    """

    def __init__(
        self,
        dataset: str,
        root: str | os.PathLike[str],
        pass_name: str | None = None,
        train_split: str = "train",
        val_split: str | float | Sequence[str] | None = None,
        crop_size: tuple[int, int] | None = None,
        augment: bool | FlowAugmentation = True,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        max_flow: float = 1000.0,
        seed: int = 0,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.spec = _spec(dataset)
        self.dataset_name = dataset
        check_positive("batch_size", batch_size)
        check_positive("eval_batch_size", eval_batch_size)
        check_positive("num_workers", num_workers, allow_zero=True)
        check_positive("seed", seed, allow_zero=True)
        if not (isinstance(max_flow, (int, float)) and not isinstance(max_flow, bool) and max_flow > 0):
            raise ValueError(f"max_flow: expected a positive number of pixels, got {max_flow!r}")
        if self.spec.passes:
            pass_name = "clean" if pass_name is None else pass_name
            check_choice("pass_name", pass_name, ("clean", "final", "both"))
        elif pass_name is not None:
            raise ValueError(f"pass_name: {dataset} has no render passes, expected None, got {pass_name!r}")
        check_choice("train_split", train_split, self.spec.ground_truth)
        self.val_split = self._check_val_split(self.spec.default_val if val_split is None else val_split)

        if isinstance(augment, FlowAugmentation):
            if crop_size is not None and _check_size("crop_size", crop_size) != augment.crop_size:
                raise ValueError(f"crop_size: {tuple(crop_size)} differs from the augmentation's crop_size "
                                 f"{augment.crop_size}; give one of them")
            if self.spec.sparse and not augment.sparse:
                raise ValueError(f"augment: {dataset} has sparse ground truth, expected a SparseFlowAugmentation "
                                 f"(dense resizing would blend invalid pixels into valid ones), got {augment!r}")
            self.crop_size = augment.crop_size
            self.augmentation: FlowAugmentation | None = augment
        elif isinstance(augment, bool):
            self.crop_size = self.spec.crop_size if crop_size is None else _check_size("crop_size", crop_size)
            kind = SparseFlowAugmentation if self.spec.sparse else FlowAugmentation
            low, high = self.spec.scale_range
            self.augmentation = kind(self.crop_size, min_scale=low, max_scale=high) if augment else None
        else:
            raise TypeError(f"augment: expected a bool or a FlowAugmentation, got {type(augment).__name__}")

        self.save_hyperparameters(ignore=None if isinstance(augment, bool) else ["augment"])
        self.root = _resolve_root(dataset, root)
        self.pass_name, self.train_split = pass_name, train_split
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.max_flow, self.seed, self.drop_last, self.pin_memory = float(max_flow), seed, drop_last, pin_memory
        self._sources: dict[str, Any] = {}
        self._holdout: tuple[list[int], list[int]] | None = None
        self.datasets: dict[Stage, FlowPairs] = {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(3, H, W)`` of training frames (the crop); evaluation frames keep their native size."""
        return (3, *self.crop_size)

    def _check_val_split(self, val_split: object) -> str | float | tuple[str, ...]:
        if isinstance(val_split, str):
            if val_split not in self.spec.ground_truth:
                raise ValueError(f"val_split: {self.dataset_name}'s splits with ground-truth flow are "
                                 f"{list(self.spec.ground_truth)}, got {val_split!r}")
            return val_split
        if isinstance(val_split, float) and not isinstance(val_split, bool):
            if not 0 < val_split < 1:
                raise ValueError(f"val_split: expected a held-out fraction in (0, 1), got {val_split!r}")
            return val_split
        if isinstance(val_split, Sequence) and val_split and all(isinstance(v, str) for v in val_split):
            return tuple(val_split)
        raise ValueError(f"val_split: expected a split name, a fraction in (0, 1) or a non-empty list of "
                         f"{self.spec.group_kind} names, got {val_split!r}")

    def source(self, split: str) -> Any:
        """torchvision's dataset for ``split`` (scanned once; see :func:`open_flow_dataset`)."""
        if split not in self._sources:
            self._sources[split] = open_flow_dataset(self.dataset_name, self.root, split,
                                                     self.pass_name if self.spec.passes else None)
        return self._sources[split]

    def holdout(self) -> tuple[list[int], list[int]]:
        """``(training indices, held-out indices)`` into :meth:`source` ``(train_split)``: everything and nothing
        when ``val_split`` is a split name. Computed once."""
        if self._holdout is None:
            self._holdout = self._split_holdout()
        return self._holdout

    def _split_holdout(self) -> tuple[list[int], list[int]]:
        source = self.source(self.train_split)
        everything = list(range(len(source)))
        if isinstance(self.val_split, str):
            return everything, []
        groups = [self.spec.group(_pair_files(source, i)[0]) for i in everything]
        names = sorted(set(groups))
        if isinstance(self.val_split, float):
            count = max(1, round(self.val_split * len(names)))
            if count >= len(names):
                raise ValueError(f"val_split: holding out {self.val_split} of {len(names)} "
                                 f"{self.spec.group_kind.split(' ')[0]}s leaves none for training")
            order = torch.randperm(len(names), generator=torch.Generator().manual_seed(self.seed)).tolist()
            held = {names[i] for i in order[:count]}
        else:
            unknown = [name for name in self.val_split if name not in set(names)]
            if unknown:
                raise ValueError(f"val_split: {unknown} are not {self.spec.group_kind.split(' ')[0]}s of the "
                                 f"{self.train_split} split (it has {names[:8]}{' ...' if len(names) > 8 else ''})")
            held = set(self.val_split)
            if len(held) == len(names):
                raise ValueError(f"val_split: holding out all {len(names)} groups leaves none for training")
        return ([i for i, g in zip(everything, groups) if g not in held],
                [i for i, g in zip(everything, groups) if g in held])

    def dataset(self, stage: Stage) -> FlowPairs:
        """The pairs of ``stage`` (``"train"``, ``"val"``, ``"test"`` or ``"predict"``), built on first use."""
        if stage in self.datasets:
            return self.datasets[stage]
        check_choice("stage", stage, ("train", "val", "test", "predict"))
        name = self.dataset_name
        if stage == "train":
            transform = self.augmentation or _CentreCrop(self.crop_size)
            pairs = FlowPairs(self.source(self.train_split), self.holdout()[0], transform, self.max_flow, self.seed)
        elif stage == "val":
            if isinstance(self.val_split, str):
                pairs = FlowPairs(self.source(self.val_split), None, None, self.max_flow)
            else:
                pairs = FlowPairs(self.source(self.train_split), self.holdout()[1], None, self.max_flow)
        elif stage == "test":
            if self.spec.test_split is None:
                if "test" in self.spec.splits:
                    raise ValueError(f"{name}'s test split has no ground-truth flow (the benchmark server holds it): "
                                     f"use predict_dataloader() for its frames, or val_dataloader() to evaluate")
                raise ValueError(f"{name} has no test split (torchvision's splits: {list(self.spec.splits)}): "
                                 f"evaluate with val_dataloader()")
            pairs = FlowPairs(self.source(self.spec.test_split), None, None, self.max_flow)
        else:
            pairs = FlowPairs(self.source(self.spec.predict_split), None, None, self.max_flow)
        self.datasets[stage] = pairs
        return pairs

    def prepare_data(self) -> None:
        """Nothing to download: ``root`` must already hold the data."""

    def setup(self, stage: str | None = None) -> None:
        """Scan the splits the stage needs (``fit``: train and val; ``validate``: val; ``test``; ``predict``)."""
        stages: dict[str | None, tuple[Stage, ...]] = {
            "fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",),
            None: ("train", "val")}
        if stage not in stages:
            raise ValueError(f"stage: expected one of fit, validate, test, predict or None, got {stage!r}")
        for split in stages[stage]:
            self.dataset(split)

    def predict_files(self) -> list[tuple[str, str]]:
        """The ``(frame 1, frame 2)`` paths of the predict pairs, in :meth:`predict_dataloader` order (to name the
        flow files of a benchmark submission)."""
        pairs = self.dataset("predict")
        return [pairs.files(i)[:2] for i in range(len(pairs))]

    def _eval_loader(self, stage: Stage) -> DataLoader:
        return DataLoader(self.dataset(stage), batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=_collate, pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented ``crop_size`` batches; order and augmentation are fixed by ``seed`` and the epoch."""
        pairs = self.dataset("train")
        return DataLoader(pairs, batch_size=self.batch_size, sampler=_EpochSampler(len(pairs), self.seed),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=_collate, pin_memory=self.pin_memory, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        """Validation batches at native resolution, in path order."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches with ground truth (FlyingThings3D's TEST); raises for the other datasets (see above)."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The benchmark test pairs (chairs: val) at native resolution: ``frames`` only where there is no flow."""
        return self._eval_loader("predict")
