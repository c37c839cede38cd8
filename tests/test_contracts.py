"""Contracts: every registered family, architecture, moment provider and sampler kernel meets
the same checks, so adding one puts it under them (a provider class without a factory below,
or a kernel class left out of the registry, fails)."""

import re

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_et.cavi import (
    PROVIDER_CONFIGS,
    ExactMoments,
    MomentFlag,
    MomentProvider,
    NetworkMoments,
    SamplingMoments,
    WithFallback,
    provider_from_config,
)
from bayes_et.cavi._audit import Rectified
from bayes_et.data import KERNELS, Chains, Kernel, design_eta, resolve_method
from bayes_et.et import ARCHITECTURES, build
from bayes_et.expfam import (
    FAMILIES,
    ROUTES,
    Gamma,
    Route,
    build_family,
    exact_moments,
    family_spec,
    pick_route,
    quadrature_moments,
    same_family,
)
from bayes_et.params import load_model, save_model
from bayes_et.train import TrainedET


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_contract(name):
    family = FAMILIES[name]()
    assert same_family(build_family(family_spec(family)), family)
    assert len(family.flat_names) == family.eta_dim == sum(family.stat_sizes)
    assert set(family.squares) <= set(family.flat_names)
    assert set(family.squares.values()) <= set(family.flat_names)
    eta = design_eta(family, 6, seed=0)  # the default box holds valid eta
    assert eta.shape == (6, family.eta_dim) and np.all(np.asarray(family.is_valid_eta(eta)))
    u_shape = family.support.u_shape(family.x_shape)
    u = jnp.linspace(-1.5, 1.5, 4 * int(np.prod(u_shape))).reshape(4, *u_shape)
    stats = jax.vmap(family.stats_from_unconstrained)(u)
    direct = family.compute_stats(family.support.forward(u) if family.support.u_size == 1
                                  else jax.vmap(family.support.forward)(u))
    np.testing.assert_allclose(stats, direct, rtol=1e-5, atol=1e-6)
    route = pick_route(family, robust=True)  # the one rule: generator and provider follow it
    route = None if route is None else route.name
    assert resolve_method(family, "auto") == (route or "mcmc")
    if route is None:
        with pytest.raises(ValueError, match="mcmc_moments"):
            exact_moments(family, eta)
        return
    assert ExactMoments(family).route == route
    mu, cov = exact_moments(family, eta)
    assert np.all(np.isfinite(mu)) and np.allclose(cov, np.swapaxes(cov, 1, 2))
    assert np.all(np.linalg.eigvalsh(cov) > -1e-9)
    if route == "closed_form" and int(np.prod(family.x_shape)) == 1:  # two routes agree
        np.testing.assert_allclose(quadrature_moments(family, eta)[0], mu, rtol=1e-7, atol=1e-9)


def _grid(*axes):
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))


# eta reaching the tails and edges of each closed-form family's space (far beyond its box)
EDGE_GRIDS = {
    "Gaussian": _grid([-1e4, -50.0, 0.0, 3.0, 1e4], [-1e4, -1.0, -1e-4]),
    "Gamma": _grid([-0.999, -0.5, 0.0, 10.0, 1e3], [-1e4, -1.0, -1e-3]),
    "Beta": _grid([-0.999, -0.5, 0.0, 100.0, 1e4], [-0.999, 0.0, 1e4]),
    "TruncatedNormal": _grid([-2e3, -100.0, -20.0, -3.0, 0.0, 3.0, 100.0],
                             [-1e3, -1.0, -1e-3]),
    "VonMises": np.concatenate([[[0.0, 0.0], [1e-6, 0.0]], _grid([-3e3, -1.0, 0.5, 100.0],
                                                                  [-1e3, 0.0, 2.0])]),
    "LaplaceProduct": np.array([[0.01, 0.01], [-0.5, 1.0], [5.0, -4.9], [100.0, 100.0],
                                [1e3, -999.0], [1e-4, 3.0]]),
}


@pytest.mark.parametrize("name", sorted(EDGE_GRIDS))
def test_closed_forms_match_quadrature_on_the_edges_of_their_space(name):
    """Every closed form equals the robust quadrature to 1e-8 (relative to |mu| + sd, the
    quadrature's own error scale) wherever both answer, and answers finite moments at
    every valid eta of the grid; most of the grid is compared (quadrature refuses only where
    its search grid cannot hold the mass)."""
    family = FAMILIES[name]()
    eta = EDGE_GRIDS[name]
    assert np.all(np.asarray(family.is_valid_eta(eta))), name
    mu, cov = exact_moments(family, eta)
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))
    compared = 0
    for row, m, c in zip(eta, mu, cov, strict=True):
        try:
            q, _ = quadrature_moments(family, row)
        except ValueError:
            continue
        scale = np.abs(q) + np.sqrt(np.clip(np.diagonal(c), 0.0, None))
        assert np.all(np.abs(m - q) <= 1e-8 * scale), (row, m, q)
        compared += 1
    assert compared >= 0.6 * len(eta), (compared, len(eta))


@pytest.mark.parametrize("kappa", [1e4, 1e6])
def test_quadrature_that_cannot_meet_its_tolerance_raises(kappa):
    """The periodic rule at a von Mises too narrow for its grid: an error, not 5e-7 off."""
    with pytest.raises(ValueError, match="error estimate"):
        quadrature_moments(FAMILIES["VonMises"](), np.array([0.6 * kappa, 0.8 * kappa]))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_contract(name, tmp_path):
    key = jax.random.key(0)
    eta = jnp.array([0.3, -1.2])
    net = build(name, 2, {}, key)
    mu, fisher = net(eta), net.fisher(eta)
    assert mu.shape == (2,) and fisher.shape == (2, 2)
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(fisher))
    drawn = net(eta, key=jax.random.key(1), sample=True)
    assert drawn.shape == (2,) and not np.allclose(drawn, mu)  # weights are distributions
    save_model(tmp_path / "m.eqx", net, name=name)
    back = load_model(tmp_path / "m.eqx", build(name, 2, {}, jax.random.key(9)))
    np.testing.assert_array_equal(back(eta), mu)
    if net.has_log_partition:  # declared: mu is the gradient of the network's own A
        np.testing.assert_allclose(jax.grad(net.log_partition)(eta), mu, rtol=1e-4, atol=1e-5)
    if net.has_exact_inverse:  # declared: the inverse undoes the map
        np.testing.assert_allclose(net.inverse(mu), eta, rtol=1e-4, atol=1e-4)


def _network(family):
    net = build("mlp", family.eta_dim, {"width": 8, "depth": 1}, jax.random.key(0))
    return NetworkMoments(TrainedET.wrap(net), family=family, num_samples=4)


PROVIDERS = {
    ExactMoments: lambda f: ExactMoments(f),
    NetworkMoments: _network,
    SamplingMoments: lambda f: SamplingMoments(f, num_chains=2, num_warmup=50,
                                               num_samples=50, ess_min=10.0),
    WithFallback: lambda f: WithFallback(_network(f), ExactMoments(f)),
    # the audit's view of a factor: network plus N/n (oracle - network) at audited members
    Rectified: lambda f: Rectified(_network(f), ExactMoments(f), jnp.array([0.0, 3.0, 0.0])),
}


def test_every_provider_class_is_under_contract():
    ours = {c for c in MomentProvider.__subclasses__() if c.__module__.startswith("bayes_et")}
    assert ours == set(PROVIDERS)


def test_every_provider_class_with_config_forms_is_registered():
    ours = {c for c in MomentProvider.__subclasses__() if c.config_forms}
    assert ours == set(PROVIDER_CONFIGS.values())
    assert all(PROVIDER_CONFIGS[f] is c for c in ours for f in c.config_forms)


@pytest.mark.parametrize("form", sorted(set(PROVIDER_CONFIGS) - {"network"}))
def test_a_config_form_builds_its_class(form):
    """Each form that needs no run folder (the network's: tests/cavi, from a trained run)
    builds its class, and a bad value of it is refused with the key named."""
    provider = provider_from_config(Gamma(), form, "providers.z")
    assert type(provider) is PROVIDER_CONFIGS[form]
    with pytest.raises(ValueError, match=r"config key 'providers.z"):
        provider_from_config(Gamma(), {form: {"num_chains": 0}} if form == "sampling"
                             else f"{form}_route", "providers.z")


@pytest.mark.parametrize("cls", [
    pytest.param(c, marks=pytest.mark.slow) if c is SamplingMoments else c
    for c in PROVIDERS], ids=lambda c: c.__name__)
def test_provider_contract(cls):
    family = Gamma()
    provider = PROVIDERS[cls](family)
    eta = np.array([[1.0, -1.0], [3.0, -2.0], [0.5, -0.5]])
    # traced, as the solver calls it (eager mixed int64/int32 ops under x64 crash jax 0.10)
    evaluate = eqx.filter_jit(provider.evaluate)
    with jax.enable_x64(True):
        out = evaluate(jnp.asarray(eta), None, jax.random.key(0), full=True)
    assert out.mean.shape == (3, 2) and out.flags.shape == (3,) and out.flags.dtype == jnp.int32
    assert (out.cov is None) == provider.exact
    assert np.all(np.isfinite(out.mean))
    assert np.all(np.asarray(out.flags) < 2 ** len(MomentFlag))  # only declared flags
    mean, cov = provider(eta)  # the public call: NumPy float64, validated eta
    assert mean.shape == (3, 2) and (cov is None or cov.shape == (3, 2, 2))
    assert np.allclose(mean, out.mean, rtol=1e-5) or cls is SamplingMoments  # MC noise
    assert all(isinstance(names, list) for names in provider.flags(eta))
    assert provider.has_fallback == (cls is WithFallback)
    if provider.num_draws:
        with jax.enable_x64(True):
            draw = evaluate(jnp.asarray(eta), jnp.int32(0), jax.random.key(0))
        assert draw.mean.shape == (3, 2)


def test_a_design_box_whose_width_overflows_is_refused():
    """design_eta in Python: bounds finite but hi - lo beyond float range."""
    family = FAMILIES["Gaussian"]()
    with pytest.raises(ValueError, match="hi - lo finite"):
        design_eta(family, 4, box=(np.array([-1e308, -2.0]), np.array([1e308, -1.0])))


def test_every_kernel_class_is_registered():
    ours = {c for c in Kernel.__subclasses__() if c.__module__.startswith("bayes_et")}
    assert ours == set(KERNELS.values()) and all(KERNELS[c.name] is c for c in ours)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_contract(name):
    """On N(1, diag(1, 4)): warm-up gives chains of arrays only; chains that leave one
    program and enter another continue exactly as in one program (a re-run resumes); the
    draws' means are within 4 Monte-Carlo standard errors of the truth."""
    scale = jnp.array([1.0, 2.0])
    log_density = lambda u: -0.5 * jnp.sum(((u - 1.0) / scale) ** 2)
    kernel = KERNELS[name](num_warmup=200, target_accept=0.8, horizon=1000)
    starts = jax.random.normal(jax.random.key(0), (4, 2))
    chains = jax.jit(lambda k: kernel.warmup(log_density, k, starts))(jax.random.key(1))
    assert isinstance(chains, Chains)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(chains))

    @jax.jit
    def run(chains, keys):
        def step(chains, k):
            chains, _ = kernel.step(log_density, k, chains)
            return chains, chains.state.position
        return jax.lax.scan(step, chains, keys)

    keys = jax.random.split(jax.random.key(2), 500)
    end, draws = run(chains, keys)
    middle, first = run(chains, keys[:250])
    middle = jax.tree_util.tree_map(np.asarray, middle)  # through the host
    resumed_end, second = run(middle, keys[250:])
    np.testing.assert_array_equal(np.concatenate([first, second]), draws)
    np.testing.assert_array_equal(resumed_end.state.position, end.state.position)
    chains_first = jnp.swapaxes(draws, 0, 1)  # (chains, draws, 2)
    ess = blackjax.diagnostics.effective_sample_size(chains_first, chain_axis=0, sample_axis=1)
    se = jnp.std(chains_first, axis=(0, 1)) / jnp.sqrt(ess)
    assert np.all(np.abs(np.mean(chains_first, axis=(0, 1)) - 1.0) <= 4 * se), (name, se)


def test_every_route_class_is_registered():
    ours = {c for c in Route.__subclasses__() if c.__module__.startswith("bayes_et")}
    assert ours == {type(r) for r in ROUTES.values()}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_route_contract(route, name):
    """A route either takes a family - the provider built on it answers valid eta finitely,
    as the family's robust exact moments do where it has them - or is refused with its own
    reason, by the provider and by the data generator alike."""
    family = FAMILIES[name]()
    why = ROUTES[route].refusal(family)
    if why is not None:
        with pytest.raises(ValueError, match=re.escape(why)):
            ExactMoments(family, route)
        if route != "gauss_hermite":  # not a data method
            with pytest.raises(ValueError, match=re.escape(why)):
                resolve_method(family, route)
        return
    eta = design_eta(family, 3, seed=4)
    provider = ExactMoments(family, route)
    with jax.enable_x64(True):
        out = eqx.filter_jit(provider.evaluate)(jnp.asarray(eta), None, jax.random.key(0))
    assert ROUTES[route].robust <= bool(np.all(np.asarray(out.flags) == 0))
    answered = np.asarray(out.flags) == 0
    assert np.all(np.isfinite(np.asarray(out.mean)[answered]))
    if pick_route(family, robust=True) is not None:
        mu, _ = exact_moments(family, eta)
        np.testing.assert_allclose(np.asarray(out.mean), mu, rtol=1e-6, atol=1e-8)
