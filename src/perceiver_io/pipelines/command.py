"""``perceiver-io predict TASK --model NAME_OR_PATH INPUT...``: a task pipeline from the command line.

* ``fill-mask``: each TEXT with its masks filled in, and each masked position's top-k candidates.
* ``image-classification``: each IMAGE file's top-k classes with their probabilities (``--class-names FILE``: one
  name per line, for a model that is not a 1000-class ImageNet model).
* ``optical-flow``: FRAME1 FRAME2 [FRAME1 FRAME2 ...]: one flow colour PNG per pair in ``--out DIR``.
* ``multimodal-autoencoding``: each VIDEO's reconstruction in ``--out DIR`` (``<name>.mp4`` and its audio
  ``<name>.wav``), and the label's top-k.

Every mistake is one line on stderr and exit code 1 (:func:`run_predict`).
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .base import one_line

_WRITES_FILES = ("optical-flow", "multimodal-autoencoding")
_HAS_CLASSES = ("image-classification", "multimodal-autoencoding")


def add_predict_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``predict`` to ``perceiver-io``'s subcommands; :func:`run_predict` runs it."""
    # TASK and --model are checked by run_predict (not by argparse's choices / required), so that every mistake is
    # one line and exit code 1, as the other commands' are.
    parser = subparsers.add_parser(
        "predict", help="run a task pipeline (fill-mask, image-classification, optical-flow, "
        "multimodal-autoencoding) on your inputs",
        description="Run perceiver_io.pipeline(TASK, model=NAME_OR_PATH) on INPUTs. fill-mask: texts with [MASK] / "
        "[MASK*n] spans; image-classification: image files (top-k classes printed); optical-flow: frame files in "
        "pairs, FRAME1 FRAME2 [FRAME1 FRAME2 ...] (one flow PNG per pair written to --out); "
        "multimodal-autoencoding: video files (the reconstruction written to --out as .mp4 and .wav, the label's "
        "top-k printed). NAME_OR_PATH: a save_pretrained directory, or whatever perceiver_io.from_pretrained reads.",
    )
    parser.add_argument("task", metavar="TASK",
                        help="fill-mask, image-classification, optical-flow or multimodal-autoencoding")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="texts, image files, frame files or video files")
    parser.add_argument("--model", metavar="NAME_OR_PATH", help="required: the model (perceiver_io.from_pretrained)")
    parser.add_argument("--out", metavar="DIR",
                        help="optical-flow and multimodal-autoencoding: the folder for the files (created if needed)")
    parser.add_argument("--top-k", type=int, metavar="K", help="classes / candidates shown (default 5)")
    parser.add_argument("--class-names", metavar="FILE",
                        help="image-classification, multimodal-autoencoding: one class name per line (default: "
                        "ImageNet's for 1000 classes, else class_<i>)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    return parser


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line of a UTF-8 text file (blank lines at the end ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--class-names: no such file: {path}")
    try:
        return path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"--class-names: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def unique_names(stems: Sequence[str]) -> list[str]:
    """File-name-safe output names from input stems: the stems themselves when they are unique, else numbered."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip(".") or "output" for s in stems]
    if len(set(safe)) == len(safe):
        return safe
    return [f"{i:03d}_{s}" for i, s in enumerate(safe)]


def _check_args(args: argparse.Namespace) -> None:
    """Everything checkable before loading the model."""
    from . import check_task

    check_task(args.task, "TASK")
    if args.model is None:
        raise ValueError("--model: required (a save_pretrained directory, or a name that perceiver_io.from_pretrained "
                         "reads)")
    if args.task in _WRITES_FILES and args.out is None:
        raise ValueError(f"--out: required for {args.task} (the folder for the files it writes)")
    if args.task not in _WRITES_FILES and args.out is not None:
        raise ValueError(f"--out: only {' and '.join(_WRITES_FILES)} write files; {args.task} prints its results")
    if args.class_names is not None and args.task not in _HAS_CLASSES:
        raise ValueError(f"--class-names: only for {' and '.join(_HAS_CLASSES)}")
    if args.top_k is not None and args.task == "optical-flow":
        raise ValueError("--top-k: not for optical-flow (it has no classes)")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k: expected a positive int, got {args.top_k}")
    if args.task == "optical-flow" and len(args.inputs) % 2:
        raise ValueError(f"INPUT: optical-flow reads frames in pairs (FRAME1 FRAME2 ...), got {len(args.inputs)} "
                         f"frame files")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out: {args.out} exists and is not a directory")


def _classes_lines(top: list[dict[str, Any]], indent: str = "  ") -> list[str]:
    width = len(str(len(top)))
    return [f"{indent}{rank:>{width}}  {c['score']:.4f}  {c['label']}" for rank, c in enumerate(top, 1)]


def _fill_mask(pipe: Any, args: argparse.Namespace) -> list[str]:
    from ..fill_mask import format_result

    top_k = args.top_k or 5
    unit = "bytes" if pipe.tokenizer is None else "tokens"
    return ["\n\n".join(format_result(r, top_k, unit) for r in pipe.results(list(args.inputs), top_k=top_k))]


def _image_classification(pipe: Any, args: argparse.Namespace) -> list[str]:
    lines = []
    for path, top in zip(args.inputs, pipe(list(args.inputs))):
        lines += [path, *_classes_lines(top)]
    return lines


def _optical_flow(pipe: Any, args: argparse.Namespace) -> list[str]:
    from ..flow_tool import write_flow_png

    frames = list(args.inputs)
    pairs = list(zip(frames[0::2], frames[1::2]))
    out = Path(args.out)
    names = unique_names([f"{Path(a).stem}_{Path(b).stem}" for a, b in pairs])
    lines = []
    for (first, second), name, result in zip(pairs, names, pipe(pairs)):
        flow = torch.from_numpy(result["flow"]).permute(2, 0, 1)
        path = write_flow_png(flow, out / f"{name}_flow.png")
        magnitude = torch.linalg.vector_norm(flow, dim=0)
        h, w = flow.shape[-2:]
        lines.append(f"wrote {path} (flow {first} -> {second}, {w}x{h}; mean {float(magnitude.mean()):.2f} px, "
                     f"max {float(magnitude.max()):.2f} px)")
    return lines


def _multimodal(pipe: Any, args: argparse.Namespace) -> list[str]:
    from ..demo.multimodal import write_wav
    from .multimodal import write_video

    out = Path(args.out)
    lines = []
    names = unique_names([Path(p).stem for p in args.inputs])
    for path, name, result in zip(args.inputs, names, pipe(list(args.inputs))):
        lines.append(path)
        if "video" in result:
            t, h, w, _ = result["video"].shape
            video = write_video(result["video"], out / f"{name}.mp4", result["fps"])
            lines.append(f"  wrote {video} (reconstruction: {t} frames of {w}x{h} at {result['fps']:g} fps)")
        if "audio" in result:
            wav = out / f"{name}.wav"
            write_wav(wav, torch.from_numpy(result["audio"])[:, None], result["audio_rate"])
            lines.append(f"  wrote {wav} (reconstructed audio: {result['audio'].shape[0]} samples at "
                         f"{result['audio_rate']} Hz, resampled to 16 kHz)")
        if "label" in result:
            lines += ["  label (hidden from the model):", *_classes_lines(result["label"], "    ")]
    return lines


_RUNNERS = {"fill-mask": _fill_mask, "image-classification": _image_classification, "optical-flow": _optical_flow,
            "multimodal-autoencoding": _multimodal}


def _predict(args: argparse.Namespace) -> list[str]:
    from . import pipeline

    _check_args(args)
    options: dict[str, Any] = {}
    if args.top_k is not None:
        options["top_k"] = args.top_k
    if args.class_names is not None:
        options["class_names"] = read_class_names(args.class_names)
    for path in args.inputs if args.task != "fill-mask" else []:  # before the model loads: a typo fails at once
        if not Path(path).exists():
            raise FileNotFoundError(f"INPUT: no such file: {path}")
    pipe = pipeline(args.task, args.model, device=args.device, **options)
    if args.out is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    return _RUNNERS[args.task](pipe, args)


def run_predict(args: argparse.Namespace) -> int:
    """Run ``perceiver-io predict`` (arguments from :func:`add_predict_parser`): print the results, write the files;
    returns the exit code. Errors are one line on stderr (exit code 1); warnings (a clip shorter than the model's,
    a text cut to the model's length) one line each."""
    error: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            lines = _predict(args)
        except (ValueError, TypeError, OSError, RuntimeError) as err:
            error = one_line(err)
    for warning in caught:  # printed before the error: a short clip's warning may explain it
        if issubclass(warning.category, UserWarning):  # ours; not the libraries' deprecation notices
            print(f"perceiver-io predict: warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    if error is not None:
        print(f"perceiver-io predict: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
