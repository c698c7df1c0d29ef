"""Optical flow of your own frames and videos with a saved flow model: the ``perceiver-io flow`` command's library.

* :func:`read_frame`: an image file as ``[3, H, W]`` uint8 RGB (alpha dropped; a greyscale image is an error).
* :func:`estimate_flow`: the flow ``[2, H, W]`` (pixels, frame 1 -> frame 2) of two such frames, at the frames'
  native resolution or, for frames larger than the model's training size, as the official overlapping tiles
  (:func:`~perceiver_io.models.flow.predict_tiled`).
* :func:`write_flow_png`: the flow as a colour image (``torchvision.utils.flow_to_image``: hue = direction,
  saturation = magnitude relative to the largest in the image); ``.flo`` files come from
  :func:`~perceiver_io.data.flow_io.write_flo`.
* :func:`flow_video`: the flow of every consecutive frame pair of a video, as a colour video (PyAV).
* :func:`run_flow_command`: the command line's entry (``perceiver-io flow``).

Every error names the file or the argument at fault; files are written atomically (a temporary file in the target's
directory, renamed over it), so an interrupted run never leaves a half-written image or video behind.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import uuid
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .core.validation import check_choice, check_positive
from .data.flow_io import check_png, write_flo
from .models.flow import TILING_MODES, OpticalFlow, predict_tiled, training_size, use_tiling
from .models.flow_conv import OpticalFlowConv
from .pretrained import from_pretrained
from .serialization import atomic_write_bytes

PathLike = str | os.PathLike

FLOW_MODEL_CLASSES: tuple[type[nn.Module], ...] = (OpticalFlow, OpticalFlowConv)
"""The model classes :func:`load_flow_model` accepts: any with the flow forward ``frames [B, 2, C, H, W]`` (values
in [-1, 1]) -> ``flow [B, 2, H, W]`` (pixels). Add a new flow model class here."""

#: Output container by file extension, and its video codecs in order of preference (the first this PyAV has).
VIDEO_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "mpeg4")),
    ".mov": ("mov", ("libx264", "mpeg4")),
    ".avi": ("avi", ("mpeg4",)),
}
DEFAULT_FPS = Fraction(25)  # for a video that does not say its frame rate
_PATCH_SIZE = (3, 3)  # OpticalFlow's 3x3 patches: smaller frames would be mostly zero padding
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------------- frames


def _decode_image(path: Path, data: bytes, rgb: bool) -> torch.Tensor:
    """``torchvision.io.decode_image`` of checked data: ``[C, H, W]`` (``rgb``: palette expanded to RGB)."""
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.RGB if rgb else ImageReadMode.UNCHANGED
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision deprecates its decoders (0.29)
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except RuntimeError as err:
        # torchvision's messages start "decode_png, /path/to/decode_png.cpp:79, "; keep what follows.
        lines = str(err).strip().splitlines()
        detail = re.sub(r"^.*?\.cpp:\d+,\s*", "", lines[0]) if lines else ""
        raise ValueError(f"{path}: corrupt or unsupported image file ({detail or type(err).__name__}; "
                         f"PNG, JPEG, WebP and GIF are read)") from None


def read_frame(path: PathLike) -> torch.Tensor:
    """An image file (PNG, JPEG, WebP, GIF) as an RGB frame ``[3, H, W]`` uint8.

    An alpha channel is dropped, a palette image expanded to RGB and a 16-bit PNG rounded to 8 bits. A greyscale
    image (with or without alpha) is an error: the flow model needs colour frames. A missing file raises
    ``FileNotFoundError``, a corrupt or unsupported one ``ValueError``; both name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the frame file ({err.strerror or err})") from None
    if not data:
        raise ValueError(f"{path}: empty file, not an image")
    colour = check_png(path, data).colour_type if data.startswith(_PNG_SIGNATURE) else None
    image = _decode_image(path, data, rgb=colour == 3)
    if image.ndim == 4:  # an animated GIF / WebP: flow wants exactly two frames, so which one is ambiguous
        raise ValueError(f"{path}: an animated image ({image.shape[0]} frames); give single still frames")
    channels = image.shape[0]
    if channels < 3:
        kind = "greyscale" if channels == 1 else "greyscale + alpha"
        raise ValueError(f"{path}: a {kind} image ({channels} channel{'s' * (channels > 1)}); the flow model needs "
                         f"RGB frames (3 channels; RGBA is read without its alpha)")
    image = image[:3]
    if image.dtype == torch.uint16:  # 16-bit PNG: 0..65535 -> 0..255
        image = (image.to(torch.float32) / 257.0).round().to(torch.uint8)
    return image.contiguous()


# ------------------------------------------------------------------------------------------------------------- flow


def min_frame_size(model: nn.Module) -> tuple[int, int]:
    """The smallest frames ``(H, W)`` ``model`` takes: a model class may declare ``min_frame_size`` (a conv stem's
    stride, say); :class:`~perceiver_io.models.OpticalFlow` needs one 3x3 patch; any other model 1x1."""
    declared = getattr(model, "min_frame_size", None)
    if declared is not None:
        return int(declared[0]), int(declared[1])
    return _PATCH_SIZE if isinstance(model, OpticalFlow) else (1, 1)


def _model_channels(model: nn.Module) -> int:
    config = getattr(getattr(model, "input_adapter", None), "config", None)
    shape = getattr(config, "image_shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 3 else 3


def _check_frame(name: str, frame: object, channels: int) -> torch.Tensor:
    """``frame [C >= channels, H, W]`` uint8 (0..255) or floating ([-1, 1], finite) -> ``[channels, H, W]`` float32 in
    [-1, 1]; extra channels (alpha) are dropped."""
    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [C, H, W], got {type(frame).__name__}")
    if frame.ndim != 3:
        raise ValueError(f"{name}: expected an image of shape [C, H, W], got {list(frame.shape)}")
    if frame.dtype != torch.uint8 and not frame.is_floating_point():
        raise TypeError(f"{name}: expected a uint8 (0..255) or floating ([-1, 1]) tensor, got dtype {frame.dtype}")
    if frame.shape[0] < channels:
        raise ValueError(f"{name}: expected at least {channels} channels (RGB), got {frame.shape[0]} "
                         f"(shape {list(frame.shape)})")
    frame = frame[:channels]
    if frame.dtype == torch.uint8:
        return frame.to(torch.float32) / 255.0 * 2.0 - 1.0  # the official scaling
    bad = int((~torch.isfinite(frame)).sum())
    if bad:
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or inf of {frame.numel()}")
    return frame.to(torch.float32)


@torch.no_grad()
def estimate_flow(
    model: nn.Module,
    frame1: torch.Tensor,
    frame2: torch.Tensor,
    *,
    tiling: str = "auto",
    min_overlap: int = 20,
    tile_batch_size: int | None = None,
) -> torch.Tensor:
    """The optical flow from ``frame1`` to ``frame2``: ``[2, H, W]`` float32 (x then y, pixels) on ``model``'s
    device.

    Args:
        model: a flow model in eval mode (:func:`load_flow_model` gives one), ``frames [B, 2, C, H, W]`` ->
            ``[B, 2, H, W]``.
        frame1, frame2: ``[C, H, W]`` of the same size, uint8 (0..255, as :func:`read_frame` gives; scaled to
            [-1, 1]) or floating (already in [-1, 1], finite); channels past the model's (alpha) are dropped.
        tiling: ``"auto"`` (tiles for frames larger than the model's training size, else the model at the frames'
            native resolution), ``"native"`` or ``"tiled"``
            (:func:`~perceiver_io.models.flow.use_tiling`).
        min_overlap: the least overlap of neighbouring tiles in pixels.
        tile_batch_size: tiles per forward pass (None: all at once).
    """
    check_choice("tiling", tiling, TILING_MODES)
    check_positive("min_overlap", min_overlap)
    if tile_batch_size is not None:
        check_positive("tile_batch_size", tile_batch_size)
    channels = _model_channels(model)
    first, second = _check_frame("frame1", frame1, channels), _check_frame("frame2", frame2, channels)
    (h, w), (h2, w2) = first.shape[-2:], second.shape[-2:]
    if (h, w) != (h2, w2):
        raise ValueError(f"frame2: expected the size of frame1, {h}x{w} (HxW), got {h2}x{w2}")
    mh, mw = min_frame_size(model)
    if h < mh or w < mw:
        raise ValueError(f"frame1, frame2: expected frames of at least {mh}x{mw} pixels (the smallest "
                         f"{type(model).__name__} input), got {h}x{w}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    frames = torch.stack([first, second])[None].to(device=device, dtype=dtype)  # [1, 2, C, H, W]
    size = training_size(model)
    if use_tiling(tiling, (h, w), size):
        flow = predict_tiled(model, frames, size, min_overlap, tile_batch_size)  # type: ignore[arg-type]
    else:
        flow = model(frames)
    return flow[0].float()


def _check_flow(flow: object) -> torch.Tensor:
    if not isinstance(flow, torch.Tensor):
        raise TypeError(f"flow: expected a torch.Tensor [2, H, W], got {type(flow).__name__}")
    if flow.ndim != 3 or flow.shape[0] != 2 or flow.shape[1] < 1 or flow.shape[2] < 1:
        raise ValueError(f"flow: expected shape [2, H, W] with H, W >= 1, got {list(flow.shape)}")
    flow = flow.detach().to("cpu", torch.float32)
    bad = int((~torch.isfinite(flow)).sum())
    if bad:
        raise ValueError(f"flow: expected finite values, got {bad} NaN or inf of {flow.numel()}")
    return flow


def flow_image(flow: torch.Tensor) -> torch.Tensor:
    """``flow [2, H, W]`` -> its colour picture ``[3, H, W]`` uint8 (``torchvision.utils.flow_to_image``: hue =
    direction, saturation = magnitude relative to the image's largest; zero flow is white)."""
    from torchvision.utils import flow_to_image

    return flow_to_image(_check_flow(flow))


def _encode_png_rgb8(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb [H, W, 3]`` uint8 (every row filter 0, one IDAT chunk). Written here because
    torchvision deprecates its image encoders."""
    height, width, _ = rgb.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), np.ascontiguousarray(rgb).reshape(height, width * 3)], 1)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])  # 8-bit RGB
    return (_PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + chunk(b"IEND", b""))


def _check_out_dir(name: str, path: Path) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{name}: the directory of {path} does not exist")


def write_flow_png(flow: torch.Tensor, path: PathLike) -> Path:
    """Write ``flow [2, H, W]`` as its colour picture (:func:`flow_image`), an 8-bit RGB PNG, atomically."""
    path = Path(path)
    image = flow_image(flow)
    _check_out_dir("path", path)
    atomic_write_bytes(path, _encode_png_rgb8(image.permute(1, 2, 0).numpy()))
    return path


# ------------------------------------------------------------------------------------------------------------ video


@dataclass
class FlowVideo:
    """What :func:`flow_video` wrote: ``num_flows`` flow frames of ``size (H, W)`` (the input's, rounded up to even
    sides for the encoder), with ``codec`` at ``fps``; ``tiled``: whether tiled inference ran."""

    path: Path
    num_flows: int
    size: tuple[int, int]
    codec: str
    fps: Fraction
    tiled: bool


def video_codec(path: PathLike) -> tuple[str, str]:
    """``(container format, codec)`` for an output video ``path`` by its extension: libx264 where this PyAV build
    has it, else MPEG-4 part 2."""
    import av

    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise ValueError(f"video_out: expected a file ending in one of {sorted(VIDEO_FORMATS)}, got {Path(path)}")
    container, codecs = VIDEO_FORMATS[suffix]
    for codec in codecs:
        try:
            av.Codec(codec, "w")
        except av.codec.codec.UnknownCodecError:  # not in this PyAV build
            continue
        return container, codec
    raise ValueError(f"video_out: this PyAV build has no encoder for {suffix} (tried {', '.join(codecs)})")


class _Progress:
    """tqdm where installed, otherwise a one-line counter on stderr; nothing when disabled. Shown from the first
    update on, so that a video that fails before its first flow prints only its error."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total, self.enabled, self.count, self.bar = total, enabled, 0, None

    def update(self) -> None:
        self.count += 1
        if not self.enabled:
            return
        if self.bar is None and self.count == 1:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, unit="pair", desc="flow", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass
        if self.bar is not None:
            self.bar.update()
        else:
            print(f"\rflow: {self.count}/{self.total or '?'} frame pairs", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.count:
            print(file=sys.stderr)


def _video_frames(container: Any, stream: Any, path: Path) -> Iterator[torch.Tensor]:
    """The decoded frames of ``stream`` as ``[3, H, W]`` uint8 RGB; a decoding error names the file."""
    import av

    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    except av.FFmpegError as err:
        raise ValueError(f"{path}: corrupt video data after {count} frames ({err})") from None


def _video_fps(stream: Any) -> Fraction:
    """The input's frame rate, as a fraction the encoders accept (MPEG-4's time base needs a numerator <= 65535)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = Fraction(rate).limit_denominator(1001) if rate and rate > 0 else DEFAULT_FPS
    return fps if fps.numerator <= 65535 else Fraction(max(1, round(float(fps))))


class _VideoWriter:
    """Encodes ``[3, H, W]`` uint8 RGB pictures (padded to even sides, as yuv420p needs) into ``path``."""

    def __init__(self, path: Path, container_format: str, codec: str, fps: Fraction, height: int, width: int) -> None:
        import av

        self.container = av.open(str(path), mode="w", format=container_format)
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.height, self.stream.width = height + height % 2, width + width % 2
        self.stream.pix_fmt = "yuv420p"
        self.size = (self.stream.height, self.stream.width)

    def write(self, image: torch.Tensor) -> None:
        import av

        h, w = image.shape[-2:]
        if h % 2:  # repeat the last row / column: the encoder needs even sides
            image = torch.cat([image, image[:, -1:]], dim=1)
        if w % 2:
            image = torch.cat([image, image[:, :, -1:]], dim=2)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush the frames the encoder holds back
        self.container.close()


def flow_video(
    model: nn.Module,
    video_in: PathLike,
    video_out: PathLike,
    *,
    tiling: str = "auto",
    min_overlap: int = 20,
    tile_batch_size: int | None = None,
    max_frames: int | None = None,
    progress: bool = True,
) -> FlowVideo:
    """Estimate the flow of every consecutive frame pair of ``video_in`` and write them as a colour video.

    Frame ``i`` of the output is the flow from input frame ``i`` to ``i + 1`` (:func:`estimate_flow`, as
    :func:`flow_image` pictures it, each frame normalised by its own largest flow), so ``N`` input frames give
    ``N - 1``, at the input's frame rate. ``video_out``'s extension picks the container (:data:`VIDEO_FORMATS`).

    Args:
        model, tiling, min_overlap, tile_batch_size: as :func:`estimate_flow`.
        max_frames: read at most this many input frames (at least 2); None: all.
        progress: show a progress bar on stderr.
    """
    video_in, video_out = Path(video_in), Path(video_out)
    check_choice("tiling", tiling, TILING_MODES)
    if max_frames is not None:
        check_positive("max_frames", max_frames)
        if max_frames < 2:
            raise ValueError(f"max_frames: expected at least 2 (a flow needs a frame pair), got {max_frames}")
    container_format, codec = video_codec(video_out)
    _check_out_dir("video_out", video_out)
    if not video_in.is_file():
        raise FileNotFoundError(f"video file not found: {video_in}")
    import av

    try:
        source = av.open(str(video_in))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{video_in}: not a readable video ({err})") from None
    # Encoded into a temporary file next to the target, renamed over it at the end (atomic, as every writer here).
    # A fresh name rather than mkstemp's file: PyAV creates it, so it gets the usual permissions, not 0600.
    tmp = video_out.parent / f".{video_out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{video_out.suffix}"
    writer: _VideoWriter | None = None
    try:
        with source:
            if not source.streams.video:
                raise ValueError(f"{video_in}: no video stream")
            stream = source.streams.video[0]
            total = stream.frames or None  # 0 where the container does not say
            if max_frames is not None:
                total = min(total, max_frames) if total else max_frames
            bar = _Progress(total - 1 if total else None, progress)
            fps, previous, count, tiled = _video_fps(stream), None, 0, False
            try:
                for frame in _video_frames(source, stream, video_in):
                    count += 1
                    if previous is not None:
                        try:
                            flow = estimate_flow(model, previous, frame, tiling=tiling, min_overlap=min_overlap,
                                                 tile_batch_size=tile_batch_size)
                        except ValueError as err:
                            raise ValueError(f"{video_in}: frames {count - 2} and {count - 1}: {err}") from None
                        if writer is None:
                            h, w = flow.shape[-2:]
                            tiled = use_tiling(tiling, (h, w), training_size(model))
                            writer = _VideoWriter(tmp, container_format, codec, fps, h, w)
                        writer.write(flow_image(flow))
                        bar.update()
                    previous = frame
                    if max_frames is not None and count >= max_frames:
                        break
            finally:
                bar.close()
        if writer is None:
            raise ValueError(f"{video_in}: a flow video needs at least 2 frames, the video has {count}")
        writer.close()
        os.replace(tmp, video_out)
    except BaseException:
        if writer is not None:
            try:
                writer.container.close()
            except Exception:  # noqa: BLE001 - already failing: the first error is the one to report
                pass
        tmp.unlink(missing_ok=True)
        raise
    return FlowVideo(video_out, count - 1, writer.size, codec, fps, tiled)


# -------------------------------------------------------------------------------------------------- command line


def load_flow_model(directory: PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """A ``save_pretrained`` directory's model (:func:`~perceiver_io.from_pretrained`, eval mode), which must be one
    of :data:`FLOW_MODEL_CLASSES`."""
    model = from_pretrained(directory, map_location)
    if not isinstance(model, FLOW_MODEL_CLASSES):
        names = " or ".join(c.__name__ for c in FLOW_MODEL_CLASSES)
        raise ValueError(f"{Path(directory)}: holds a {type(model).__name__}, not an optical-flow model ({names})")
    return model


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: expected a torch device such as cpu or cuda, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {name} requested, but CUDA is not available")
    return device


def _describe(model: nn.Module, tiled: bool, tile_batch_size: int | None) -> str:
    if not tiled:
        return "native resolution"
    th, tw = training_size(model)  # type: ignore[misc]
    return f"tiled {th}x{tw}" + (f", {tile_batch_size} tiles a pass" if tile_batch_size else "")


def run_flow_command(args: argparse.Namespace) -> int:
    """``perceiver-io flow``: a frame pair (``args.frames``) to ``--out`` (PNG) and ``--flo``, or ``--video`` to
    ``--out`` (a video). Prints what it wrote; raises ``ValueError`` / ``FileNotFoundError`` naming the argument or
    file at fault (the command line prints it on one line and exits with 1)."""
    frames, video = list(args.frames or []), args.video
    if args.model is None:
        raise ValueError("--model: required (a directory written by save_pretrained)")
    if args.out is None:
        raise ValueError("--out: required (a .png for a frame pair, a video file for --video)")
    out = Path(args.out)
    check_choice("--tiling", args.tiling, TILING_MODES)
    check_positive("--min-overlap", args.min_overlap)
    if args.tile_batch_size is not None:
        check_positive("--tile-batch-size", args.tile_batch_size)
    if video is not None:
        if frames:
            raise ValueError(f"FRAME: give two frames or --video, not both (got frames {frames} and --video {video})")
        if args.flo is not None:
            raise ValueError("--flo: only for a frame pair (a video's flow is written to --out)")
        video_codec(out)  # fail on the file names before loading the model
        if not Path(video).is_file():
            raise FileNotFoundError(f"video file not found: {video}")
    else:
        if len(frames) != 2:
            raise ValueError(f"FRAME1 FRAME2: expected two frame files (or --video IN), got {len(frames)}")
        if args.max_frames is not None:
            raise ValueError("--max-frames: only with --video")
        if out.suffix.lower() != ".png":
            raise ValueError(f"--out: expected a .png file for a frame pair, got {out}")
        for name, path in (("--out", out), ("--flo", Path(args.flo) if args.flo else None)):
            if path is not None:
                _check_out_dir(name, path)
    device = _device(args.device)
    options = {"tiling": args.tiling, "min_overlap": args.min_overlap, "tile_batch_size": args.tile_batch_size}
    if video is not None:
        model = load_flow_model(args.model, device)
        result = flow_video(model, video, out, max_frames=args.max_frames, progress=not args.no_progress, **options)
        h, w = result.size
        print(f"wrote {result.path} ({result.num_flows} flow frames, {w}x{h}, {result.codec}, {result.fps} fps, "
              f"{_describe(model, result.tiled, args.tile_batch_size)})")
        return 0
    first, second = read_frame(frames[0]), read_frame(frames[1])  # a bad file fails before the model loads
    model = load_flow_model(args.model, device)
    try:
        flow = estimate_flow(model, first, second, **options)
    except ValueError as err:  # name the files behind frame1 / frame2
        raise ValueError(f"{err} (frame1 = {frames[0]}, frame2 = {frames[1]})") from None
    h, w = flow.shape[-2:]
    tiled = use_tiling(args.tiling, (h, w), training_size(model))
    magnitude = torch.linalg.vector_norm(flow, dim=0)
    write_flow_png(flow, out)
    print(f"wrote {out} (flow colour image, {w}x{h}, {_describe(model, tiled, args.tile_batch_size)}; flow mean "
          f"{float(magnitude.mean()):.2f} px, max {float(magnitude.max()):.2f} px)")
    if args.flo is not None:
        write_flo(args.flo, flow)
        print(f"wrote {args.flo} (Middlebury .flo, 2x{h}x{w} float32, pixels)")
    return 0
