"""Charts: a family's coordinates in which its moment map is smooth. Networks train in them,
and what they predict maps back to mu exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

from bayes_et.data import design_eta, generate
from bayes_et.et import ChartedET, build, eta_from_mu
from bayes_et.expfam import (
    Beta,
    BetaShapes,
    Chart,
    Gamma,
    GammaShapes,
    LogEdges,
    exact_moments,
)
from bayes_et.train import TrainedET, load_run, predict, train_run
from bayes_et.train._predictive import raw_predictive

CHARTED = [(Gamma(), GammaShapes()), (Beta(), BetaShapes())]


@pytest.mark.parametrize("family, chart", CHARTED, ids=lambda x: type(x).__name__)
def test_a_chart_is_invertible_monotone_per_coordinate_and_its_offset_carries_the_pole(
        family, chart):
    assert family.chart == chart
    eta = jnp.asarray(design_eta(family, 200, seed=1))
    z = jax.vmap(chart.coords)(eta)
    np.testing.assert_allclose(jax.vmap(chart.eta_from)(z), eta, rtol=1e-5, atol=1e-5)
    slopes = jax.vmap(jax.jacfwd(chart.coords))(eta)  # diagonal, one sign per coordinate
    assert np.all(np.abs(slopes - jax.vmap(jnp.diag)(jnp.diagonal(slopes, axis1=1, axis2=2)))
                  == 0)
    signs = np.sign(np.diagonal(slopes, axis1=1, axis2=2))
    assert np.all(signs == signs[0]) and np.all(signs != 0)
    # What is left for the network stays bounded as a shape goes to 0 (E[log x] -> -inf).
    edge = np.array([[-1 + 1e-4, 1.0 if isinstance(family, Beta) else -1.0]])
    mu = exact_moments(family, edge)[0]
    rest = mu - np.asarray(jax.vmap(chart.offset)(jnp.asarray(edge)))
    assert abs(mu[0, 0]) > 1e3 and np.all(np.abs(rest) < 5)


def test_log_edges_is_the_identity_where_a_coordinate_has_no_edge():
    chart = LogEdges(edges=(None, 2.0), signs=(1, -1))
    eta = jnp.array([-3.0, 1.5])
    np.testing.assert_allclose(chart.coords(eta), [-3.0, np.log(0.5)], rtol=1e-6)
    np.testing.assert_allclose(Chart().coords(eta), eta)


def test_a_charted_network_is_offset_plus_its_inner_network_and_its_fisher_is_the_derivative():
    family, chart = Beta(), BetaShapes()
    inner = build("mlp", 2, {"width": 8, "depth": 1, "init_stdv": 0.1}, jax.random.key(0))
    net = ChartedET(inner, chart)
    eta = jnp.asarray(design_eta(family, 5, seed=2))
    for e in eta:
        np.testing.assert_allclose(net(e), chart.offset(e) + inner(chart.coords(e)), rtol=1e-6)
        key = jax.random.key(3)  # one weight draw is the offset plus that draw of inner
        np.testing.assert_allclose(net(e, key=key, sample=True),
                                   chart.offset(e) + inner(chart.coords(e), key=key, sample=True),
                                   rtol=1e-6)
    # Fisher against central differences (float64: the chart's Jacobian carried exactly)
    with jax.enable_x64(True):
        net64 = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64) if isinstance(a, jax.Array) else a, net)
        h = 1e-5
        for e in np.asarray(eta, np.float64):
            columns = [(net64(e + h * u) - net64(e - h * u)) / (2 * h) for u in np.eye(2)]
            np.testing.assert_allclose(net64.fisher(jnp.asarray(e)), np.stack(columns, 1),
                                       rtol=1e-6, atol=1e-6)


def test_the_predictive_of_a_charted_model_maps_back_exactly():
    # The chart adds a known offset to every weight draw: the predictive's mean is the
    # offset plus inner's, and its covariance is inner's at the chart's coordinates.
    family, chart = Gamma(), GammaShapes()
    inner = build("mlp", 2, {"width": 8, "depth": 1, "init_stdv": 0.1}, jax.random.key(0))
    eta = jnp.asarray(design_eta(family, 20, seed=4), jnp.float32)
    z = jax.vmap(chart.coords)(eta)
    charted = TrainedET.wrap(ChartedET(inner, chart), 0.1)
    plain = TrainedET.wrap(inner, 0.1)
    key = jax.random.key(5)
    mean, cov, draws = raw_predictive(charted, eta, key, 32)
    mean_z, cov_z, draws_z = raw_predictive(plain, z, key, 32)
    offset = jax.vmap(chart.offset)(eta)
    np.testing.assert_allclose(mean, offset + mean_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(draws, offset + draws_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, cov_z, rtol=1e-3, atol=1e-7)
    # The calibration's local stage and residual field live in the same coordinates.
    np.testing.assert_allclose(jax.vmap(charted._standardised)(eta),
                               jax.vmap(plain._standardised)(z), rtol=1e-6)
    np.testing.assert_allclose(charted.net.centre(), chart.eta_from(inner.centre()))


@pytest.fixture(scope="module")
def beta_edges(tmp_path_factory):
    path = tmp_path_factory.mktemp("beta") / "beta.npz"
    generate({"family": "Beta", "eta": {"num": 800, "box": {"log_x": [-0.99, 4.0],
                                                             "log1m_x": [-0.99, 4.0]}},
              "method": "closed_form"}, path, progress=False)
    return path


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_beta_near_its_edges_trains_in_its_chart_far_better_and_reloads(beta_edges, tmp_path):
    scores = {}
    for chart in (True, False):
        out = train_run({**TINY, "chart": chart}, data=str(beta_edges),
                        out=tmp_path / str(chart), progress=False)
        scores[chart] = max(json.loads((out / "metrics.json").read_text())["test"]["nrmse"]
                            .values())
    assert scores[True] < scores[False] / 10, scores  # shapes down to 0.01: E[log x] ~ -1/a
    run = load_run(tmp_path / "True")
    assert isinstance(run.model.net, ChartedET) and run.header["chart"] == "BetaShapes"
    assert not isinstance(load_run(tmp_path / "False").model.net, ChartedET)
    eta = design_eta(Beta(), 50, seed=7, box=(np.full(2, -0.99), np.full(2, 4.0)))
    mean = np.asarray(predict(run.model, eta, jax.random.key(0), 16).mean, np.float64)
    truth = exact_moments(Beta(), eta)[0]
    assert np.sqrt(np.mean((mean - truth) ** 2)) < 0.05 * truth.std()
    # Newton inverts it from the centre of its chart (an eta inside the family's domain;
    # the map is flat at large shapes, so the check is on mu)
    net = run.model.net
    found = jax.vmap(lambda m: eta_from_mu(net, m))(jnp.asarray(mean[:10], jnp.float32))
    assert np.all(np.asarray(found) > -1)
    np.testing.assert_allclose(jax.vmap(net)(found), mean[:10], atol=1e-3 * truth.std())
