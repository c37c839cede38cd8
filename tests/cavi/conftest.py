"""Small networks trained by `bayes-et train` on generated data, once per test session
(shared by its xdist workers)."""

import fcntl
import os
from pathlib import Path

import pytest
import yaml

from bayes_et import cli

TRAIN = {
    "architecture": "mlp", "network": {"width": 32, "depth": 2}, "seed": 0, "batch_size": 128,
    "likelihood": {"noise_floor": 1.0e-4},
    "stages": [{"name": "map", "epochs": 300, "lr": 3.0e-3, "patience": 60},
               {"name": "vi", "epochs": 50, "lr": 1.0e-2, "patience": 20}],
}
# Boxes around the eta that the test models visit (see test_cavi.py).
DATA = {
    "gaussian": {"family": "Gaussian", "method": "closed_form",
                 "eta": {"num": 1000, "box": {"x": [5.0, 35.0], "x2": [-22.0, -4.0]}}},
    "gamma": {"family": "Gamma", "method": "closed_form",
              "eta": {"num": 1000, "box": {"log_x": [10.0, 11.0], "x": [-18.0, -6.0]}}},
    "quartic": {"family": "Quartic", "method": "quadrature",
                "eta": {"num": 1000, "box": {"x": [-8.0, 12.0], "x2": [-3.5, 2.0],
                                             "x3": [0.0, 0.0], "x4": [-1.0, -1.0]}}},
}


class _Runs(dict):
    """name -> run folder of a small mlp trained MAP-then-VI on DATA[name], trained when a
    test first asks for it (a session that runs no quartic test trains no quartic network),
    by one worker while the others wait on its lock."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        data_cfg, out = self.root / f"{name}.yaml", self.root / name
        with open(self.root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / "metrics.json").exists():  # written last: a finished run
                train_cfg = self.root / f"{name}-train.yaml"
                train_cfg.write_text(yaml.safe_dump(TRAIN))
                data_cfg.write_text(yaml.safe_dump(DATA[name]))
                assert cli.main(["train", str(train_cfg), "--data", str(data_cfg),
                                 "--out", str(out), "--force"]) == 0
        self[name] = out
        return out


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """name -> run folder of a small mlp trained on DATA[name] (on first use; one folder
    for all the session's workers)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's
    root = root / "cavi_runs"
    root.mkdir(exist_ok=True)
    return _Runs(root)
