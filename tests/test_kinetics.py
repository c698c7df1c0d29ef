"""Kinetics-layout video folders: PyAV decoding, frame-rate and audio resampling, padding, bad files, data module.

Every clip is written here with PyAV: flat frames whose grey level encodes the frame index (so each output frame
tells which source frame it came from) and a sine tone (so the resampled audio can be checked by its FFT peak).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from perceiver_io.data.kinetics import (
    KineticsFolder,
    KineticsFolderDataModule,
    ShortClipWarning,
    read_clip,
)


def level(i: int) -> int:
    """The grey level (16..226) of source frame ``i``: 14 apart, so codec error (a few levels) cannot confuse them;
    the levels repeat every 16 frames."""
    return 16 + 14 * (i % 16)


def write_clip(
    path: Path,
    num_frames: int = 15,
    fps: float = 25,
    size: tuple[int, int] = (40, 30),
    vcodec: str = "mpeg4",
    acodec: str | None = "aac",
    audio_rate: int = 16_000,
    tone: float | Callable[[np.ndarray], np.ndarray] = 440.0,
) -> Path:
    """Write ``num_frames`` flat frames (frame i at grey ``level(i)``) and, unless ``acodec`` is None, the same
    duration of a 0.5-amplitude sine (``tone`` Hz, or a function of time giving the signal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1000))
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        if vcodec == "libx264":
            video.options = {"crf": "0", "preset": "ultrafast"}
        audio = out.add_stream(acodec, rate=audio_rate, layout="mono") if acodec else None
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), level(i), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            t = np.arange(round(num_frames / fps * audio_rate)) / audio_rate
            signal = tone(t) if callable(tone) else 0.5 * np.sin(2 * np.pi * tone * t)
            frame = av.AudioFrame.from_ndarray(signal.astype(np.float32)[None], format="fltp", layout="mono")
            frame.rate, frame.pts = audio_rate, 0
            out.mux(audio.encode(frame))
            out.mux(audio.encode())
    return path


def frame_indices(image: torch.Tensor) -> list[int]:
    """The source frame (modulo 16) each output frame ``[T, 3, H, W]`` shows, from its mean grey level."""
    means = image.mean(dim=(1, 2, 3)) * 255
    return [round((m - 16) / 14) for m in means.tolist()]


def peak_hz(audio: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio[:, 0].double().numpy() * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


# ----------------------------------------------------------------------------------------------------- read_clip

FORMATS = [  # (file, video codec, audio codec, audio rate, source fps)
    ("a.mp4", "libx264", "aac", 16_000, 25),
    ("b.avi", "mpeg4", "pcm_s16le", 44_100, 30),
    ("c.mkv", "mpeg4", "aac", 44_100, 30),
    ("d.webm", "libvpx", "libopus", 48_000, 25),
]


@pytest.mark.parametrize("name, vcodec, acodec, rate, fps", FORMATS)
def test_read_clip_shapes_ranges_and_tone(clips, name, vcodec, acodec, rate, fps):
    path = write_clip(clips / name, num_frames=15, fps=fps, vcodec=vcodec, acodec=acodec, audio_rate=rate,
                      tone=1000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a full-length clip must not warn
        clip = read_clip(path, num_frames=10, image_size=16, fps=25, audio_rate=24_000)
    image, audio = clip["image"], clip["audio"]
    assert image.shape == (10, 3, 16, 16) and image.dtype == torch.float32
    assert audio.shape == (10 * 24_000 // 25, 1) and audio.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and audio.abs().max() <= 1
    # The tone survives resampling from the file's rate to 24 kHz, at its amplitude (0.5: RMS 0.35).
    assert abs(peak_hz(audio, 24_000) - 1000) < 5
    assert 0.3 < audio[2000:].pow(2).mean().sqrt() < 0.4
    # 25 fps from a 25 or 30 fps source: frame i shows source frame floor(i * fps / 25).
    assert frame_indices(image) == [i * fps // 25 for i in range(10)]


def test_frames_resampled_down_up_and_from_start_s(clips):
    path = write_clip(clips / "thirty.avi", num_frames=15, fps=30, acodec="pcm_s16le")  # 0.5 s
    # 30 -> 25 fps drops every sixth frame (the one showing at i / 25 s is floor(1.2 i)).
    down = read_clip(path, num_frames=12, image_size=8, fps=25, audio_rate=16_000)
    assert frame_indices(down["image"]) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13]
    # 30 -> 75 fps repeats each frame 2 or 3 times (floor(0.4 i)).
    up = read_clip(path, num_frames=15, image_size=8, fps=75, audio_rate=15_000)
    assert frame_indices(up["image"]) == [2 * i // 5 for i in range(15)]
    # From start_s = 0.2 s: frame i shows floor(30 * (0.2 + i / 25)) = 6 + floor(1.2 i).
    late = read_clip(path, num_frames=6, image_size=8, fps=25, audio_rate=16_000, start_s=0.2)
    assert frame_indices(late["image"]) == [6, 7, 8, 9, 10, 12]


# aac: short audio packets; pcm_s16le: the whole track in one packet, so a seek near start_s skips its audio.
@pytest.mark.parametrize("acodec", ["aac", "pcm_s16le"])
def test_audio_span_follows_start_s(clips, acodec):
    # 500 Hz for the first second, then 1500 Hz: the span's tone tells where its audio was taken from.
    def step(t: np.ndarray) -> np.ndarray:
        return 0.5 * np.sin(2 * np.pi * np.where(t < 1.0, 500.0, 1500.0) * t)

    path = write_clip(clips / f"step-{acodec}.mkv", num_frames=50, fps=25, acodec=acodec, audio_rate=44_100,
                      tone=step)
    early = read_clip(path, num_frames=5, image_size=8, fps=25, audio_rate=16_000)  # 0-0.2 s
    late = read_clip(path, num_frames=10, image_size=8, fps=25, audio_rate=16_000, start_s=1.2)  # 1.2-1.6 s
    assert abs(peak_hz(early["audio"], 16_000) - 500) < 10
    assert abs(peak_hz(late["audio"], 16_000) - 1500) < 5
    assert late["audio"].abs().max() > 0.45
    assert frame_indices(late["image"]) == [i % 16 for i in range(30, 40)]


def test_short_clip_padded_with_warning(clips):
    path = write_clip(clips / "short.avi", num_frames=5, fps=25, acodec="pcm_s16le", audio_rate=16_000)  # 0.2 s
    with pytest.warns(ShortClipWarning, match=r"short\.avi.*5 of 10 frames.*0\.200 s of audio") as record:
        clip = read_clip(path, num_frames=10, image_size=8, fps=25, audio_rate=16_000)
    assert len(record) == 1
    assert frame_indices(clip["image"]) == [0, 1, 2, 3, 4, 4, 4, 4, 4, 4]  # the last frame repeated
    audio = clip["audio"][:, 0]
    assert audio.shape == (6400,)
    assert audio[:3200].abs().max() > 0.45 and torch.all(audio[3200:] == 0)


def test_clip_without_audio_is_silent_with_warning(clips):
    path = write_clip(clips / "mute.mkv", num_frames=12, fps=25, acodec=None)
    with pytest.warns(ShortClipWarning, match=r"mute\.mkv has no audio stream"):
        clip = read_clip(path, num_frames=12, image_size=8, fps=25, audio_rate=16_000)
    assert clip["audio"].shape == (12 * 640, 1) and torch.all(clip["audio"] == 0)
    assert frame_indices(clip["image"]) == list(range(12))


def test_corrupt_and_missing_files_name_the_file(clips):
    garbage = clips / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"garbage\.mp4"):
        read_clip(garbage, num_frames=4, image_size=8)
    whole = write_clip(clips / "whole.mp4", vcodec="libx264").read_bytes()
    truncated = clips / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"truncated\.mp4"):
        read_clip(truncated, num_frames=4, image_size=8)
    empty = clips / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.mkv"):
        read_clip(empty, num_frames=4, image_size=8)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.mp4"):
        read_clip(clips / "nowhere.mp4")


@pytest.mark.parametrize("kwargs, name", [
    ({"num_frames": 0}, "num_frames"), ({"image_size": 0}, "image_size"), ({"fps": 0.0}, "fps"),
    ({"fps": float("nan")}, "fps"), ({"audio_rate": -1}, "audio_rate"), ({"start_s": -0.5}, "start_s"),
    ({"num_frames": 3, "fps": 7.0, "audio_rate": 16_000}, r"num_frames \* audio_rate / fps"),
])
def test_read_clip_bad_arguments_name_the_argument(clips, kwargs, name):
    path = write_clip(clips / "args.mp4", num_frames=2, acodec=None)
    with pytest.raises(ValueError, match=name):
        read_clip(path, **kwargs)


# ------------------------------------------------------------------------------------------- folder and data module

def make_folder(root: Path, layout: dict[str, dict[str, int]], frames: int = 6) -> None:
    """``layout[split][class]`` clips of ``frames`` frames each (pcm audio in .avi: quick to write and read)."""
    for split, classes in layout.items():
        for name, count in classes.items():
            for k in range(count):
                write_clip(root / split / name / f"clip{k}.avi", num_frames=frames, fps=25, size=(32, 24),
                           acodec="pcm_s16le", audio_rate=16_000)


def test_kinetics_folder_classes_labels_and_errors(tmp_path):
    make_folder(tmp_path, {"train": {"walking": 1, "archery": 2}, "val": {"walking": 1}})
    (tmp_path / "train" / "archery" / "notes.txt").write_text("not a clip")
    (tmp_path / "train" / ".hidden").mkdir()
    train = KineticsFolder(tmp_path, "train", num_frames=4, image_size=8, audio_rate=16_000)
    assert train.classes == ["archery", "walking"]
    assert [(Path(p).relative_to(tmp_path).as_posix(), y) for p, y in train.samples] == [
        ("train/archery/clip0.avi", 0), ("train/archery/clip1.avi", 0), ("train/walking/clip0.avi", 1)]
    item = train[2]
    assert item["image"].shape == (4, 3, 8, 8) and item["audio"].shape == (4 * 640, 1)
    assert item["label"].dtype == torch.int64 and item["label"].shape == () and item["label"].item() == 1
    val = KineticsFolder(tmp_path, "val", num_frames=4, image_size=8, audio_rate=16_000, classes=train.classes)
    assert val.samples[0][1] == 1  # the training split's id for "walking"
    make_folder(tmp_path, {"val": {"swimming": 1}})
    with pytest.raises(ValueError, match=r"val[/\\]swimming"):
        KineticsFolder(tmp_path, "val", num_frames=4, image_size=8, audio_rate=16_000, classes=train.classes)
    with pytest.raises(FileNotFoundError, match=r"test"):
        KineticsFolder(tmp_path, "test", num_frames=4, image_size=8, audio_rate=16_000)
    (tmp_path / "empty" / "walking").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no clips in .*empty"):
        KineticsFolder(tmp_path, "empty", num_frames=4, image_size=8, audio_rate=16_000)


def test_data_module_batches_attributes_and_seeded_shuffle(tmp_path):
    make_folder(tmp_path, {"train": {"b": 2, "a": 2}, "val": {"a": 1, "b": 1}})
    kwargs = {"num_frames": 4, "image_size": 8, "fps": 25.0, "audio_rate": 16_000, "batch_size": 3, "seed": 1}
    dm = KineticsFolderDataModule(tmp_path, **kwargs)
    assert (dm.num_frames, dm.image_size, dm.audio_samples, dm.audio_samples_per_frame) == (4, 8, 2560, 640)
    assert dm.classes == ["a", "b"] and dm.num_classes == 2 and dm.hparams["batch_size"] == 3
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 4, 3, 8, 8) and batch["audio"].shape == (3, 2560, 1)
    assert batch["label"].shape == (3,) and batch["label"].dtype == torch.int64
    assert [b["label"].tolist() for b in dm.val_dataloader()] == [[0, 1]]
    # No test folder: test and predict use val.
    dm.setup("test")
    assert [b["label"].tolist() for b in dm.test_dataloader()] == [[0, 1]]
    assert len(list(dm.predict_dataloader())) == 1
    # The shuffle is fixed by the seed.
    again = KineticsFolderDataModule(tmp_path, **kwargs)
    again.setup("fit")
    assert torch.equal(next(iter(again.train_dataloader()))["label"], batch["label"])


def test_data_module_bad_arguments_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        KineticsFolderDataModule(tmp_path / "nowhere")
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'val'"):
        KineticsFolderDataModule(tmp_path)
    (tmp_path / "val").mkdir()
    with pytest.raises(ValueError, match=r"no class folders"):
        KineticsFolderDataModule(tmp_path)
    (tmp_path / "train" / "a").mkdir()
    for kwargs, name in (({"batch_size": 0}, "batch_size"), ({"num_workers": -1}, "num_workers"),
                         ({"num_frames": 16, "fps": 7.0, "audio_rate": 16_000}, "num_frames")):
        with pytest.raises(ValueError, match=name):
            KineticsFolderDataModule(tmp_path, **kwargs)
    dm = KineticsFolderDataModule(tmp_path, num_frames=4, audio_rate=16_000)
    with pytest.raises(ValueError, match=r"no clips in .*train"):
        dm.setup("fit")
