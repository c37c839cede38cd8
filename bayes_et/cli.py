"""The `bayes-et` command."""

from __future__ import annotations

import _thread
import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from bayes_et import __version__


def _run(args: argparse.Namespace) -> int:
    from bayes_et.quickstart import run_quickstart

    return run_quickstart(args.config, args.out, force=args.force)


def _generate(args: argparse.Namespace) -> int:
    from bayes_et.data import generate, load_dataset

    out = args.out or f"{Path(args.config).stem}.npz"
    path = generate(args.config, out, resume=args.resume, force=args.force)
    counts = load_dataset(path).metadata["counts"]
    print(f"wrote {path}: {counts['n']} eta, {counts['flagged']} flagged "
          f"({100 * counts['flagged_fraction']:.1f}%)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from bayes_et.train import train_run

    out = train_run(args.config, data=args.data, out=args.out, force=args.force,
                    family=args.family)
    _print_metrics(json.loads((out / "metrics.json").read_text())["test"], f"{out} (test split)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from bayes_et.train import evaluate_run

    metrics, path = evaluate_run(args.run_dir, args.data, num_samples=args.num_samples,
                                 force=args.force, family=args.family)
    _print_metrics(metrics, str(path))
    return 0


def _extend(args: argparse.Namespace) -> int:
    from bayes_et.train import extend_run

    out = extend_run(args.run_dir, args.data, out=args.out, force=args.force,
                     family=args.family)
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"{out}: {metrics['added_rows']} rows added to {args.run_dir}'s data")
    _print_metrics(metrics["test"], f"{out} (test split)")
    return 0


def _cavi(args: argparse.Namespace) -> int:
    from bayes_et.cavi import cavi_run

    result, out = cavi_run(args.config, args.out, region=args.region,
                           region_num=args.region_num, region_margin=args.region_margin,
                           force=args.force, progress=True)
    state = "converged" if result.converged else "NOT converged"
    print(f"wrote {out}/result.json and {out}/cavi.png: {state} after {result.iterations} "
          f"sweeps ({result.timings['solve_seconds']:.2f} s)")
    for path in sorted(out.glob("fallback-*.npz")):
        print(f"wrote {path}: the fallback's answers; teach them to the network with "
              f"bayes-et extend RUN_DIR --data {path}")
    if args.region:
        print(f"wrote {out}/data-{args.region}.yaml: train {args.region}'s network there with "
              f"bayes-et train CONFIG --data {out}/data-{args.region}.yaml")
    band = result.band("mean_stats")
    for name in result.names:
        if result.eta[name].ndim == 2:
            counts = ", ".join(f"{k} {v}" for k, v in result.flag_counts[name].items())
            print(f"  {name}: plate of {len(result.eta[name])} members (see result.json)"
                  + (f"; flagged members: {counts}" if counts else ""))
            continue
        for i, label in enumerate(result.stat_names[name]):
            row = f"  <{label}>_{name} = {result.mean_stats[name][i]:.6g}"
            if band is not None:
                row += f"   90% band [{band[name]['lo'][i]:.6g}, {band[name]['hi'][i]:.6g}]"
            print(row)
        if result.flags[name]:
            print(f"  flags of {name}: {', '.join(result.flags[name])}")
    return 0


def _print_metrics(metrics: dict, where: str) -> None:
    cover = ", ".join(f"{float(k):.0%}: {v:.3f}" for k, v in metrics["coverage"].items())
    nrmse = ", ".join(f"{k} {v:.2e}" for k, v in metrics["nrmse"].items())
    print(f"{where}: {metrics['num_eta']} eta vs {metrics.get('truth', 'exact moments')}")
    print(f"  coverage {cover}; mean z^2 {metrics['mean_z2']:.3f}; CRPS {metrics['crps']:.3g}")
    print(f"  normalised RMSE {nrmse}")
    if "rms_error_over_mcse" in metrics:
        ratio = ", ".join(f"{k} {v:.3f}" for k, v in metrics["rms_error_over_mcse"].items())
        print(f"  RMS(error / MCSE of the data) {ratio}")


INTERRUPTED = 130  # the exit status after Ctrl-C (128 + SIGINT)
CTRL_C = threading.Event()  # the console command received Ctrl-C
STOPPED = threading.Event()  # ... and its main thread stopped for it


class _Parser(argparse.ArgumentParser):
    """Command-line errors in one line, as every other bad input (status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {printable(message)}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bayes-et",
        description="Learn exponential-family moment maps with calibrated uncertainty.",
    )
    parser.add_argument("--version", action="version", version=f"bayes-et {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the end-to-end pipeline (embedded default)")
    run.add_argument("config", nargs="?", default=None,
                     help="pipeline YAML (default: the embedded configs/quickstart.yaml)")
    run.add_argument("--out", default=None, help="report folder (default: the config's out)")
    run.add_argument("--force", action="store_true", help="replace an existing report folder")
    run.set_defaults(func=_run)
    gen = commands.add_parser("generate", help="generate a moment dataset from a YAML config")
    gen.add_argument("config", help="dataset YAML (see configs/data/)")
    gen.add_argument("--out", default=None, help="output .npz (default: CONFIG stem + .npz)")
    gen.add_argument("--resume", action="store_true", help="continue an interrupted run")
    gen.add_argument("--force", action="store_true", help="overwrite an existing output")
    gen.set_defaults(func=_generate)
    tr = commands.add_parser("train", help="train an ET network (MAP then VI) from a YAML config")
    tr.add_argument("config", help="training YAML (see configs/train/)")
    tr.add_argument("--data", default=None, help="dataset .npz or data config .yaml "
                    "(overrides the config's data)")
    tr.add_argument("--out", default=None, help="run folder (default: runs/CONFIG-DATA)")
    tr.add_argument("--force", action="store_true", help="replace an existing run folder")
    tr.add_argument("--family", default=None, metavar="MODULE:CLASS",
                    help="the data's family when it is not built in (a file never chooses "
                    "what is imported)")
    tr.set_defaults(func=_train)
    ev = commands.add_parser("evaluate", help="calibration of a trained run on another dataset")
    ev.add_argument("run_dir", help="run folder written by `bayes-et train`")
    ev.add_argument("--data", required=True, help="dataset .npz with exact moments available")
    ev.add_argument("--num-samples", type=int, default=64, help="weight draws (default 64)")
    ev.add_argument("--force", action="store_true", help="replace an earlier evaluation")
    ev.add_argument("--family", default=None, metavar="MODULE:CLASS",
                    help="the run's family when it is not built in")
    ev.set_defaults(func=_evaluate)
    ex = commands.add_parser("extend", help="continue a run's training with more rows "
                             "(a CAVI fallback's answers)")
    ex.add_argument("run_dir", help="run folder written by `bayes-et train`")
    ex.add_argument("--data", required=True, nargs="+", help="dataset .npz files to add "
                    "(for example OUT/fallback-FACTOR.npz of `bayes-et cavi`)")
    ex.add_argument("--out", default=None, help="new run folder (default: RUN_DIR-extended)")
    ex.add_argument("--force", action="store_true", help="replace an existing run folder")
    ex.add_argument("--family", default=None, metavar="MODULE:CLASS",
                    help="the run's family when it is not built in")
    ex.set_defaults(func=_extend)
    cv = commands.add_parser("cavi", help="solve a model by CAVI from a YAML config")
    cv.add_argument("config", help="CAVI YAML (see configs/cavi/)")
    cv.add_argument("--out", default=None, help="output folder (default: runs/cavi-CONFIG)")
    cv.add_argument("--region", default=None, metavar="FACTOR",
                    help="also write OUT/data-FACTOR.yaml: a data config over the eta the "
                    "solve visited for FACTOR (to train its network there)")
    cv.add_argument("--region-num", type=int, default=4000, help="eta in that config")
    cv.add_argument("--region-margin", type=float, default=0.05,
                    help="widen the visited box by this share of its width on each side")
    cv.add_argument("--force", action="store_true", help="replace an existing output folder")
    cv.set_defaults(func=_cavi)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for option, shown in (("out", "--out"), ("data", "--data"), ("config", "CONFIG"),
                          ("run_dir", "RUN_DIR")):
        value = getattr(args, option, None)
        for path in value if isinstance(value, list) else [value]:
            problem = ("an empty path; name a file or folder" if path == "" else
                       f"{printable(repr(path))} holds a control character; allowed: "
                       "printable characters" if path and not path.isprintable() else None)
            if problem:
                print(f"bayes-et {args.command}: error: {shown}: {problem}", file=sys.stderr)
                return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _interrupted(args.command)
    except Exception as err:
        if CTRL_C.is_set() or "KeyboardInterrupt" in str(err):  # Ctrl-C in a host callback
            return _interrupted(args.command)  # reaches us wrapped (JaxRuntimeError)
        if isinstance(err, (ValueError, OSError)):  # bad input, or a file system that refuses
            print(f"bayes-et {args.command}: error: {printable(str(err))}", file=sys.stderr)
            return 2
        raise


def _interrupted(command: str) -> int:
    STOPPED.set()
    print(f"bayes-et {command}: interrupted; a run folder's staging folder is kept for the "
          "same command to resume", file=sys.stderr)
    return INTERRUPTED


def printable(text: str) -> str:
    """One line of `text` with control characters escaped (user text never drives the
    terminal)."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _interrupts_by_a_waiting_thread() -> None:
    """Ctrl-C taken by a thread that waits for it, with SIGINT blocked in every other
    thread (XLA's are made later and inherit the mask): a handler that native code
    installs meanwhile (LLVM does while compiling) can no longer swallow it (a probe saw a
    training run on to the end after Ctrl-C)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: Python's own handler
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def relay() -> None:
        while True:
            signal.sigwait({signal.SIGINT})
            CTRL_C.set()
            while not STOPPED.is_set():  # again until it lands: a KeyboardInterrupt in a
                _thread.interrupt_main()  # host callback's compilation can be swallowed
                STOPPED.wait(1.0)

    threading.Thread(target=relay, name="bayes-et-ctrl-c", daemon=True).start()
    report = sys.unraisablehook

    def quiet(unraisable) -> None:  # an interrupt swallowed (say, by a gc callback) is
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):  # delivered again:
            report(unraisable)  # its report would only be noise

    sys.unraisablehook = quiet


def entry() -> NoReturn:
    """The console command: `main`, then exit. After Ctrl-C the process leaves at once,
    without the interpreter's teardown: with XLA work still in flight that teardown could
    crash (a segfault, status -11) after the one line was printed."""
    _interrupts_by_a_waiting_thread()
    try:
        code = main()
        STOPPED.set()  # finished before a late Ctrl-C took effect: its answer stands
    except KeyboardInterrupt:  # outside main's own handling (before or after it)
        code = _interrupted(sys.argv[1] if len(sys.argv) > 1 else "")
    if code == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
