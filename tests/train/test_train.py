import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset
from scipy import integrate, stats

from bayes_et import cli
from bayes_et.data import Dataset, design_eta, save_dataset, split_dataset
from bayes_et.et import build
from bayes_et.expfam import Gamma, Quartic
from bayes_et.params import flatten_means, flatten_stdvs
from bayes_et.train import (
    TrainedET,
    calibration_metrics,
    evaluate,
    function_draws,
    load_run,
    load_train_config,
    make_targets,
    predict,
    recalibrate,
    train,
    validation_nll,
)
from bayes_et.train._calibration import choose_squares
from bayes_et.train._metrics import gaussianised
from bayes_et.train._model import chi_mixing, squares_of
from bayes_et.train._predictive import field_draws, raw_predictive, tail_scores


def _setup(data, config=TINY):
    cfg = load_train_config(config)
    tr, va, _ = split_dataset(data, cfg.split, cfg.seed)
    net = build("mlp", 2, cfg.network, jax.random.key(0)).standardize(tr.eta, tr.mu_T)
    model = TrainedET.wrap(net)
    floor = cfg.likelihood.noise_floor
    return cfg, model, make_targets(tr, model, floor), make_targets(va, model, floor), va


def _one_stage(cfg, name, epochs):
    stages = tuple(replace(s, epochs=epochs) for s in cfg.stages if s.name == name)
    return replace(cfg, stages=stages)


def test_stages_improve_validation_nll_and_leave_frozen_leaves(noisy_gamma):
    cfg, model, tr, va, _ = _setup(noisy_gamma)
    fitted, history = train(model, tr, va, _one_stage(cfg, "map", 40), key=jax.random.key(1),
                            progress=False)
    assert min(row["val_nll"] for row in history) < history[0]["val_nll"] - 1.0
    assert all(np.isfinite(row[k]) for row in history for k in ("train_nll", "train_kl"))
    # MAP: widths and the scaler stay, means and the misfit move.
    assert np.array_equal(flatten_stdvs(fitted.net), flatten_stdvs(model.net))
    assert not np.allclose(flatten_means(fitted.net), flatten_means(model.net))
    assert not np.allclose(fitted.log_misfit, model.log_misfit)
    assert np.array_equal(fitted.net.scaler.mu_scale, model.net.scaler.mu_scale)
    vi, history = train(fitted, tr, va, _one_stage(cfg, "vi", 5), key=jax.random.key(2),
                        progress=False)
    # VI: means stay, widths move.
    assert np.array_equal(flatten_means(vi.net), flatten_means(fitted.net))
    assert not np.allclose(flatten_stdvs(vi.net), flatten_stdvs(fitted.net))
    assert {row["stage"] for row in history} == {"vi"}


def test_a_stage_keeps_the_model_it_was_given_unless_it_lowers_the_validation_nll(noisy_gamma):
    # What an active-learning round relies on: more training can only help. A stage at a
    # learning rate that throws the weights far makes every epoch worse; the stage then
    # returns its incumbent, bit for bit.
    cfg, model, tr, va, _ = _setup(noisy_gamma)
    fitted, _ = train(model, tr, va, _one_stage(cfg, "map", 30), key=jax.random.key(1),
                      progress=False)
    key = jax.random.key(5)
    before = float(validation_nll(fitted, va, key, 8))
    wild = replace(_one_stage(cfg, "map", 4), clip_norm=1e3)
    again, history = train(fitted, tr, va, wild, key=jax.random.key(2), progress=False,
                           lr_factor=500.0)
    assert min(row["val_nll"] for row in history) > before + 1.0  # every epoch was worse
    assert bool(eqx.tree_equal(again, fitted))
    assert float(validation_nll(again, va, key, 8)) == before
    # and a stage that improves is taken: a gentle continuation lowers it
    better, _ = train(fitted, tr, va, _one_stage(cfg, "map", 30), key=jax.random.key(3),
                      progress=False, lr_factor=0.5)
    assert float(validation_nll(better, va, key, 8)) < before


def test_squares_are_answered_by_the_slope_only_where_that_is_closer_to_the_targets():
    # Quartic: x2 = x^2 and x4 = x2^2, each answerable as mu_a^2 + d mu_a / d eta_a. Targets
    # planted from an untrained network's own outputs or from its slope's answers: the
    # choice follows them pair by pair, in order (x4's slope built on x2's answer).
    family = Quartic()
    eta = design_eta(family, 200, seed=0)
    net = build("mlp", 4, {"width": 16, "depth": 1}, jax.random.key(0))
    net = net.standardize(eta, np.random.default_rng(0).normal(size=(200, 4)))
    candidates = squares_of(family, net)
    assert candidates == ((1, 0), (3, 1))
    model = TrainedET.wrap(net, square_of=candidates)
    direct = np.asarray(jax.vmap(net)(eta))
    both = np.asarray(jax.vmap(lambda e: model.answer(net, e))(eta))
    x4_only = replace(model, square_of=((3, 1),))
    only_x4 = np.asarray(jax.vmap(lambda e: x4_only.answer(net, e))(eta))
    assert np.abs(both - direct)[:, [1, 3]].min() > 0  # the routes differ everywhere

    def planted(mu):
        n = len(eta)
        return Dataset(eta, mu, np.zeros((n, 4, 4)), np.full((n, 4), np.inf),
                       np.full((n, 4), np.nan), np.zeros(n, np.int32), {})

    for targets, kept in ((both, candidates), (direct, ()), (only_x4, ((3, 1),))):
        chosen = choose_squares(TrainedET.wrap(net), planted(targets), candidates)
        assert chosen.square_of == kept
        answers = np.asarray(jax.vmap(chosen.answer, (None, 0))(net, eta))
        np.testing.assert_allclose(answers, targets, rtol=1e-6, atol=1e-6)


def test_a_stage_with_average_validates_the_moving_average_of_its_weights(noisy_gamma):
    # The averaged weights (decay 0.9 per epoch) wander far less from one epoch to the
    # next than the steps' own: the noise the steps fit averages out.
    cfg, model, tr, va, _ = _setup(noisy_gamma)
    jitter = {}
    for average in (0.0, 0.9):
        stage = replace(_one_stage(cfg, "map", 60).stages[0], average=average, patience=1000)
        _, history = train(model, tr, va, replace(cfg, stages=(stage,)), key=jax.random.key(1),
                           progress=False)
        jitter[average] = np.std(np.diff([row["val_nll"] for row in history][-20:]))
    assert jitter[0.9] < 0.5 * jitter[0.0], jitter


def test_a_network_whose_answer_is_not_finite_is_refused_by_evaluate_naming_the_eta(
        noisy_gamma):
    _, model, *_ = _setup(noisy_gamma)
    broken = eqx.tree_at(lambda m: m.log_misfit, model, jnp.full_like(model.log_misfit, jnp.nan))
    with pytest.raises(ValueError, match=r"not finite at 400 of 400 held-out eta \(first: eta = "):
        evaluate(broken, noisy_gamma, Gamma(), jax.random.key(0), 4)
    assert evaluate(model, noisy_gamma, Gamma(), jax.random.key(0), 4)["coverage"]


def _coverage_90(model, data, key, num_samples=16):
    predictive = predict(model, data.eta, key, num_samples)
    return np.mean(np.abs(data.mu_T - np.asarray(predictive.mean)) <= predictive.half_width(0.9))


@pytest.mark.slow  # minutes: in the slow tier
def test_recalibration_is_robust_to_outliers_and_draws_match_it():
    data = synthetic_dataset(1000, seed=5, ess=None)  # exact Gamma moments
    cfg, model, tr, va, val_set = _setup(data)
    test_set = split_dataset(data, cfg.split, cfg.seed)[2]
    model, _ = train(model, tr, va, cfg, key=jax.random.key(1), progress=False)
    key = jax.random.key(3)
    # Two planted outliers in the validation split, far off in both statistics.
    mu = val_set.mu_T.copy()
    mu[:2] += 1000 * np.asarray(model.net.scaler.mu_scale)
    planted = replace(val_set, mu_T=mu)
    calibrated, _ = recalibrate(model, planted, key, num_samples=16)
    assert 0.85 <= _coverage_90(calibrated, test_set, key) <= 0.95
    # A single scale fitted on the mean z^2 (the rule this replaced) is ruined by them.
    mean, cov, _ = predict(model, planted.eta, key, 16, calibrated=False)
    z2 = (planted.mu_T - np.asarray(mean)) ** 2 / np.diagonal(np.asarray(cov), axis1=1,
                                                               axis2=2)
    single = model.spread_calibration._replace(
        log_scale=jnp.full(z2.shape[1], np.log(z2.mean()), jnp.float32))
    global_fit = eqx.tree_at(lambda m: m.calibration, model, jnp.stack(single))
    assert _coverage_90(global_fit, test_set, key) > 0.99
    # Calibrated function draws: the raw weight draws around the answer at the weight
    # means, plus one misfit offset per draw (constant over eta, N(0, misfit) across draws),
    # scaled by the whole calibration m(eta) (spread and local stages), plus a draw of the
    # residual field, the deviation from the corrected mean times the tail stage's scale
    # and one chi^2 mixing per draw (1 where the tail is Gaussian).
    num = 256
    eta = jnp.asarray(test_set.eta, jnp.float32)
    fields = field_draws(calibrated, key, num)
    f64 = lambda a: np.asarray(a, np.float64)
    field = f64(jax.vmap(lambda f: jax.vmap(lambda e: calibrated.correction(e, f))(eta))(fields))
    correction = f64(jax.vmap(calibrated.correction)(eta))
    draws = f64(function_draws(calibrated, test_set.eta, key, num))
    raw_mean, raw_cov, raw = (f64(a) for a in raw_predictive(calibrated, eta, key, num))
    m = f64(jax.vmap(calibrated.scale)(eta, jnp.diagonal(raw_cov, axis1=1, axis2=2)))
    variance = m**2 * np.diagonal(raw_cov, axis1=1, axis2=2) + np.diagonal(
        f64(jax.vmap(calibrated.field_covariance)(eta)), axis1=1, axis2=2)
    s, inv_nu = jax.vmap(calibrated.tail_at)(jnp.asarray(variance, jnp.float32))
    tail = f64(s) * f64(chi_mixing(inv_nu[None], tail_scores(calibrated, key, num)[:, None, :]))
    deviation = (draws - raw_mean - correction) / tail - (field - correction)
    offsets = deviation / m - (raw - raw_mean)
    # (float32 draws, divided by the tail factor: its rounding grows where the factor is small)
    np.testing.assert_allclose(offsets, np.broadcast_to(offsets[:, :1], offsets.shape),
                               atol=1e-4 / np.minimum(tail, 1.0).min())
    eps = offsets[:, 0, :] / np.sqrt(np.asarray(model.misfit_variance, np.float64))
    assert np.all(np.abs(eps.mean(0)) <= 4 / np.sqrt(num))  # N(0, 1): 4 standard errors
    assert np.all(np.abs(eps.var(0, ddof=1) - 1) <= 4 * np.sqrt(2 / (num - 1)))
    # Pointwise they follow the calibrated predictive: 90% of them inside its 90% interval
    # at each eta (binomial sd over the draws; 0.02 for the Wilson-Hilferty chi^2 quantile).
    predictive = predict(calibrated, test_set.eta, key, num)
    inside = np.abs(draws - f64(predictive.mean)) <= predictive.half_width(0.9)
    np.testing.assert_allclose(inside.mean(0), 0.9, atol=4 * np.sqrt(0.09 / num) + 0.02)


def test_the_residual_field_learns_a_smooth_error_and_the_band_stays_honest():
    """A smooth one-signed error that the weight draws do not show (here planted in the
    targets of the validation and test rows: the network cannot know it): the field
    learns it from the validation rows, so the held-out error falls, and the 90% band
    covers at its rate."""
    data = synthetic_dataset(1200, seed=6, ess=None)
    cfg, model, tr, va, val_set = _setup(data)
    test_set = split_dataset(data, cfg.split, cfg.seed)[2]
    model, _ = train(model, tr, va, cfg, key=jax.random.key(1), progress=False)
    scale = np.asarray(model.net.scaler.mu_scale, np.float64)

    def biased(d):  # 0.05 target sd, one sign per half of the box, smooth in eta
        z = (d.eta - data.eta.mean(0)) / data.eta.std(0)
        return replace(d, mu_T=d.mu_T + 0.05 * scale * np.tanh(2 * z[:, :1] + z[:, 1:]))

    key = jax.random.key(3)
    calibrated, held_out = recalibrate(model, biased(val_set), key, num_samples=16)
    assert calibrated.field is not None
    target = biased(test_set)
    error = lambda m: np.sqrt(np.mean((np.asarray(predict(m, target.eta, key, 16)[0])
                                       - target.mu_T) ** 2 / scale**2))
    raw = eqx.tree_at(lambda m: m.field, calibrated, None, is_leaf=lambda x: x is None)
    assert error(calibrated) < 0.5 * error(raw)  # the field learnt the planted error
    n = len(target.eta) * 2
    assert abs(_coverage_90(calibrated, target, key) - 0.9) <= 3 * np.sqrt(0.09 / n) + 0.03
    # the validation rows' z^2, held out from the field, say the same
    assert abs(np.mean(held_out <= 2.7055) - 0.9) <= 3 * np.sqrt(0.09 / held_out.size) + 0.03


def test_a_heavy_tailed_error_gets_a_student_t_predictive_whose_tails_hold():
    # The network's error planted as 2 x its raw spread x t_2.5 noise: a Gaussian band
    # calibrated at 90% is too wide at 50% and too narrow at 99%; the tail stage's t holds
    # at all three (binomial standard error of a coverage over 2 x 1800 z: <= 0.009).
    data = synthetic_dataset(3000, seed=3, ess=None)
    cfg = load_train_config(TINY)
    tr, va, te = split_dataset(data, (0.2, 0.2, 0.6), 0)
    net = build("mlp", 2, cfg.network, jax.random.key(0)).standardize(tr.eta, tr.mu_T)
    model, floor = TrainedET.wrap(net), cfg.likelihood.noise_floor
    model, _ = train(model, make_targets(tr, model, floor), make_targets(va, model, floor),
                     cfg, key=jax.random.key(1), progress=False)

    def planted(split, seed):
        mean, cov, _ = predict(model, split.eta, jax.random.key(9), 16, calibrated=False)
        sd = np.sqrt(np.diagonal(np.asarray(cov, np.float64), axis1=1, axis2=2))
        noise = np.random.default_rng(seed).standard_t(2.5, sd.shape)
        return replace(split, mu_T=np.asarray(mean, np.float64) + 2 * sd * noise)

    held_out = planted(te, 3)
    calibrated, _ = recalibrate(model, planted(va, 2), jax.random.key(2), 16)
    assert np.all(np.asarray(calibrated.tail.inv_nu) > 0)  # heavy tails seen in every bin
    coverage = {}
    for name, m in (("t", calibrated), ("gaussian", replace(calibrated, tail=None))):
        mean, cov, dof = predict(m, held_out.eta, jax.random.key(4), 16)
        var = np.diagonal(np.asarray(cov, np.float64), axis1=1, axis2=2)
        coverage[name] = calibration_metrics(np.asarray(mean), var, held_out.mu_T,
                                             dof=np.asarray(dof))["coverage"]
    t, gaussian = coverage["t"], coverage["gaussian"]
    assert 0.97 <= t["0.99"] and abs(t["0.5"] - 0.5) <= 0.04 and 0.86 <= t["0.9"] <= 0.94
    assert gaussian["0.99"] < 0.96 and gaussian["0.5"] > 0.56, coverage
    # a t-distributed z, Gaussianised by its own t, is standard normal
    z = gaussianised(stats.t.rvs(2.5, size=20000, random_state=0), 2.5)
    assert abs(np.mean(z**2) - 1) < 0.05 and abs(np.mean(np.abs(z) <= 1.6449) - 0.9) < 0.01


def test_metrics_equal_a_direct_computation():
    rng = np.random.default_rng(0)
    n, k = 500, 3
    truth = rng.normal(size=(n, k)) * [1.0, 5.0, 0.1]
    sd = rng.uniform(0.05, 0.5, size=(n, k))
    mean = truth + sd * rng.standard_t(5, size=(n, k))
    mcse = rng.uniform(0.1, 1.0, size=(n, k))
    m = calibration_metrics(mean, sd**2, truth, mcse, ["a", "b", "c"])
    z = (truth - mean) / sd
    for level in (0.5, 0.8, 0.9, 0.95):
        lo, hi = stats.norm.interval(level, loc=mean, scale=sd)
        assert m["coverage"][str(level)] == pytest.approx(np.mean((truth >= lo) & (truth <= hi)))
    assert m["mean_z2"] == pytest.approx(np.mean(z**2))
    assert m["nll"] == pytest.approx(-np.mean(stats.norm.logpdf(truth, mean, sd)))
    pit = np.histogram(stats.norm.cdf(truth, mean, sd), bins=10, range=(0, 1))[0] / truth.size
    np.testing.assert_allclose(m["pit_histogram"], pit)
    nrmse = np.sqrt(np.mean((mean - truth) ** 2, 0)) / truth.std(0)
    np.testing.assert_allclose(list(m["nrmse"].values()), nrmse)
    np.testing.assert_allclose(list(m["rms_error_over_mcse"].values()),
                               np.sqrt(np.mean(((mean - truth) / mcse) ** 2, 0)))
    # CRPS by numerical integration of (F(x) - 1[x >= y])^2 over a few points.
    crps = []
    for mu, s, y in zip(mean[:20, 0], sd[:20, 0], truth[:20, 0], strict=True):
        below = integrate.quad(lambda x, m=mu, s=s: stats.norm.cdf(x, m, s) ** 2, mu - 12 * s, y)
        above = integrate.quad(lambda x, m=mu, s=s: stats.norm.sf(x, m, s) ** 2, y, mu + 12 * s)
        crps.append(below[0] + above[0])
    direct = calibration_metrics(mean[:20, :1], sd[:20, :1] ** 2, truth[:20, :1])["crps"]
    assert direct == pytest.approx(np.mean(crps), rel=1e-6)


def test_train_and_evaluate_commands(tmp_path, capsys):
    data, exact = tmp_path / "noisy.npz", tmp_path / "exact.npz"
    save_dataset(data, synthetic_dataset(300, seed=1))
    save_dataset(exact, synthetic_dataset(100, seed=2, ess=None))
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))  # JSON is YAML
    run = tmp_path / "run"
    assert cli.main(["train", str(config), "--data", str(data), "--out", str(run)]) == 0
    assert "coverage" in capsys.readouterr().out
    for name in ("model.eqx", "metrics.json", "history.csv", "learning_curves.png",
                 "calibration.png"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_train"] == 240 and metrics["test"]["num_eta"] == 30
    assert 0.85 <= metrics["validation_coverage_90"] <= 0.97
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("round,stage,") and len(history) == metrics["epochs"] + 1
    model, family, region, header = load_run(run)
    assert header["architecture"] == "mlp" and isinstance(family, Gamma)
    np.testing.assert_allclose(region[0], header["training_region"]["eta_min"])
    np.testing.assert_allclose(model.spread_calibration.log_scale,
                               metrics["calibration"]["log_scale"], rtol=1e-6)
    assert cli.main(["evaluate", str(run), "--data", str(exact)]) == 0
    evaluation = json.loads((run / "evaluation-exact.json").read_text())
    assert evaluation["num_eta"] == 100 and "rms_error_over_mcse" not in evaluation
    assert (run / "calibration-exact.png").exists()
    # An existing run is not overwritten without --force.
    assert cli.main(["train", str(config), "--data", str(data), "--out", str(run)]) == 2
    assert "exists and is not empty; pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"architecture": "cnn"}, "config key 'architecture': got 'cnn'"),
    ({"stages": [{"name": "mcmc", "epochs": 3}]}, "config key 'stages[0].name'"),
    ({"stages": [{"name": "map", "epochs": 0}]}, "config key 'stages[0].epochs': got 0"),
    ({"stages": [{"name": "map", "epochs": 3, "average": 1.0}]},
     "config key 'stages[0].average': got 1.0"),
    ({"stages": [{"name": "map", "epochs": 3, "average": -0.1}]},
     "config key 'stages[0].average': got -0.1"),
    ({"split": [0.5, 0.5]}, "config key 'split'"),
    ({"likelihood": {"noise": 1}}, "config key 'likelihood.noise' is unknown"),
    ({"batchsize": 3}, "config key 'batchsize' is unknown"),
])
def test_bad_training_configs_name_the_key(change, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_train_config(TINY | change)


def test_predict_rejects_bad_shapes(noisy_gamma):
    _, model, *_ = _setup(noisy_gamma)
    with pytest.raises(ValueError, match=r"eta must have shape \(n, 2\)"):
        predict(model, jnp.zeros(2), jax.random.key(0))


_TWO_DEVICES = """
import json, sys, jax
sys.path.insert(0, {tests!r})
from conftest import TINY, synthetic_dataset
from test_train import _setup, _one_stage
cfg, model, tr, va, _ = _setup(synthetic_dataset(400, seed=0))
_, history = train(model, tr, va, _one_stage(cfg, "map", 3), key=jax.random.key(1),
                   progress=False)
print(json.dumps([len(jax.devices())] + [row["val_nll"] for row in history]))
""".replace("train(", "__import__('bayes_et.train').train.train(")


@pytest.mark.slow
def test_batches_shard_across_devices():
    """Two host devices (data parallel) follow the single-device training run."""
    code = _TWO_DEVICES.format(tests=str(Path(__file__).parent))
    runs = []
    for count in (1, 2):
        env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
                            "JAX_PLATFORMS": "cpu"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0][0] == 1 and runs[1][0] == 2
    np.testing.assert_allclose(runs[1][1:], runs[0][1:], rtol=1e-4)


CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml"))


def test_every_architecture_has_a_valid_config():
    from bayes_et.et import ARCHITECTURES

    assert {load_train_config(path).architecture for path in CONFIGS} == set(ARCHITECTURES)


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.slow) if p.stem in ("glow", "geometric_flow") else p
    for p in CONFIGS], ids=lambda p: p.stem)
def test_each_config_trains_its_architecture(path, noisy_gamma):
    """One MAP and one VI epoch of each config's network (narrowed) gives finite losses."""
    cfg = load_train_config(path)
    cfg = replace(cfg, network=cfg.network | {"width": 8},
                  stages=tuple(replace(s, epochs=1) for s in cfg.stages))
    tr, va, _ = split_dataset(noisy_gamma, (0.8, 0.1, 0.1), 0)
    net = build(cfg.architecture, 2, cfg.network, jax.random.key(0))
    model = TrainedET.wrap(net.standardize(tr.eta, tr.mu_T))
    floor = cfg.likelihood.noise_floor
    _, history = train(model, make_targets(tr, model, floor), make_targets(va, model, floor),
                       cfg, key=jax.random.key(1), progress=False)
    assert [row["stage"] for row in history] == ["map", "vi"]
    assert all(np.isfinite(row["val_nll"]) and np.isfinite(row["val_fisher"]) for row in history)


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_a_data_config_is_generated_once_into_the_run_folder(tmp_path):
    from bayes_et.train import train_run

    data_config = tmp_path / "gamma.yaml"
    data_config.write_text("family: Gamma\neta: {num: 200}\nmethod: closed_form\n")
    config = TINY | {"data": str(data_config), "network": {"width": 8, "depth": 1},
                     "stages": [{"name": "map", "epochs": 2}, {"name": "vi", "epochs": 1}]}
    run = train_run(config, out=tmp_path / "run", progress=False)
    stamp = (run / "data.npz").stat().st_mtime_ns
    train_run(config, out=run, force=True, progress=False)
    assert (run / "data.npz").stat().st_mtime_ns == stamp  # reused, not regenerated
    with pytest.raises(ValueError, match="exists and is not empty; pass --force"):
        train_run(config, out=run, progress=False)
    assert sorted(p.name for p in run.parent.iterdir()) == ["gamma.yaml", "run"]
