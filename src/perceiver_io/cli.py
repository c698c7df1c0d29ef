"""Command line: ``perceiver-io <command>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _convert(args: argparse.Namespace) -> None:
    if args.source_format == "haiku":
        from .convert.haiku import from_haiku
        from .models.presets import PRESETS

        if args.preset is None:
            raise SystemExit(f"perceiver-io convert: --preset is required with --from haiku (one of {sorted(PRESETS)})")
        model = from_haiku(args.source, args.preset)
    else:
        from .convert.transformers import load_transformers_model, from_transformers

        model = from_transformers(load_transformers_model(args.source))
    model.save_pretrained(args.output_dir)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({n:,} parameters) to {Path(args.output_dir)}")


TASK_COMMANDS = ("image-classifier",)


def _export(args: argparse.Namespace) -> None:
    from .training.export import export_checkpoint

    model = export_checkpoint(args.checkpoint, args.output_dir)
    print(f"wrote {type(model).__name__} to {Path(args.output_dir)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TASK_COMMANDS:
        from .training.cli import run_task_cli

        return run_task_cli(argv[0], argv[1:])
    parser = argparse.ArgumentParser(
        prog="perceiver-io",
        description="Perceiver IO in PyTorch. Training: perceiver-io {" + ",".join(TASK_COMMANDS)
        + "} {fit,validate,test,predict} --config FILE.yaml",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the project's demo")
    demo.add_argument("--output-dir", default="demo-output", help="where to write results (default: demo-output)")
    demo.add_argument("--quick", action="store_true", help="a shorter run (used by the tests)")
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
            from .demo import run_demo

            run_demo(args.output_dir, quick=args.quick)
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
