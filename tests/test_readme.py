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
    if "textbook" in namespace:  # the CAVI example: the closed-form mean-field fixed point
        for name, eta in namespace["textbook"].items():
            np.testing.assert_allclose(namespace["result"].eta[name], eta, rtol=1e-6)
    assert capsys.readouterr().out
