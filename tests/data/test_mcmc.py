"""MCMC moments (NUTS, ChEES-HMC) against exact ones: the error bars must be honest."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from blackjax.adaptation.base import get_filter_adapt_info_fn

from bayes_et.data import KERNELS, DataFlag, design_eta, mcmc_moments
from bayes_et.data._kernels import CHEES_LEARNING_RATE, CHEES_STEP_SIZE, ChEES
from bayes_et.expfam import (
    Beta,
    Gamma,
    Gaussian,
    MultivariateNormal,
    Quartic,
    TruncatedNormal,
    VonMises,
    exact_moments,
)

FAMILIES = [Gaussian(), Gamma(), Beta(), VonMises(), TruncatedNormal(), Quartic(),
            MultivariateNormal(3)]
DOUBLE_WELLS = np.array([[0.0, 1.5, 0.0, -0.2], [0.3, 1.2, -0.1, -0.25], [-0.5, 1.0, 0.2, -0.3]])


SLOW_FAMILIES = ("Quartic", "VonMises", "MultivariateNormal", "Beta", "TruncatedNormal")  # -m slow


@pytest.mark.parametrize("family", [
    pytest.param(f, marks=pytest.mark.slow) if f.name.startswith(SLOW_FAMILIES) else f
    for f in FAMILIES], ids=repr)
def test_mcmc_z_scores_are_standard(family):
    eta = design_eta(family, 50, seed=11)
    if isinstance(family, Quartic):
        eta = np.concatenate([eta, DOUBLE_WELLS])
    est = mcmc_moments(family, eta, jax.random.key(3))
    mu_exact, _ = exact_moments(family, eta)
    se = np.sqrt(np.diagonal(est.cov_TT, axis1=1, axis2=2) / est.ess)
    z = (est.mu_T - mu_exact) / se
    ok = est.flags == 0
    print(f"{family.name}: mean z^2 {np.mean(z[ok] ** 2):.3f}, max |z| {np.abs(z[ok]).max():.2f}, "
          f"flagged {np.mean(~ok):.1%}")
    assert ok.mean() >= 0.9
    assert 0.6 <= np.mean(z[ok] ** 2) <= 1.6
    assert np.abs(z[ok]).max() <= 6


@pytest.mark.parametrize("family", [Gamma(), pytest.param(Quartic(), marks=pytest.mark.slow),
                                    MultivariateNormal(3)], ids=repr)
def test_chees_z_scores_are_standard(family):
    """ChEES-HMC: the mean over eta of each eta's mean z^2 is in the honest band [0.8, 1.25]
    within four of its standard errors (estimated from the spread of the per-eta values).
    ChEES's ESS errs on the safe side (mean z^2 ~0.9 on MultivariateNormal(3))."""
    eta = design_eta(family, 160, seed=12)
    est = mcmc_moments(family, eta, jax.random.key(4), {"kernel": "chees", "max_retries": 1})
    mu_exact, _ = exact_moments(family, eta)
    z = (est.mu_T - mu_exact) / np.sqrt(np.diagonal(est.cov_TT, axis1=1, axis2=2) / est.ess)
    ok = est.flags == 0
    per_eta = np.mean(z[ok] ** 2, axis=1)
    se = per_eta.std(ddof=1) / np.sqrt(per_eta.size)
    print(f"{family.name}: mean z^2 {per_eta.mean():.3f} +- {se:.3f}, flagged {np.mean(~ok):.1%}")
    assert ok.mean() >= 0.97
    assert 0.8 - 4 * se <= per_eta.mean() <= 1.25 + 4 * se
    assert np.abs(z[ok]).max() <= 6


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_quality_gate_reruns_with_more_draws_and_keeps_flags():
    family = Gamma()
    eta = design_eta(family, 4, seed=0)
    easy = mcmc_moments(family, eta, jax.random.key(0), dict(
        num_warmup=100, num_samples=200, ess_min=10, rhat_max=1.1))
    assert np.all(easy.flags == 0) and np.all(easy.num_draws == 200)
    hard = mcmc_moments(family, eta, jax.random.key(0), dict(
        num_warmup=100, num_samples=200, ess_min=2e4, max_retries=2))
    assert np.all(hard.flags & DataFlag.ESS) and np.all(hard.num_draws == 800)


class CountedGamma(Gamma):
    """A Gamma that counts how often its log density is traced (a new program)."""

    traces = 0

    def log_density_unconstrained(self, u, eta):
        CountedGamma.traces += 1
        return super().log_density_unconstrained(u, eta)


# a gate that some of the eta below fail at 200 draws per chain and pass at 400
GATE = {"nuts": 200.0, "chees": 800.0}


@pytest.mark.parametrize("kernel", [pytest.param(k, marks=pytest.mark.slow) if k == "nuts" else k
                                    for k in sorted(KERNELS)])
def test_a_rerun_continues_the_failing_chains_in_one_program_compiled_once(kernel):
    family = CountedGamma()
    eta = design_eta(family, 12, seed=2)
    sampler = dict(kernel=kernel, num_warmup=100, num_samples=200, ess_min=GATE[kernel])
    first = mcmc_moments(family, eta, jax.random.key(1), {**sampler, "max_retries": 0})
    once = mcmc_moments(family, eta, jax.random.key(1), {**sampler, "max_retries": 1})
    rerun = first.flags != 0
    assert 0 < rerun.sum() < len(eta)
    assert np.array_equal(once.num_draws, np.where(rerun, 400, 200))
    for a, b in zip(once[:4], first[:4], strict=True):  # the passing eta are not redone
        np.testing.assert_array_equal(a[~rerun], b[~rerun])
    assert np.all(once.ess[rerun].min(1) > first.ess[rerun].min(1))
    traced = CountedGamma.traces
    more = mcmc_moments(family, eta[:7], jax.random.key(2), {**sampler, "max_retries": 1})
    assert np.any(more.num_draws == 400) and CountedGamma.traces == traced


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_draws_depend_on_eta_id_not_on_chunking(kernel):
    family = Gamma()
    eta = design_eta(family, 6, seed=1)
    settings = dict(kernel=kernel, num_warmup=100, num_samples=200, ess_min=GATE[kernel],
                    max_retries=1)
    whole = mcmc_moments(family, eta, jax.random.key(5), settings, block=2)
    assert len(set(whole.num_draws)) == 2  # re-runs included
    part = mcmc_moments(family, eta[2:], jax.random.key(5), settings, eta_ids=np.arange(2, 6),
                        block=2)
    # the same draws; the re-runs batch the failing eta of a call together, and XLA may
    # round a batch of another size apart in the last bits (float32: a few ulp), no more
    for a, b in zip(part, whole, strict=True):
        np.testing.assert_allclose(a, b[2:], rtol=1e-6, atol=0)
    other_ids = mcmc_moments(family, eta[2:], jax.random.key(5), settings, block=2)  # ids 0..3
    assert not np.allclose(other_ids.mu_T, whole.mu_T[2:])


def test_bad_sampler_arguments():
    family = Gamma()
    eta = design_eta(family, 2)
    for name, value in [("num_samples", 0), ("num_chains", 1), ("num_warmup", -3)]:
        with pytest.raises(ValueError, match=f"config key .sampler.{name}.: got {value}"):
            mcmc_moments(family, eta, jax.random.key(0), {name: value})
    with pytest.raises(ValueError, match="n >= 1"):
        mcmc_moments(family, np.zeros((0, 2)), jax.random.key(0))
    with pytest.raises(ValueError, match=r"config key 'sampler.kernel': got 'hmc'.*chees"):
        mcmc_moments(family, eta, jax.random.key(0), {"kernel": "hmc"})
    with pytest.raises(ValueError, match="target_accept"):
        mcmc_moments(family, eta, jax.random.key(0), {"target_accept": 1.5})
    with pytest.raises(ValueError, match=r"eta\['x'\] < 0"):
        mcmc_moments(family, np.array([[0.0, 1.0]]), jax.random.key(0))


def test_chees_steps_are_blackjax_steps_with_the_adaptation_s_own_parameters():
    """ChEES's chains carry arrays only, so its step rebuilds BlackJAX's jittered kernel
    (the Halton jitter of the trajectory): it must take the very steps of the kernel that
    BlackJAX's adaptation returns."""
    log_density = lambda u: -0.5 * jnp.sum(u**2 * jnp.array([1.0, 9.0]))
    starts = jax.random.normal(jax.random.key(0), (4, 2))
    kernel = ChEES(num_warmup=100, target_accept=0.8, horizon=300)
    adaptation = blackjax.chees_adaptation(
        log_density, 4, target_acceptance_rate=0.8, mass_matrix_estimation="diagonal",
        adaptation_info_fn=get_filter_adapt_info_fn())
    (state, params), _ = adaptation.run(jax.random.key(1), starts, CHEES_STEP_SIZE,
                                        optax.adam(CHEES_LEARNING_RATE), 100,
                                        max_sampling_steps=300)
    theirs = blackjax.dynamic_hmc(log_density, **params)
    chains = kernel.warmup(log_density, jax.random.key(1), starts)
    np.testing.assert_array_equal(chains.state.position, state.position)

    @jax.jit
    def both(state, chains, k):
        state, _ = jax.vmap(theirs.step)(jax.random.split(k, 4), state)
        chains, _ = kernel.step(log_density, k, chains)
        return state, chains

    for k in jax.random.split(jax.random.key(2), 60):
        state, chains = both(state, chains, k)
    # one program holds both: XLA may round them apart in the last bit, no more
    np.testing.assert_allclose(chains.state.position, state.position, rtol=1e-5, atol=1e-6)
