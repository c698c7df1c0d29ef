"""Real flow datasets through torchvision (FlyingChairs, FlyingThings3D, Sintel, KITTI-2015, HD1K) read from tiny
fixtures in each on-disk layout (tests/flow_fixtures.py): exact read-back, batch format, splits and holdouts,
predict-only test splits, determinism, errors naming the file; and the RAFT-style augmentation: flips, zoom
consistency with the frames (a warped check), crops, seeding, sparse resizing."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flow_fixtures import (
    HD1K_SEQUENCES,
    SINTEL_SCENES,
    WRITERS,
    write_chairs,
    write_kitti,
    write_sintel,
    write_things,
)
from lightning.fabric.utilities.data import _set_sampler_epoch
from torchvision import datasets as tv_datasets

from perceiver_io.data.flow_augment import (
    FlowAugmentation,
    SparseFlowAugmentation,
    resize_dense_flow,
    resize_sparse_flow,
)
from perceiver_io.data.flow_datasets import FLOW_DATASETS, FlowDataModule, open_flow_dataset

TORCHVISION_CLASSES = {"chairs": tv_datasets.FlyingChairs, "things": tv_datasets.FlyingThings3D,
                       "sintel": tv_datasets.Sintel, "kitti": tv_datasets.KittiFlow, "hd1k": tv_datasets.HD1K}
CROP = (16, 24)
#: Photometric augmentation off, so frames can be compared pixel by pixel.
NO_PHOTO = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, "eraser_prob": 0.0}
NO_SPATIAL = {"spatial_prob": 0.0, "hflip_prob": 0.0, "vflip_prob": 0.0}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Every dataset's fixture, written once for the module: name -> (root, what was written)."""
    out = {}
    for name, writer in WRITERS.items():
        root = tmp_path_factory.mktemp(name)
        out[name] = (root, writer(root))
    return out


def _to_unit(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------- datasets, exactly


@pytest.mark.parametrize("name", FLOW_DATASETS)
def test_every_split_reads_back_exactly_through_torchvision(written, name):
    root, expected = written[name]
    for (split, pass_name), pairs in expected.items():
        source = open_flow_dataset(name, root, split, pass_name)
        assert isinstance(source, TORCHVISION_CLASSES[name])
        assert len(source) == len(pairs), (split, pass_name)
        by_files = {(str(p.frame1), str(p.frame2)): p for p in pairs}
        for index in range(len(source)):
            first, second = map(str, source._image_list[index])
            pair = by_files[(first, second)]
            sample = source[index]
            assert torch.equal(sample[0], pair.image1) and torch.equal(sample[1], pair.image2)
            if pair.flow is None:
                assert sample[2] is None  # a benchmark test split: no ground truth
                continue
            flow_file = source._flow_list[index]
            assert Path(flow_file) == pair.flow_file
            # torchvision's own reader agrees with the project's on these files (the fixtures are in the real format).
            with warnings.catch_warnings():  # torchvision deprecates its PNG decoder (KITTI, HD1K)
                warnings.simplefilter("ignore", DeprecationWarning)
                native = TORCHVISION_CLASSES[name]._read_flow(source, flow_file)
            if pair.valid is None:
                assert torch.equal(sample[2], pair.flow)
                assert np.array_equal(native, pair.flow.numpy())
            else:
                assert torch.equal(sample[3], pair.valid)
                assert torch.equal(torch.where(sample[3], sample[2], 0.0), pair.flow)  # exact: 1/64 px steps
                assert np.array_equal(native[1], pair.valid.numpy()) and np.array_equal(native[0], sample[2].numpy())


@pytest.mark.parametrize("name", FLOW_DATASETS)
def test_batches_have_the_synthetic_format(written, name):
    root, expected = written[name]
    module = FlowDataModule(name, root, crop_size=CROP, batch_size=2, val_split="train")
    assert module.image_shape == (3, *CROP)
    module.setup("fit")
    train = next(iter(module.train_dataloader()))
    assert set(train) == {"frames", "flow", "valid"}
    batch = train["frames"].shape[0]
    assert train["frames"].shape == (batch, 2, 3, *CROP) and train["frames"].dtype == torch.float32
    assert train["flow"].shape == (batch, 2, *CROP) and train["flow"].dtype == torch.float32
    assert train["valid"].shape == (batch, *CROP) and train["valid"].dtype == torch.bool
    assert train["frames"].min() >= -1 and train["frames"].max() <= 1
    assert torch.isfinite(train["flow"]).all() and (train["flow"][~train["valid"][:, None].expand_as(train["flow"])]
                                                    == 0).all()

    # Validation on the training split: native resolution, unaugmented, in path order, values as written.
    pairs = sorted(expected[("train", "clean" if name in ("things", "sintel") else None)],
                   key=lambda p: (str(p.frame1), str(p.frame2)))
    loaded = list(module.val_dataloader())
    assert len(loaded) == len(pairs)
    for item, pair in zip(loaded, pairs):
        assert item["frames"].shape == (1, 2, 3, *pair.image1.shape[1:])
        assert torch.equal(item["frames"][0], torch.stack([_to_unit(pair.image1), _to_unit(pair.image2)]))
        assert torch.equal(item["flow"][0], pair.flow)
        assert torch.equal(item["valid"][0], pair.valid if pair.valid is not None
                           else torch.ones(pair.image1.shape[1:], dtype=torch.bool))


def test_predict_only_test_splits_and_the_test_loader(written):
    for name in ("sintel", "kitti", "hd1k"):
        root, expected = written[name]
        module = FlowDataModule(name, root, crop_size=CROP)
        with pytest.raises(ValueError, match="no ground-truth flow.*predict_dataloader"):
            module.setup("test")
        batches = list(module.predict_dataloader())
        pairs = expected[("test", "clean" if name == "sintel" else None)]
        assert len(batches) == len(pairs) and all(set(b) == {"frames"} for b in batches)
        assert module.predict_files() == sorted((str(p.frame1), str(p.frame2)) for p in pairs)
        assert torch.equal(batches[0]["frames"][0], torch.stack([_to_unit(pairs[0].image1),
                                                                 _to_unit(pairs[0].image2)]))
    with pytest.raises(ValueError, match="chairs has no test split"):
        FlowDataModule("chairs", written["chairs"][0], crop_size=CROP).test_dataloader()
    things = FlowDataModule("things", written["things"][0], crop_size=CROP, pass_name="final")
    test = list(things.test_dataloader())
    flows = sorted(((str(p.frame1), str(p.frame2)), p.flow) for p in written["things"][1][("test", "final")])
    assert len(test) == 2 and all(torch.equal(b["flow"][0], f) for b, (_, f) in zip(test, flows))


def test_kitti_frames_of_different_sizes_need_batch_size_one(written):
    module = FlowDataModule("kitti", written["kitti"][0], crop_size=CROP, val_split="train", eval_batch_size=3)
    with pytest.raises(ValueError, match="different sizes.*eval_batch_size=1"):
        next(iter(module.val_dataloader()))
    module = FlowDataModule("kitti", written["kitti"][0], crop_size=CROP, batch_size=3)
    train = next(iter(module.train_dataloader()))  # crops stack whatever the native sizes
    assert train["frames"].shape == (2, 2, 3, *CROP)  # 3 pairs, one held out (10% of 3, at least 1)


# ------------------------------------------------------------------------------------------------ splits, holdouts


def test_sintel_holdout_by_scene_list_and_fraction(written):
    root, _ = written["sintel"]
    module = FlowDataModule("sintel", root, crop_size=CROP, val_split=["bamboo_2"])
    train, val = module.holdout()
    assert len(train) + len(val) == sum(n - 1 for n in SINTEL_SCENES.values()) and not set(train) & set(val)
    val_files = [module.dataset("val").files(i) for i in range(len(module.dataset("val")))]
    assert [Path(f[0]).parent.name for f in val_files] == ["bamboo_2"]
    assert all(Path(module.dataset("train").files(i)[0]).parent.name != "bamboo_2"
               for i in range(len(module.dataset("train"))))

    picks = {seed: FlowDataModule("sintel", root, crop_size=CROP, val_split=0.4, seed=seed).holdout()
             for seed in range(4)}
    again = FlowDataModule("sintel", root, crop_size=CROP, val_split=0.4, seed=0).holdout()
    assert again == picks[0]  # deterministic by seed
    for train, val in picks.values():  # 0.4 of 3 scenes = 1 scene, whole scenes only
        scenes = {Path(module.source("train")._image_list[i][0]).parent.name for i in val}
        assert len(scenes) == 1 and len(train) + len(val) == 4

    with pytest.raises(ValueError, match=r"val_split: \['nowhere_9'\] are not scenes.*alley_1"):
        FlowDataModule("sintel", root, val_split=["nowhere_9"]).holdout()
    with pytest.raises(ValueError, match="val_split: sintel's splits with ground-truth flow are \\['train'\\]"):
        FlowDataModule("sintel", root, val_split="test")
    with pytest.raises(ValueError, match="leaves none for training"):
        FlowDataModule("hd1k", written["hd1k"][0], val_split=list(map("{:06d}".format, HD1K_SEQUENCES))).holdout()


def test_chairs_uses_its_split_file_and_passes_are_checked(written):
    root, expected = written["chairs"]
    module = FlowDataModule("chairs", root, crop_size=CROP)
    assert len(module.dataset("train")) == 2 and len(module.dataset("val")) == 1
    assert module.dataset("val").files(0)[2] == str(expected[("val", None)][0].flow_file)
    with pytest.raises(ValueError, match="pass_name: chairs has no render passes"):
        FlowDataModule("chairs", root, pass_name="final")
    with pytest.raises(ValueError, match=r"pass_name: expected one of \['clean', 'final', 'both'\], got 'albedo'"):
        FlowDataModule("sintel", written["sintel"][0], pass_name="albedo")
    both = FlowDataModule("sintel", written["sintel"][0], pass_name="both", val_split=["cave_4"])
    assert len(both.dataset("train")) == 6 and len(both.dataset("val")) == 2  # each pass's pairs of the scene


# ---------------------------------------------------------------------------------------------------- determinism


def test_training_batches_are_deterministic_by_seed_and_change_per_epoch(written):
    root, _ = written["sintel"]

    def first_batches(seed: int, epochs: int = 2) -> list[dict[str, torch.Tensor]]:
        module = FlowDataModule("sintel", root, crop_size=CROP, batch_size=3, seed=seed, val_split=["cave_4"])
        loader = module.train_dataloader()
        batches = []
        for epoch in range(epochs):
            _set_sampler_epoch(loader, epoch)  # what Lightning's fit loop does before each epoch
            batches.append(next(iter(loader)))
        return batches

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a[0]["frames"], a[1]["frames"])  # a new epoch: new order and augmentation
    assert not torch.equal(a[0]["frames"], c[0]["frames"])
    # Integer keys (no sampler) are fixed by the module's seed too.
    items = [FlowDataModule("sintel", root, crop_size=CROP, val_split=["cave_4"]).dataset("train")[1]
             for _ in range(2)]
    assert all(torch.equal(items[0][k], items[1][k]) for k in items[0])


def test_centre_crop_without_augmentation(written):
    root, expected = written["chairs"]
    module = FlowDataModule("chairs", root, crop_size=(20, 24), augment=False)
    item = module.dataset("train")[0]
    pair = min(expected[("train", None)], key=lambda p: str(p.frame1))
    assert torch.equal(item["flow"], pair.flow[:, 2:22, 4:28])
    assert torch.equal(item["frames"][0], _to_unit(pair.image1)[:, 2:22, 4:28])
    with pytest.raises(ValueError, match=r"00001_img1\.ppm.*smaller than crop_size 40x24"):
        FlowDataModule("chairs", root, crop_size=(40, 24), augment=False).dataset("train")[0]


# ----------------------------------------------------------------------------------------------------------- errors


def test_errors_name_the_dataset_the_root_and_the_layout(tmp_path, written):
    with pytest.raises(ValueError, match=r"dataset: expected one of \['chairs', 'things', 'sintel', 'kitti', "
                                         r"'hd1k'\], got 'middlebury'"):
        FlowDataModule("middlebury", tmp_path)
    with pytest.raises(FileNotFoundError, match="root: dataset root not found: .*nowhere"):
        FlowDataModule("sintel", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"holds no 'KittiFlow' folder; kitti expects .*training/image_2"):
        FlowDataModule("kitti", tmp_path)
    (tmp_path / "Sintel" / "training" / "clean").mkdir(parents=True)
    (tmp_path / "Sintel" / "training" / "flow").mkdir()
    with pytest.raises(ValueError, match=r"no sintel frame pairs for the train split under .*Sintel; expected "
                                         r".*training/flow/<scene>/frame_NNNN\.flo"):
        FlowDataModule("sintel", tmp_path).setup("fit")
    (tmp_path / "KittiFlow" / "training").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"kitti \(train split\) not found under .*expected .*flow_occ"):
        FlowDataModule("kitti", tmp_path).setup("fit")
    # The dataset's own folder as root works too.
    assert len(FlowDataModule("sintel", written["sintel"][0] / "Sintel", crop_size=CROP).dataset("val")) == 1
    with pytest.raises(ValueError, match="crop_size: expected \\(height, width\\), two positive ints, got \\(0, 8\\)"):
        FlowDataModule("chairs", written["chairs"][0], crop_size=(0, 8))


def test_corrupt_files_are_reported_by_path(tmp_path):
    write_chairs(tmp_path / "chairs")
    flo = tmp_path / "chairs" / "FlyingChairs" / "data" / "00002_flow.flo"
    flo.write_bytes(flo.read_bytes()[:40])  # truncated
    module = FlowDataModule("chairs", tmp_path / "chairs", crop_size=CROP)
    with pytest.raises(ValueError, match=r"00002_flow\.flo: truncated \.flo file"):
        next(iter(module.val_dataloader()))

    write_kitti(tmp_path / "kitti")
    png = tmp_path / "kitti" / "KittiFlow" / "training" / "flow_occ" / "000001_10.png"
    data = bytearray(png.read_bytes())
    data[60] ^= 0xFF  # inside the image data: the chunk CRC no longer matches
    png.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"000001_10\.png: corrupt PNG file"):
        FlowDataModule("kitti", tmp_path / "kitti", crop_size=CROP, val_split="train").dataset("val")[1]

    write_things(tmp_path / "things")
    pfm = tmp_path / "things" / "FlyingThings3D" / "optical_flow" / "TEST" / "A" / "0000" / "into_future" / "left"
    (pfm / "OpticalFlowIntoFuture_0006_L.pfm").write_bytes(b"PF\n28 36\n-1.0\n" + bytes(100))
    with pytest.raises(ValueError, match=r"OpticalFlowIntoFuture_0006_L\.pfm: truncated \.pfm file"):
        next(iter(FlowDataModule("things", tmp_path / "things", crop_size=CROP).val_dataloader()))

    write_sintel(tmp_path / "sintel")
    frame = tmp_path / "sintel" / "Sintel" / "training" / "clean" / "alley_1" / "frame_0002.png"
    frame.write_bytes(frame.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"alley_1/frame_0002\.png: corrupt or unreadable image"):
        FlowDataModule("sintel", tmp_path / "sintel", crop_size=CROP, val_split="train").dataset("val")[0]

    chairs = tmp_path / "chairs" / "FlyingChairs" / "data"
    (chairs / "00003_img2.ppm").unlink()  # torchvision would silently shift every later pair
    with pytest.raises(ValueError, match=r"5 \.ppm frames for 3 \.flo flows"):
        FlowDataModule("chairs", tmp_path / "chairs").setup("fit")


# ----------------------------------------------------------------------------------------------------- augmentation


def _texture(height: int, width: int, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """``[3, H, W]`` uint8: a smooth analytic pattern sampled at ``(x - shift_x, y - shift_y)``, so the pattern of
    ``shift`` moves by ``+shift`` relative to the unshifted one."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    xs, ys = xs - shift[0], ys - shift[1]
    channels = [128 + 60 * torch.sin(0.31 * xs + 0.17 * ys + c) + 50 * torch.cos(0.23 * ys - 0.13 * xs + 2 * c)
                for c in range(3)]
    return torch.stack(channels).round().clamp(0, 255).to(torch.uint8)


def _translation_pair(shift=(3.0, -2.0), size=(48, 64)):
    frames = torch.stack([_texture(*size), _texture(*size, shift)])
    flow = torch.tensor(shift, dtype=torch.float32)[:, None, None].expand(2, *size).clone()
    return frames, flow


def _warp_residual(frames: torch.Tensor, flow: torch.Tensor, margin: int = 2) -> float:
    """Mean |frame 1 - frame 2 sampled at p + flow(p)| over pixels whose target lies well inside frame 2."""
    height, width = flow.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    tx, ty = xs + flow[0], ys + flow[1]
    grid = torch.stack([tx * 2 / (width - 1) - 1, ty * 2 / (height - 1) - 1], -1)
    warped = F.grid_sample(frames[1:2].float(), grid[None], mode="bilinear", align_corners=True)[0]
    inside = (tx >= margin) & (tx <= width - 1 - margin) & (ty >= margin) & (ty <= height - 1 - margin)
    return float((warped - frames[0].float()).abs().mean(0)[inside].mean())


@pytest.mark.parametrize("flip", ["hflip_prob", "vflip_prob"])
def test_flips_mirror_and_negate_the_right_component(flip):
    frames, flow = _translation_pair()
    flow = flow + torch.randn(flow.shape, generator=torch.Generator().manual_seed(0))  # not constant
    augment = FlowAugmentation((48, 64), **NO_PHOTO, **{**NO_SPATIAL, flip: 1.0})
    out_frames, out_flow, valid = augment(frames, flow, generator=0)
    dim, component = (-1, 0) if flip == "hflip_prob" else (-2, 1)  # a horizontal flip negates x, a vertical y
    assert torch.equal(out_frames, frames.flip(dim)) and valid.all()
    assert torch.equal(out_flow[component], -flow[component].flip(dim))
    assert torch.equal(out_flow[1 - component], flow[1 - component].flip(dim))


def test_zoom_scales_the_flow_by_the_exact_size_ratio():
    frames, flow = _translation_pair((3.0, -2.0), (48, 64))
    zoom = 0.4  # log2: x1.32 -> 63 x 84 frames
    augment = FlowAugmentation((40, 56), min_scale=zoom, max_scale=zoom, spatial_prob=1.0, stretch_prob=0.0,
                               hflip_prob=0.0, vflip_prob=0.0, **NO_PHOTO)
    out_frames, out_flow, valid = augment(frames, flow, generator=3)
    new_h, new_w = round(48 * 2**zoom), round(64 * 2**zoom)
    assert out_frames.shape == (2, 3, 40, 56) and valid.all()
    torch.testing.assert_close(out_flow[0], torch.full((40, 56), 3.0 * new_w / 64), rtol=0, atol=1e-5)
    torch.testing.assert_close(out_flow[1], torch.full((40, 56), -2.0 * new_h / 48), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_a_translated_pair_stays_consistent_under_zoom_stretch_and_flips(seed):
    frames, flow = _translation_pair((3.0, -2.0), (48, 64))
    augment = FlowAugmentation((36, 52), min_scale=-0.3, max_scale=0.5, spatial_prob=1.0, stretch_prob=1.0,
                               max_stretch=0.2, hflip_prob=0.5, vflip_prob=0.5, **NO_PHOTO)
    out_frames, out_flow, valid = augment(frames, flow, generator=seed)
    assert valid.all()
    # Still a pure translation, scaled by the zoom and stretch of its axis (within the drawable range) and signed by
    # the flips.
    for component, shift in ((0, 3.0), (1, -2.0)):
        values = out_flow[component]
        assert torch.allclose(values, values[0, 0].expand_as(values), atol=1e-4)
        ratio = abs(float(values[0, 0]) / shift)
        assert 2 ** (-0.3 - 0.2) - 0.05 <= ratio <= 2 ** (0.5 + 0.2) + 0.05
    # Warping frame 2 back with the flow reproduces frame 1 (to about a grey level); with a sign error it would not.
    residual = _warp_residual(out_frames, out_flow)
    assert residual < 2.0, residual
    for wrong_sign in ([-1.0, 1.0], [1.0, -1.0]):
        assert _warp_residual(out_frames, out_flow * torch.tensor(wrong_sign)[:, None, None]) > 10 * max(residual, 1)


@pytest.mark.parametrize("size", [(48, 64), (10, 12), (16, 100)])
def test_the_crop_size_is_respected_even_for_small_frames(size):
    frames = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
    flow, valid = torch.randn(2, *size), torch.rand(size) < 0.5
    for augment in (FlowAugmentation((14, 20)), SparseFlowAugmentation((14, 20))):
        for seed in range(3):
            out_frames, out_flow, out_valid = augment(frames, flow, valid, generator=seed)
            assert out_frames.shape == (2, 3, 14, 20) and out_frames.dtype == torch.uint8
            assert out_flow.shape == (2, 14, 20) and out_flow.dtype == torch.float32
            assert out_valid.shape == (14, 20) and out_valid.dtype == torch.bool


def test_augmentation_is_deterministic_by_generator_or_seed():
    frames = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    flow = torch.randn(2, 40, 56)
    augment = FlowAugmentation((24, 32), eraser_size=(4, 10), asymmetric_prob=0.5)
    outputs = [augment(frames, flow, generator=seed) for seed in (5, 5)]
    outputs.append(augment(frames, flow, generator=torch.Generator().manual_seed(5)))
    for out in outputs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outputs[0], out))
    others = [augment(frames, flow, generator=seed)[0] for seed in range(6, 10)]
    assert not any(torch.equal(outputs[0][0], other) for other in others)
    torch.manual_seed(1)
    unseeded = augment(frames, flow)
    torch.manual_seed(1)
    assert torch.equal(unseeded[0], augment(frames, flow)[0])  # None: seeded from the global RNG


def test_photometric_jitter_and_eraser_leave_the_flow_alone():
    frames, flow = _translation_pair()
    jitter = FlowAugmentation((48, 64), **NO_SPATIAL, eraser_prob=0.0, asymmetric_prob=1.0)
    out_frames, out_flow, valid = jitter(frames, flow, generator=2)
    assert torch.equal(out_flow, flow) and valid.all()
    assert not torch.equal(out_frames[0], frames[0]) and not torch.equal(out_frames[1], frames[1])

    # The eraser fills rectangles of frame 2 (only) with frame 2's mean colour.
    eraser = FlowAugmentation((48, 64), **NO_SPATIAL, **{**NO_PHOTO, "eraser_prob": 1.0}, eraser_size=(8, 12))
    out_frames, out_flow, _ = eraser(frames, flow, generator=2)
    assert torch.equal(out_frames[0], frames[0]) and torch.equal(out_flow, flow)
    changed = (out_frames[1] != frames[1]).any(0)
    fill = frames[1].float().mean((1, 2)).round().to(torch.uint8)
    assert changed.sum() >= 8 and (out_frames[1][:, changed] == fill[:, None]).all()


def test_sparse_resize_moves_valid_vectors_without_interpolating():
    flow, valid = torch.zeros(2, 12, 16), torch.zeros(12, 16, dtype=torch.bool)
    points = {(2, 3): (1.5, -2.0), (10, 5): (-4.25, 0.5), (15, 11): (7.0, 3.0), (0, 0): (0.5, 0.5)}
    for (x, y), (u, v) in points.items():
        flow[:, y, x] = torch.tensor([u, v])
        valid[y, x] = True
    flow[:, ~valid] = -512.0  # KITTI's invalid pixels: no measurement, must not leak

    # x3: (x + 0.5) * 3 - 0.5 = 3x + 1 exactly.
    big, big_valid = resize_sparse_flow(flow, valid, (36, 48))
    assert int(big_valid.sum()) == len(points)
    for (x, y), (u, v) in points.items():
        assert big_valid[3 * y + 1, 3 * x + 1]
        assert torch.equal(big[:, 3 * y + 1, 3 * x + 1], torch.tensor([3 * u, 3 * v]))
    assert (big[:, ~big_valid] == 0).all()

    # Shrinking: every surviving vector is an input vector scaled by the size ratio, at its input's new pixel.
    small, small_valid = resize_sparse_flow(flow, valid, (5, 7))
    scaled = {(round((x + 0.5) * 7 / 16 - 0.5), round((y + 0.5) * 5 / 12 - 0.5)): (u * 7 / 16, v * 5 / 12)
              for (x, y), (u, v) in points.items()}
    assert int(small_valid.sum()) == len(scaled)
    for (x, y), (u, v) in scaled.items():
        assert small_valid[y, x]
        torch.testing.assert_close(small[:, y, x], torch.tensor([u, v]), rtol=0, atol=1e-6)
    assert (small[:, ~small_valid] == 0).all()

    # A dense (bilinear) resize would have blended the -512s into the valid vectors.
    dense, _ = resize_dense_flow(flow, None, (36, 48))
    assert dense.min() < -100

    # End to end: the sparse augmentation keeps only input vectors, scaled by the zoom (x sqrt(2): 17 x 23).
    g = torch.Generator().manual_seed(0)
    flow = torch.randint(-640, 640, (2, 12, 16), generator=g).float() / 64
    valid = torch.rand(12, 16, generator=g) < 0.4
    augment = SparseFlowAugmentation((10, 14), **NO_PHOTO, min_scale=0.5, max_scale=0.5, spatial_prob=1.0)
    _, out, out_valid = augment(torch.zeros(2, 3, 12, 16, dtype=torch.uint8), flow, valid, generator=0)
    ratio = torch.tensor([round(16 * math.sqrt(2)) / 16, round(12 * math.sqrt(2)) / 12])
    allowed = flow[:, valid].T * ratio  # [n, 2]
    allowed = torch.cat([allowed, allowed * torch.tensor([-1.0, 1.0])])  # either flip
    assert out_valid.sum() >= 10 and (out[:, ~out_valid] == 0).all()
    distance = torch.cdist(out[:, out_valid].T.double(), allowed.double())  # [m, 2n]
    assert (distance.min(1).values < 1e-5).all()


def test_dense_resize_marks_pixels_touched_by_invalid_ones():
    flow = torch.full((2, 8, 8), 2.0)
    valid = torch.ones(8, 8, dtype=torch.bool)
    valid[3, 3] = False
    flow[:, 3, 3] = float("nan")  # must not spread
    out, out_valid = resize_dense_flow(flow, valid, (16, 16))
    assert torch.isfinite(out).all() and not out_valid.all() and out_valid.sum() > 200
    torch.testing.assert_close(out[:, out_valid], torch.full((2, int(out_valid.sum())), 4.0))


def test_augmentation_argument_errors():
    with pytest.raises(ValueError, match="crop_size: expected \\(height, width\\)"):
        FlowAugmentation((0, 4))
    with pytest.raises(ValueError, match="hflip_prob: expected a probability in \\[0, 1\\], got 1.5"):
        FlowAugmentation((8, 8), hflip_prob=1.5)
    with pytest.raises(ValueError, match="min_scale, max_scale: expected min_scale <= max_scale"):
        FlowAugmentation((8, 8), min_scale=1.0, max_scale=0.0)
    with pytest.raises(ValueError, match="hue: expected a hue shift bound in \\[0, 0.5\\]"):
        FlowAugmentation((8, 8), hue=0.7)
    augment = FlowAugmentation((8, 8))
    with pytest.raises(TypeError, match="frames: expected uint8 pixels"):
        augment(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"flow: expected the frames' size \[2, 8, 8\], got \[2, 8, 9\]"):
        augment(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match="valid: sparse flow needs its"):
        SparseFlowAugmentation((8, 8))(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="augment: kitti has sparse ground truth, expected a SparseFlowAugmentation"):
        FlowDataModule("kitti", Path(__file__).parent, augment=FlowAugmentation((8, 8)))
