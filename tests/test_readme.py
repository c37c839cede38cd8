"""Every ```python block of the README runs as written."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), namespace)
    if "draws" in namespace:  # the MAP-then-VI example: fits sin(x), with a sane spread
        mean, std, x = (np.asarray(namespace[k]) for k in ("mean", "std", "x"))
        assert np.sqrt(np.mean((mean - np.sin(x[:, 0])) ** 2)) < 0.1
        assert np.all(std > 0) and np.all(std < 0.5)
    if "truth" in namespace:  # the training example: predictions near the exact moments
        mean, sd, truth = (np.asarray(namespace[k]) for k in ("mean", "sd", "truth"))
        assert np.all(np.abs(mean - truth) <= 0.05 * np.abs(truth) + 5 * sd)
    if "exact" in namespace:  # the quickstart: network CAVI next to quadrature CAVI
        learned, exact = namespace["result"].mean_stats, namespace["exact"].mean_stats
        for name, values in exact.items():
            np.testing.assert_allclose(learned[name], values, rtol=2e-2, atol=2e-2)
    if "offset" in namespace:  # the real-data model by terms: equals the example builder
        from bayes_et.cavi import ExactMoments, examples, run_cavi
        from bayes_et.expfam import PoissonLogNormal

        data = namespace["data"]
        model = examples.poisson_lognormal(data["counts"], data["exposure"])
        robust = run_cavi(model, {"z": ExactMoments(PoissonLogNormal(), "quadrature")})
        for name in ("mu", "tau", "z"):
            np.testing.assert_allclose(namespace["result"].eta[name], robust.eta[name],
                                       rtol=1e-6)
    if "textbook" in namespace:  # the CAVI example: the closed-form mean-field fixed point
        for name, eta in namespace["textbook"].items():
            np.testing.assert_allclose(namespace["result"].eta[name], eta, rtol=1e-6)
    assert capsys.readouterr().out


YAML_MODELS = [b for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
               if "model:" in b]


@pytest.mark.parametrize("index", range(len(YAML_MODELS)))
def test_readme_yaml_model_runs(index):
    import yaml

    from bayes_et.cavi import load_cavi_config, run_cavi

    model, providers, solver = load_cavi_config(yaml.safe_load(YAML_MODELS[index]))
    result = run_cavi(model, providers)
    assert result.converged and all(np.all(np.isfinite(e)) for e in result.eta.values())
    assert any(e.ndim == 2 for e in result.eta.values())  # it has a plate
