"""Command line: ``perceiver-io <command>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _convert(args: argparse.Namespace) -> None:
    if args.source_format == "haiku":
        from .convert.haiku import from_haiku
        from .models import list_models

        if args.preset is None:
            raise SystemExit(f"perceiver-io convert: --preset is required with --from haiku (one of {list_models()})")
        model = from_haiku(args.source, args.preset)
    else:
        from .convert.transformers import load_transformers_model, from_transformers

        model = from_transformers(load_transformers_model(args.source))
    model.save_pretrained(args.output_dir)
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
    from .training.export import export_checkpoint

    model = export_checkpoint(args.checkpoint, args.output_dir)
    print(f"wrote {type(model).__name__} to {Path(args.output_dir)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from .training import TASKS

    if argv and argv[0] in TASKS:
        from .training.cli import run_task_cli

        return run_task_cli(argv[0], argv[1:])
    parser = argparse.ArgumentParser(
        prog="perceiver-io",
        description="Perceiver IO in PyTorch. Training: perceiver-io {" + ",".join(TASKS)
        + "} {fit,validate,test,predict} --config FILE.yaml",
    )
    sub = parser.add_subparsers(dest="command", required=True)
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
    convert.add_argument("source", help="haiku: the .pickle/.pystate file; transformers: a local model directory")
    convert.add_argument("output_dir", help="directory for config.json + model.safetensors")
    convert.add_argument("--preset", help="haiku only: the preset the checkpoint belongs to")
    export = sub.add_parser("export", help="export a training checkpoint to the save_pretrained format")
    export.add_argument("checkpoint", help="a .ckpt written by training")
    export.add_argument("output_dir", help="directory for config.json + model.safetensors")
    args = parser.parse_args(argv)

    try:
        if args.command == "demo":
            return _demo(args)
        elif args.command == "convert":
            _convert(args)
        elif args.command == "export":
            _export(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"perceiver-io {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
