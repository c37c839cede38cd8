"""Plates and multilinear terms: closed forms, one trace for any N, fallback per member,
the real-data model against an independent computation, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from scipy import integrate

from bayes_et import cli
from bayes_et.cavi import (
    CAVIModel,
    ExactMoments,
    Factor,
    Model,
    MomentProvider,
    Moments,
    NetworkMoments,
    SamplingMoments,
    WithFallback,
    examples,
    load_cavi_config,
    run_cavi,
)
from bayes_et.expfam import (
    Gamma,
    Gaussian,
    PoissonLogNormal,
    Quartic,
    exact_moments,
    kl_divergence,
)
from bayes_et.train import load_run

PRIOR = {"mu0": 0.5, "lambda0": 2.0, "a0": 1.5, "b0": 1.0}


def test_bishop_normal_model_written_with_terms_reaches_the_textbook_fixed_point():
    x = examples.simulate(30, 1.0, 2.0, 7)
    n, mu0, lambda0, a0, b0 = x.size, *PRIOR.values()
    m = Model()
    mu = m.factor("mu", Gaussian(), [0.0, 0.0])
    tau = m.factor("tau", Gamma(), [a0 - 1 + (n + 1) / 2,
                                    -b0 - 0.5 * np.sum(x**2) - 0.5 * lambda0 * mu0**2])
    m.term(np.sum(x) + lambda0 * mu0, mu["x"], tau["x"])
    m.term(-(n + lambda0) / 2, mu["x2"], tau["x"])
    result = run_cavi(m, tol=1e-12)
    truth = examples.normal_gamma_fixed_point(x, **PRIOR)
    for name in ("mu", "tau"):
        np.testing.assert_allclose(result.eta[name], truth[name], rtol=1e-9)
    assert result.converged and np.all(np.diff(result.elbo) >= -1e-9)


def _unrolled_random_effects(y, s, lam, kappa0=1.0):
    """The Gaussian random-effects model with every z_i its own single factor."""
    factors = {"mu": Factor(Gaussian(), [0.0, -0.5 * (kappa0 + y.size * lam)])}
    couplings = {}
    for i, value in enumerate(y):
        factors[f"z{i}"] = Factor(Gaussian(), [value / s**2, -0.5 * (1 / s**2 + lam)])
        couplings[(f"z{i}", "mu")] = np.array([[lam, 0.0], [0.0, 0.0]])
    return CAVIModel(factors, couplings)


def test_gaussian_random_effects_plate_and_unrolled_equal_the_linear_solve():
    y = np.random.default_rng(0).normal(1.0, 2.0, 12)
    truth = examples.gaussian_random_effects_fixed_point(y, 0.5, 3.0)
    plate = run_cavi(examples.gaussian_random_effects(y, 0.5, 3.0), tol=1e-13, max_iter=500)
    unrolled = run_cavi(_unrolled_random_effects(y, 0.5, 3.0), tol=1e-13, max_iter=500)
    assert plate.converged and unrolled.converged
    assert plate.eta["z"].shape == (12, 2) and plate.mean_stats["z"].shape == (12, 2)
    np.testing.assert_allclose(plate.eta["z"], truth["z"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(plate.eta["mu"], truth["mu"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.stack([unrolled.eta[f"z{i}"] for i in range(12)]),
                               truth["z"], rtol=1e-9, atol=1e-9)
    # The plate's ELBO equals the unrolled model's (same closed-form terms).
    np.testing.assert_allclose(plate.elbo[-1], unrolled.elbo[-1], rtol=1e-9)


class CountingExact(ExactMoments):
    """Closed-form moments that count traces (calls at trace time) and evaluated rows."""

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        TRACES.append(eta.shape[0])
        return super().evaluate(eta, draw, key, full=full, active=active, force=force)


TRACES: list = []


def test_the_traced_program_does_not_grow_with_the_number_of_members():
    from bayes_et.cavi import _solver

    sizes = {}
    for n in (10, 1000):
        y = np.random.default_rng(n).normal(size=n)
        model = examples.gaussian_random_effects(y, 1.0, 2.0)
        providers = tuple(CountingExact(f) for f in model.families)
        with jax.enable_x64(True):
            start = _solver._start(model, providers, None,
                                   tuple(jnp.zeros(len(e), bool) for e in model.eta0))
            TRACES.clear()
            solve = lambda s, m=model, p=providers: _solver._solve(
                m, p, s, tuple(jnp.zeros(len(e)) for e in s),
                tuple(jnp.zeros(len(e), bool) for e in s), None, jax.random.key(0),
                _solver.LoopSettings(50, 1e-8, 0.0, True, True), False)
            jaxpr = jax.make_jaxpr(solve)(start)
        sizes[n] = (len(jaxpr.eqns), len(TRACES))
        assert max(TRACES[-2:]) == n  # the plate is evaluated as one (n, d) batch
    assert sizes[10] == sizes[1000], sizes  # same number of equations and provider calls
    # And one compilation per shape: a second model of the same shapes does not retrace.
    first = examples.gaussian_random_effects(np.arange(10.0), 1.0, 2.0)
    second = examples.gaussian_random_effects(np.arange(10.0) + 1, 1.0, 2.0)
    providers = {"z": CountingExact(Gaussian())}
    TRACES.clear()
    run_cavi(first, providers)
    assert TRACES  # the first model of these shapes was traced
    TRACES.clear()
    result = run_cavi(second, providers)
    assert TRACES == [] and result.converged


class RowCounter(MomentProvider):
    """A backup that counts the rows it was asked to answer (on the host)."""

    family: Gaussian
    exact = True

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        active = jnp.ones(eta.shape[0], bool) if active is None else active
        jax.debug.callback(lambda a: ROWS.append(int(np.sum(a))), active)
        mean = jax.vmap(self.family._mean_stats)(eta)
        return Moments(mean, None, jnp.zeros(eta.shape[0], jnp.int32))


ROWS: list = []


def test_fallback_on_a_plate_answers_only_the_flagged_members(trained_runs):
    network = NetworkMoments(trained_runs["gaussian"])  # trained on x in [5, 35]
    n = 2000
    eta = np.stack([np.full(n, 20.0), np.full(n, -13.0)], 1)
    outside = np.arange(0, n, 250)  # 8 members far outside the box
    eta[outside, 0] = 60.0
    ROWS.clear()
    provider = WithFallback(network, RowCounter(Gaussian()))
    mean, _ = provider(eta)
    assert sum(ROWS) == len(outside)  # the backup answered 8 rows, not 2000
    np.testing.assert_allclose(mean[outside], exact_moments(Gaussian(), eta[outside])[0],
                               rtol=1e-12)
    flags = provider.flags(eta)
    assert all("answered_by_fallback" in flags[i] for i in outside)
    assert sum("answered_by_fallback" in f for f in flags) == len(outside)


def test_network_answers_a_plate_with_per_member_bands(trained_runs):
    """Gaussian random effects whose members sit inside the Gaussian network's box (x in
    [5, 35], x2 in [-22, -4]), and one far outside: answered by the fallback."""
    y = np.linspace(0.3, 1.5, 40)
    y[5] = 4.0  # eta_x ~ 80: outside
    model = examples.gaussian_random_effects(y, 0.25, 10.0)
    providers = {"z": WithFallback(NetworkMoments(trained_runs["gaussian"]),
                                   ExactMoments(Gaussian()))}
    learned = run_cavi(model, providers, num_draws=8, tol=1e-10)
    exact = run_cavi(model, tol=1e-10)
    assert learned.converged
    assert learned.flag_counts["z"]["answered_by_fallback"] == 1
    assert learned.member_flags["z"][5] & 4
    kl = [kl_divergence(Gaussian(), learned.eta["z"][i], exact.eta["z"][i]) for i in range(40)]
    assert max(kl) <= 1e-3, max(kl)
    band = learned.band("eta")
    assert np.shape(band["z"]["lo"]) == (40, 2) and np.shape(band["mu"]["lo"]) == (2,)
    assert learned.draws["eta"]["z"].shape == (8, 40, 2)


def test_a_run_loads_and_answers_inside_enable_x64(trained_runs):
    with jax.enable_x64(True):
        model = load_run(trained_runs["gamma"]).model
        network = NetworkMoments(trained_runs["gamma"])
        mean, cov = network(np.array([[10.5, -12.0]]))
    assert model.net.scaler.eta_mean.dtype == jnp.float32
    assert np.all(np.isfinite(mean)) and cov.shape == (1, 2, 2)


def test_the_network_is_smooth_to_float64_inside_the_solver(trained_runs):
    """A step far below float32's resolution moves the answer by its slope: rounding eta or
    the weights to float32 would leave it unmoved (and the sweeps cycling near 1e-5)."""
    network = NetworkMoments(trained_runs["gamma"])
    with jax.enable_x64(True):
        eta = jnp.array([[10.5, -12.0]])
        step = jnp.array([[1e-9 * 10.5, 0.0]])
        (low, _), (high, _) = (network(e) for e in (eta - step, eta + step))
        slope = network.jacobian(eta, None)[0, :, 0]
    assert low.dtype == np.float64
    np.testing.assert_allclose((high - low)[0] / (2 * step[0, 0]), slope, rtol=1e-4)


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
@pytest.mark.parametrize("x64", [False, True])
def test_sampling_provider_runs_in_cavi_with_x64_on_and_off(x64):
    x = examples.simulate(20, 1.0, 1.0, 0)
    model = examples.normal_gamma(x, **PRIOR)
    sampler = SamplingMoments(Gamma(), num_warmup=200, num_samples=300)
    with jax.enable_x64(x64):
        result = run_cavi(model, {"tau": sampler}, max_iter=2, key=jax.random.key(1))
    exact = run_cavi(model)
    assert np.all(np.isfinite(result.eta["mu"]))
    np.testing.assert_allclose(result.eta["tau"][1], exact.eta["tau"][1], rtol=0.05)


def test_gauss_hermite_matches_the_robust_quadrature_and_falls_back_on_two_wells():
    family = PoissonLogNormal()
    eta = np.array([[0.0, -0.5, -1.0], [5.0, -0.5, -1.0], [300.0, -8.0, -1.0],
                    [1.0, -0.01, -1.0]])
    fast, _ = ExactMoments(family, "gauss_hermite")(eta)
    robust, _ = ExactMoments(family, "quadrature")(eta)
    np.testing.assert_allclose(fast, robust, rtol=1e-7, atol=1e-9)
    double_well = np.array([[0.0, 2.0, 0.0, -1.0], [0.3, 1.5, 0.1, -0.8]])
    fast, _ = ExactMoments(Quartic(), "gauss_hermite")(double_well)
    robust, _ = ExactMoments(Quartic())(double_well)
    np.testing.assert_allclose(fast, robust, rtol=1e-9, atol=1e-12)


def _independent_cavi(y, exposure, mu_sd=10.0, a0=1.0, b0=1.0, sweeps=500):
    """The Poisson log-normal mean field written out by hand, with SciPy quadrature for
    q(z_i) ~ exp(eta_1 z + eta_2 z^2 - e^z): returns E[mu], E[tau], E[z_i]."""
    o, n = np.log(exposure), y.size

    def z_moments(e_mu, e_tau):
        def one(eta1, eta2):
            log_q = lambda z: eta1 * z + eta2 * z * z - np.exp(z)
            grid = np.linspace(-40, 40, 8001)
            mode = grid[np.argmax(log_q(grid))]
            peak = log_q(mode)
            m = [integrate.quad(lambda z, k=k: z**k * np.exp(log_q(z) - peak), mode - 30,
                                mode + 30, points=[mode], limit=400, epsabs=0,
                                epsrel=1e-11)[0] for k in range(3)]
            return m[1] / m[0], m[2] / m[0]

        return np.array([one(y_i + e_tau * (e_mu + o_i), -e_tau / 2)
                         for y_i, o_i in zip(y, o, strict=True)]).T

    e_mu, e_tau = 0.0, (a0 + n / 2) / (b0 + 0.5 * np.sum(o**2))  # the priors' start
    z_mean, z_sq = z_moments(e_mu, e_tau)
    for _ in range(sweeps):
        prec = 1 / mu_sd**2 + n * e_tau
        e_mu = e_tau * np.sum(z_mean - o) / prec
        e_mu2 = e_mu**2 + 1 / prec
        rate = b0 + 0.5 * np.sum(z_sq - 2 * z_mean * (e_mu + o) + e_mu2 + 2 * e_mu * o + o**2)
        new_tau = (a0 + n / 2) / rate
        z_mean, z_sq = z_moments(e_mu, new_tau)
        if abs(new_tau - e_tau) < 1e-13 * new_tau:
            break
        e_tau = new_tau
    return e_mu, new_tau, z_mean


def test_real_data_config_at_reduced_settings_matches_an_independent_computation(tmp_path):
    config = yaml.safe_load(open("configs/cavi/poisson_lognormal_cancer.yaml"))
    config["data"]["rows"] = 6
    config["providers"] = {"z": "quadrature"}
    config["solver"].update(num_draws=0, tol=1e-12, max_iter=500)
    path = tmp_path / "cancer.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert cli.main(["cavi", str(path), "--out", str(out), "--region", "z"]) == 0
    import json

    record = json.loads((out / "result.json").read_text())
    assert record["converged"] and np.shape(record["eta"]["z"]) == (6, 3)
    data = examples.cancer_data()
    e_mu, e_tau, z_mean = _independent_cavi(data["counts"][:6], data["exposure"][:6])
    np.testing.assert_allclose(record["mean_stats"]["mu"][0], e_mu, rtol=1e-7)
    np.testing.assert_allclose(record["mean_stats"]["tau"][1], e_tau, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(record["mean_stats"]["z"])[:, 0], z_mean, rtol=1e-7)
    region = yaml.safe_load((out / "data-z.yaml").read_text())
    assert region["family"]["name"] == "PoissonLogNormal"
    assert region["eta"]["box"]["exp_x"] == [-1.0, -1.0]  # fixed by the offset form
    lo, hi = region["eta"]["box"]["x"]
    assert lo <= np.min(np.asarray(record["eta"]["z"])[:, 0]) <= hi


@pytest.mark.slow
def test_grouped_model_with_an_index_array_equals_its_unrolled_form():
    sim = examples.simulate_counts(9, -7.0, 9.0, seed=3, groups=3)
    model = examples.grouped_poisson_lognormal(sim["counts"], sim["exposure"], sim["group"])
    assert model.sizes == (None, None, 3, None, 9)
    fast = {"z": ExactMoments(PoissonLogNormal(), "gauss_hermite")}
    result = run_cavi(model, fast, tol=1e-12, max_iter=1000)
    assert result.converged
    # The same model with every member a single factor and one term per row.
    m, refs = Model(), {}
    for name, family, size, eta0 in zip(model.names, model.families, model.sizes, model.eta0,
                                        strict=True):
        rows = [None] if size is None else range(size)
        for r in rows:
            label = name if r is None else f"{name}{r}"
            refs[(name, r)] = m.factor(label, family, eta0[0] if r is None else eta0[r])
    for term in model.terms:
        for row in range(term.rows):
            stats = []
            for i, s, members in zip(term.factors, term.coordinates, term.members,
                                     strict=True):
                size = model.sizes[i]
                member = None if size is None else int(row if members is None
                                                       else members[row])
                ref = refs[(model.names[i], member)]
                stats.append(ref[ref.family.flat_names[s]])
            m.term(float(term.coef[row]), *stats)
    unrolled = run_cavi(m, {f"z{i}": ExactMoments(PoissonLogNormal(), "gauss_hermite")
                            for i in range(9)}, tol=1e-12, max_iter=1000)
    np.testing.assert_allclose(np.stack([unrolled.eta[f"u{j}"] for j in range(3)]),
                               result.eta["u"], rtol=1e-8)
    np.testing.assert_allclose(np.stack([unrolled.eta[f"z{i}"] for i in range(9)]),
                               result.eta["z"], rtol=1e-8)
    np.testing.assert_allclose(unrolled.eta["tau"], result.eta["tau"], rtol=1e-8)


def _plate_model():
    m = Model()
    mu = m.factor("mu", Gaussian(), [0.0, -0.5])
    z = m.factor("z", Gaussian(), np.tile([0.0, -0.5], (5, 1)))
    u = m.factor("u", Gaussian(), np.tile([0.0, -0.5], (3, 1)))
    return m, mu, z, u


@pytest.mark.parametrize(("build", "message"), [
    (lambda m, mu, z, u: m.term(1.0, z["x"], u["x"]),
     r"term 0 \(z\['x'\] \* u\['x'\]\): plate 'u' has 3 members but the term has 5 rows"),
    (lambda m, mu, z, u: m.term(1.0, z["x"], u["x"][np.array([0, 1, 3, 0, 1])]),
     r"term 0 .*index array of factor 'u'.*entries in \[0, 3\)"),
    (lambda m, mu, z, u: m.term(1.0, z["x"], u["x"][np.array([0, 1])]),
     r"term 0 .*plate 'z' has 5 members but the term has 2 rows"),
    (lambda m, mu, z, u: m.term(1.0, z["x"][np.arange(4)], u["x"][np.arange(3)]),
     r"term 0 .*index array of factor 'u' has shape \(3,\); allowed: \(4,\)"),
    (lambda m, mu, z, u: m.term(1.0, z["x"], z["x2"]),
     r"term 0 .*factor 'z' appears twice"),
    (lambda m, mu, z, u: m.term(np.ones(4), z["x"], mu["x"]),
     r"term 0 .*coef of shape \(4,\) does not broadcast to the term's 5 rows"),
    (lambda m, mu, z, u: m.term(1.0, z["log_x"], mu["x"]),
     r"factor 'z': unknown statistic 'log_x'; allowed: \['x', 'x2'\]"),
    (lambda m, mu, z, u: m.term(1.0, mu["x"]), r"term 0 .*two or more factors"),
    (lambda m, mu, z, u: m.term(1.0, z["x"], mu["x"][np.array([0])]),
     r"term 0 .*factor 'mu' is single"),
    (lambda m, mu, z, u: m.factor("w", Gaussian(), np.zeros((4, 3))),
     r"factor 'w': eta0 must be finite of shape \(2,\) or \(N, 2\)"),
])
def test_bad_terms_name_the_term_the_factor_and_what_is_allowed(build, message):
    with pytest.raises(ValueError, match=message):
        build(*_plate_model())


def test_bad_init_for_a_plate_names_the_factor():
    model = examples.gaussian_random_effects(np.arange(4.0), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"init\['z'\]: expected shape \(4, 2\)"):
        run_cavi(model, init={"z": [0.0, -1.0]})


def test_start_error_names_the_factor_that_needs_init():
    m = Model()
    a = m.factor("a", Gaussian(), [0.0, 0.0])  # improper alone
    b = m.factor("b", Gaussian(), np.tile([0.0, 0.0], (4, 1)))  # improper alone
    m.term(1.0, a["x2"], b["x2"])
    with pytest.raises(ValueError, match=r"factor 'a': .*\['b'\].*give init\['a'\]"):
        run_cavi(m)


def test_yaml_model_with_plates_terms_and_data_arrays_equals_the_python_builder():
    sim = examples.simulate_counts(7, -7.0, 9.0, seed=0)
    spec = {
        "data": {"arrays": {k: np.asarray(v).tolist() for k, v in sim.items()}},
        "model": {"factors": {
            "mu": {"family": "Gaussian", "eta0": [0.0, -0.005]},
            "tau": {"family": "Gamma", "eta0": [3.5, -1.0 - 0.5 * float(
                np.sum(np.log(sim["exposure"]) ** 2))]},
            "z": {"family": "PoissonLogNormal",
                  "eta0": np.stack([sim["counts"], np.zeros(7), -np.ones(7)], 1).tolist()}},
            "terms": [
                {"coef": 1.0, "stats": ["z.x", "mu.x", "tau.x"]},
                {"coef": np.log(sim["exposure"]).tolist(), "stats": ["z.x", "tau.x"]},
                {"coef": -0.5, "stats": ["z.x2", "tau.x"]},
                {"coef": -3.5, "stats": ["mu.x2", "tau.x"]},
                {"coef": -float(np.sum(np.log(sim["exposure"]))), "stats": ["mu.x", "tau.x"]}]},
        "providers": {"z": "gauss_hermite"}}
    model, providers, _, _ = load_cavi_config(spec)
    a = run_cavi(model, providers, tol=1e-10)
    b = run_cavi(examples.poisson_lognormal(sim["counts"], sim["exposure"]),
                 {"z": ExactMoments(PoissonLogNormal(), "gauss_hermite")}, tol=1e-10)
    np.testing.assert_allclose(a.eta["z"], b.eta["z"], rtol=1e-10)
    np.testing.assert_allclose(a.eta["tau"], b.eta["tau"], rtol=1e-10)
    bad = {**spec, "model": {**spec["model"], "terms": [{"coef": 1.0,
                                                         "stats": ["z.x", "nu.x"]}]}}
    with pytest.raises(ValueError, match=r"model.terms\[0\].stats.*'nu.x' names no factor"):
        load_cavi_config(bad)


SHARDED = """
import json, sys
import jax, numpy as np
from bayes_et.cavi import ExactMoments, examples, run_cavi
from bayes_et.expfam import PoissonLogNormal
sim = examples.simulate_counts(64, -6.0, 9.0, seed=5, groups=8)
model = examples.grouped_poisson_lognormal(sim["counts"], sim["exposure"], sim["group"])
result = run_cavi(model, {"z": ExactMoments(PoissonLogNormal(), "gauss_hermite")}, tol=1e-10,
                  max_iter=1000)
from bayes_et.cavi._solver import _lay_out
laid = _lay_out(model).eta0[4]  # the plate z, over the devices when there are several
spread = len(laid.sharding.device_set) if isinstance(laid, jax.Array) else 1
print(json.dumps({"devices": len(jax.devices()), "spread": spread,
                  "iterations": result.iterations,
                  **{k: np.asarray(v).tolist() for k, v in result.eta.items()}}))
"""


@pytest.mark.slow  # minutes: in the slow tier
def test_plates_over_two_devices_give_what_one_gives():
    import json
    import os
    import subprocess
    import sys

    out = {}
    for count in (1, 2):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
        done = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        out[count] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out[1]["devices"] == 1 and out[2]["devices"] == 2 and out[2]["spread"] == 2
    assert abs(out[1]["iterations"] - out[2]["iterations"]) <= 1
    for name in ("mu", "tau", "tau_u", "u", "z"):
        np.testing.assert_allclose(out[2][name], out[1][name], rtol=1e-9, atol=1e-12)


DISTRIBUTED = """
import json, sys
import jax
process, port, run = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if process >= 0:  # one of two processes on this machine, CPU collectives (gloo)
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)
import numpy as np
from bayes_et.cavi import Audit, ExactMoments, NetworkMoments, WithFallback, examples, run_cavi
from bayes_et.expfam import Gaussian
y = np.random.default_rng(3).uniform(0.2, 1.2, 16)
model = examples.gaussian_random_effects(y, 0.2, 1.0)
exact = ExactMoments(Gaussian())
network = WithFallback(NetworkMoments(run, num_samples=4), exact)
result = run_cavi(model, {"z": network}, tol=1e-10, num_draws=4,
                  linear_response=True, audit=Audit({"z": exact}, members=6, seed=1))
print(json.dumps({"devices": len(jax.devices()), "eta": result.eta["z"].tolist(),
                  "mu": result.eta["mu"].tolist(),
                  "draws": result.draws["eta"]["z"].tolist(),
                  "linear": result.draws["eta_linear_response"]["z"].tolist(),
                  "audit": result.audit.eta["mu"].tolist(),
                  "members": result.audit.members["z"].tolist()}))
"""


@pytest.mark.slow  # minutes: in the slow tier
def test_two_processes_with_jax_distributed_give_what_one_gives(trained_runs):
    """The plate laid out over two processes' devices (jax.distributed on localhost): the
    fixed point, its function draws, their linear response and the audit equal one
    process's, on both processes."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    run = str(trained_runs["gaussian"])
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, "-c", DISTRIBUTED, str(p), port, run], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in (0, 1, -1)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    one = outs[2]
    assert one["devices"] == 1 and outs[0]["devices"] == outs[1]["devices"] == 2
    for two in outs[:2]:
        assert two["members"] == one["members"]
        for name in ("eta", "mu", "draws", "linear", "audit"):
            np.testing.assert_allclose(two[name], one[name], rtol=1e-9, atol=1e-12)
