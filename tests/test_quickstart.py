"""`bayes-et run`: the end-to-end pipeline, on a small version of the embedded default."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bayes_et import cli
from bayes_et.quickstart import default_config_path, load_config

ROOT = Path(__file__).resolve().parents[1]


def small_config() -> dict:
    """The default with 600 eta, a small network and few epochs: the same stages, fast."""
    config = yaml.safe_load(default_config_path().read_text())
    config["data"]["eta"]["num"] = 600
    config["train"]["network"] = {"width": 32, "depth": 2}
    config["train"]["stages"] = [{"name": "map", "epochs": 60, "lr": 3e-3},
                                 {"name": "vi", "epochs": 10, "lr": 1e-2}]
    config["slice"]["num"] = 21
    config["cavi"]["solver"]["num_draws"] = 8
    return config


def test_the_embedded_default_is_configs_quickstart():
    assert default_config_path().read_bytes() == (ROOT / "configs/quickstart.yaml").read_bytes()
    config = load_config()
    assert config.data.family == "Quartic" and config.cavi["example"] == "quartic_prior"


@pytest.mark.slow  # minutes: in the slow tier
def test_console_script_runs_every_stage_from_any_directory(tmp_path):
    """...also after a SIGKILL in the middle of it (the rerun resumes its staging folder;
    the report folder never appears half-written)."""
    config = small_config()
    config["data"]["chunk_size"] = 150
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    parts = tmp_path / ".report.partial" / "data.npz.parts"
    proc = subprocess.Popen([sys.executable, "-m", "bayes_et.cli", "run", str(path), "--out",
                             "report"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and not list(parts.glob("chunk_*.npz")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "report").exists()
    result = subprocess.run([sys.executable, "-m", "bayes_et.cli", "run", str(path), "--out",
                             "report"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "report"
    for name in ("report.md", "summary.json", "learning_curves.png", "calibration.png",
                 "slice.png", "cavi.png"):
        assert (out / name).stat().st_size > 0, name
    for stage in ("[1/5]", "[5/5]", "generate", "train", "calibration", "slice", "cavi"):
        assert stage in result.stdout
    assert not (tmp_path / ".report.partial").exists()
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert summary["calibration"]["coverage_90"] == metrics["test"]["coverage"]["0.9"]
    assert summary["generate"]["num_eta"] == 600 and summary["cavi"]["converged"]
    assert len(summary["cavi"]["rows"]) == 3  # eta_mu[x], eta_mu[x2], eta_tau[x] are coupled
    report = (out / "report.md").read_text()
    for section in ("## Summary", "## 3. Calibration", "## 5. CAVI", "![slice](slice.png)"):
        assert section in report


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(extra=1), "config key 'extra' is unknown"),
    (lambda c: c["train"].update(data="x.npz"), "config key 'train.data'"),
    (lambda c: c["cavi"].update(providers={}), "config key 'cavi.providers'"),
    (lambda c: c["slice"].update(num=1), "config key 'slice.num'"),
    (lambda c: c["slice"].update(start=[0.0, 0.0, 0.0, 1.0]), "slice.start is outside"),
    (lambda c: c["data"]["eta"].update(num=0), "config key 'data.eta.num'"),
    (lambda c: c["slice"].update(stop=c["slice"]["start"]), "two different valid eta"),
    (lambda c: c["cavi"].update(example="normal_gamma", arguments={
        "mu0": 0.0, "lambda0": 1.0, "a0": 1.0, "b0": 1.0}), "a model with a Quartic() factor"),
])
def test_bad_pipeline_configs_name_the_key(change, message, tmp_path, capsys):
    config = small_config()
    change(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "never")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()  # nothing written before validation
