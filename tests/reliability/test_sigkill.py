"""SIGKILL in the middle of generate, train and cavi (`run`: tests/test_quickstart.py): the
rerun completes, and no output folder is ever seen half-written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from bayes_et.data import load_dataset
from bayes_et.expfam import Gamma, exact_moments

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


def test_generate_killed_mid_chunks_resumes_to_the_right_answer(tmp_path):
    config = tmp_path / "g.yaml"
    config.write_text(yaml.safe_dump({"family": "Gamma", "method": "quadrature",
                                      "eta": {"num": 3000}, "chunk_size": 100}))
    parts = tmp_path / "g.npz.parts"
    kill_when(lambda: len(list(parts.glob("chunk_*.npz"))) >= 2, "generate", str(config),
              cwd=tmp_path)
    assert not (tmp_path / "g.npz").exists()
    done = len(list(parts.glob("chunk_*.npz")))
    assert 2 <= done < 30
    assert cli("generate", str(config), cwd=tmp_path).returncode == 2  # needs --resume
    result = cli("generate", str(config), "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = load_dataset(tmp_path / "g.npz")
    assert len(data) == 3000 and not parts.exists()
    np.testing.assert_allclose(data.mu_T, exact_moments(Gamma(), data.eta)[0], rtol=1e-8)


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
                     "learning_curves.png", "calibration.png"}
    assert not staging.exists()


def test_cavi_killed_leaves_no_mixed_folder_and_reruns(tmp_path):
    config = str(ROOT / "configs/cavi/quartic_prior.yaml")
    staging = tmp_path / ".out.partial"
    kill_when(staging.exists, "cavi", config, "--out", "out", cwd=tmp_path)
    assert not (tmp_path / "out").exists()
    result = cli("cavi", config, "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"result.json", "cavi.png"}
    assert not staging.exists()
