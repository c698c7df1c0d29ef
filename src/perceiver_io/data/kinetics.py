"""Kinetics-layout video folders (``root/{train,val[,test]}/<class>/<clip>.mp4``) for multimodal autoencoding.

Each clip becomes what the paper's Kinetics autoencoder reads: ``num_frames`` RGB frames at a fixed frame rate,
resized and centre-cropped to a square, the audio over the same span as mono samples at a fixed rate, and the class
id. Clips are decoded with PyAV (FFmpeg) when an item is loaded, so the folder can hold the original files. Short
clips are padded (with a warning) rather than dropped, so every batch has the configured shapes; unreadable files
fail with a one-line error naming the file.
"""

from __future__ import annotations

import math
import os
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import lightning.pytorch as pl
import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset, default_collate

from ..core.validation import check_positive

Split = Literal["train", "val", "test"]
#: File name endings (lower case) that count as clips.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm")
#: What counts as an unreadable clip: every PyAV error derives from FFmpegError (InvalidDataError for corrupt data
#: is one of them, and a ValueError too); OSError covers failing reads of the file itself.
UNREADABLE_VIDEO_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, av.error.InvalidDataError, OSError)

# Timestamps are compared with this slack (seconds): far below any frame period, above timestamp rounding to the
# stream's time base (e.g. 29.97 fps stored in 1/30000 ticks).
_TIME_EPS = 1e-4
# How far before the span read_clip seeks (seconds); see _decode.
_SEEK_PREROLL_S = 0.5


class ShortClipWarning(UserWarning):
    """A clip was shorter than the requested span (or had no audio) and was padded."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders of a split (hidden folders such as ``.ipynb_checkpoints`` excluded)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _check_clip_args(num_frames: int, image_size: int, fps: float, audio_rate: int, start_s: float) -> int:
    """Validate :func:`read_clip`'s arguments; returns the number of audio samples ``num_frames * audio_rate / fps``."""
    check_positive("num_frames", num_frames)
    check_positive("image_size", image_size)
    check_positive("audio_rate", audio_rate)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps: expected a positive finite number, got {fps!r}")
    if isinstance(start_s, bool) or not isinstance(start_s, (int, float)) or not math.isfinite(start_s) or start_s < 0:
        raise ValueError(f"start_s: expected a non-negative finite number of seconds, got {start_s!r}")
    samples = num_frames * audio_rate / fps
    # The audio must cover exactly the video's span, so that audio and frames line up in the model.
    if abs(samples - round(samples)) > 1e-6 * max(1.0, samples):
        raise ValueError(f"num_frames * audio_rate / fps must be a whole number of audio samples, got "
                         f"{num_frames} * {audio_rate} / {fps:g} = {samples:g}; change num_frames, audio_rate or fps")
    return round(samples)


def _frame_time(frame: av.frame.Frame, fallback: float) -> float:
    """A decoded frame's presentation time in seconds (``fallback`` when the file gives it no timestamp)."""
    t = frame.time
    return fallback if t is None else float(t)


class _FramePicker:
    """Picks, for each target time, the decoded frame showing then (the last one presented at or before it).

    Frames arrive in presentation order; only the frames actually picked are converted to RGB, and a frame picked
    for several targets (when ``fps`` exceeds the clip's frame rate) is converted once.
    """

    def __init__(self, targets: list[float], stream: av.video.stream.VideoStream) -> None:
        self.targets = targets
        rate = stream.average_rate or stream.guessed_rate
        # Used when frames carry no duration / timestamp: the nominal frame period.
        self.period = float(1 / rate) if rate else 0.0
        self.frames: list[np.ndarray] = []  # distinct picked frames, [H, W, 3] uint8
        self.picks: list[int] = []  # per target: index into self.frames
        self.prev: av.VideoFrame | None = None
        self.prev_id: int | None = None
        self.prev_time = 0.0
        self.end_time = 0.0  # when the last frame seen stops showing
        self.count = 0
        self.first_time: float | None = None  # of the first frame decoded
        self.done = False

    def _pick_prev(self) -> None:
        if self.prev_id is None:
            self.frames.append(self.prev.to_ndarray(format="rgb24"))
            self.prev_id = len(self.frames) - 1
        self.picks.append(self.prev_id)

    def feed(self, frame: av.VideoFrame) -> None:
        t = _frame_time(frame, self.prev_time + self.period if self.count else 0.0)
        self.count += 1
        if self.first_time is None:
            self.first_time = t
        while len(self.picks) < len(self.targets) and t > self.targets[len(self.picks)] + _TIME_EPS:
            if self.prev is None:  # a target before the first frame: nothing earlier exists, so show the first one
                self.prev, self.prev_id = frame, None
            self._pick_prev()
        if len(self.picks) == len(self.targets):
            self.done = True  # this frame is presented after the last target: no later frame matters
            return
        if frame is not self.prev:  # (it already is when it was picked for targets before the first frame)
            self.prev, self.prev_id = frame, None
        self.prev_time = t
        duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else self.period
        self.end_time = t + duration

    def finish(self) -> int:
        """Assign the last frame to the targets left; returns how many of them lie past the end of the clip."""
        missing = 0
        while len(self.picks) < len(self.targets):
            missing += self.targets[len(self.picks)] >= self.end_time - _TIME_EPS
            self._pick_prev()
        return missing


class _AudioCollector:
    """Resamples an audio stream to mono ``rate`` float samples and keeps them until ``start + samples`` is covered."""

    def __init__(self, start: float, samples: int, rate: int) -> None:
        self.start, self.samples, self.rate = start, samples, rate
        self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        self.chunks: list[np.ndarray] = []
        self.total = 0
        self.first_time: float | None = None
        self.done = False

    @property
    def offset(self) -> int:
        """Index of the span's first sample in the collected samples (negative: the audio starts after it)."""
        return round((self.start - (self.first_time or 0.0)) * self.rate)

    def _add(self, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            self.chunks.append(out.to_ndarray().reshape(-1))  # fltp mono: [1, n]
            self.total += out.samples
        self.done = self.total >= self.offset + self.samples

    def feed(self, frame: av.AudioFrame) -> None:
        if self.first_time is None:
            # The resampler's output starts at the first input sample, so sample k is at first_time + k / rate.
            self.first_time = _frame_time(frame, self.start)
        self._add(self.resampler.resample(frame))

    def finish(self) -> tuple[np.ndarray, int, int]:
        """The span's samples ``[samples]`` (zero-padded), and how many were missing before and after the audio."""
        if self.first_time is not None:
            self._add(self.resampler.resample(None))  # flush what the resampler holds back
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        lo = self.offset
        out = np.zeros(self.samples, np.float32)
        src = audio[max(lo, 0):lo + self.samples]
        lead = min(max(-lo, 0), self.samples)
        out[lead:lead + len(src)] = src
        return out, lead, self.samples - lead - len(src)


def _resize_frames(frames: list[np.ndarray], image_size: int) -> torch.Tensor:
    """``[H, W, 3]`` uint8 frames -> ``[N, 3, image_size, image_size]`` float32 in [0, 1] (short side resized with
    antialiasing, then centre-cropped)."""
    def resize(x: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] float in [0, 1]
        x = TF.resize(x, [image_size], antialias=True)
        return TF.center_crop(x, [image_size, image_size])

    tensors = [torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float().div_(255) for f in frames]
    if len({t.shape for t in tensors}) == 1:
        out = resize(torch.stack(tensors))  # one call for the whole clip
    else:  # the frame size changes within the clip (rare, but legal in some containers)
        out = torch.cat([resize(t[None]) for t in tensors])
    return out.clamp_(0.0, 1.0)  # interpolation may overshoot slightly


def _decode(
    path: Path, start_s: float, num_frames: int, fps: float, samples: int, audio_rate: int, seek: bool,
) -> tuple[_FramePicker, _AudioCollector | None] | None:
    """One demuxing pass over ``path`` that feeds the frame picker and the audio collector until both spans are
    covered. With ``seek``, first jumps near ``start_s``; returns None when that jump landed after the span's start
    in either stream (the caller then decodes from the beginning)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        video_stream = container.streams.video[0]
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        origin = container.start_time / av.time_base if container.start_time is not None else 0.0
        start = origin + start_s
        if seek:
            # Jump to the last keyframe at or before the span instead of decoding everything before it. The pre-roll
            # is for the audio: containers may store it a little after the video of the same time (Matroska
            # clusters start at a video keyframe, the audio packets before it sit in the previous cluster).
            target = max(start - _SEEK_PREROLL_S, origin)
            container.seek(int(target * av.time_base), backward=True, any_frame=False)
        picker = _FramePicker([start + i / fps for i in range(num_frames)], video_stream)
        collector = _AudioCollector(start, samples, audio_rate) if audio_stream is not None else None
        streams = [video_stream] + ([audio_stream] if audio_stream is not None else [])
        # One pass over the interleaved packets decodes both streams; stop once both spans are covered.
        for packet in container.demux(streams):
            if packet.stream is video_stream and not picker.done:
                for frame in packet.decode():
                    picker.feed(frame)
                    if picker.done:
                        break
            elif collector is not None and packet.stream is audio_stream and not collector.done:
                for frame in packet.decode():
                    collector.feed(frame)
            if picker.done and (collector is None or collector.done):
                break
        if seek and (picker.first_time is None or picker.first_time > start + _TIME_EPS or (
                collector is not None and (collector.first_time is None or collector.offset < 0))):
            return None
        if picker.prev is None:
            raise ValueError(f"no decodable video frames in {path}")
        return picker, collector


def read_clip(
    path: str | Path,
    num_frames: int = 16,
    image_size: int = 224,
    fps: float = 25.0,
    audio_rate: int = 48_000,
    start_s: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Decode a clip's frames and audio over ``[start_s, start_s + num_frames / fps)`` with PyAV.

    Frame ``i`` is the decoded frame showing at time ``start_s + i / fps`` (the one with the nearest presentation
    timestamp at or before it; a time before the first frame gets the first frame), so any source frame rate is
    resampled to ``fps`` by dropping or repeating frames. Times count from the start of the file (the container's
    ``start_time``), for video and audio alike. Each frame's shorter side is resized to ``image_size``
    (antialiased bilinear) and the centre ``image_size x image_size`` cropped. The first audio stream is resampled
    to ``audio_rate`` mono (FFmpeg's resampler; channels are mixed down).

    Returns:
        ``{"image": [T, 3, image_size, image_size] float32 in [0, 1], "audio": [T * audio_rate / fps, 1] float32
        in [-1, 1]}`` with ``T = num_frames``.

    A clip shorter than the span is padded (video: the last frame repeated; audio: zeros) with a
    :class:`ShortClipWarning` naming the file and what was missing; audio shortfalls under half a frame period
    (codec framing, resampler rounding) are padded silently. A file without an audio stream gives silent audio
    with a warning.

    Raises:
        ValueError: a bad argument (naming it), ``T * audio_rate / fps`` not a whole number, or an unreadable /
            corrupt file or one without video (naming the file).
        FileNotFoundError: ``path`` does not exist.
    """
    samples = _check_clip_args(num_frames, image_size, fps, audio_rate, start_s)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        # Seeking is exact enough for most files; when it lands after the span's start in either stream (e.g. a
        # muxer that stores long audio packets), decode again from the beginning, which is always right.
        decoded = _decode(path, start_s, num_frames, fps, samples, audio_rate, seek=start_s > 0)
        if decoded is None:
            decoded = _decode(path, start_s, num_frames, fps, samples, audio_rate, seek=False)
        assert decoded is not None  # without seeking, nothing is rejected
        picker, collector = decoded
        missing_frames = picker.finish()
        if collector is not None:
            audio, lead, tail = collector.finish()
    except UNREADABLE_VIDEO_ERRORS as error:
        raise ValueError(f"cannot read video file {path} ({_one_line(error)})") from error

    problems = []
    if missing_frames:
        problems.append(f"{missing_frames} of {num_frames} frames (the last frame is repeated)")
    if collector is None:
        audio = np.zeros(samples, np.float32)
        warnings.warn(f"{path} has no audio stream; its audio is silence", ShortClipWarning, stacklevel=2)
    elif lead + tail > audio_rate / fps / 2:
        problems.append(f"{(lead + tail) / audio_rate:.3f} s of audio ({lead + tail} of {samples} samples, "
                        f"zero-padded)")
    if problems:
        span = f"{start_s:g}-{start_s + num_frames / fps:g} s"
        warnings.warn(f"{path} is shorter than the requested span {span}: missing {' and '.join(problems)}",
                      ShortClipWarning, stacklevel=2)
    image = _resize_frames(picker.frames, image_size)[torch.tensor(picker.picks)]
    return {"image": image.contiguous(),
            "audio": torch.from_numpy(audio).clamp_(-1.0, 1.0).unsqueeze(-1)}


def _find_clips(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    samples = []
    for name in _class_folders(folder):
        if name not in class_to_idx:
            raise ValueError(f"class folder {folder / name} is not one of the {len(class_to_idx)} known classes "
                             f"(the training split's)")
        for dirpath, dirnames, filenames in os.walk(folder / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            samples.extend((os.path.join(dirpath, f), class_to_idx[name]) for f in sorted(filenames)
                           if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith("."))
    return samples


class KineticsFolder(Dataset):
    """The clips of one split, ``root/split/<class>/<clip>`` (``.mp4``, ``.avi``, ``.mkv``, ``.webm``).

    Items are ``{"image": [T, 3, S, S] float32 in [0, 1], "audio": [T * audio_rate / fps, 1] float32 in [-1, 1],
    "label": int64 scalar}`` with ``T = num_frames`` and ``S = image_size``, decoded by :func:`read_clip` from the
    clip's start. ``classes`` fixes the label ids (e.g. the training split's for a validation split); the split's
    class folders must then be among them. By default classes are the split's sorted folder names.

    Attributes: ``classes`` (id -> name), ``class_to_idx``, ``samples`` (``(path, label)`` in folder order).

    Errors: ``FileNotFoundError`` naming the folder when ``root/split`` is missing; ``ValueError`` when it holds no
    clips or a class folder not in ``classes``; bad arguments as :func:`read_clip`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        num_frames: int = 16,
        image_size: int = 224,
        fps: float = 25.0,
        audio_rate: int = 48_000,
        classes: list[str] | None = None,
    ) -> None:
        self.audio_samples = _check_clip_args(num_frames, image_size, fps, audio_rate, 0.0)
        self.root = Path(root)
        self.folder = self.root / split
        if not self.folder.is_dir():
            raise FileNotFoundError(f"'{split}' split folder not found: {self.folder} "
                                    f"(expected {self.folder}/<class>/<clip>.mp4)")
        self.split = split
        self.num_frames, self.image_size, self.fps, self.audio_rate = num_frames, image_size, fps, audio_rate
        self.classes: list[str] = list(classes) if classes is not None else _class_folders(self.folder)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: names must be unique, got {self.classes}")
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = _find_clips(self.folder, self.class_to_idx)
        if not self.samples:
            raise ValueError(f"no clips in {self.folder} (looked for {', '.join(VIDEO_EXTENSIONS)} files in "
                             f"{self.folder}/<class>/)")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} clips")
        path, label = self.samples[index]
        item = read_clip(path, self.num_frames, self.image_size, self.fps, self.audio_rate)
        item["label"] = torch.tensor(label, dtype=torch.int64)
        return item


class KineticsFolderDataModule(pl.LightningDataModule):
    """Kinetics-layout folders of clips for multimodal autoencoding (video, audio and class label).

    Layout: ``root/train/<class>/<clip>``, ``root/val/<class>/<clip>`` and optionally ``root/test/<class>/...``
    (without ``test``, the test and predict loaders use ``val``). Class ids are the sorted training class-folder
    names; ``val``/``test`` use the same ids and may hold a subset of the classes.

    Batches are dicts ``{"image": [B, T, 3, S, S] float32 in [0, 1], "audio": [B, T * audio_rate / fps, 1] float32
    in [-1, 1], "label": [B] int64}`` (see :func:`read_clip`) with ``T = num_frames``, ``S = image_size``.

    Args:
        root: the data set folder.
        num_frames: frames per clip, ``T``.
        image_size: side of the square frames.
        fps: the frame rate clips are resampled to.
        audio_rate: the audio sample rate clips are resampled to; ``num_frames * audio_rate / fps`` must be whole.
        batch_size: clips per batch.
        num_workers: DataLoader worker processes (decoding is CPU-bound: use several for real data).
        seed: seeds the training shuffle.

    Attributes: ``num_frames``, ``image_size``, ``audio_samples`` (``T * audio_rate / fps``),
    ``audio_samples_per_frame`` (``audio_rate / fps``: an int when whole, as the Kinetics presets take it),
    ``classes`` and ``num_classes`` (from ``root/train``, known after construction).

    Errors: a missing ``root``, ``root/train`` or ``root/val`` -> ``FileNotFoundError`` (at construction); no class
    folders in ``root/train`` -> ``ValueError`` (at construction); a split without clips or with an unknown class
    folder -> ``ValueError`` (at ``setup``); bad arguments -> ``ValueError`` naming them.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        num_frames: int = 16,
        image_size: int = 224,
        fps: float = 25.0,
        audio_rate: int = 48_000,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.audio_samples: int = _check_clip_args(num_frames, image_size, fps, audio_rate, 0.0)
        check_positive("batch_size", batch_size)
        check_positive("num_workers", num_workers, allow_zero=True)
        self.save_hyperparameters()
        self.root = Path(root)
        self.num_frames, self.image_size, self.fps, self.audio_rate = num_frames, image_size, fps, audio_rate
        per_frame = Fraction(audio_rate) / Fraction(fps).limit_denominator(1_000_000)
        self.audio_samples_per_frame: int | float = (
            int(per_frame) if per_frame.denominator == 1 else audio_rate / fps)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(f"'{split}' split folder not found: {self.root / split} "
                                        f"(expected {self.root}/{split}/<class>/<clip>.mp4)")
        self.classes: list[str] = _class_folders(self.root / "train")
        if not self.classes:
            raise ValueError(f"no class folders in {self.root / 'train'} (expected "
                             f"{self.root / 'train'}/<class>/<clip>.mp4)")
        self.num_classes: int = len(self.classes)
        self.datasets: dict[Split, KineticsFolder] = {}

    @property
    def test_split(self) -> Split:
        """``"test"`` when ``root/test`` exists, else ``"val"``."""
        return "test" if (self.root / "test").is_dir() else "val"

    def dataset(self, split: Split) -> KineticsFolder:
        """The split's dataset, scanned on first use."""
        if split not in self.datasets:
            if split not in ("train", "val", "test"):
                raise ValueError(f"split: expected 'train', 'val' or 'test', got {split!r}")
            self.datasets[split] = KineticsFolder(self.root, split, self.num_frames, self.image_size, self.fps,
                                                  self.audio_rate, classes=self.classes)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Scan the folders the stage needs (``fit``: train and val; ``validate``: val; ``test``/``predict``: test)."""
        splits: dict[str | None, tuple[Split, ...]] = {
            "fit": ("train", "val"), "validate": ("val",), "test": (self.test_split,),
            "predict": (self.test_split,), None: ("train", "val", self.test_split)}
        if stage not in splits:
            raise ValueError(f"stage: expected one of fit, validate, test, predict, got {stage!r}")
        for split in splits[stage]:
            self.dataset(split)

    def _loader(self, split: Split, *, train: bool = False) -> DataLoader:
        return DataLoader(
            self.dataset(split), batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
            collate_fn=default_collate, generator=torch.Generator().manual_seed(self.seed) if train else None,
            persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (the order is fixed by ``seed`` for a fresh DataLoader)."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in folder order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches from ``root/test`` (or ``root/val`` when there is no test folder)."""
        return self._loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        """The test clips (with their labels), as :meth:`test_dataloader`."""
        return self._loader(self.test_split)


__all__ = ["UNREADABLE_VIDEO_ERRORS", "VIDEO_EXTENSIONS", "KineticsFolder", "KineticsFolderDataModule",
           "ShortClipWarning", "read_clip"]
