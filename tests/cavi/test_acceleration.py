"""SQUAREM-accelerated sweeps: the plain sweeps' fixed point in fewer sweeps, the ELBO never
falls, the Gauss-Hermite route's finer rule answers the wide members of early sweeps, and a
stalled solve damps its step until the sweeps contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_et.cavi import (
    CAVIModel,
    ExactMoments,
    Factor,
    MomentProvider,
    Moments,
    examples,
    run_cavi,
)
from bayes_et.expfam import Gaussian, PoissonLogNormal
from bayes_et.expfam._laplace import laplace_moments_at

GH = {"z": ExactMoments(PoissonLogNormal(), "gauss_hermite")}


def _counts(n: int, seed: int):
    rng = np.random.default_rng(seed)
    exposure = np.exp(rng.uniform(np.log(20.0), np.log(2000.0), n))
    data = examples.simulate_counts(n, -5.0, 8.0, seed, exposure=exposure)
    return examples.poisson_lognormal(data["counts"], data["exposure"])


MODELS = {
    "normal_gamma": (lambda: examples.normal_gamma(examples.simulate(20, 1.0, 1.0, 0),
                                                   0.0, 1.0, 1.0, 1.0), None),
    "quartic_prior": (lambda: examples.quartic_prior(examples.simulate(5, 0.5, 1.0, 1),
                                                     [0.0, 2.0, 0.0, -1.0], 2.0, 2.0), None),
    "random_effects": (lambda: examples.gaussian_random_effects(
        np.linspace(0.3, 1.5, 12), 0.25, 10.0), None),
    "poisson_lognormal": (lambda: _counts(300, 3), GH),
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow)
                                  if name == "poisson_lognormal" else name for name in MODELS])
def test_acceleration_reaches_the_plain_fixed_point_in_fewer_sweeps(name):
    build, providers = MODELS[name]
    model = build()
    plain = run_cavi(model, providers, tol=1e-10, max_iter=2000, accelerate=False)
    fast = run_cavi(model, providers, tol=1e-10, max_iter=2000, accelerate=True)
    assert plain.converged and fast.converged
    assert fast.iterations < plain.iterations, (fast.iterations, plain.iterations)
    for factor in model.names:
        np.testing.assert_allclose(fast.eta[factor], plain.eta[factor], rtol=1e-7, atol=1e-9)
    if not np.isnan(fast.elbo).all():  # tracked: a rejected extrapolation never shows
        assert np.all(np.diff(fast.elbo) >= -1e-9 * np.abs(fast.elbo[1:]))


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_the_plate_converges_in_half_the_plain_sweeps():
    model = _counts(2000, 7)
    plain = run_cavi(model, GH, accelerate=False, track_elbo=False)
    fast = run_cavi(model, GH, accelerate=True, track_elbo=False)
    assert fast.converged and fast.iterations <= 0.6 * plain.iterations, (
        fast.iterations, plain.iterations)
    np.testing.assert_allclose(fast.mean_stats["mu"], plain.mean_stats["mu"], rtol=1e-5)


def test_wide_members_are_answered_by_the_finer_gauss_hermite_rule():
    # q(z) ~ exp(eta_1 z + eta_2 z^2 - e^z) with a small |eta_2| (a wide prior: the first
    # sweep's members): 16/32 nodes miss 1e-9; 64/128 meet it on the first four rows (their
    # answer is the finer rule's) and not on the last (the robust quadrature's)
    family = PoissonLogNormal()
    eta = np.array([[0.0, -0.5, -1.0], [1.0, -0.1, -1.0], [3.0, -0.05, -1.0],
                    [10.0, -0.01, -1.0], [0.0, -0.05, -1.0]])
    with jax.enable_x64(True):
        coarse = [laplace_moments_at(family, e, 16) for e in eta]
        finer = [laplace_moments_at(family, e, 64) for e in eta]
        answer, _ = ExactMoments(family, "gauss_hermite")(eta)
        robust, _ = ExactMoments(family, "quadrature")(eta)
    assert all(float(err) > 1e-9 for _, err in coarse)
    assert [float(err) <= 1e-9 for _, err in finer] == [True] * 4 + [False]
    finer = np.stack([m for m, _ in finer])
    np.testing.assert_allclose(answer[:4], finer[:4], rtol=1e-14)  # to rounding
    assert np.max(np.abs(answer[:4] - robust[:4])) > 1e-14  # (another route's rounding)
    np.testing.assert_allclose(answer[4], robust[4], rtol=1e-14)
    assert np.max(np.abs(answer[4] - finer[4])) > 1e-9
    np.testing.assert_allclose(answer, robust, rtol=1e-8, atol=1e-10)


def test_a_single_factor_model_solves_with_acceleration_on():
    from bayes_et.cavi import Model
    from bayes_et.expfam import Gaussian

    model = Model()
    model.factor("x", Gaussian(), [1.0, -0.5])
    result = run_cavi(model, accelerate=True)
    assert result.converged and result.iterations == 1
    np.testing.assert_allclose(result.mean_stats["x"], [1.0, 2.0])  # N(1, 1): E[x], E[x^2]


def test_the_yaml_setting_turns_it_off(tmp_path):
    from bayes_et.cavi import cavi_run

    config = {"example": "gaussian_random_effects", "data": list(np.linspace(0.3, 1.5, 12)),
              "arguments": {"noise_sd": 0.25, "prior_precision": 10.0},
              "solver": {"tol": 1e-10}}
    plain, _ = cavi_run({**config, "solver": {"tol": 1e-10, "accelerate": False}},
                        tmp_path / "plain")
    fast, _ = cavi_run(config, tmp_path / "fast")
    assert fast.iterations < plain.iterations
    np.testing.assert_allclose(fast.eta["mu"], plain.eta["mu"], rtol=1e-8)


class Overturned(MomentProvider):
    """A Gaussian 'network' whose mean is -3 times the true one (variance kept): a moment
    map that no family has, as a poor function draw gives one."""

    family: Gaussian
    exact = True

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        mean, var = -eta[:, 0] / (2 * eta[:, 1]), -1 / (2 * eta[:, 1])
        return Moments(jnp.stack([-3 * mean, 9 * mean**2 + var], 1), None,
                       jnp.zeros(eta.shape[0], jnp.int32))


@pytest.mark.parametrize("accelerate", [False, True])
def test_sweeps_that_a_fixed_point_repels_are_damped_until_they_contract(accelerate):
    """x, w ~ N(., 1) coupled by 0.8 x w, w answered by Overturned: the plain sweeps'
    Jacobian has eigenvalue -3 x 0.8^2 = -1.92, so they diverge; the stall guard halves the
    step (to 1/2: spectral radius 0.5) and the solve reaches the fixed point of the linear
    equations m_x = a + 0.8 m_w, m_w = -3 (b + 0.8 m_x)."""
    a, b, c = 0.3, -0.2, 0.8
    model = CAVIModel({"x": Factor(Gaussian(), [a, -0.5]), "w": Factor(Gaussian(), [b, -0.5])},
                      {("x", "w"): np.array([[c, 0.0], [0.0, 0.0]])})
    result = run_cavi(model, {"w": Overturned(Gaussian())}, tol=1e-10, max_iter=300,
                      accelerate=accelerate, track_elbo=False)
    m_x, m_w = np.linalg.solve([[1.0, -c], [3 * c, 1.0]], [a, -3 * b])
    assert result.converged, result.delta[-5:]
    np.testing.assert_allclose(result.mean_stats["x"][0], m_x, rtol=1e-8)
    np.testing.assert_allclose(result.mean_stats["w"][0], m_w, rtol=1e-8)
    assert np.all(result.delta[1:10] > result.delta[0])  # the plain sweeps diverged first
