"""``pipeline("multimodal-autoencoding")``: a video (with its audio) in, the model's reconstruction and its guess of
the label out.

A video file is read as the Kinetics data are (:func:`~perceiver_io.data.kinetics.read_clip`, PyAV): the model's
configured number of frames from the start at ``fps`` (25, Kinetics'), each frame's short side resized to the
configured image size and centre-cropped, the audio resampled to mono at the rate that gives the configured number of
samples over the same span. A clip can also be a dict of tensors ``{video modality: [T, C, H, W], audio modality:
[S] or [S, 1]}`` (``"image"`` and ``"audio"`` for the paper's models) at any size the model takes. The label is
always hidden (the model infers it), every other modality shown, as the official reconstruction runs.

The sizes come from the model's configuration: the video input's Fourier ``max_resolution`` ``(T, h, w)`` over
``patch_size`` patches gives ``T`` frames of ``h * patch_size`` pixels, the audio input's ``(S,)`` the samples.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.validation import check_positive
from .base import ModelLike, Pipeline, check_class_names, check_file, check_top_k, is_path, top_classes

CLIP_INPUT = "a video file path or a dict of tensors"
KINETICS_FPS = 25.0


@dataclass(frozen=True)
class ClipLayout:
    """Which of a multimodal model's modalities is the video, the audio and the label, and its configured sizes.

    Attributes:
        video, audio, label: the input modality names (None: the model has no such modality).
        video_out, audio_out, label_out: the output modality names.
        num_channels: the video's channels.
        num_frames, image_size: the configured clip (None where the model does not configure it).
        audio_samples: the configured number of audio samples per clip (None likewise).
        num_classes: the label's classes (None without a label).
        maskable: the input modalities with a mask token (their masking is set per call).
    """

    video: str | None
    audio: str | None
    label: str | None
    video_out: str | None
    audio_out: str | None
    label_out: str | None
    num_channels: int
    num_frames: int | None
    image_size: int | None
    audio_samples: int | None
    num_classes: int | None
    maskable: tuple[str, ...]


def _one(kind: str, names: list[str], where: str) -> str | None:
    if len(names) > 1:
        raise ValueError(f"model: the multimodal-autoencoding pipeline reads one {kind} modality; the model's {where} "
                         f"has {names}")
    return names[0] if names else None


def clip_layout(model: nn.Module) -> ClipLayout:
    """The :class:`ClipLayout` of a :class:`~perceiver_io.models.MultimodalAutoencoder`; a ``ValueError`` for a model
    this pipeline cannot feed (no video, or a modality that is not video, audio or a label)."""
    from ..adapters.audio import AudioInputAdapter, AudioOutputAdapter
    from ..adapters.classification import ClassificationOutputAdapter
    from ..adapters.label import LabelInputAdapter
    from ..adapters.video import VideoInputAdapter, VideoOutputAdapter

    inputs, outputs = model.input_adapter.modalities, model.output_adapter.modalities  # type: ignore[union-attr]
    kinds = {VideoInputAdapter: "video", AudioInputAdapter: "audio", LabelInputAdapter: "label"}
    found: dict[str, list[str]] = {"video": [], "audio": [], "label": []}
    for name, adapter in inputs.items():
        kind = kinds.get(type(adapter))
        if kind is None:
            raise ValueError(f"model: the multimodal-autoencoding pipeline fills video, audio and label inputs; the "
                             f"model's input {name!r} is a {type(adapter).__name__}")
        found[kind].append(name)
    out_kinds = {VideoOutputAdapter: "video", AudioOutputAdapter: "audio", ClassificationOutputAdapter: "label"}
    found_out: dict[str, list[str]] = {"video": [], "audio": [], "label": []}
    for name, adapter in outputs.items():
        if type(adapter) in out_kinds:
            found_out[out_kinds[type(adapter)]].append(name)
    video = _one("video", found["video"], "inputs")
    if video is None:
        raise ValueError(f"model: the multimodal-autoencoding pipeline reads video; the model's inputs are "
                         f"{list(inputs)}, none of them video")
    config = inputs[video].config
    resolution = config.max_resolution
    num_frames, image_size = (None, None) if resolution is None else (resolution[0], resolution[1] * config.patch_size)
    audio = _one("audio", found["audio"], "inputs")
    audio_resolution = inputs[audio].config.max_resolution if audio is not None else None
    label = _one("label", found["label"], "inputs")
    return ClipLayout(
        video=video, audio=audio, label=label,
        video_out=_one("video", found_out["video"], "outputs"), audio_out=_one("audio", found_out["audio"], "outputs"),
        label_out=_one("label", found_out["label"], "outputs"), num_channels=config.num_channels,
        num_frames=num_frames, image_size=image_size,
        audio_samples=audio_resolution[0] if audio_resolution is not None else None,
        num_classes=inputs[label].config.num_classes if label is not None else None,
        maskable=tuple(model.input_adapter.mask_token),  # type: ignore[union-attr]
    )


def _audio_rate(layout: ClipLayout, fps: float) -> int | None:
    """The audio rate that gives the configured samples over the configured frames at ``fps``: a whole number of
    Hz (read_clip resamples to it), else a ``ValueError`` naming ``fps``."""
    if layout.audio_samples is None or layout.num_frames is None:
        return None
    rate = Fraction(layout.audio_samples) * Fraction(fps).limit_denominator(1_000_000) / layout.num_frames
    if rate.denominator != 1:
        raise ValueError(f"fps: {fps:g} frames per second give {float(rate):g} audio samples per second for the "
                         f"model's {layout.audio_samples} samples per {layout.num_frames} frames; choose an fps that "
                         f"gives a whole number")
    return int(rate)


def _video_tensor(name: str, video: object, channels: int) -> torch.Tensor:
    """``video [T, C, H, W]`` uint8 (0..255) or float ([0, 1], finite) -> float32 in [0, 1]."""
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{name}: expected a [T, C, H, W] tensor, got {type(video).__name__}")
    if video.ndim != 4 or video.shape[1] != channels:
        raise ValueError(f"{name}: expected a video of shape [T, {channels}, H, W], got {list(video.shape)}")
    if video.dtype == torch.uint8:
        return video.float() / 255.0
    if not video.is_floating_point():
        raise TypeError(f"{name}: expected a uint8 (0..255) or float ([0, 1]) tensor, got dtype {video.dtype}")
    video = video.detach().float()
    if not bool(torch.isfinite(video).all()) or float(video.min()) < 0.0 or float(video.max()) > 1.0:
        raise ValueError(f"{name}: expected finite float values in [0, 1] (or a uint8 tensor for 0..255)")
    return video


def _audio_tensor(name: str, audio: object) -> torch.Tensor:
    """``audio [S]`` or ``[S, 1]`` float in [-1, 1] -> ``[S, 1]`` float32."""
    if not isinstance(audio, torch.Tensor) or not audio.is_floating_point():
        got = f"dtype {audio.dtype}" if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise TypeError(f"{name}: expected a float tensor [S] or [S, 1] in [-1, 1], got {got}")
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[1] != 1:
        raise ValueError(f"{name}: expected mono audio of shape [S] or [S, 1], got {list(audio.shape)}")
    audio = audio.detach().float()
    if not bool(torch.isfinite(audio).all()) or (audio.numel() and float(audio.abs().max()) > 1.0):
        raise ValueError(f"{name}: expected finite values in [-1, 1]")
    return audio


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float = KINETICS_FPS) -> Path:
    """Write ``frames [T, H, W, 3]`` uint8 as a video (the container from the extension, as
    :func:`~perceiver_io.flow_tool.flow_video` writes: libx264 where PyAV has it), atomically."""
    from ..flow_tool import _VideoWriter, video_codec

    path = Path(path)
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected a uint8 array [T, H, W, 3], got "
                         f"{getattr(frames, 'dtype', type(frames).__name__)} {list(getattr(frames, 'shape', []))}")
    container_format, codec = video_codec(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: the directory of {path} does not exist")
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    writer = None
    try:
        rate = Fraction(fps).limit_denominator(1001)
        writer = _VideoWriter(tmp, container_format, codec, rate, frames.shape[1], frames.shape[2])
        for frame in frames:
            writer.write(torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            try:
                writer.container.close()
            except Exception:  # noqa: BLE001 - already failing: the first error is the one to report
                pass
        tmp.unlink(missing_ok=True)
        raise
    return path


class MultimodalAutoencodingPipeline(Pipeline):
    """``pipe(clip)`` -> ``{"video": np.ndarray [T, H, W, 3] uint8, "audio": np.ndarray [S] float32, "label":
    [{"label": name, "score": probability}, ...], "fps": float, "audio_rate": int}``: the reconstruction (every pixel
    and sample decoded, ``chunk_size`` queries at a time) and the label's top-k with the label hidden. ``fps`` and
    ``audio_rate`` are the rates the clip was read at (assumed for tensors); keys of modalities the model lacks are
    left out.

    Args:
        model: a :class:`~perceiver_io.models.MultimodalAutoencoder`, or a name or path for
            :func:`perceiver_io.from_pretrained`.
        class_names: one name per label class (default ``class_<i>``).
        top_k: label classes returned per clip.
        fps: the frame rate video files are read at (Kinetics': 25).
        chunk_size: output queries decoded at a time (bounds the memory).
        batch_size: clips per forward pass (clips of one shape).
        device: where the model runs (default: where it is).

    Attributes: ``layout`` (:class:`ClipLayout`: the modalities and the configured sizes), ``fps``, ``audio_rate``.
    """

    task = "multimodal-autoencoding"

    def __init__(self, model: ModelLike, *, class_names: Sequence[str] | None = None, top_k: int = 5,
                 fps: float = KINETICS_FPS, chunk_size: int = 65536, batch_size: int = 4,
                 device: str | torch.device | None = None) -> None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
            raise ValueError(f"fps: expected a positive number, got {fps!r}")
        check_positive("chunk_size", chunk_size)
        check_positive("batch_size", batch_size)
        super().__init__(model, device=device)
        self.layout = clip_layout(self.model)
        self.fps = float(fps)
        self.audio_rate = _audio_rate(self.layout, self.fps)
        classes = self.layout.num_classes
        self.class_names = check_class_names(class_names, classes) if classes is not None else []
        self.top_k = check_top_k(top_k, classes) if classes is not None else 0
        self.chunk_size, self.batch_size = chunk_size, batch_size

    @classmethod
    def model_types(cls) -> tuple[type[nn.Module], ...]:
        from ..models import MultimodalAutoencoder

        return (MultimodalAutoencoder,)

    def read(self, clip: Any, name: str = "clip") -> dict[str, torch.Tensor]:
        """One clip (a video file or a dict of tensors) as the model's video and audio inputs, without the batch
        dimension: ``{video: [T, C, H, W] float32 in [0, 1], audio: [S, 1] float32}``."""
        layout = self.layout
        if is_path(clip):
            return self._read_file(name, clip)
        if not isinstance(clip, dict):
            raise TypeError(f"{name}: expected {CLIP_INPUT}, got {type(clip).__name__}")
        wanted = [m for m in (layout.video, layout.audio) if m is not None]
        if set(clip) != set(wanted):
            raise ValueError(f"{name}: expected a dict with the keys {wanted} (the label is hidden and predicted), got "
                             f"{sorted(map(str, clip))}")
        out = {layout.video: _video_tensor(f"{name}[{layout.video!r}]", clip[layout.video], layout.num_channels)}
        if layout.audio is not None:
            out[layout.audio] = _audio_tensor(f"{name}[{layout.audio!r}]", clip[layout.audio])
        return out  # type: ignore[return-value]

    def _read_file(self, name: str, path: Any) -> dict[str, torch.Tensor]:
        layout = self.layout
        if layout.num_frames is None or layout.image_size is None:
            raise ValueError(f"{name}: the model does not configure its clip size (the video input's max_resolution); "
                             f"give the clip as a dict of tensors")
        if layout.audio is not None and self.audio_rate is None:
            raise ValueError(f"{name}: the model does not configure its audio length (the audio input's "
                             f"max_resolution); give the clip as a dict of tensors")
        path = check_file(name, path, "video file")
        from ..data.kinetics import read_clip

        # Without an audio modality any rate does: the audio read is dropped.
        try:
            clip = read_clip(path, layout.num_frames, layout.image_size, self.fps, self.audio_rate or 8000)
        except (FileNotFoundError, ValueError) as err:
            raise type(err)(f"{name}: {err}") from None
        out = {layout.video: clip["image"]}
        if layout.audio is not None:
            out[layout.audio] = clip["audio"]
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def reconstruct(self, clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The model's reconstruction of clips of one shape (as :meth:`read` gives them), the label hidden and the
        other modalities shown: ``{output modality: [B, ...]}`` on the CPU."""
        layout, device, dtype = self.layout, self.device, self.dtype
        inputs = {m: torch.stack([c[m] for c in clips]).to(device, dtype) for m in clips[0]}
        if layout.label is not None:
            inputs[layout.label] = torch.zeros(len(clips), layout.num_classes, device=device, dtype=dtype)
        # Deterministic: no random masking of what is shown; the label (where the model has a mask token) hidden.
        mask_probs = {m: 1.0 if m == layout.label else 0.0 for m in layout.maskable}
        out = self.model.reconstruct(inputs, self.chunk_size, mask_probs=mask_probs or None)  # type: ignore[operator]
        return {m: v.float().cpu() for m, v in out.items()}

    def _results(self, out: dict[str, torch.Tensor], top_k: int) -> list[dict[str, Any]]:
        layout = self.layout
        size = next(iter(out.values())).shape[0]
        results: list[dict[str, Any]] = [{} for _ in range(size)]
        if layout.video_out is not None:
            frames = (out[layout.video_out].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2)
            for result, video in zip(results, frames.numpy()):
                result["video"] = np.ascontiguousarray(video)
        if layout.audio_out is not None:
            for result, audio in zip(results, out[layout.audio_out][..., 0].numpy()):
                result["audio"] = audio.astype(np.float32)
        if layout.label_out is not None and top_k:
            for result, top in zip(results, top_classes(out[layout.label_out], self.class_names, top_k)):
                result["label"] = top
        for result in results:
            result["fps"] = self.fps
            if self.audio_rate is not None:
                result["audio_rate"] = self.audio_rate
        return results

    def __call__(self, clips: Any, *, top_k: int | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """The reconstruction of one clip (a dict) or of each clip of a list (a list of dicts).

        Raises:
            TypeError, ValueError, FileNotFoundError: a clip that is not a readable video or a dict of the model's
                video and audio tensors (naming it, e.g. ``clips[1]: cannot read video file ...``).
        """
        classes = self.layout.num_classes
        k = self.top_k if top_k is None or classes is None else check_top_k(top_k, classes)

        def predict(items: list[Any], names: list[str]) -> list[dict[str, Any]]:
            read = [self.read(item, name) for item, name in zip(items, names)]
            results: list[dict[str, Any]] = [{} for _ in read]
            for first in range(0, len(read), self.batch_size):
                # Clips of one shape run together (files always share the configured shape).
                groups: dict[tuple, list[int]] = {}
                for i in range(first, min(first + self.batch_size, len(read))):
                    groups.setdefault(tuple((m, tuple(t.shape)) for m, t in read[i].items()), []).append(i)
                for indices in groups.values():
                    try:
                        out = self.reconstruct([read[i] for i in indices])
                    except (TypeError, ValueError) as err:  # the model's own checks (e.g. a size it cannot patch)
                        raise type(err)(f"{names[indices[0]]}: {err}") from None
                    for i, result in zip(indices, self._results(out, k)):
                        results[i] = result
            return results

        return self._batched(clips, "clips", CLIP_INPUT, lambda c: is_path(c) or isinstance(c, dict), predict)
