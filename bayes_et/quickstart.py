"""`bayes-et run`: the end-to-end pipeline (generate, train, calibrate, CAVI) and its report."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayes_et.data import DataSettings
from bayes_et.settings import (
    as_dict,
    fail,
    integer,
    mapping,
    nested,
    numbers,
    parse,
    read_config,
    setting,
    text,
)
from bayes_et.train import TrainSettings


@dataclasses.dataclass(frozen=True)
class SliceSettings:
    """The pipeline's line of eta (start to stop, num points)."""

    start: tuple[float, ...] = setting(check=numbers())
    stop: tuple[float, ...] = setting(check=numbers())
    num: int = setting(check=integer(2, 100_000))


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """`bayes-et run`: data, train and cavi sections (each checked by its own settings)."""

    data: DataSettings = setting(check=nested(DataSettings))
    train: TrainSettings = setting(check=nested(TrainSettings))
    slice: SliceSettings = setting(check=nested(SliceSettings))
    cavi: dict = setting(check=mapping)
    out: str = setting("runs/quickstart", text)


COVERAGE_TARGET = (0.85, 0.95)
STAGES = ("generate", "train", "calibration", "slice", "cavi")


def default_config_path() -> Path:
    """The embedded default (configs/quickstart.yaml is the same file)."""
    return Path(str(resources.files("bayes_et") / "quickstart.yaml"))


def load_config(source: str | os.PathLike | dict | None = None) -> PipelineSettings:
    """Read and validate a pipeline config (default: the embedded one); each section is
    checked by its own settings, so errors name the key."""
    from bayes_et.cavi import NetworkSettings, load_cavi_config
    from bayes_et.data import load_data_config
    from bayes_et.expfam import build_family

    cfg = parse(PipelineSettings, read_config(default_config_path() if source is None
                                              else source))
    data = load_data_config(cfg.data)
    family = build_family(data.family)
    if cfg.train.data is not None:
        fail("train.data", cfg.train.data, "nothing: the pipeline trains on 'data'")
    ends = [family.validate_eta(np.asarray(e, float), f"slice.{k}")
            for k, e in (("start", cfg.slice.start), ("stop", cfg.slice.stop))]
    if np.array_equal(*ends):
        fail("slice", [cfg.slice.start, cfg.slice.stop], "two different valid eta")
    if "providers" in cfg.cavi:
        fail("cavi.providers", cfg.cavi["providers"], "nothing: the pipeline's network "
             "answers the factor of the data's family, exact moments the others")
    model, _, solver, _ = load_cavi_config(cfg.cavi)
    draws = NetworkSettings.num_samples  # the default weight draws of the pipeline's network
    if solver.num_draws > draws:
        fail("cavi.solver.num_draws", solver.num_draws, f"at most {draws} (the network "
             "provider's weight draws)")
    if not any(type(f) is type(family) for f in model.families):
        fail("cavi", cfg.cavi.get("example", "model"), f"a model with a {family.name} factor "
             "(the family the network learns)")
    return dataclasses.replace(cfg, data=data)


def _line(start, stop, num: int) -> np.ndarray:
    start, stop = np.asarray(start, float), np.asarray(stop, float)
    return start + np.linspace(0.0, 1.0, num)[:, None] * (stop - start)


def _slice_figure(model, family, cfg, path: Path) -> dict[str, float]:
    """Predicted mu_T (mean and 90% band) against quadrature along the configured line."""
    from bayes_et._files import save_figure
    from bayes_et.expfam import exact_moments
    from bayes_et.train import predict
    from bayes_et.train._plots import plt

    eta = _line(cfg.start, cfg.stop, cfg.num)
    predictive = predict(model, eta, jax.random.key(0))
    mean, band = np.asarray(predictive.mean, np.float64), predictive.half_width(0.9)
    truth = exact_moments(family, eta)[0]
    moving = np.flatnonzero(np.ptp(eta, axis=0) > 0)
    t = eta[:, moving[0]]
    names = family.flat_names
    fig, axes = plt.subplots(2, len(names), figsize=(3.4 * len(names), 5.6), sharex=True,
                             squeeze=False)
    for k in range(len(names)):
        top, bottom = axes[0, k], axes[1, k]
        top.plot(t, mean[:, k], color="C1", label="network mean")
        top.plot(t, truth[:, k], "k--", lw=1, label="quadrature")
        top.set(title=f"E[{names[k]}]")
        bottom.fill_between(t, -band[:, k], band[:, k], color="C1", alpha=0.35,
                            lw=0, label="network 90% band")
        bottom.plot(t, mean[:, k] - truth[:, k], color="C0", lw=1,
                    label="network - quadrature")
        bottom.axhline(0, color="0.5", lw=0.6)
        bottom.set(xlabel=f"eta_{names[moving[0]]}", title="error and 90% band")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("Predicted versus exact moments along a line of eta "
                 f"(other eta fixed at {np.delete(eta[0], moving).tolist()})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return {"max_abs_error": float(np.max(np.abs(mean - truth))),
            "inside_90_band": float(np.mean(np.abs(mean - truth) <= band)), "num": int(cfg.num)}


def _cavi(run_dir: Path, cfg: dict, family, path: Path) -> dict[str, Any]:
    from bayes_et.cavi import Audit, ExactMoments, NetworkMoments, WithFallback
    from bayes_et.cavi._plots import plot_cavi
    from bayes_et.cavi._run import load_cavi_config
    from bayes_et.cavi._solver import solve
    from bayes_et.expfam import kl_divergence

    model, _, solver, _ = load_cavi_config(cfg)
    providers = {n: WithFallback(NetworkMoments(run_dir, family=f), ExactMoments(f))
                 for n, f in zip(model.names, model.families, strict=True)
                 if type(f) is type(family)}
    oracles = {n: ExactMoments(p.family) for n, p in providers.items()}
    learned = solve(model, providers, solver, audit=Audit(oracles))
    exact = solve(model, None, dataclasses.replace(solver, num_draws=0))
    audit = learned.audit
    audited = audit.contains(exact.eta)
    plot_cavi(learned, dict(zip(model.names, model.families, strict=True)), path,
              "CAVI for quartic_prior: network providers (band: function draws)")
    band = learned.band("eta")
    contains = learned.band_contains(exact.eta) if band is not None else None
    rows, inside = [], True
    for i, (name, fam) in enumerate(zip(model.names, model.families, strict=True)):
        for j in np.flatnonzero(model.coupled(i)):
            row = {"factor": name, "eta": fam.flat_names[j],
                   "network": float(learned.eta[name][j]),
                   "quadrature": float(exact.eta[name][j]),
                   "audited": float(audit.eta[name][j]),
                   "audit_lo": float(audit.lo[name][j]), "audit_hi": float(audit.hi[name][j]),
                   "audit_inside": bool(audited[name][j])}
            if band is not None:
                row.update(lo=band[name]["lo"][j], hi=band[name]["hi"][j])
                row["inside"] = bool(contains[name][j])
                inside &= row["inside"]
            rows.append(row)
    return {
        "converged": learned.converged, "iterations": learned.iterations,
        "seconds": learned.timings, "flags": learned.flags, "rows": rows,
        "band_contains_quadrature": inside if band is not None else None,
        "audit": {**audit.to_json(), "contains_quadrature": all(r["audit_inside"]
                                                                 for r in rows)},
        "kl": {n: kl_divergence(f, learned.eta[n], exact.eta[n])
               for n, f in zip(model.names, model.families, strict=True)},
        "mean_stats": {n: learned.mean_stats[n].tolist() for n in model.names},
        "mean_stats_quadrature": {n: exact.mean_stats[n].tolist() for n in model.names},
    }


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def _report(summary: dict, metrics: dict, cfg: dict, family) -> str:
    test = metrics["test"]
    cov, lo_hi = test["coverage"], COVERAGE_TARGET
    cavi = summary["cavi"]
    lines = [
        "# bayes-et run: report", "",
        f"Family **{family.name}**, architecture **{metrics['architecture']}**; total "
        f"{summary['seconds_total']:.0f} s.",
        "", "## Summary", "", _table(summary), "",
        "## 1. Data", "",
        f"{summary['generate']['num_eta']} eta by {summary['generate']['method']} "
        f"({summary['generate']['seconds']:.1f} s), box `{cfg.data.eta.box}`.", "",
        "## 2. Training (MAP, then VI on the widths)", "",
        f"{metrics['epochs']} epochs in {metrics['training_seconds']:.1f} s on "
        f"{metrics['num_train']} eta; {metrics['parameters']['total']} parameters; calibration "
        f"(log c² = a + b log u per statistic, u the raw spread): a = "
        f"{_numbers(metrics['calibration']['log_scale'])}, b = "
        f"{_numbers(metrics['calibration']['slope'])}.", "",
        "![learning curves](learning_curves.png)", "",
        "## 3. Calibration on held-out eta (against quadrature)", "",
        "| nominal | 50% | 80% | 90% | 95% |", "|---|---|---|---|---|",
        "| observed | " + " | ".join(f"{cov[k]:.3f}" for k in ("0.5", "0.8", "0.9", "0.95"))
        + " |", "",
        f"90% coverage {cov['0.9']:.3f} (target [{lo_hi[0]}, {lo_hi[1]}]: "
        f"{'met' if lo_hi[0] <= cov['0.9'] <= lo_hi[1] else 'NOT met'}); mean z² "
        f"{test['mean_z2']:.2f}; normalised RMSE "
        + ", ".join(f"{k} {v:.1e}" for k, v in test["nrmse"].items()) + ".", "",
        "![calibration](calibration.png)", "",
        "## 4. Along a line of eta", "",
        f"{summary['slice']['inside_90_band']:.0%} of the {summary['slice']['num']} x "
        f"{len(test['nrmse'])} predicted moments lie within their 90% band of the quadrature "
        f"value; largest error {summary['slice']['max_abs_error']:.2e}.", "",
        "![slice](slice.png)", "",
        "## 5. CAVI with the network (quartic prior on mu)", "",
        f"{'Converged' if cavi['converged'] else 'NOT converged'} in {cavi['iterations']} "
        f"sweeps ({cavi['seconds']['solve_seconds']:.2f} s; with "
        f"{cfg.cavi.get('solver', {}).get('num_draws', 0)} function draws "
        f"{cavi['seconds'].get('draws_seconds', 0):.2f} s). KL(q_net || q_quadrature): "
        + ", ".join(f"{k} {v:.1e}" for k, v in cavi["kl"].items()) + "."
        + (f" Flags: {_flag_text(cavi['flags'])}; the fallback (quadrature) answered where "
           "the network flagged its eta." if _flag_text(cavi["flags"]) else ""), "",
        "The audit: quadrature answers the audited members at the network's fixed point "
        f"({', '.join(f'{k}: members {v}' for k, v in cavi['audit']['members'].items())}; "
        f"method: {cavi['audit']['method']}, {cavi['audit']['seconds']:.2f} s); the network's "
        "mean z² there: " + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} -"
                                        for k, v in cavi["audit"]["z2"].items()) + ".", "",
        "| factor | eta | network | 90% band | audited | audit 90% interval | quadrature | "
        "in band | in audit |", "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cavi["rows"]:
        band = f"[{r['lo']:.4f}, {r['hi']:.4f}]" if "lo" in r else "-"
        lines.append(f"| {r['factor']} | {r['eta']} | {r['network']:.4f} | {band} | "
                     f"{r['audited']:.4f} | [{r['audit_lo']:.4f}, {r['audit_hi']:.4f}] | "
                     f"{r['quadrature']:.4f} | {r.get('inside', '-')} | {r['audit_inside']} |")
    from bayes_et._versions import package_versions

    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    lines += ["", "![cavi](cavi.png)", "", f"<sub>Written with {versions}.</sub>", ""]
    return "\n".join(lines)


def _summary_rows(summary: dict) -> list[tuple[str, str, str]]:
    g, t, c, s, v = (summary[k] for k in STAGES)
    lo, hi = COVERAGE_TARGET
    band = v["band_contains_quadrature"]
    return [
        ("generate", f"{g['num_eta']} eta by {g['method']}", f"{g['seconds']:.1f}"),
        ("train", f"{t['architecture']}, {t['epochs']} epochs", f"{t['seconds']:.1f}"),
        ("calibration", f"90% coverage {c['coverage_90']:.3f} (target [{lo}, {hi}]: "
         f"{'met' if c['ok'] else 'NOT met'}), mean z² {c['mean_z2']:.2f}",
         f"{c['seconds']:.1f}"),
        ("slice", f"{s['inside_90_band']:.0%} of moments inside their 90% band",
         f"{s['seconds']:.1f}"),
        ("cavi", f"{'converged' if v['converged'] else 'NOT converged'} in {v['iterations']} "
         f"sweeps; band contains quadrature: {'yes' if band else 'no' if band is not None else '-'}"
         f"; audit interval contains it: {'yes' if v['audit']['contains_quadrature'] else 'no'}"
         f", max KL {max(v['kl'].values()):.1e}"
         + (f"; flags {_flag_text(v['flags'])}" if _flag_text(v["flags"]) else ""),
         f"{v['stage_seconds']:.1f}"),
    ]


def _flag_text(flags: dict[str, list[str]]) -> str:
    """'factor: flag, flag; ...' for the factors with flags ('' if none)."""
    return "; ".join(f"{name}: {', '.join(names)}" for name, names in flags.items() if names)


def _table(summary: dict) -> str:
    rows = ["| stage | result | seconds |", "|---|---|---|"]
    rows += [f"| {a} | {b} | {c} |" for a, b, c in _summary_rows(summary)]
    return "\n".join(rows)


def run_quickstart(config: str | os.PathLike | dict | None = None,
                   out: str | os.PathLike | None = None, *, force: bool = False) -> int:
    """Run the pipeline; write the folder OUT whole (report.md with its figures, data.npz,
    the training run in run/, summary.json) and print a summary. An existing OUT is
    replaced only with `force` (its data.npz is reused when it came from the same config);
    a killed run resumes from its staging folder."""
    from bayes_et._files import run_folder, write_json, write_text
    from bayes_et.data import load_dataset
    from bayes_et.data._generate import generate_into
    from bayes_et.expfam import build_family
    from bayes_et.train import load_run, train_run

    cfg = load_config(config)
    out = Path(out or cfg.out)
    previous = out / "data.npz"
    inputs = [] if config is None or isinstance(config, dict) else [config]
    with run_folder(out, force=force, config=as_dict(cfg), inputs=inputs) as folder:
        began, summary = time.perf_counter(), {}

        def stage(i: int, text: str) -> float:
            print(f"[{i}/{len(STAGES)}] {text}", flush=True)
            return time.perf_counter()

        t = stage(1, f"generating {cfg.data.eta.num} eta of {cfg.data.family}")
        data_path = folder / "data.npz"
        if previous.is_file() and not data_path.exists():
            os.link(previous, data_path)  # generate_into keeps it if from the same config
        generate_into(cfg.data, data_path)
        dataset = load_dataset(data_path)
        family = build_family(cfg.data.family)
        summary["generate"] = {"num_eta": len(dataset), "method": dataset.metadata["method"],
                               "seconds": time.perf_counter() - t}

        t = stage(2, f"training {cfg.train.architecture} (MAP, then VI)")
        run_dir = train_run(cfg.train, data=str(data_path), out=folder / "run", force=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        summary["train"] = {"architecture": metrics["architecture"],
                            "epochs": metrics["epochs"], "seconds": time.perf_counter() - t}
        for name in ("learning_curves.png", "calibration.png"):
            (folder / name).write_bytes((run_dir / name).read_bytes())

        t = stage(3, "calibration on held-out eta against quadrature (from the run)")
        coverage_90 = metrics["test"]["coverage"]["0.9"]
        summary["calibration"] = {
            "coverage_90": coverage_90, "mean_z2": metrics["test"]["mean_z2"],
            "ok": COVERAGE_TARGET[0] <= coverage_90 <= COVERAGE_TARGET[1],
            "seconds": time.perf_counter() - t}

        t = stage(4, "predicted versus exact moments along a line of eta")
        model = load_run(run_dir, family).model
        summary["slice"] = {**_slice_figure(model, family, cfg.slice, folder / "slice.png"),
                            "seconds": time.perf_counter() - t}

        t = stage(5, "CAVI with network providers and function draws")
        summary["cavi"] = _cavi(run_dir, cfg.cavi, family, folder / "cavi.png")
        summary["cavi"]["stage_seconds"] = time.perf_counter() - t
        summary["seconds_total"] = time.perf_counter() - began

        write_text(folder / "report.md", _report(summary, metrics, cfg, family))
        write_json(folder / "summary.json", summary)
    width = max(len(r[1]) for r in _summary_rows(summary))
    print(f"\n{'stage':<12} {'result':<{width}} {'seconds':>8}")
    for a, b, c in _summary_rows(summary):
        print(f"{a:<12} {b:<{width}} {c:>8}")
    print(f"\nreport: {out / 'report.md'} (total {summary['seconds_total']:.0f} s)")
    return 0
