"""The `bayes-et` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayes_et import __version__

PIPELINE = (
    ("params", "variational parameter core", True),
    ("expfam", "exponential families and exact moments", True),
    ("generate", "MCMC / quadrature dataset generation", True),
    ("et", "ET networks: six Bayesian architectures", True),
    ("train", "MAP-then-VI training of ET networks", False),
    ("evaluate", "calibration against exact moments", False),
    ("cavi", "CAVI with learned moments and error bars", False),
)


def _run(args: argparse.Namespace) -> int:
    from bayes_et.quickstart import run_quickstart

    return run_quickstart(args.config)


def _generate(args: argparse.Namespace) -> int:
    from bayes_et.data import generate, load_dataset

    out = args.out or f"{Path(args.config).stem}.npz"
    path = generate(args.config, out, resume=args.resume, force=args.force)
    counts = load_dataset(path).metadata["counts"]
    print(f"wrote {path}: {counts['n']} eta, {counts['flagged']} flagged "
          f"({100 * counts['flagged_fraction']:.1f}%)")
    return 0


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
    gen = commands.add_parser("generate", help="generate a moment dataset from a YAML config")
    gen.add_argument("config", help="dataset YAML (see configs/data/)")
    gen.add_argument("--out", default=None, help="output .npz (default: CONFIG stem + .npz)")
    gen.add_argument("--resume", action="store_true", help="continue an interrupted run")
    gen.add_argument("--force", action="store_true", help="overwrite an existing output")
    gen.set_defaults(func=_generate)
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
