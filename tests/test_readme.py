"""Every ```python block of the README runs as written."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _map_then_vi(ns):  # fits sin(x), with a sane spread
    mean, std, x = (np.asarray(ns[k]) for k in ("mean", "std", "x"))
    assert np.sqrt(np.mean((mean - np.sin(x[:, 0])) ** 2)) < 0.1
    assert np.all(std > 0) and np.all(std < 0.5)


def _training(ns):  # predictions near the exact moments, after a round of active learning
    mean, band, truth = (np.asarray(k) for k in (ns["predictive"].mean, ns["band"], ns["truth"]))
    assert np.all(np.abs(mean - truth) <= 0.05 * np.abs(truth) + 3 * band)  # band: 90% half-width
    assert ns["header"]["training_region"] and (ns["refined"] / "added.npz").is_file()


def _quickstart(ns):  # network CAVI next to quadrature CAVI
    learned, exact = ns["result"].mean_stats, ns["exact"].mean_stats
    assert set(learned) == set(exact)
    for name, values in exact.items():
        np.testing.assert_allclose(learned[name], values, rtol=2e-2, atol=2e-2)


def _real_data(ns):  # the model by terms equals the example builder, robust quadrature
    from bayes_et.cavi import ExactMoments, examples, run_cavi
    from bayes_et.expfam import PoissonLogNormal

    data = ns["data"]
    model = examples.poisson_lognormal(data["counts"], data["exposure"])
    robust = run_cavi(model, {"z": ExactMoments(PoissonLogNormal(), "quadrature")})
    for name in ("mu", "tau", "z"):
        np.testing.assert_allclose(ns["result"].eta[name], robust.eta[name], rtol=1e-6)


def _audit(ns):  # the audit: an interval around the rectified answer, oracle rows kept
    audit = ns["audit"]
    assert audit.method == "rectified sweeps" and len(audit.members["z"]) == 60
    lo, hi, centre = (np.asarray(d["mu"]) for d in (audit.mean_lo, audit.mean_hi,
                                                    audit.mean_stats))
    assert np.all(np.isfinite(lo)) and np.all(lo < centre) and np.all(centre < hi)
    assert audit.oracle_eta["z"].shape == (60, 3)
    # the rectified answer is far closer to the exact one than the interval is wide or
    # than the network alone could promise: within three of its own standard errors
    exact = ns["exact"].mean_stats["mu"][0]
    assert abs(audit.mean_stats["mu"][0] - exact) <= 3 * (hi[0] - lo[0]) / (2 * 1.645)


def _multivariate(ns):  # a fixed point of the example builder's updates (the same model)
    import jax

    from bayes_et.cavi import examples

    result = ns["mv_result"]
    built = examples.multivariate_poisson_lognormal(ns["y"], ns["o"])
    means = tuple(np.atleast_2d(result.mean_stats[name]) for name in built.names)
    assert result.converged
    with jax.enable_x64(True):  # the solver's precision
        for i, name in enumerate(built.names):
            np.testing.assert_allclose(np.atleast_2d(result.eta[name]),
                                       built.target(i, means), rtol=1e-5, atol=1e-6)


def _textbook(ns):  # the closed-form mean-field fixed point
    assert ns["textbook"]
    for name, eta in ns["textbook"].items():
        np.testing.assert_allclose(ns["result"].eta[name], eta, rtol=1e-6)


def _own_family(ns):  # quadrature moments of a user's family: finite, variances positive
    mu, cov = np.asarray(ns["mu"]), np.asarray(ns["cov"])
    assert mu.shape == (3,) and np.all(np.isfinite(mu)) and np.all(np.diagonal(cov) > 0)


# Each README block is recognised by the call it demonstrates; its check reads the names
# it needs with ns[...], so renaming a variable (or dropping the example) fails loudly.
CHECKS = {
    "bp.BayesianMLP(": _map_then_vi,
    "from bayes_et.train import extend_run, load_run, predict, train_run": _training,
    '{"mu": NetworkMoments(run)}': _quickstart,
    "Audit(": _audit,
    "examples.cancer_data()": _real_data,
    "examples.scrt_data()": _multivariate,
    "examples.normal_gamma_fixed_point": _textbook,
    "class TiltedCauchy(ExponentialFamily)": _own_family,
}


def test_every_block_has_exactly_one_check_and_every_check_a_block():
    matches = [[sig for sig in CHECKS if sig in block] for block in BLOCKS]
    assert all(len(m) == 1 for m in matches), matches
    assert sorted(sig for m in matches for sig in m) == sorted(CHECKS)


# The blocks that train networks for minutes, or compile the 3-D tensor route, run in the
# slow tier.
SLOW = {_quickstart, _training, _audit, _multivariate}


def _block(index: int):
    slow = any(sig in BLOCKS[index] for sig, check in CHECKS.items() if check in SLOW)
    return pytest.param(index, marks=pytest.mark.slow) if slow else index


@pytest.mark.parametrize("index", [_block(i) for i in range(len(BLOCKS))])
def test_readme_block_runs(index, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), namespace)
    (check,) = [fn for sig, fn in CHECKS.items() if sig in BLOCKS[index]]
    check(namespace)
    assert capsys.readouterr().out


YAML_MODELS = [b for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
               if "model:" in b]


@pytest.mark.parametrize("index", range(len(YAML_MODELS)))
def test_readme_yaml_model_runs(index):
    import yaml

    from bayes_et.cavi import load_cavi_config, run_cavi

    model, providers, solver, _ = load_cavi_config(yaml.safe_load(YAML_MODELS[index]))
    result = run_cavi(model, providers)
    assert result.converged and all(np.all(np.isfinite(e)) for e in result.eta.values())
    assert any(e.ndim == 2 for e in result.eta.values())  # it has a plate
