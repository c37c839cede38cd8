import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_et import cli
from bayes_et.cavi import (
    Audit,
    CAVIModel,
    ExactMoments,
    Factor,
    MomentProvider,
    Moments,
    NetworkMoments,
    SamplingMoments,
    WithFallback,
    audit_result,
    band_limits,
    cavi_run,
    examples,
    load_cavi_config,
    run_cavi,
)
from bayes_et.et import build
from bayes_et.expfam import Gamma, Gaussian, kl_divergence
from bayes_et.train import TrainedET

PRIOR = {"mu0": 0.0, "lambda0": 1.0, "a0": 1.0, "b0": 1.0}
DATA = examples.simulate(20, 1.0, 1.0, 0)  # the data the Gaussian and Gamma networks cover
QUARTIC_PRIOR = ([0.0, 2.0, 0.0, -1.0], 2.0, 2.0)


@pytest.mark.parametrize(("n", "mean", "sd", "seed"), [(20, 1.0, 1.0, 0), (3, -2.0, 0.5, 1),
                                                       (200, 5.0, 3.0, 2)])
def test_normal_gamma_exact_equals_the_textbook_fixed_point(n, mean, sd, seed):
    x = examples.simulate(n, mean, sd, seed)
    result = run_cavi(examples.normal_gamma(x, **PRIOR))
    truth = examples.normal_gamma_fixed_point(x, **PRIOR)
    for name in ("mu", "tau"):
        np.testing.assert_allclose(result.eta[name], truth[name], rtol=1e-6, atol=1e-6)
    assert result.converged and result.iterations <= 50
    assert np.all(np.diff(result.elbo) >= -1e-6)
    assert result.flags == {"mu": [], "tau": []}


def test_path_integral_elbo_equals_the_closed_form_elbo():
    class NoLogPartition(ExactMoments):
        def log_partition(self, eta, draw):
            return None

    model = examples.normal_gamma(DATA, **PRIOR)
    closed = run_cavi(model)
    integrated = run_cavi(model, {"mu": NoLogPartition(Gaussian()),
                                  "tau": NoLogPartition(Gamma())})
    # Equal up to the constant A(start): compare the increments. Simpson's rule along each
    # update is exact to O(step^5): within 1% on the first, large sweeps, to 1e-9 after.
    a, b = np.diff(integrated.elbo), np.diff(closed.elbo)
    np.testing.assert_allclose(a[:2], b[:2], rtol=1e-2)
    np.testing.assert_allclose(a[2:], b[2:], rtol=1e-4, atol=1e-9)


def test_convex_network_log_partition_matches_its_own_path_integral():
    """An (untrained) convex-potential network: its log_partition and the path integral of
    its mu over the same sweeps give the same ELBO increments."""
    family = Gaussian()
    net = build("convex_potential", 2, {"width": 16, "depth": 2}, jax.random.key(0))
    eta = np.stack([np.linspace(5, 35, 50), np.linspace(-22, -4, 50)], 1)
    net = net.standardize(eta, np.asarray(family.mean_stats(jnp.asarray(eta, jnp.float32))))
    net = TrainedET.wrap(net, 1e-3)
    convex = NetworkMoments(net, family=family)

    class Integrated(NetworkMoments):
        def log_partition(self, eta, draw):
            return None

    integrated = Integrated(net, family=family)
    model = examples.normal_gamma(DATA, **PRIOR)
    a = run_cavi(model, {"mu": convex}, max_iter=5, tol=0.0)
    b = run_cavi(model, {"mu": integrated}, max_iter=5, tol=0.0)
    assert np.all(np.isfinite(a.elbo))
    np.testing.assert_allclose(np.diff(a.elbo), np.diff(b.elbo), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_normal_gamma_with_networks_is_within_kl_1e3_of_exact(trained_runs):
    model = examples.normal_gamma(DATA, **PRIOR)
    providers = {"mu": NetworkMoments(trained_runs["gaussian"]),
                 "tau": NetworkMoments(trained_runs["gamma"])}
    learned = run_cavi(model, providers, num_draws=16)
    exact = run_cavi(model)
    assert learned.converged and learned.flags == {"mu": [], "tau": []}
    for name, family in zip(model.names, model.families, strict=True):
        kl = kl_divergence(family, learned.eta[name], exact.eta[name])
        print(f"KL(q_net || q_exact) for {name}: {kl:.2e}")
        assert 0 <= kl <= 1e-3
    band = learned.band("eta")
    assert set(band) == {"mu", "tau"} and learned.draws["eta"]["mu"].shape == (16, 2)
    assert np.all(np.asarray(band["mu"]["hi"]) > np.asarray(band["mu"]["lo"]))


@pytest.mark.slow  # minutes: in the slow tier
def test_quartic_prior_with_a_network_is_within_kl_1e2_of_quadrature(trained_runs):
    model = examples.quartic_prior(examples.simulate(5, 0.8, 1.5, 0), *QUARTIC_PRIOR)
    learned = run_cavi(model, {"mu": NetworkMoments(trained_runs["quartic"])}, num_draws=16)
    exact = run_cavi(model)
    assert learned.converged and exact.converged and learned.flags["mu"] == []
    for name, family in zip(model.names, model.families, strict=True):
        kl = kl_divergence(family, learned.eta[name], exact.eta[name])
        print(f"KL(q_net || q_quadrature) for {name}: {kl:.2e}")
        assert 0 <= kl <= 1e-2
    assert np.all(np.diff(exact.elbo) >= -1e-6)  # quadrature ELBO by path integral


def test_eta_outside_the_training_region_is_flagged_and_answered_by_the_fallback(trained_runs):
    network = NetworkMoments(trained_runs["gaussian"])
    inside, outside = np.array([20.0, -13.0]), np.array([60.0, -13.0])
    assert network.flags(inside) == []
    assert "outside_training_region" in network.flags(outside)
    fallback = WithFallback(network, ExactMoments(Gaussian()))
    exact_mean = np.asarray(Gaussian().mean_stats(outside))
    mean, cov = fallback(np.stack([inside, outside]))
    np.testing.assert_allclose(mean[1], exact_mean, rtol=1e-6)
    np.testing.assert_allclose(mean[0], network(inside)[0], rtol=1e-6)  # float32 network
    assert fallback.flags(outside) == ["outside_training_region", "answered_by_fallback"]
    # In the solver: data far from the networks' box end on the exact fixed point, flagged.
    x = examples.simulate(20, 4.0, 1.0, 3)
    model = examples.normal_gamma(x, **PRIOR)
    result = run_cavi(model, {"mu": fallback})
    assert "answered_by_fallback" in result.flags["mu"]
    np.testing.assert_allclose(result.eta["mu"], examples.normal_gamma_fixed_point(
        x, **PRIOR)["mu"], rtol=1e-6)


class EdgeOfRegion(MomentProvider):
    """A test double of a network whose region ends at eta[1] = edge: inside, E[x^2] too
    large by `bias` (so the precision's update falls and eta[1] rises past the edge);
    beyond the edge, flagged outside its region."""

    family: Gaussian
    edge: float
    bias: float = 0.3

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        mean = jax.vmap(self.family._mean_stats)(eta).at[:, 1].add(self.bias)
        outside = jnp.where(eta[:, 1] > self.edge, 1, 0).astype(jnp.int32)  # OUTSIDE_...
        return Moments(mean, None, outside)


def test_a_member_at_its_region_edge_stays_with_the_fallback_and_converges():
    """The biased answers push eta past the region's edge and the exact answers pull it
    back: a solve that let a member flip between them would cycle to max_iter. A member
    whose answer switched twice keeps the backup, so the solve converges on the exact answer."""
    x = examples.simulate(20, 1.0, 1.0, 0)
    model = examples.normal_gamma(x, **PRIOR)
    exact = run_cavi(model, tol=1e-10)
    biased = run_cavi(model, {"mu": EdgeOfRegion(Gaussian(), np.inf)}, tol=1e-10)
    low, high = exact.eta["mu"][1], biased.eta["mu"][1]
    assert high > low  # the bias moves the fixed point past any edge between the two
    provider = WithFallback(EdgeOfRegion(Gaussian(), float(low + high) / 2),
                            ExactMoments(Gaussian()))
    result = run_cavi(model, {"mu": provider}, tol=1e-10, max_iter=200, num_draws=0)
    assert result.converged and result.iterations < 100, result.iterations
    assert "answered_by_fallback" in result.flags["mu"]
    np.testing.assert_allclose(result.eta["mu"], exact.eta["mu"], rtol=1e-8)


def test_invalid_updates_are_shortened_and_eta_stays_valid():
    """log p = -a^2 - b^2 + 3 a^2 b^2 has no proper mean-field optimum: the raw update
    eta_a[x2] = -1 + 3 <b^2> leaves the space; the solver halves it and stays valid."""
    coupling = np.zeros((2, 2))
    coupling[1, 1] = 3.0
    model = CAVIModel({"a": Factor(Gaussian(), [0.0, -1.0]), "b": Factor(Gaussian(), [0.0, -1.0])},
                      {("a", "b"): coupling})
    result = run_cavi(model, max_iter=20, tol=0.0)
    for name in ("a", "b"):
        assert bool(Gaussian().is_valid_eta(result.eta[name]))
        assert "update_shortened" in result.flags[name]
    assert not result.converged


def test_damping_reaches_the_same_fixed_point():
    model = examples.normal_gamma(DATA, **PRIOR)
    plain, damped = run_cavi(model), run_cavi(model, damping=0.5, tol=1e-9)
    assert damped.iterations > plain.iterations
    np.testing.assert_allclose(damped.eta["tau"], plain.eta["tau"], rtol=1e-5)
    assert np.all(np.diff(damped.elbo) >= -1e-6)


@pytest.mark.slow  # ~20 s: in the slow tier
def test_sampling_provider_agrees_with_exact_within_monte_carlo_error():
    sampler = SamplingMoments(Gamma(), num_warmup=300, num_samples=500)
    model = examples.normal_gamma(DATA, **PRIOR)
    result = run_cavi(model, {"tau": sampler}, max_iter=3, key=jax.random.key(4))
    exact = run_cavi(model)
    assert np.all(np.isnan(result.elbo))  # no log-partition from a sampler
    # eta_mu = <tau> x (coupling): its relative error is that of the sampled <tau>.
    mean, cov = sampler(result.eta["tau"], jax.random.key(5))
    rel_mcse = np.sqrt(cov[1, 1]) / mean[1]
    rel_err = np.abs(result.eta["mu"] / exact.eta["mu"] - 1)
    assert np.all(rel_err <= 5 * rel_mcse), (rel_err, rel_mcse)


def test_model_validation_names_the_factor():
    with pytest.raises(ValueError, match="coupling \\('mu', 'tau'\\).*2x2"):
        CAVIModel({"mu": Factor(Gaussian(), [0.0, -1.0]), "tau": Factor(Gamma(), [1.0, -1.0])},
                  {("mu", "tau"): np.zeros((2, 3))})
    with pytest.raises(ValueError, match="factor 'tau': eta0 must be finite of shape \\(2,\\)"):
        CAVIModel({"tau": Factor(Gamma(), [1.0])})
    with pytest.raises(ValueError, match="coupling \\('mu', 'sigma'\\)"):
        CAVIModel({"mu": Factor(Gaussian(), [0.0, -1.0])}, {("mu", "sigma"): np.zeros((2, 2))})
    with pytest.raises(ValueError, match="factor 'mu'.*eta\\['x4'\\] < 0"):
        examples.quartic_prior([1.0], [0.0, 1.0, 0.0, 1.0], 1.0, 1.0)
    lonely = CAVIModel({"mu": Factor(Gaussian(), [0.0, 1.0])})
    with pytest.raises(ValueError, match="factor 'mu'.*init\\['mu'\\]"):
        run_cavi(lonely)
    model = examples.normal_gamma(DATA, **PRIOR)
    with pytest.raises(ValueError, match="providers\\['tau'\\].*Gaussian"):
        run_cavi(model, {"tau": ExactMoments(Gaussian())})
    with pytest.raises(ValueError, match="num_draws > 0 needs"):
        run_cavi(model, num_draws=4)
    with pytest.raises(ValueError, match="solver.damping.: got 1.5"):
        run_cavi(model, damping=1.5)
    # flags are checked as given (not cast to bool first), and audit_result checks its own
    with pytest.raises(ValueError, match="solver.accelerate.: got 'no'; allowed: true or false"):
        run_cavi(model, accelerate="no")
    with pytest.raises(ValueError, match="solver.track_elbo.: got 0"):
        run_cavi(model, track_elbo=0)
    result = run_cavi(model)
    oracle = Audit({"mu": ExactMoments(Gaussian())})
    with pytest.raises(ValueError, match="solver.tol.: got -1.0"):
        audit_result(model, result, oracle, tol=-1.0)


def test_one_compiled_solver_serves_new_data(monkeypatch):
    """Model arrays are traced: new data reuse the compiled loop (no new trace)."""
    from bayes_et.cavi import _solver

    traces = []
    original = _solver._solve
    monkeypatch.setattr(_solver, "_solve", lambda *a: traces.append(1) or original(*a))
    jax.clear_caches()  # an earlier test may have compiled this solver: trace it here
    run_cavi(examples.quartic_prior(examples.simulate(5, 0.8, 1.5, 1), *QUARTIC_PRIOR))
    assert traces, "the probe never saw the solver traced"
    traces.clear()
    result = run_cavi(examples.quartic_prior(examples.simulate(5, 0.8, 1.5, 2), *QUARTIC_PRIOR))
    assert traces == [] and result.converged


@pytest.mark.parametrize("name", ["normal_gamma", "quartic_prior"])
def test_cli_writes_result_and_figure(name, tmp_path, capsys):
    out = tmp_path / name
    assert cli.main(["cavi", f"configs/cavi/{name}.yaml", "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    for key in ("eta", "mean_stats", "eta_band", "iterations", "converged", "elbo", "flags",
                "timings"):
        assert key in record
    assert record["converged"] and set(record["eta"]) == {"mu", "tau"}
    assert (out / "cavi.png").stat().st_size > 10_000
    assert "converged after" in capsys.readouterr().out


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_cli_with_network_providers_reports_bands(trained_runs, tmp_path):
    config = {"example": "normal_gamma", "arguments": PRIOR,
              "data": [float(v) for v in DATA],
              "providers": {"mu": {"network": str(trained_runs["gaussian"]), "fallback": "exact"},
                            "tau": {"network": str(trained_runs["gamma"])}},
              "solver": {"num_draws": 8}}
    model, providers, solver, _ = load_cavi_config(config)
    assert isinstance(providers["mu"], WithFallback) and solver.num_draws == 8
    result, out = cavi_run(config, tmp_path / "net")
    record = json.loads((out / "result.json").read_text())
    assert record["num_draws"] == 8 and len(record["eta_band"]["tau"]["lo"]) == 2


@pytest.mark.parametrize(("config", "message"), [
    ({"example": "normal_gamma", "data": [1.0], "arguments": {"mu0": 0.0}},
     "config key 'arguments'"),
    ({"example": "nope", "data": [1.0]}, "config key 'example'"),
    ({"example": "normal_gamma", "data": [1.0], "arguments": PRIOR,
      "providers": {"mu": "magic"}}, "config key 'providers.mu'"),
    ({"example": "normal_gamma", "data": [1.0], "arguments": PRIOR,
      "solver": {"damping": 2}}, "config key 'solver.damping'"),
    ({"example": "normal_gamma", "data": [1.0], "arguments": PRIOR,
      "solver": {"accelerate": "yes"}}, "config key 'solver.accelerate'"),
    ({"example": "normal_gamma", "data": [1.0], "arguments": PRIOR,
      "solver": {"num_draws": 1}}, "config key 'solver.num_draws': got 1; allowed: 0 .no band"),
    ({"example": "normal_gamma", "data": [1.0], "arguments": PRIOR,
      "providers": {"sigma": "exact"}}, "config key 'providers.sigma' is unknown"),
])
def test_bad_cavi_configs_name_the_key(config, message):
    with pytest.raises(ValueError, match=message):
        load_cavi_config(config)


@pytest.mark.parametrize("num", [2, 8, 32])
def test_the_band_of_s_draws_holds_one_more_draw_90_percent_of_the_time(num):
    """A prediction interval: over 20 000 seeded sets of S + 1 Gaussian values, the band of
    the first S holds the last at 90% (tolerance: 4 binomial standard errors); the draws'
    own 5% and 95% quantiles do not (below 0.87 at S = 32)."""
    trials = 20_000
    values = np.random.default_rng(num).standard_normal((num + 1, trials))
    lo, hi = band_limits(values[:num])
    held = np.mean((lo <= values[num]) & (values[num] <= hi))
    assert abs(held - 0.9) < 4 * np.sqrt(0.9 * 0.1 / trials)
    if num >= 8:
        q_lo, q_hi = np.quantile(values[:num], (0.05, 0.95), axis=0)
        assert np.mean((q_lo <= values[num]) & (values[num] <= q_hi)) < 0.87
    with pytest.raises(ValueError, match="got 1 function draw"):
        band_limits(values[:1])


def test_generic_model_from_yaml_equals_the_example():
    model = examples.normal_gamma(DATA, **PRIOR)
    coupling = np.zeros((2, 2))
    coupling[0, 1] = np.sum(DATA) + PRIOR["lambda0"] * PRIOR["mu0"]
    coupling[1, 1] = -(DATA.size + PRIOR["lambda0"]) / 2
    spec = {"model": {
        "factors": {"mu": {"family": "Gaussian", "eta0": [0.0, 0.0]},
                    "tau": {"family": "Gamma", "eta0": np.asarray(model.eta0[1][0]).tolist()}},
        "couplings": [{"factors": ["mu", "tau"], "A": coupling.tolist()}]}}
    generic, providers, _, _ = load_cavi_config(spec)
    a, b = run_cavi(generic, providers), run_cavi(model)
    np.testing.assert_allclose(a.eta["tau"], b.eta["tau"], rtol=1e-12)
