"""Data modules: scikit-learn digits splits, ImageNet-layout folders, the official augmentation, and bad folders."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from perceiver_io.data import (
    CenterCropFraction,
    CorruptImageWarning,
    DigitsDataModule,
    ImageFolderDataModule,
    MixUpCutMix,
    official_train_transform,
)

# ---------------------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule()
    dm.setup("fit")
    return dm


def test_digits_split_sizes_fixed_disjoint_and_complete(digits):
    sizes = {split: len(ds) for split, ds in digits.datasets.items()}
    assert sizes == {"train": 1257, "val": 180, "test": 360}
    idx = digits.indices
    assert not set(idx["train"]) & set(idx["val"])
    assert not set(idx["train"]) & set(idx["test"])
    assert not set(idx["val"]) & set(idx["test"])
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(1797))


def test_digits_splits_are_stratified(digits):
    from sklearn.datasets import load_digits

    all_counts = np.bincount(load_digits().target, minlength=10)
    for split, fraction in (("test", 360 / 1797), ("val", 180 / 1797)):
        counts = np.bincount(digits.datasets[split].tensors[1].numpy(), minlength=10)
        assert np.all(np.abs(counts - all_counts * fraction) <= 1), (split, counts)


def test_digits_reproducible_across_instances_and_seeded(digits):
    other = DigitsDataModule()
    other.setup()
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(other.indices[split], digits.indices[split])
    # the seeded training shuffle: the same first batch from two fresh loaders
    x1, y1 = next(iter(digits.train_dataloader()))
    x2, y2 = next(iter(other.train_dataloader()))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    changed = DigitsDataModule(seed=1)
    changed.setup()
    assert not np.array_equal(changed.indices["test"], digits.indices["test"])


def test_digits_values_and_batches(digits):
    assert digits.num_classes == 10 and digits.image_shape == (1, 8, 8)
    assert list(digits.class_names) == [str(d) for d in range(10)]
    x, y = next(iter(digits.train_dataloader()))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.shape == (64,) and y.dtype == torch.long
    pixels = digits.datasets["train"].tensors[0]
    assert pixels.min() == -1.0 and pixels.max() == 1.0
    raw = DigitsDataModule(normalize=False)
    raw.setup()
    raw_pixels = raw.datasets["train"].tensors[0]
    assert raw_pixels.min() == 0.0 and raw_pixels.max() == 1.0
    torch.testing.assert_close(pixels, raw_pixels * 2 - 1)
    # val / test / predict are not shuffled; predict is the test set
    for loader, split in ((digits.val_dataloader(), "val"), (digits.test_dataloader(), "test"),
                          (digits.predict_dataloader(), "test")):
        labels = torch.cat([b[1] for b in loader])
        assert torch.equal(labels, digits.datasets[split].tensors[1])


def test_digits_without_validation_matches_design_split():
    dm = DigitsDataModule(val_fraction=0.0)
    assert len(dm.train_dataloader().dataset) == 1437  # dataloaders set up on demand
    assert len(dm.val_dataloader()) == 0


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(val_fraction=-0.1), dict(test_fraction=0.0),
                                    dict(val_fraction=0.5, test_fraction=0.5), dict(num_workers=-1)])
def test_digits_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DigitsDataModule(**kwargs)


def test_digits_split_too_small_to_stratify():
    with pytest.raises(ValueError, match="too small to stratify"):
        DigitsDataModule(val_fraction=0.002).setup()


# ---------------------------------------------------------------------------------------------------- image folder

COLOURS = {"ant": (220, 20, 20), "bee": (20, 220, 20), "cat": (20, 20, 220)}  # class id i <-> channel i


def _write_image(path: Path, colour, size=(40, 30), seed=0) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def make_folder(root: Path, per_class: dict[str, int] | None = None, splits=("train", "val")) -> Path:
    """3 classes (created out of sorted order) x 4 train / 2 val images of 40x30 px, JPEG and PNG."""
    for split in splits:
        n = 4 if split == "train" else 2
        for name in ("cat", "ant", "bee"):
            for i in range((per_class or {}).get(name, n)):
                _write_image(root / split / name / f"{name}{i}.{'jpg' if i % 2 else 'png'}", COLOURS[name], seed=i)
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


def test_image_folder_classes_follow_sorted_names(folder):
    dm = ImageFolderDataModule(folder, image_size=32, batch_size=4, num_workers=0, augment="none")
    assert dm.class_names == ["ant", "bee", "cat"] and dm.num_classes == 3 and dm.image_shape == (3, 32, 32)
    dm.setup("fit")
    for path, label in dm.datasets["train"].samples:
        assert Path(path).parent.name == dm.class_names[label]
    # the pixels agree: class i was drawn in colour channel i
    for x, y in dm.val_dataloader():
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
        assert torch.equal(x.mean(dim=(2, 3)).argmax(dim=1), y)


def test_image_folder_batches_without_augmentation(folder):
    dm = ImageFolderDataModule(folder, image_size=32, batch_size=5, num_workers=0, augment="none")
    batches = list(dm.train_dataloader())
    assert [b[0].shape for b in batches] == [(5, 3, 32, 32), (5, 3, 32, 32), (2, 3, 32, 32)]
    assert all(b[1].dtype == torch.long and b[1].ndim == 1 for b in batches)
    assert dm.test_split == "val" and len(dm.test_dataloader().dataset) == 6
    assert len(dm.predict_dataloader().dataset) == 6


def test_official_train_augmentation_shapes_and_soft_targets(folder):
    torch.manual_seed(0)
    dm = ImageFolderDataModule(folder, image_size=32, batch_size=6, num_workers=0)
    ra = [t for t in dm.train_transform.transforms if isinstance(t, v2.RandAugment)]
    assert len(ra) == 1 and ra[0].num_ops == 4 and ra[0].magnitude == 5 and ra[0].num_magnitude_bins == 11
    rrc = dm.train_transform.transforms[0]
    assert isinstance(rrc, v2.RandomResizedCrop) and rrc.scale == (0.08, 1.0)
    assert rrc.interpolation == v2.InterpolationMode.BICUBIC
    for images, targets in dm.train_dataloader():
        assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
        assert targets.shape == (6, 3) and targets.dtype == torch.float32
        assert torch.all(targets >= 0)
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(6))
    image, _ = dm.datasets["train"][0]
    again, _ = dm.datasets["train"][0]
    assert image.shape == (3, 32, 32) and not torch.equal(image, again)  # random


def test_mixing_can_be_left_to_the_training_step(folder):
    dm = ImageFolderDataModule(folder, image_size=32, batch_size=6, num_workers=0, mix_in_collate=False)
    images, labels = next(iter(dm.train_dataloader()))
    assert labels.dtype == torch.long and labels.shape == (6,)
    mixed, targets = dm.batch_augment(images, labels)
    assert mixed.shape == images.shape and targets.shape == (6, 3)
    off = ImageFolderDataModule(folder, image_size=32, num_workers=0, mixup_alpha=0, cutmix_alpha=0)
    assert off.batch_augment is None
    assert ImageFolderDataModule(folder, image_size=32, num_workers=0, augment="none").batch_augment is None


def test_mixup_on_first_half_cutmix_on_second_half():
    torch.manual_seed(1)
    images = torch.rand(8, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    mixed, targets = MixUpCutMix(num_classes=8, mixup_alpha=0.2, cutmix_alpha=1.0)(images, labels)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    # MixUp half: one ratio, each image mixed with its neighbour in the half (roll by one)
    lam = targets[0, 0]
    torch.testing.assert_close(mixed[:4], lam * images[:4] + (1 - lam) * images[:4].roll(1, 0))
    for i in range(4):
        assert targets[i, i] == lam and targets[i, (i - 1) % 4] == 1 - lam
    # CutMix half: every pixel comes from the image or its neighbour; the target weight is the kept area
    own, rolled = images[4:], images[4:].roll(1, 0)
    from_own = (mixed[4:] == own).all(dim=1)
    assert torch.all(from_own | (mixed[4:] == rolled).all(dim=1))
    kept = from_own.float().mean(dim=(1, 2))
    torch.testing.assert_close(kept, targets[4:, 4:].diagonal())
    assert torch.all(targets[:4, 4:] == 0) and torch.all(targets[4:, :4] == 0)


def test_mixing_bad_inputs():
    mix = MixUpCutMix(num_classes=3)
    with pytest.raises(ValueError, match="integer labels"):
        mix(torch.rand(4, 3, 8, 8), torch.rand(4))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        mix(torch.rand(3, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="mixup_alpha"):
        MixUpCutMix(num_classes=3, mixup_alpha=-1)
    with pytest.raises(ValueError, match="0..10"):
        official_train_transform(32, randaugment_magnitude=11)


def test_eval_transform_is_deterministic_and_crops_the_centre(folder):
    dm = ImageFolderDataModule(folder, image_size=32, num_workers=0)
    first = torch.stack([dm.dataset("val")[i][0] for i in range(6)])
    second = torch.stack([dm.dataset("val")[i][0] for i in range(6)])
    assert first.shape == (6, 3, 32, 32) and torch.equal(first, second)
    # geometry: 224/256 of the short side, centred, then resized (here to the crop's own size: no resampling)
    image = torch.arange(256 * 320, dtype=torch.float32).reshape(1, 256, 320)
    torch.testing.assert_close(CenterCropFraction(224)(image), image[:, 16:240, 48:272])
    assert CenterCropFraction(32)(Image.new("RGB", (40, 30))).size == (32, 32)


def test_val_split_uses_training_class_ids(tmp_path):
    root = make_folder(tmp_path / "data", splits=("train",))
    _write_image(root / "val" / "cat" / "c.png", COLOURS["cat"])
    dm = ImageFolderDataModule(root, image_size=32, num_workers=0)
    assert [label for _, label in dm.dataset("val").samples] == [2]
    _write_image(root / "val" / "dog" / "d.png", COLOURS["cat"])
    dm = ImageFolderDataModule(root, image_size=32, num_workers=0)
    with pytest.raises(ValueError, match="dog"):
        dm.setup("validate")


def test_test_folder_is_used_when_present(tmp_path):
    root = make_folder(tmp_path / "data", splits=("train", "val", "test"))
    dm = ImageFolderDataModule(root, image_size=32, num_workers=0)
    assert dm.test_split == "test"
    dm.setup("test")
    assert Path(dm.test_dataloader().dataset.root).name == "test"


# -------------------------------------------------------------------------------------------------------- faults


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataModule(tmp_path / "nowhere")


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split(tmp_path, split):
    root = make_folder(tmp_path / "data", splits=({"train", "val"} - {split}))
    with pytest.raises(FileNotFoundError, match=str(root / split)):
        ImageFolderDataModule(root)


def test_split_without_class_folders(tmp_path):
    root = make_folder(tmp_path / "data", splits=("val",))
    (root / "train").mkdir()
    with pytest.raises(ValueError, match=f"no class folders in {root / 'train'}"):
        ImageFolderDataModule(root)


def test_split_without_images(tmp_path):
    root = make_folder(tmp_path / "data", splits=("train",))
    (root / "val" / "ant").mkdir(parents=True)
    (root / "val" / "ant" / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(root, num_workers=0)
    with pytest.raises(ValueError, match=f"no images in {root / 'val'} "):
        dm.setup("fit")


def test_empty_class_folder(tmp_path):
    root = make_folder(tmp_path / "data", per_class={"bee": 0})
    (root / "train" / "bee").mkdir()
    dm = ImageFolderDataModule(root, num_workers=0)  # "bee" is a class: its folder exists
    with pytest.raises(ValueError, match=f"no images in class folder {root / 'train' / 'bee'}$") as info:
        dm.setup("fit")
    assert "\n" not in str(info.value)


def test_hidden_folders_are_not_classes(folder):
    (folder / "train" / ".ipynb_checkpoints").mkdir()
    assert ImageFolderDataModule(folder, num_workers=0).class_names == ["ant", "bee", "cat"]


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.mark.parametrize("content", [b"this is not an image" * 10, _truncated_jpeg()], ids=["garbage", "truncated"])
def test_unreadable_image_is_skipped_warned_once_and_counted(folder, content):
    bad = folder / "train" / "bee" / "x.jpg"
    bad.write_bytes(content)
    dm = ImageFolderDataModule(folder, image_size=32, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 13
    with pytest.warns(CorruptImageWarning, match=r"skipping unreadable image .*x\.jpg") as record:
        seen = sum(len(images) for images, _ in dm.train_dataloader())
    assert seen == 13  # the bad file's place is taken by another sample
    assert len([w for w in record if issubclass(w.category, CorruptImageWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptImageWarning)  # known bad: skipped silently from now on
        assert sum(len(images) for images, _ in dm.train_dataloader()) == 13
    assert dm.num_skipped == 1 and dm.skipped_files == [str(bad)]


def test_unreadable_image_in_a_worker_process_is_counted(folder):
    (folder / "val" / "ant" / "x.jpg").write_bytes(b"\x00garbage")
    dm = ImageFolderDataModule(folder, image_size=32, batch_size=8, num_workers=1, augment="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        labels = torch.cat([y for _, y in dm.val_dataloader()])
    assert len(labels) == 7 and dm.num_skipped == 1


def test_verify_drops_unreadable_images_up_front(folder):
    (folder / "train" / "cat" / "x.jpg").write_bytes(b"garbage")
    dm = ImageFolderDataModule(folder, image_size=32, num_workers=0, verify=True)
    with pytest.warns(CorruptImageWarning, match="x.jpg"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 12 and dm.num_skipped == 1


def test_class_with_only_unreadable_images_fails_verification(folder):
    for path in (folder / "val" / "cat").iterdir():
        path.write_bytes(b"garbage")
    dm = ImageFolderDataModule(folder, num_workers=0, verify=True)
    with pytest.warns(CorruptImageWarning), pytest.raises(ValueError, match="no images in class folder .*cat"):
        dm.setup("validate")


def test_all_images_unreadable(folder):
    for path in (folder / "val").rglob("*.*"):
        path.write_bytes(b"garbage")
    dm = ImageFolderDataModule(folder, num_workers=0)
    with pytest.warns(CorruptImageWarning), pytest.raises(RuntimeError, match="none of the 6 image files"):
        dm.dataset("val")[0]


@pytest.mark.parametrize("kwargs", [dict(augment="heavy"), dict(image_size=0), dict(batch_size=0),
                                    dict(resize_ratio=1.5), dict(std=(1.0, 1.0))])
def test_image_folder_bad_arguments(folder, kwargs):
    with pytest.raises(ValueError):
        ImageFolderDataModule(folder, **kwargs)


def test_digits_affine_translation_moves_each_image_by_at_most_translate_pixels():
    from perceiver_io.data.digits import random_affine

    dm = DigitsDataModule(batch_size=4)
    dm.setup()
    images = dm.datasets["train"].tensors[0][:64].double()
    warped = random_affine(images, translate=1.0, background=-1.0, generator=torch.Generator().manual_seed(0))
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")

    def centre(x):  # centre of mass of the ink (pixels above the background)
        ink = (x[:, 0] + 1.0).clamp_min(0)
        total = ink.sum((1, 2))
        return torch.stack([(ink * ys).sum((1, 2)) / total, (ink * xs).sum((1, 2)) / total], 1)

    moved = (centre(warped) - centre(images)).abs()
    assert moved.max() <= 1.0 + 0.15  # ink cut at the border can pull the centre a little further
    assert (moved.amax(1) > 0.1).float().mean() > 0.5  # most images really move
    ink = lambda x: (x + 1.0).sum((1, 2, 3))  # noqa: E731
    assert torch.allclose(ink(warped), ink(images), rtol=0.25)  # a shift keeps the ink (some leaves at the border)
