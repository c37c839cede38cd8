"""The `bayes-et` command."""

from __future__ import annotations

import argparse
import sys

from bayes_et import __version__

PIPELINE = (
    ("params", "variational parameter core", True),
    ("expfam", "exponential families and exact moments", True),
    ("generate", "MCMC / quadrature dataset generation", False),
    ("train", "MAP-then-VI training of ET networks", False),
    ("evaluate", "calibration against exact moments", False),
    ("cavi", "CAVI with learned moments and error bars", False),
)


def _run(args: argparse.Namespace) -> int:
    from bayes_et.quickstart import run_quickstart

    return run_quickstart(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-et",
        description="Learn exponential-family moment maps with calibrated uncertainty.",
    )
    parser.add_argument("--version", action="version", version=f"bayes-et {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the end-to-end pipeline (embedded default)")
    run.add_argument("config", nargs="?", default=None, help="pipeline YAML (default: embedded)")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except ValueError as err:
        print(f"bayes-et {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
