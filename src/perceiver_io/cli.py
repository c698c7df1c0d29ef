"""Command line: ``perceiver-io <command>``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perceiver-io", description="Perceiver IO in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the project's demo")
    demo.add_argument("--output-dir", default="demo-output", help="where to write results (default: demo-output)")
    demo.add_argument("--quick", action="store_true", help="a shorter run (used by the tests)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.output_dir, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
