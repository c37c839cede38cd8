"""Scoring without exact moments, active learning, and runs extended by a fallback's answers."""

import json

import jax
import numpy as np
import pytest
import yaml
from conftest import TINY

from bayes_et import cli
from bayes_et.cavi import (
    ExactMoments,
    NetworkMoments,
    WithFallback,
    examples,
    fallback_answers,
    run_cavi,
)
from bayes_et.data import design_eta, load_dataset, save_dataset
from bayes_et.expfam import Quartic
from bayes_et.train import extend_run, load_run, predict, spread_score, train_run

pytestmark = pytest.mark.slow  # each trains networks for minutes: the slow tier

ARTEFACTS = ("model.eqx", "metrics.json", "history.csv", "learning_curves.png",
             "calibration.png")


def test_train_and_evaluate_a_two_dimensional_family_without_exact_moments(tmp_path, capsys):
    # a gate these short runs pass at once (R-hat <= 1.01 from 2 x 150 draws re-ran some
    # rows to 4x their draws, which blurred the 2x of the calibration rows below)
    data = {"family": "GinzburgLandau", "eta": {"num": 30}, "method": "mcmc", "seed": 1,
            "sampler": {"num_chains": 2, "num_warmup": 100, "num_samples": 150,
                        "ess_min": 50, "rhat_max": 1.1}}
    (tmp_path / "gl.yaml").write_text(yaml.safe_dump(data))
    # Recalibrated on 12 extra eta with twice the draws (precise targets: calibration.npz).
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({
        **TINY, "split": [0.6, 0.2, 0.2], "calibration": {"num_eta": 12, "draws_factor": 2}}))
    run = tmp_path / "run"
    assert cli.main(["train", str(tmp_path / "tiny.yaml"), "--data", str(tmp_path / "gl.yaml"),
                     "--out", str(run)]) == 0
    for name in (*ARTEFACTS, "data.npz", "calibration.npz"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["num_calibration"] <= 12
    precise, plain = load_dataset(run / "calibration.npz"), load_dataset(run / "data.npz")
    assert np.median(precise.ess) > 1.5 * np.median(plain.ess)
    test = metrics["test"]
    assert test["truth"].startswith("Monte-Carlo targets")
    assert set(test["rms_error_over_mcse"]) == set(test["nrmse_noise_corrected"]) == {
        "x1", "x2", "x1_sq", "x2_sq", "x1x2", "r4"}
    assert len(test["by_spread"]) == 4 and np.isfinite(test["mean_z2"])
    assert cli.main(["evaluate", str(run), "--data", str(run / "data.npz")]) == 0
    assert "Monte-Carlo targets" in capsys.readouterr().out
    evaluation = json.loads((run / "evaluation-data.json").read_text())
    assert evaluation["num_eta"] + evaluation["excluded_rows"]["total"] == 30
    assert (run / "calibration-data.png").stat().st_size > 0


def test_an_active_learning_round_puts_eta_where_the_spread_is_and_beats_uniform(tmp_path):
    data = tmp_path / "quartic.yaml"
    data.write_text(yaml.safe_dump({"family": "Quartic", "eta": {"num": 200},
                                    "method": "quadrature"}))
    base = {**TINY, "network": {"width": 32, "depth": 2}, "split": [0.6, 0.1, 0.3],
            "stages": [{"name": "map", "epochs": 60, "lr": 1e-2, "patience": 30},
                       {"name": "vi", "epochs": 10, "lr": 1e-2}]}
    first = train_run(base, data=str(data), out=tmp_path / "first", progress=False)
    curves, added = {}, {}
    for design in ("spread", "uniform"):  # one more round of 200 eta each, at equal budget
        config = {**base, "active": {"rounds": 1, "num_eta": 200, "design": design}}
        run = extend_run(first, config=config, out=tmp_path / design, progress=False)
        curves[design] = json.loads((run / "metrics.json").read_text())["active_learning"]
        added[design] = load_dataset(run / "added.npz").eta
    start, spread, uniform = curves["spread"][0], curves["spread"][1], curves["uniform"][1]
    assert start == curves["uniform"][0] and spread["num_eta"] == uniform["num_eta"] == 340
    assert spread["max_nrmse"] < uniform["max_nrmse"]
    # The new eta lie where the first network's spread was largest: its top quarter over a
    # uniform sample of the box holds most of them (and a quarter of the uniform ones).
    model = load_run(first).model
    key = jax.random.key(0)
    cut = np.quantile(spread_score(model, design_eta(Quartic(), 4000, seed=9), key, 16), 0.75)
    share = {d: np.mean(spread_score(model, eta, key, 16) > cut) for d, eta in added.items()}
    assert share["spread"] > 0.6 and share["uniform"] < 0.4, (share, curves)


def _pln_network(tmp_path):
    """A tiny network for PoissonLogNormal eta_x <= 150, the plate of 60 simulated counts
    (up to ~480: some members beyond the box) and a provider falling back to quadrature."""
    data = tmp_path / "pln.yaml"
    data.write_text(yaml.safe_dump({
        "family": "PoissonLogNormal", "method": "quadrature",
        "eta": {"num": 300, "box": {"x": [0.0, 150.0], "x2": [-3.0, -0.5],
                                    "exp_x": [-1.0, -1.0]}}}))
    run = train_run(TINY, data=str(data), out=tmp_path / "run", progress=False)
    sim = examples.simulate_counts(60, -6.0, 4.0, seed=0)
    model = examples.poisson_lognormal(sim["counts"], sim["exposure"])
    family = model.families[model.names.index("z")]
    return run, model, family, {"z": WithFallback(NetworkMoments(run), ExactMoments(family))}


def test_fallback_answers_extend_a_run_and_improve_it_there(tmp_path):
    run, model, family, providers = _pln_network(tmp_path)
    answers = fallback_answers(run_cavi(model, providers), providers)["z"]
    # the members outside the training box (eta_x > 150), and any whose calibrated spread
    # is too wide, went to the fallback
    assert np.sum(answers.eta[:, 0] > 140.0) >= 5
    save_dataset(tmp_path / "fallback-z.npz", answers)
    assert cli.main(["extend", str(run), "--data", str(tmp_path / "fallback-z.npz")]) == 0
    extended = tmp_path / "run-extended"
    for name in (*ARTEFACTS, "data.npz", "added.npz"):
        assert (extended / name).stat().st_size > 0, name
    assert json.loads((extended / "metrics.json").read_text())["added_rows"] == len(answers)
    key = jax.random.key(0)
    error = {}
    for name, folder in (("before", run), ("after", extended)):
        mean = predict(load_run(folder).model, answers.eta, key, 16).mean
        error[name] = np.sqrt(np.mean((np.asarray(mean) - answers.mu_T) ** 2, 0))
    assert np.all(error["after"] < 0.5 * error["before"]), error


def test_audit_answers_extend_a_run_and_improve_it_there(tmp_path):
    """The audit's oracle rows (audit-z.npz) are training rows: `bayes-et extend` learns
    from them and the network's error at the audited eta falls."""
    from bayes_et.cavi import Audit, audit_answers

    run, model, family, providers = _pln_network(tmp_path)
    audit = Audit({"z": ExactMoments(family)}, members=40, seed=0)
    answers = audit_answers(run_cavi(model, providers, audit=audit), audit)["z"]
    assert len(answers) == 40
    save_dataset(tmp_path / "audit-z.npz", answers)
    assert cli.main(["extend", str(run), "--data", str(tmp_path / "audit-z.npz")]) == 0
    extended = tmp_path / "run-extended"
    assert json.loads((extended / "metrics.json").read_text())["added_rows"] == 40
    key = jax.random.key(0)
    error = {}
    for name, folder in (("before", run), ("after", extended)):
        mean = predict(load_run(folder).model, answers.eta, key, 16).mean
        error[name] = np.sqrt(np.mean((np.asarray(mean) - answers.mu_T) ** 2, 0))
    assert np.mean(error["after"] / error["before"]) < 1.0, error
