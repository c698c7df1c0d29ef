"""Flow inference: tiled inference equals stitching by hand and runs batched with the same result, evaluation of the
flow task tiles larger frames, the ``perceiver-io flow`` command writes a flow PNG / ``.flo`` / video from files written
here, and every bad input is an error naming the file or argument at fault."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import av
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_io import create_model
from perceiver_io.cli import main
from perceiver_io.data import SyntheticFlowDataModule
from perceiver_io.data.flow_io import _encode_png_rgb16, read_flo
from perceiver_io.flow_tool import estimate_flow, flow_video, read_frame, write_flow_png
from perceiver_io.models.flow import predict_tiled, tile_origins, training_size, use_tiling
from perceiver_io.training.flow import OpticalFlowTask

TINY = dict(train_size=(16, 24), num_latents=8, num_latent_channels=16, num_self_attends=1, num_bands=4)


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("optical_flow_small", **TINY).eval()
    with torch.no_grad():  # the official head starts at zero: give it something to compare
        model.decoder.output.weight.normal_()
    return model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _tiny_model()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model) -> Path:
    directory = tmp_path_factory.mktemp("model")
    model.save_pretrained(directory)
    return directory


def _frames(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 2, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_video(path: Path, num_frames: int, h: int, w: int, codec: str = "mpeg4", pix_fmt: str = "yuv420p") -> Path:
    """A moving colour ramp, ``num_frames`` frames of ``h x w``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width, stream.pix_fmt = h, w, pix_fmt
        for i in range(num_frames):
            image = np.zeros((h, w, 3), np.uint8)
            image[..., 0] = (np.arange(w) * 9 + 6 * i) % 256
            image[..., 1] = (np.arange(h)[:, None] * 13 + 3 * i) % 256
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _read_video(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# ------------------------------------------------------------------------------------------------------ tiling


def _tent(h: int, w: int) -> torch.Tensor:
    y, x = torch.arange(h)[:, None], torch.arange(w)[None, :]
    return torch.minimum(torch.minimum(y + 1, h - y), torch.minimum(x + 1, w - x)).float()


def test_two_tiles_equal_stitching_by_hand_and_one_tile_equals_the_model(model):
    # 16 x 32 frames, 16 x 24 tiles, overlap 8: the official rule places tiles at x = 0 and x = 32 - 24 = 8.
    frames = _frames(2, 16, 32)
    with torch.no_grad():
        left, right = model(frames[..., :24]), model(frames[..., 8:])
    tent = _tent(16, 24)
    weighted, count = torch.zeros(2, 2, 16, 32), torch.zeros(16, 32)
    weighted[..., :24] += left * tent
    weighted[..., 8:] += right * tent
    count[:, :24] += tent
    count[:, 8:] += tent
    expected = weighted / count
    got = model.predict_tiled(frames, min_overlap=8)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[..., :8], left[..., :8], rtol=1e-6, atol=1e-6)  # one tile only: weights cancel
    torch.testing.assert_close(got[..., 24:], right[..., 16:], rtol=1e-6, atol=1e-6)
    one = _frames(1, 16, 24, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_tiled(one, min_overlap=5), model(one), rtol=1e-6, atol=1e-6)


def test_batched_tiles_equal_one_tile_at_a_time(model):
    frames = _frames(2, 40, 50)  # 4 x 3 tile origins, 12 tiles per pair
    assert tile_origins(40, 16, 5) == [0, 11, 22, 24] and tile_origins(50, 24, 5) == [0, 19, 26]
    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return model(x)

    one_by_one = predict_tiled(counting, frames, (16, 24), 5, tile_batch_size=1)
    assert calls == [1] * 24
    for size, expected_calls in ((None, [24]), (7, [7, 7, 7, 3]), (24, [24])):
        calls.clear()
        batched = predict_tiled(counting, frames, (16, 24), 5, tile_batch_size=size)
        assert calls == expected_calls
        torch.testing.assert_close(batched, one_by_one, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.predict_tiled(frames, 5, tile_batch_size=3), one_by_one, rtol=1e-6, atol=1e-6)


def test_tiling_errors_and_decisions(model):
    with pytest.raises(ValueError, match="frames: expected at least the training size 16x24, got 10x50"):
        model.predict_tiled(torch.zeros(1, 2, 3, 10, 50), min_overlap=5)
    with pytest.raises(ValueError, match="min_overlap: expected less than the tile size 16x24, got 20"):
        model.predict_tiled(_frames(1, 40, 50))
    with pytest.raises(ValueError, match="tile_batch_size: expected a positive int, got 0"):
        model.predict_tiled(_frames(1, 40, 50), 5, tile_batch_size=0)
    with pytest.raises(ValueError, match=r"model_fn: expected flow \[2, 2, 16, 24\] for 2 tiles, got \[2, 2, 8, 8\]"):
        predict_tiled(lambda x: torch.zeros(x.shape[0], 2, 8, 8), _frames(3, 16, 30), (16, 24), 10, 2)
    assert training_size(model) == (16, 24)
    assert training_size(torch.nn.Linear(2, 2)) is None  # e.g. a conv flow model: no tile size, native
    assert training_size(SimpleNamespace(input_adapter=SimpleNamespace(config=SimpleNamespace()))) is None
    tile = (16, 24)
    assert use_tiling("auto", (32, 48), tile) and use_tiling("auto", (16, 25), tile)
    assert not use_tiling("auto", (16, 24), tile)  # one tile: the same flow, faster at once
    assert not use_tiling("auto", (10, 12), tile) and not use_tiling("auto", (10, 100), tile)  # cannot tile
    assert not use_tiling("auto", (100, 100), None) and not use_tiling("native", (100, 100), tile)
    assert use_tiling("tiled", (16, 24), tile)
    with pytest.raises(ValueError, match="tiling: 'tiled' needs the model's training size"):
        use_tiling("tiled", (100, 100), None)
    with pytest.raises(ValueError, match=r"tiling: expected one of \['auto', 'native', 'tiled'\], got 'tile'"):
        use_tiling("tile", (100, 100), tile)


# -------------------------------------------------------------------------------------------------- evaluation


def test_task_evaluates_and_predicts_larger_frames_tiled(tmp_path):
    pl.seed_everything(0)
    data = SyntheticFlowDataModule(size=(32, 48), batch_size=2, num_train=4, num_val=4, num_test=4, seed=0)
    task = OpticalFlowTask(preset="optical_flow_small", overrides=TINY, tile_min_overlap=5)
    with torch.no_grad():
        task.model.decoder.output.weight.normal_()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=2, limit_predict_batches=2, default_root_dir=str(tmp_path))
    logged = trainer.validate(task, datamodule=data, verbose=False)[0]
    data.setup("validate")
    batches = list(data.val_dataloader())[:2]
    task.eval()
    tiled = [task.model.predict_tiled(b["frames"], min_overlap=5) for b in batches]
    with torch.no_grad():
        native = [task.model(b["frames"]) for b in batches]
    flow = torch.cat([b["flow"] for b in batches])
    valid = torch.cat([b["valid"] for b in batches])
    # FlowMetrics: the mean end-point error over every valid pixel of the batches
    expected = float((torch.linalg.vector_norm(torch.cat(tiled) - flow, dim=1) * valid).sum() / valid.sum())
    assert logged["val/epe"] == pytest.approx(expected, rel=1e-5)
    native_epe = float((torch.linalg.vector_norm(torch.cat(native) - flow, dim=1) * valid).sum() / valid.sum())
    assert abs(native_epe - expected) > 1e-3  # the check can tell tiled from native
    predicted = trainer.predict(task, dataloaders=data.val_dataloader())
    torch.testing.assert_close(torch.cat(predicted), torch.cat(tiled), rtol=1e-5, atol=1e-5)
    task.eval_tiling = "native"  # the switch: the whole frame at once
    torch.testing.assert_close(task.predict_flow(batches[0]["frames"]), native[0], rtol=1e-5, atol=1e-5)


def test_task_tiling_arguments():
    with pytest.raises(ValueError, match=r"eval_tiling: expected one of \['auto', 'native', 'tiled'\], got 'tile'"):
        OpticalFlowTask(preset="optical_flow_small", overrides=TINY, eval_tiling="tile")
    with pytest.raises(ValueError, match="tile_min_overlap: expected a positive int, got 0"):
        OpticalFlowTask(preset="optical_flow_small", overrides=TINY, tile_min_overlap=0)
    with pytest.raises(ValueError, match="tile_min_overlap: expected less than the tile size .* 16x24, got 20"):
        OpticalFlowTask(preset="optical_flow_small", overrides=TINY, eval_tiling="tiled")
    task = OpticalFlowTask(preset="optical_flow_small", overrides=TINY)  # auto: the overlap is checked when used
    with pytest.raises(ValueError, match="tile_min_overlap: expected less than the tile size .* 16x24, got 20"):
        task.predict_flow(_frames(1, 32, 48))
    assert task.predict_flow(_frames(1, 16, 24)).shape == (1, 2, 16, 24)  # training size: native, no overlap used


# --------------------------------------------------------------------------------------------------- the tool


def test_estimate_flow_native_and_tiled(model):
    small = torch.from_numpy(_rgb(10, 12, 0)).permute(2, 0, 1), torch.from_numpy(_rgb(10, 12, 1)).permute(2, 0, 1)
    scaled = torch.stack(small)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        native = model(scaled)[0]
    # Smaller than the training size: native resolution (auto); "tiled" is a clear error.
    torch.testing.assert_close(estimate_flow(model, *small), native, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(estimate_flow(model, scaled[0, 0], scaled[0, 1]), native, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="frames: expected at least the training size 16x24, got 10x12"):
        estimate_flow(model, *small, tiling="tiled")
    big = torch.from_numpy(_rgb(32, 48, 2)).permute(2, 0, 1), torch.from_numpy(_rgb(32, 48, 3)).permute(2, 0, 1)
    frames = torch.stack(big)[None].float() / 255 * 2 - 1
    tiled = estimate_flow(model, *big, min_overlap=5, tile_batch_size=2)
    torch.testing.assert_close(tiled, model.predict_tiled(frames, 5)[0], rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(estimate_flow(model, *big, tiling="native"), model(frames)[0], rtol=1e-6, atol=1e-6)


def test_read_frame_formats(tmp_path):
    rgb = _rgb(12, 20, 0)
    for name, image in (("rgb.png", Image.fromarray(rgb)), ("rgba.png", Image.fromarray(rgb).convert("RGBA")),
                        ("rgb.webp", Image.fromarray(rgb))):
        path = tmp_path / name
        image.save(path, lossless=True) if name.endswith(".webp") else image.save(path)
        frame = read_frame(path)
        assert frame.dtype == torch.uint8 and np.array_equal(frame.permute(1, 2, 0).numpy(), rgb), name
    palette = Image.fromarray(rgb).quantize(16)  # a palette PNG: indices, read expanded to RGB
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(read_frame(tmp_path / "palette.png").permute(1, 2, 0).numpy(), expected)
    deep = (rgb.astype(np.uint16) * 257)  # 16-bit RGB: rounded back to the same 8 bits
    (tmp_path / "deep.png").write_bytes(_encode_png_rgb16(deep))
    assert np.array_equal(read_frame(tmp_path / "deep.png").permute(1, 2, 0).numpy(), rgb)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=95)
    assert read_frame(tmp_path / "photo.jpg").shape == (3, 12, 20)


def test_cli_frame_pair_writes_png_and_flo(tmp_path, model, model_dir, capsys):
    first = _write_png(tmp_path / "a.png", _rgb(24, 40, 0))
    rgba = np.concatenate([_rgb(24, 40, 1), np.full((24, 40, 1), 128, np.uint8)], axis=2)
    second = _write_png(tmp_path / "b.png", rgba)  # RGBA: the alpha channel is dropped
    out, flo = tmp_path / "flow.png", tmp_path / "flow.flo"
    assert main(["flow", str(first), str(second), "--model", str(model_dir), "--out", str(out), "--flo", str(flo),
                 "--min-overlap", "5", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"wrote {flo}" in printed and "tiled 16x24" in printed
    picture, flow = read_frame(out), read_flo(flo)
    assert picture.shape == (3, 24, 40) and flow.shape == (2, 24, 40)
    expected = estimate_flow(model, read_frame(first), torch.from_numpy(_rgb(24, 40, 1)).permute(2, 0, 1),
                             min_overlap=5)
    torch.testing.assert_close(flow, expected, rtol=1e-6, atol=1e-6)
    from torchvision.utils import flow_to_image

    assert torch.equal(picture, flow_to_image(expected))


def test_cli_video_writes_a_flow_video(tmp_path, model_dir, capsys):
    video = _write_video(tmp_path / "in.mp4", 5, 32, 48)
    out = tmp_path / "flow.mp4"
    assert main(["flow", "--video", str(video), "--model", str(model_dir), "--out", str(out), "--max-frames", "4",
                 "--min-overlap", "5", "--no-progress", "--device", "cpu"]) == 0
    assert f"wrote {out} (3 flow frames, 48x32" in capsys.readouterr().out
    frames = _read_video(out)
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_flow_video_odd_size_and_all_frames(tmp_path, model):
    # ffv1 stores odd sizes; the flow video's encoder needs even sides, so the last row / column is repeated.
    video = _write_video(tmp_path / "odd.mkv", 3, 17, 25, codec="ffv1", pix_fmt="yuv444p")
    result = flow_video(model, video, tmp_path / "flow.avi", min_overlap=5, progress=False)
    assert (result.num_flows, result.size, result.codec, result.tiled) == (2, (18, 26), "mpeg4", True)
    frames = _read_video(tmp_path / "flow.avi")
    assert len(frames) == 2 and frames[0].shape == (18, 26, 3)


# ------------------------------------------------------------------------------------------------- bad input


def test_bad_frames_name_the_argument(model):
    frame = torch.from_numpy(_rgb(24, 40, 0)).permute(2, 0, 1)
    with pytest.raises(ValueError, match=r"frame2: expected the size of frame1, 24x40 \(HxW\), got 24x41"):
        estimate_flow(model, frame, torch.zeros(3, 24, 41, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"frame1: expected at least 3 channels \(RGB\), got 1"):
        estimate_flow(model, frame[:1], frame)
    nan = frame.float() / 127.5 - 1
    nan[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="frame2: expected finite values, got 1 NaN or inf of 2880"):
        estimate_flow(model, frame.float() / 127.5 - 1, nan)
    with pytest.raises(TypeError, match="frame1: expected a uint8 .* got dtype torch.int64"):
        estimate_flow(model, frame.long(), frame)
    with pytest.raises(ValueError, match=r"frame1, frame2: expected frames of at least 3x3 pixels .* got 2x5"):
        estimate_flow(model, frame[:, :2, :5], frame[:, :2, :5])
    with pytest.raises(ValueError, match="min_overlap: expected a positive int, got 0"):
        estimate_flow(model, frame, frame, min_overlap=0)
    with pytest.raises(ValueError, match="flow: expected finite values, got 1 NaN or inf"):
        write_flow_png(torch.tensor([[[float("inf")]], [[0.0]]]), "never.png")


def test_bad_files_name_the_file(tmp_path, model):
    grey = _write_png(tmp_path / "grey.png", _rgb(24, 40, 0)[..., 0])
    with pytest.raises(ValueError, match=f"{grey}: a greyscale image \\(1 channel\\)"):
        read_frame(grey)
    good = io.BytesIO()
    Image.fromarray(_rgb(24, 40, 0)).save(good, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.getvalue()[:60])
    with pytest.raises(ValueError, match=f"{truncated}: truncated PNG file"):
        read_frame(truncated)
    corrupt = tmp_path / "corrupt.png"
    data = bytearray(good.getvalue())
    data[60] ^= 0xFF  # inside the image data: libpng would crash on it, the CRC check refuses it first
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{corrupt}: corrupt PNG file"):
        read_frame(corrupt)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=f"{text}: corrupt or unsupported image file"):
        read_frame(text)
    with pytest.raises(FileNotFoundError, match=f"frame file not found: {tmp_path / 'missing.png'}"):
        read_frame(tmp_path / "missing.png")
    flo = tmp_path / "bad.flo"
    flo.write_bytes(b"PIEH" + b"\0" * 7)
    with pytest.raises(ValueError, match=f"{flo}: truncated .flo file"):
        read_flo(flo)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0\1\2 definitely not a video" * 50)
    with pytest.raises(ValueError, match=f"{junk}: not a readable video"):
        flow_video(model, junk, tmp_path / "out.mp4", progress=False)
    single = _write_video(tmp_path / "single.mp4", 1, 16, 24)
    with pytest.raises(ValueError, match=f"{single}: a flow video needs at least 2 frames, the video has 1"):
        flow_video(model, single, tmp_path / "out.mp4", progress=False)
    with pytest.raises(ValueError, match="max_frames: expected at least 2"):
        flow_video(model, single, tmp_path / "out.mp4", max_frames=1)
    with pytest.raises(ValueError, match=r"video_out: expected a file ending in one of .*, got .*out\.gif"):
        flow_video(model, single, tmp_path / "out.gif")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("out", "."))) == []  # nothing half-written


def test_cli_errors_are_one_line_and_exit_1(tmp_path, model_dir, capsys):
    a = _write_png(tmp_path / "a.png", _rgb(24, 40, 0))
    b = _write_png(tmp_path / "b.png", _rgb(24, 41, 1))
    grey = _write_png(tmp_path / "grey.png", _rgb(24, 40, 0)[..., 0])
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    model = ["--model", str(model_dir)]
    cases = [
        ([str(a), str(b), *model, "--out", str(tmp_path / "f.png")], ["24x40", "24x41", str(a), str(b)]),
        ([str(a), str(grey), *model, "--out", str(tmp_path / "f.png")], [str(grey), "greyscale"]),
        ([str(a), *model, "--out", str(tmp_path / "f.png")], ["FRAME1 FRAME2: expected two frame files"]),
        ([str(a), str(a), *model, "--out", str(tmp_path / "f.jpg")], ["--out: expected a .png file"]),
        ([str(a), str(a), "--out", str(tmp_path / "f.png")], ["--model: required"]),
        ([str(a), str(a), "--model", str(tmp_path), "--out", str(tmp_path / "f.png")], ["config.json"]),
        ([str(a), str(a), *model, "--out", str(tmp_path / "no" / "f.png")], ["--out: the directory of"]),
        (["--video", str(a), str(a), *model, "--out", str(tmp_path / "f.mp4")], ["not both"]),
        (["--video", str(a), *model, "--out", str(tmp_path / "f.mp4")], [str(a), "at least 2 frames, the video has 1"]),
        (["--video", str(junk), *model, "--out", str(tmp_path / "f.mp4")], [str(junk), "not a readable video"]),
        ([str(a), str(a), *model, "--out", str(tmp_path / "f.png"), "--min-overlap", "0"], ["--min-overlap"]),
    ]
    for argv, needles in cases:
        assert main(["flow", *argv, "--device", "cpu"]) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("perceiver-io flow: error: ") and "\n" not in err, err
        for needle in needles:
            assert needle in err, (needle, err)
    assert not (tmp_path / "f.png").exists()
