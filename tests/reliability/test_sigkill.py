"""SIGKILL in the middle of train and cavi (generate: tests/data/test_generate.py, `run`:
tests/test_quickstart.py): the rerun completes, and no output folder is ever seen
half-written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bayes_et._files import MARKER

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bayes_et.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def kill_when(ready, *argv: str, cwd: Path, timeout: float = 300) -> None:
    """Start the command, SIGKILL it as soon as `ready()` holds (it must still run)."""
    proc = subprocess.Popen([sys.executable, "-m", "bayes_et.cli", *argv], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the command ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # minutes: in the slow tier
def test_train_killed_leaves_no_mixed_folder_and_reruns(tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"family": "Gamma", "method": "closed_form",
                                    "eta": {"num": 300}}))
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({
        "architecture": "mlp", "network": {"width": 8, "depth": 1}, "batch_size": 64,
        "stages": [{"name": "map", "epochs": 40}, {"name": "vi", "epochs": 2}],
        "predictive": {"num_samples": 8}, "validation": {"num_samples": 4}}))
    staging = tmp_path / ".run.partial"
    kill_when(lambda: (staging / "data.npz").exists(), "train", str(config), "--data",
              str(data), "--out", "run", cwd=tmp_path)
    assert not (tmp_path / "run").exists()  # the folder appears whole or not at all
    result = cli("train", str(config), "--data", str(data), "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {"data.npz", "model.eqx", "metrics.json", "history.csv",
                     "learning_curves.png", "calibration.png", MARKER}
    assert not (tmp_path / "run" / "data.npz.parts").exists()
    assert not staging.exists()


def test_cavi_killed_leaves_no_mixed_folder_and_reruns(tmp_path):
    config = str(ROOT / "configs/cavi/quartic_prior.yaml")
    staging = tmp_path / ".out.partial"
    kill_when(staging.exists, "cavi", config, "--out", "out", cwd=tmp_path)
    assert not (tmp_path / "out").exists()
    result = cli("cavi", config, "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"result.json", "cavi.png",
                                                              MARKER}
    assert not staging.exists()
