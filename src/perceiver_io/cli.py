"""Command line: ``perceiver-io <command>``."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path


def _convert(args: argparse.Namespace) -> None:
    from .pretrained import from_pretrained

    if args.source_format == "haiku":
        from .models import list_models

        if args.preset is None:
            raise SystemExit(f"perceiver-io convert: --preset is required with --from haiku (one of {list_models()})")
        model = from_pretrained(args.source, preset=args.preset)
        source = f"{Path(args.source).name} (official DeepMind checkpoint, preset {args.preset})"
    else:
        model = from_pretrained(args.source)
        source = f"{args.source} (transformers)"
    model.save_pretrained(args.output_dir, source=source)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({n:,} parameters) to {Path(args.output_dir)}")


def _demo(args: argparse.Namespace) -> int:
    from .demo import SECTIONS, run_demo

    if args.list:
        for s in SECTIONS:
            print(f"{s.name:<12} {s.title} (budget {s.budget_s:.0f} s)")
        return 0
    try:
        run_demo(args.output_dir, tasks=args.tasks, quick=args.quick)
    except RuntimeError as e:  # a section failed (its traceback is printed); the page is written
        print(f"perceiver-io demo: error: {e}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> None:
    if args.onnx:
        from .convert.onnx import export_onnx, require_onnx
        from .pretrained import from_pretrained

        try:
            require_onnx(check=not args.no_check)
        except ImportError as e:
            raise SystemExit(f"perceiver-io export: error: {e}") from None
        report = export_onnx(from_pretrained(args.checkpoint), args.output_dir, check=not args.no_check)
        print(report.summary())
        return
    if args.no_check:
        raise ValueError("--no-check: applies to --onnx exports only")
    from .training.export import export_checkpoint

    model = export_checkpoint(args.checkpoint, args.output_dir)
    print(f"wrote {type(model).__name__} to {Path(args.output_dir)}")


def _add_flow_parser(sub: argparse._SubParsersAction) -> None:
    # The choices are spelled out (perceiver_io.models.flow.TILING_MODES) so that building the parser does not import
    # the flow tool (torchvision, PyAV); perceiver_io.flow_tool.run_flow_command checks the arguments, --model and
    # --out included, so that every mistake is one line and exit code 1 rather than argparse's usage and code 2.
    flow = sub.add_parser(
        "flow", help="optical flow of a frame pair or a video with a saved flow model",
        description="FRAME1 FRAME2: the flow from FRAME1 to FRAME2 as a colour image (--out .png), optionally also "
        "as a Middlebury .flo (--flo). --video IN: the flow of every consecutive frame pair as a colour video "
        "(--out .mp4, .mkv, .mov or .avi). Frames larger than the model's training size run as the official "
        "overlapping tiles (--tiling auto), smaller ones at their own size.",
    )
    flow.add_argument("frames", nargs="*", metavar="FRAME",
                      help="two image files (PNG, JPEG, WebP, GIF; RGB or RGBA): frame 1 and frame 2")
    flow.add_argument("--video", metavar="IN", help="a video file: the flow of every consecutive frame pair")
    flow.add_argument("--model", metavar="DIR", help="required: a flow model's save_pretrained directory")
    flow.add_argument("--out", metavar="OUT",
                      help="required: the flow colour image (.png), or with --video the flow video")
    flow.add_argument("--flo", metavar="OUT.flo", help="also write a frame pair's flow as a Middlebury .flo file")
    flow.add_argument("--tiling", default="auto", choices=("auto", "native", "tiled"),
                      help="auto (default): training-size tiles for larger frames, else the whole frame; native: "
                      "always the whole frame; tiled: always tiles")
    flow.add_argument("--min-overlap", type=int, default=20, metavar="PX",
                      help="least overlap of neighbouring tiles (default 20 px)")
    flow.add_argument("--tile-batch-size", type=int, metavar="N", help="tiles per forward pass (default: all at once)")
    flow.add_argument("--max-frames", type=int, metavar="N", help="--video only: read at most N frames")
    flow.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda where available, else cpu)")
    flow.add_argument("--no-progress", action="store_true", help="--video only: no progress bar")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from .training import TASK_HELP, TASKS

    if argv and argv[0] in TASKS:
        from .training.cli import run_task_cli

        return run_task_cli(argv[0], argv[1:])
    parser = argparse.ArgumentParser(
        prog="perceiver-io",
        description="Perceiver IO in PyTorch. Training commands take a subcommand and a config: perceiver-io TASK "
        "{fit,validate,test,predict} --config FILE.yaml (see perceiver-io TASK --help; configs/ holds examples).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for task in TASKS:  # listed here; main() hands them to LightningCLI before argparse sees them
        sub.add_parser(task, help=TASK_HELP[task], add_help=False)
    demo = sub.add_parser(
        "demo", help="run the project's demo: one section per task, results on demo-output/index.html",
        description="Train and evaluate each demo section (all, or those named with --task) on the CPU and write "
        "OUTPUT_DIR/<task>/ and OUTPUT_DIR/index.html.",
    )
    demo.add_argument("--task", action="append", metavar="NAME", dest="tasks",
                      help="run only this section (repeatable; see --list)")
    demo.add_argument("--list", action="store_true", help="list the sections and exit")
    demo.add_argument("--output-dir", default="demo-output", help="where to write results (default: demo-output)")
    demo.add_argument("--quick", action="store_true", help="train each section for a few steps only (the tests)")
    convert = sub.add_parser(
        "convert", help="convert an official (haiku) or transformers checkpoint to this library's format"
    )
    convert.add_argument("--from", dest="source_format", choices=("haiku", "transformers"), required=True)
    convert.add_argument("source", help="haiku: the .pickle/.pystate file; transformers: a local model directory or "
                         "a Hugging Face Hub id (deepmind/vision-perceiver-conv, ...)")
    convert.add_argument("output_dir", help="directory for config.json + model.safetensors")
    convert.add_argument("--preset", help="haiku only: the preset the checkpoint belongs to")
    export = sub.add_parser(
        "export", help="export a training checkpoint to the save_pretrained format, or a model to ONNX (--onnx)",
        description="CHECKPOINT OUTPUT_DIR: a training checkpoint to config.json + model.safetensors. --onnx MODEL "
        "OUT.onnx: an image classifier, masked language model or optical flow model (anything from_pretrained "
        "reads) to one ONNX file with a dynamic batch axis, run under onnxruntime on another batch size and "
        "compared with the eager model (prints the largest difference; needs the onnx extra).",
    )
    export.add_argument("checkpoint", help="a .ckpt written by training; with --onnx: a model directory or Hub id")
    export.add_argument("output_dir", help="directory for config.json + model.safetensors; with --onnx: the .onnx file")
    export.add_argument("--onnx", action="store_true", help="export the model to ONNX (see above)")
    export.add_argument("--no-check", action="store_true", help="--onnx: skip the onnxruntime check")
    _add_flow_parser(sub)
    from .fill_mask import add_fill_mask_parser

    add_fill_mask_parser(sub)
    from .pipelines.command import add_predict_parser

    add_predict_parser(sub)
    args = parser.parse_args(argv)

    try:
        if args.command == "demo":
            return _demo(args)
        elif args.command == "convert":
            _convert(args)
        elif args.command == "export":
            _export(args)
        elif args.command == "flow":
            from .flow_tool import run_flow_command

            return run_flow_command(args)
        elif args.command == "fill-mask":
            from .fill_mask import run_fill_mask

            return run_fill_mask(args)
        elif args.command == "predict":
            from .pipelines.command import run_predict

            return run_predict(args)
    except (ValueError, FileNotFoundError, TypeError, pickle.UnpicklingError) as e:
        # UnpicklingError: a checkpoint refused as unsafe (convert.haiku.UnsafeCheckpointError) or corrupt
        print(f"perceiver-io {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
