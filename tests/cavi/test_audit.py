"""The audit (DESIGN.md §8b): oracles answer random members at the network's fixed point; the
rectified fixed point's 90% interval covers the exact one whatever the network's error."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from bayes_et import cli
from bayes_et.cavi import (
    Audit,
    ExactMoments,
    MomentFlag,
    MomentProvider,
    Moments,
    NetworkMoments,
    SamplingMoments,
    WithFallback,
    audit_result,
    examples,
    load_cavi_config,
    run_cavi,
)
from bayes_et.cavi._audit import _draw_members, _half_widths
from bayes_et.expfam import Gamma, Gaussian, PoissonLogNormal, Quartic, exact_moments
from bayes_et.train import load_run
from bayes_et.train._model import squares_of

GH = ExactMoments(PoissonLogNormal(), "gauss_hermite")
SOLVER = {"tol": 1e-9, "max_iter": 500, "track_elbo": False}


class Biased(MomentProvider):
    """A test double of a poor network: E[z^2] (so the variance) too large by a smooth,
    one-signed b(eta) = size (1 + 0.2 sin E[z]) (shared by all members: it adds up in a
    global update instead of averaging away); the other moments exact."""

    inner: ExactMoments
    size: float = eqx.field(static=True)

    @property
    def family(self):
        return self.inner.family

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        m = self.inner.evaluate(eta, draw, key, active=active).mean
        b = self.size * (1.0 + 0.2 * jnp.sin(m[:, 0]))
        return Moments(m.at[:, 1].add(b), None, jnp.zeros(len(eta), jnp.int32))


@pytest.fixture(scope="module")
def plate():
    data = examples.simulate_counts(300, -5.66, 15.9, seed=3)
    model = examples.poisson_lognormal(data["counts"], data["exposure"])
    return model, run_cavi(model, {"z": GH}, **SOLVER)


@pytest.mark.slow  # minutes: in the slow tier
def test_audit_interval_covers_the_exact_fixed_point_at_the_nominal_rate(plate):
    """40 audits (random members, n = 30 of N = 300) of a biased provider: the interval
    covers the exact fixed point at 90% within 3 binomial standard errors, while the same
    interval moved to the unaudited (biased) fixed point almost never does."""
    model, exact = plate
    provider = {"z": Biased(GH, 0.01)}
    learned = run_cavi(model, provider, audit=Audit({"z": GH}, members=30, seed=0), **SOLVER)
    seeds = range(40)
    hits, misses_unaudited = [], []
    for seed in seeds:
        audit = learned.audit if seed == 0 else audit_result(
            model, learned, Audit({"z": GH}, members=30, seed=seed), provider,
            tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
        assert audit.method == "rectified sweeps" and len(audit.members["z"]) == 30
        assert len(set(audit.members["z"].tolist())) == 30  # without replacement
        inside = audit.contains(exact.eta)
        hits.append(all(np.all(inside[n]) for n in ("mu", "tau")))
        half = {n: (audit.hi[n] - audit.lo[n]) / 2 for n in ("mu", "tau")}
        misses_unaudited.append(not all(np.all(np.abs(learned.eta[n] - exact.eta[n])
                                               <= half[n]) for n in ("mu", "tau")))
    rate, se = np.mean(hits), np.sqrt(0.9 * 0.1 / len(seeds))
    # both coordinates of both factors jointly: at least the marginal rate's lower bound
    assert rate >= 0.9 - 3 * se, rate
    assert np.mean(misses_unaudited) >= 0.9, np.mean(misses_unaudited)


def test_stratified_members_are_two_per_stratum_along_the_members_eta():
    """Members sorted along eta's leading direction (a coordinate that is constant to
    rounding left out), cut into n // 2 strata of consecutive members, two drawn from each
    (the remainder to the first); the weights N_h / n_h sum to N; distinct members."""
    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, 1001)
    eta = np.stack([2 * t, -t + 1e-15 * rng.normal(size=1001), np.full(1001, -0.5)], 1)
    for members in (4, 31, 100):
        sample = _draw_members(Audit({}, members, seed=members), eta, 0)
        assert len(set(sample.rows.tolist())) == members and not sample.census
        assert len(sample.sizes) == members // 2 and sample.sizes.sum() == 1001
        assert np.bincount(sample.stratum).tolist() == [3] * (members % 2) + [2] * (
            members // 2 - members % 2)
        np.testing.assert_allclose(sample.weight.sum(), 1001)
        # strata are consecutive along t (in one direction or the other)
        ranks = np.argsort(np.argsort(t))
        first = ranks[sample.rows[sample.stratum == 0]]
        ranks = ranks if first.max() < sample.sizes[0] else 1000 - ranks
        for h in range(len(sample.sizes)):
            drawn = ranks[sample.rows[sample.stratum == h]]
            start = sample.sizes[:h].sum()
            assert np.all((drawn >= start) & (drawn < start + sample.sizes[h]))
    simple = _draw_members(Audit({}, 31, 0, "simple"), eta, 0)
    assert len(simple.sizes) == 1 and np.allclose(simple.weight, 1001 / 31)
    census = _draw_members(Audit({}, 5000, 0), eta, 0)
    assert census.census and np.array_equal(census.rows, np.arange(1001))


def test_interval_quantile_is_students_t_at_the_welch_satterthwaite_degrees_of_freedom():
    """One residual coordinate, a response of 2: with H equal strata (one degree of freedom
    each) the variance has H degrees of freedom, with one stratum holding nearly all of it
    about one, and a known (Monte-Carlo) part adds variance but no estimation error."""
    from scipy import stats

    response = np.full((1, 1, 1), 2.0)  # (K, n, d)
    equal = np.full((40, 1, 1), 0.25)
    half = _half_widths(response, equal, np.ones(40), np.zeros((1, 1)))
    np.testing.assert_allclose(half, stats.t.ppf(0.95, 40) * np.sqrt(40.0), rtol=1e-12)
    lopsided = np.concatenate([np.full((1, 1, 1), 100.0), np.full((39, 1, 1), 1e-6)])
    half = _half_widths(response, lopsided, np.ones(40), np.zeros((1, 1)))
    var = 4 * lopsided.sum()
    df = var**2 / np.sum((4 * lopsided[:, 0, 0]) ** 2)
    assert 1.0 <= df < 1.001
    np.testing.assert_allclose(half, stats.t.ppf(0.95, df) * np.sqrt(var), rtol=1e-9)
    known = _half_widths(response, equal, np.ones(40), np.full((1, 1), 10.0))
    df = (40.0 + 40.0) ** 2 / 40.0  # var 4 (10 + 40 x 0.25), sampling part 40 over 40 strata
    np.testing.assert_allclose(known, stats.t.ppf(0.95, df) * np.sqrt(80.0), rtol=1e-12)


@pytest.mark.slow  # minutes: in the slow tier
def test_stratified_audit_is_narrower_than_simple_random_sampling_and_covers(plate):
    """The biased provider's misfit varies smoothly with eta: at the same n the stratified
    interval is narrower than simple random sampling's (median over 40 seeds), and both
    cover the exact fixed point at 90% within 3 binomial standard errors."""
    model, exact = plate
    provider = {"z": Biased(GH, 0.01)}
    learned = run_cavi(model, provider, **SOLVER)
    width, rate = {}, {}
    for design in ("stratified", "simple"):
        audits = [audit_result(model, learned, Audit({"z": GH}, 30, seed, design), provider,
                               tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
                  for seed in range(40)]
        width[design] = np.median([a.hi["tau"][1] - a.lo["tau"][1] for a in audits])
        rate[design] = np.mean([all(np.all(a.contains(exact.eta)[n]) for n in ("mu", "tau"))
                                for a in audits])
    se = np.sqrt(0.9 * 0.1 / 40)
    assert min(rate.values()) >= 0.9 - 3 * se, rate
    assert width["stratified"] < 0.5 * width["simple"], width


class WideAndBiased(MomentProvider):
    """A test double of a network with a fallback's job to do: E[z^2] too large by an
    amount that varies from member to member and, asked for its spread (full=True), every
    member flagged too uncertain, so the solve hands them all to the fallback."""

    inner: ExactMoments

    @property
    def family(self):
        return self.inner.family

    @property
    def num_draws(self) -> int:
        return 64  # it has a spread to check (no function draws are asked of it)

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        m = self.inner.evaluate(eta, draw, key, active=active).mean
        flags = jnp.full(len(eta), int(MomentFlag.WIDE_PREDICTIVE_SPREAD) if full else 0)
        bias = 0.5 * (1.0 + jnp.sin(37.0 * eta[:, 0]))
        return Moments(m.at[:, 1].add(bias), None, flags.astype(jnp.int32))


@pytest.mark.slow  # ~45 s: in the slow tier
def test_the_rectified_solve_keeps_the_members_the_solve_handed_to_the_fallback(plate):
    """The members flagged for their spread are answered by the fallback at the fixed point
    (exact here); the rectified solve (and a later `audit_result`) keeps them there, so it
    stays at the exact fixed point. (The same holds for members kept with the fallback after
    switching twice: the bench's poor mlp had all 10^4 there, and its audit was 1.9 sd off
    before.) Consuming the double's answers instead, it corrected
    them by the audited members' sample of the bias and moved off by that sample's error
    (checked: the test then fails)."""
    model, exact = plate
    provider = {"z": WithFallback(WideAndBiased(GH), GH)}
    result = run_cavi(model, provider, num_draws=0,
                      audit=Audit({"z": GH}, members=30, seed=0), **SOLVER)
    assert np.all(result.member_flags["z"] & MomentFlag.ANSWERED_BY_FALLBACK)
    again = audit_result(model, result, Audit({"z": GH}, members=30, seed=1), provider,
                         tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
    for name in ("mu", "tau"):
        np.testing.assert_allclose(result.eta[name], exact.eta[name], rtol=1e-6)
        for audit in (result.audit, again):
            np.testing.assert_allclose(audit.eta[name], exact.eta[name], rtol=1e-6)
            assert np.all(audit.contains(exact.eta)[name])


class FlickeringAndBiased(WideAndBiased):
    """A test double of a network at its region's edge: each call (each sweep's key) flags
    a random half of the members outside the region, so every member's answer switches
    between it and the fallback, and after MAX_SWITCHES keeps the fallback; its own
    answers (E[z^2] too large) are never checked for spread."""

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        m = WideAndBiased.evaluate(self, eta, draw, key, active=active).mean
        if key is None:
            return Moments(m, None, jnp.zeros(len(eta), jnp.int32))
        out = jax.random.bernoulli(key, 0.5, (len(eta),))
        flags = jnp.where(out, int(MomentFlag.OUTSIDE_TRAINING_REGION), 0)
        return Moments(m, None, flags.astype(jnp.int32))


@pytest.mark.slow  # ~45 s: in the slow tier
def test_the_rectified_solve_keeps_the_members_kept_with_the_fallback_after_switching(plate):
    """The other way a member's answer at the fixed point is the fallback's: it switched
    network <-> fallback twice. The solve then sits at the exact fixed point, and the
    audit's rectified sweeps, answered by the same flickering double, stay there."""
    model, exact = plate
    provider = {"z": WithFallback(FlickeringAndBiased(GH), GH)}
    result = run_cavi(model, provider, num_draws=0, **SOLVER)
    assert np.all(result.member_flags["z"] & MomentFlag.ANSWERED_BY_FALLBACK)
    audit = audit_result(model, result, Audit({"z": GH}, members=30, seed=1), provider,
                         tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
    for name in ("mu", "tau"):
        np.testing.assert_allclose(result.eta[name], exact.eta[name], rtol=1e-6)
        np.testing.assert_allclose(audit.eta[name], exact.eta[name], rtol=1e-6)
        assert np.all(audit.contains(exact.eta)[name])


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_a_census_with_an_exact_oracle_iterates_to_the_exact_fixed_point():
    """A single factor is its own member: the audit answers it, and the exact sweeps from
    the network's fixed point reach the quadrature fixed point (no sampling, no
    linearisation error); the audit's rows are the oracle's answers there."""
    x = examples.simulate(5, 0.8, 1.5, 0)
    model = examples.quartic_prior(x, [0.0, 2.0, 0.0, -1.0], 2.0, 2.0)
    exact = run_cavi(model, tol=1e-10)

    class BiasedQuartic(MomentProvider):
        inner: ExactMoments

        @property
        def family(self):
            return self.inner.family

        def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
            mean = self.inner.evaluate(eta, draw, key).mean
            return Moments(mean * 1.01 + 0.01, None, jnp.zeros(len(eta), jnp.int32))

    quadrature = ExactMoments(Quartic())
    result = run_cavi(model, {"mu": BiasedQuartic(quadrature)}, tol=1e-10,
                      audit=Audit({"mu": quadrature}, members=30))
    audit = result.audit
    assert audit.method == "census" and audit.members["mu"].tolist() == [0]
    assert not np.allclose(result.eta["mu"], exact.eta["mu"], rtol=1e-4)
    for name in ("mu", "tau"):
        np.testing.assert_allclose(audit.eta[name], exact.eta[name], rtol=1e-8)
        assert np.all(audit.contains(exact.eta)[name])
    np.testing.assert_allclose(audit.oracle_mean["mu"][0],
                               quadrature(result.eta["mu"])[0], rtol=1e-9)


@pytest.mark.slow  # minutes: in the slow tier
def test_linear_response_band_agrees_with_the_function_draw_band(trained_runs):
    """A Gaussian plate answered by a network: each draw's fixed point by one linear solve
    matches the draw's whole solve to first order (within 5% of the band's width)."""
    x = examples.simulate(20, 1.0, 1.0, 0)
    model = examples.normal_gamma(x, 0.0, 1.0, 1.0, 1.0)
    network = NetworkMoments(trained_runs["gaussian"], num_samples=16)
    result = run_cavi(model, {"mu": network}, num_draws=16, linear_response=True, tol=1e-9)
    moving = 0
    for name in ("mu", "tau"):
        whole = result.draws["eta"][name]
        linear = result.draws["eta_linear_response"][name]
        width = np.ptp(whole, axis=0)  # zero for a coordinate no term moves (tau's shape)
        moving += int(np.sum(width > 0))
        assert np.all(np.abs(linear - whole) <= 0.05 * width + 1e-9), (name, linear, whole)
    assert moving == 3


def test_network_jacobian_is_the_derivative_of_its_answer_and_a_fallback_row_the_backups(
        trained_runs):
    """The forward-mode Jacobian (squares route and residual field included) matches central
    differences of the network's own answer; behind a fallback, a row outside the training
    region takes the backup's exact Jacobian, the others the network's."""
    # the squares route on, whichever answer training chose for this run
    model, family, region, _ = load_run(trained_runs["gaussian"])
    model = dataclasses.replace(model, square_of=squares_of(family, model.net))
    assert model.field is not None and model.square_of
    network = NetworkMoments(model, num_samples=4, family=family, training_region=region)
    eta = jnp.array([[10.0, -8.0], [20.0, -12.0], [30.0, -20.0], [80.0, -2.0]])
    key = jax.random.key(0)
    forward = np.asarray(network.jacobian(eta[:3], key), np.float64)
    step = 1e-2
    central = np.stack([(np.asarray(network.evaluate(eta[:3] + step * e, None, key).mean)
                         - np.asarray(network.evaluate(eta[:3] - step * e, None, key).mean))
                        / (2 * step) for e in np.eye(2)], -1)
    np.testing.assert_allclose(forward, central, rtol=2e-2, atol=2e-3 * np.abs(forward).max())
    exact = ExactMoments(Gaussian())
    both = np.asarray(WithFallback(network, exact).jacobian(eta, key), np.float64)
    np.testing.assert_allclose(both[:3], forward, rtol=1e-6)
    np.testing.assert_allclose(both[3], np.asarray(exact.jacobian(eta[3:], key))[0], rtol=1e-6)


@pytest.mark.parametrize(("solver", "providers", "fragment"), [
    ({"audit": {"members": 0}}, {"z": {"network": "RUN", "audit": "gauss_hermite"}},
     "solver.audit.members"),
    ({"audit": {"members": 2.5}}, {"z": {"network": "RUN", "audit": "exact"}},
     "solver.audit.members"),
    ({"audit": {"seed": -1}}, {"z": {"network": "RUN", "audit": "exact"}}, "solver.audit.seed"),
    ({"audit": {"member": 3}}, {"z": {"network": "RUN", "audit": "exact"}},
     "solver.audit.member"),
    ({}, {"z": {"network": "RUN", "audit": "network"}}, "providers.z.audit"),
    ({"audit": {"members": 5}}, {"z": {"network": "RUN"}}, "solver.audit"),
])
def test_bad_audit_settings_exit_2_with_one_line(tmp_path, capsys, trained_runs, solver,
                                                 providers, fragment):
    providers = {k: {**v, "network": str(trained_runs["gaussian"])} for k, v in
                 providers.items()}
    config = {"example": "gaussian_random_effects", "data": [0.5, 1.0, 1.5],
              "arguments": {"noise_sd": 1.0, "prior_precision": 1.0},
              "providers": providers, "solver": solver}
    path = tmp_path / "cavi.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["cavi", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_audit_in_python_refuses_networks_other_families_and_unknown_factors(plate):
    model, _ = plate
    with pytest.raises(ValueError, match=r"audit.oracles\['z'\]: got Biased; allowed: an exact"):
        run_cavi(model, {"z": GH}, audit=Audit({"z": Biased(GH, 0.0)}))
    with pytest.raises(ValueError, match=r"answers Gamma\(\); factor 'z' is PoissonLogNormal"):
        run_cavi(model, {"z": GH}, audit=Audit({"z": ExactMoments(Gamma())}))
    with pytest.raises(ValueError, match=r"unknown factor 'w'"):
        run_cavi(model, {"z": GH}, audit=Audit({"w": GH}))
    with pytest.raises(ValueError, match=r"solver.audit.members"):
        run_cavi(model, {"z": GH}, audit=Audit({"z": GH}, members=0))
    with pytest.raises(ValueError, match=r"solver.audit.design': got 'random'; allowed: "
                                         r"stratified, simple"):
        run_cavi(model, {"z": GH}, audit=Audit({"z": GH}, design="random"))


def test_cli_writes_the_audit_and_its_rows(tmp_path, trained_runs):
    """`bayes-et cavi` with an audit: result.json's `audit` (eta, lo, hi, z2, members by
    factor) and audit-FACTOR.npz, rows in the dataset format at the audited members."""
    from bayes_et.data import load_dataset

    config = {"example": "normal_gamma", "data": examples.simulate(20, 1.0, 1.0, 0).tolist(),
              "arguments": {"mu0": 0.0, "lambda0": 1.0, "a0": 1.0, "b0": 1.0},
              "providers": {"mu": {"network": str(trained_runs["gaussian"]),
                                   "audit": "exact"}},
              "solver": {"audit": {"members": 4, "seed": 1}, "tol": 1e-9}}
    path = tmp_path / "cavi.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["cavi", str(path), "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())["audit"]
    assert set(record) >= {"eta", "lo", "hi", "z2", "members"}
    assert record["members"] == {"mu": [0]} and record["method"] == "census"
    assert set(record["eta"]) == {"mu", "tau"} and record["z2"]["mu"] > 0
    exact = run_cavi(load_cavi_config(path).model, tol=1e-9)
    for name in ("mu", "tau"):
        np.testing.assert_allclose(record["eta"][name], exact.eta[name], rtol=1e-7)
    rows = load_dataset(tmp_path / "out" / "audit-mu.npz")
    assert len(rows) == 1 and rows.metadata["method"] == "closed_form"
    np.testing.assert_allclose(rows.mu_T, exact_moments(Gaussian(), rows.eta)[0], rtol=1e-12)
    np.testing.assert_allclose(rows.eta[0], json.loads((tmp_path / "out" / "result.json")
                                                       .read_text())["eta"]["mu"], rtol=1e-12)


@pytest.mark.slow  # minutes: in the slow tier
def test_a_sampling_oracle_takes_one_newton_step_with_its_monte_carlo_error(plate):
    """NUTS as the oracle: one Newton step (no NUTS inside the sweeps), towards the exact
    fixed point, and an interval wider than the exact oracle's at the same members (its
    Monte-Carlo variance added)."""
    model, exact = plate
    provider = {"z": Biased(GH, 0.01)}
    learned = run_cavi(model, provider, **SOLVER)
    nuts = SamplingMoments(PoissonLogNormal(), num_chains=2, num_warmup=200, num_samples=400)
    sampled = audit_result(model, learned, Audit({"z": nuts}, members=8, seed=0), provider,
                           tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
    exact_oracle = audit_result(model, learned, Audit({"z": GH}, members=8, seed=0), provider,
                                tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
    assert sampled.method == "newton" and exact_oracle.method == "rectified sweeps"
    assert sampled.members["z"].tolist() == exact_oracle.members["z"].tolist()
    for name in ("mu", "tau"):
        moved = np.abs(sampled.eta[name] - exact.eta[name])
        assert np.all(moved[1:] < np.abs(learned.eta[name] - exact.eta[name])[1:]) or \
            np.all(moved[:1] < np.abs(learned.eta[name] - exact.eta[name])[:1])
        assert np.all(np.isfinite(sampled.hi[name] - sampled.lo[name]))
    width = lambda a: a.hi["tau"][1] - a.lo["tau"][1]
    assert width(sampled) > width(exact_oracle)
