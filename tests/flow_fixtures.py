"""Tiny optical-flow datasets written in each dataset's on-disk layout, as torchvision's flow datasets expect them
(FlyingChairs, FlyingThings3D, Sintel, KITTI-2015, HD1K), for tests. Not a test module.

Every writer takes the folder to use as torchvision's ``root`` and returns what it wrote: ``{(split, pass_name):
[FixturePair, ...]}`` (``pass_name`` None for datasets without render passes), with the frames as uint8 tensors
and the flow exactly as stored (dense flow is float32 and round-trips exactly; KITTI / HD1K flow is a multiple of
1/64 px within the PNG's range, so it round-trips exactly too, and ``valid`` is its mask). Frames are random uint8
noise: the tests compare values, they do not estimate flow. Frames are 24x32 to 30x40 pixels, 1-4 pairs per split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from perceiver_io.data.flow_io import write_flo, write_kitti_flow, write_pfm

Key = tuple[str, str | None]


@dataclass
class FixturePair:
    frame1: Path
    frame2: Path
    image1: torch.Tensor  # [3, H, W] uint8
    image2: torch.Tensor
    flow: torch.Tensor | None  # [2, H, W] float32 as stored; None for benchmark test splits
    valid: torch.Tensor | None  # [H, W] bool (KITTI, HD1K) or None
    flow_file: Path | None


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _frame(g: torch.Generator, size: tuple[int, int]) -> torch.Tensor:
    return torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8)


def _save_image(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)  # format from the suffix (.png, .ppm)


def _dense_flow(g: torch.Generator, size: tuple[int, int]) -> torch.Tensor:
    return (torch.randn(2, *size, generator=g) * 4).float()


def _sparse_flow(g: torch.Generator, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """KITTI-exact flow (multiples of 1/64 px in [-20, 20]) and a ~70% valid mask; invalid pixels read back as 0."""
    flow = torch.randint(-20 * 64, 20 * 64, (2, *size), generator=g).float() / 64
    valid = torch.rand(size, generator=g) < 0.7
    return torch.where(valid, flow, 0.0), valid


def write_chairs(root: Path, sizes: tuple[tuple[int, int], ...] = ((24, 32),) * 3,
                 split_ids: tuple[int, ...] = (1, 2, 1), seed: int = 0) -> dict[Key, list[FixturePair]]:
    """``root/FlyingChairs/data/NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo`` and ``FlyingChairs_train_val.txt``
    (1 = train, 2 = val per pair)."""
    g, data = _generator(seed), Path(root) / "FlyingChairs" / "data"
    data.mkdir(parents=True, exist_ok=True)
    out: dict[Key, list[FixturePair]] = {("train", None): [], ("val", None): []}
    for number, (size, split_id) in enumerate(zip(sizes, split_ids), start=1):
        image1, image2, flow = _frame(g, size), _frame(g, size), _dense_flow(g, size)
        paths = [data / f"{number:05d}_img1.ppm", data / f"{number:05d}_img2.ppm", data / f"{number:05d}_flow.flo"]
        _save_image(paths[0], image1)
        _save_image(paths[1], image2)
        write_flo(paths[2], flow)
        split = "train" if split_id == 1 else "val"
        out[(split, None)].append(FixturePair(paths[0], paths[1], image1, image2, flow, None, paths[2]))
    (data.parent / "FlyingChairs_train_val.txt").write_text("".join(f"{i}\n" for i in split_ids))
    return out


def write_things(root: Path, size: tuple[int, int] = (28, 36), frames_per_scene: int = 2,
                 seed: int = 1) -> dict[Key, list[FixturePair]]:
    """``root/FlyingThings3D/frames_{clean,final}pass/{TRAIN,TEST}/A/0000/left/NNNN.png`` with
    ``optical_flow/{TRAIN,TEST}/A/0000/into_{future,past}/left/OpticalFlowInto{Future,Past}_NNNN_L.pfm`` (3-channel
    PFM, third channel 0, as the real files). torchvision makes a future pair (frame i -> i + 1, future flow i) and a
    past pair (frame i + 1 -> i, past flow i + 1) per step: ``2 * (frames_per_scene - 1)`` pairs per split."""
    g, base = _generator(seed), Path(root) / "FlyingThings3D"
    out: dict[Key, list[FixturePair]] = {}
    for split in ("TRAIN", "TEST"):
        numbers = [6 + i for i in range(frames_per_scene)]
        images = {p: [_frame(g, size) for _ in numbers] for p in ("clean", "final")}
        paths = {p: [base / f"frames_{p}pass" / split / "A" / "0000" / "left" / f"{n:04d}.png" for n in numbers]
                 for p in ("clean", "final")}
        for p in ("clean", "final"):
            for path, image in zip(paths[p], images[p]):
                _save_image(path, image)
        flows: dict[str, list[tuple[Path, torch.Tensor]]] = {}
        for direction, stem in (("into_future", "OpticalFlowIntoFuture"), ("into_past", "OpticalFlowIntoPast")):
            folder = base / "optical_flow" / split / "A" / "0000" / direction / "left"
            folder.mkdir(parents=True, exist_ok=True)
            flows[direction] = []
            for n in numbers:
                flow = _dense_flow(g, size)
                path = folder / f"{stem}_{n:04d}_L.pfm"
                write_pfm(path, torch.cat([flow, torch.zeros(1, *size)]))
                flows[direction].append((path, flow))
        for p in ("clean", "final"):
            pairs = []
            for i in range(frames_per_scene - 1):
                path, flow = flows["into_future"][i]
                pairs.append(FixturePair(paths[p][i], paths[p][i + 1], images[p][i], images[p][i + 1], flow, None,
                                         path))
                path, flow = flows["into_past"][i + 1]
                pairs.append(FixturePair(paths[p][i + 1], paths[p][i], images[p][i + 1], images[p][i], flow, None,
                                         path))
            out[(split.lower(), p)] = pairs
    return out


SINTEL_SCENES: dict[str, int] = {"alley_1": 3, "bamboo_2": 2, "cave_4": 2}
"""Training scenes of :func:`write_sintel` and their frame counts (4 pairs)."""


def write_sintel(root: Path, size: tuple[int, int] = (24, 32), seed: int = 2) -> dict[Key, list[FixturePair]]:
    """``root/Sintel/training/{clean,final}/<scene>/frame_NNNN.png``, ``training/flow/<scene>/frame_NNNN.flo`` (one
    fewer than frames) for :data:`SINTEL_SCENES`, and ``test/{clean,final}/market_1/frame_000{1,2}.png`` (the
    folder is ``test`` in Sintel's archive and in torchvision's code; torchvision's docstring says ``testing``)."""
    g, base = _generator(seed), Path(root) / "Sintel"
    out: dict[Key, list[FixturePair]] = {}
    for split, scenes in (("training", SINTEL_SCENES), ("test", {"market_1": 2})):
        for p in ("clean", "final"):
            out[("train" if split == "training" else "test", p)] = []
        for scene, count in scenes.items():
            flows = []
            if split == "training":
                for i in range(1, count):
                    flow = _dense_flow(g, size)
                    path = base / split / "flow" / scene / f"frame_{i:04d}.flo"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_flo(path, flow)
                    flows.append((path, flow))
            for p in ("clean", "final"):
                paths = [base / split / p / scene / f"frame_{i:04d}.png" for i in range(1, count + 1)]
                images = [_frame(g, size) for _ in paths]
                for path, image in zip(paths, images):
                    _save_image(path, image)
                for i in range(count - 1):
                    flow_file, flow = flows[i] if flows else (None, None)
                    key = ("train" if split == "training" else "test", p)
                    out[key].append(FixturePair(paths[i], paths[i + 1], images[i], images[i + 1], flow, None,
                                                flow_file))
    return out


KITTI_SIZES: tuple[tuple[int, int], ...] = ((24, 40), (26, 42), (24, 40))
"""Frame sizes of the :func:`write_kitti` training pairs (KITTI's own sizes differ by a few pixels too)."""


def write_kitti(root: Path, sizes: tuple[tuple[int, int], ...] = KITTI_SIZES,
                seed: int = 3) -> dict[Key, list[FixturePair]]:
    """``root/KittiFlow/training/image_2/NNNNNN_10.png, NNNNNN_11.png`` with ``training/flow_occ/NNNNNN_10.png``
    (16-bit PNG: flow * 64 + 2**15, validity in blue), and one pair in ``testing/image_2``."""
    g, base = _generator(seed), Path(root) / "KittiFlow"
    out: dict[Key, list[FixturePair]] = {("train", None): [], ("test", None): []}
    for split, split_sizes in (("training", sizes), ("testing", ((24, 40),))):
        for number, size in enumerate(split_sizes):
            image1, image2 = _frame(g, size), _frame(g, size)
            path1 = base / split / "image_2" / f"{number:06d}_10.png"
            path2 = base / split / "image_2" / f"{number:06d}_11.png"
            _save_image(path1, image1)
            _save_image(path2, image2)
            flow = valid = flow_file = None
            if split == "training":
                flow, valid = _sparse_flow(g, size)
                flow_file = base / split / "flow_occ" / f"{number:06d}_10.png"
                flow_file.parent.mkdir(parents=True, exist_ok=True)
                write_kitti_flow(flow_file, flow, valid)
            key = ("train" if split == "training" else "test", None)
            out[key].append(FixturePair(path1, path2, image1, image2, flow, valid, flow_file))
    return out


HD1K_SEQUENCES: dict[int, int] = {0: 4, 1: 3}
"""Sequences of :func:`write_hd1k` and their frame counts; torchvision uses ``flows - 1`` pairs each (3 pairs)."""


def write_hd1k(root: Path, size: tuple[int, int] = (30, 40), seed: int = 4) -> dict[Key, list[FixturePair]]:
    """``root/hd1k/hd1k_input/image_2/SSSSSS_FFFF.png`` with ``hd1k_flow_gt/flow_occ/SSSSSS_FFFF.png`` (KITTI-format
    16-bit PNG, one fewer than frames, as the real data) for :data:`HD1K_SEQUENCES`, and one pair in
    ``hd1k_challenge/image_2/000000_1{0,1}.png``. torchvision pairs ``flows - 1`` steps per sequence (it skips each
    sequence's last flow), and so does the returned list."""
    g, base = _generator(seed), Path(root) / "hd1k"
    out: dict[Key, list[FixturePair]] = {("train", None): [], ("test", None): []}
    for sequence, count in HD1K_SEQUENCES.items():
        paths = [base / "hd1k_input" / "image_2" / f"{sequence:06d}_{i:04d}.png" for i in range(count)]
        images = [_frame(g, size) for _ in paths]
        for path, image in zip(paths, images):
            _save_image(path, image)
        flows = []
        for i in range(count - 1):
            flow, valid = _sparse_flow(g, size)
            flow_file = base / "hd1k_flow_gt" / "flow_occ" / f"{sequence:06d}_{i:04d}.png"
            flow_file.parent.mkdir(parents=True, exist_ok=True)
            write_kitti_flow(flow_file, flow, valid)
            flows.append((flow_file, flow, valid))
        for i in range(count - 2):
            flow_file, flow, valid = flows[i]
            out[("train", None)].append(FixturePair(paths[i], paths[i + 1], images[i], images[i + 1], flow, valid,
                                                    flow_file))
    image1, image2 = _frame(g, size), _frame(g, size)
    path1 = base / "hd1k_challenge" / "image_2" / "000000_10.png"
    path2 = base / "hd1k_challenge" / "image_2" / "000000_11.png"
    _save_image(path1, image1)
    _save_image(path2, image2)
    out[("test", None)].append(FixturePair(path1, path2, image1, image2, None, None, None))
    return out


WRITERS = {"chairs": write_chairs, "things": write_things, "sintel": write_sintel, "kitti": write_kitti,
           "hd1k": write_hd1k}
"""Dataset name (as :class:`~perceiver_io.data.flow_datasets.FlowDataModule` spells it) -> writer."""
