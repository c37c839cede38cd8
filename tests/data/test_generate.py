import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from bayes_et import cli
from bayes_et.data import _generate, generate, load_dataset, moments_dataset

SMALL_MCMC = {
    "family": "Gamma",
    "eta": {"num": 48, "design": "uniform"},
    "method": "mcmc",
    "sampler": {"num_warmup": 150, "num_samples": 400, "ess_min": 50},
    "chunk_size": 8,
    "seed": 4,
}


def write_config(tmp_path, config, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # minutes: in the slow tier
def test_killed_generation_resumes_to_the_same_file(tmp_path):
    config = write_config(tmp_path, SMALL_MCMC)
    reference = generate(config, tmp_path / "full.npz", progress=False)
    out = tmp_path / "resumed.npz"
    parts = tmp_path / "resumed.npz.parts"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bayes_et.cli", "generate", str(config), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    try:
        while not (parts / "chunk_00001.npz").exists():
            assert proc.poll() is None and time.time() < deadline, \
                "generation ended before the kill"
            time.sleep(0.02)
    finally:  # SIGKILL here, and never left running when the assertion fails
        proc.kill()
        proc.wait()
    done = sorted(parts.glob("chunk_*.npz"))
    assert not out.exists() and 2 <= len(done) < 6, [p.name for p in done]
    with pytest.raises(ValueError, match="--resume"):
        generate(config, out, progress=False)
    generate(config, out, resume=True, progress=False)
    a, b = load_dataset(reference), load_dataset(out)
    for name in ("eta", "mu_T", "cov_TT", "ess", "rhat", "flags"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    a.metadata.pop("timings"), b.metadata.pop("timings")
    assert a.metadata == b.metadata
    assert not parts.exists()


def test_interrupted_chees_generation_resumes_to_the_same_file(tmp_path, monkeypatch):
    config = {**SMALL_MCMC, "eta": {"num": 24}, "sampler": {**SMALL_MCMC["sampler"],
                                                            "kernel": "chees"}}
    reference = load_dataset(generate(config, tmp_path / "full.npz", progress=False))
    calls = []

    def interrupted(*args, **kwargs):  # the third chunk never finishes
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return moments_dataset(*args, **kwargs)

    monkeypatch.setattr(_generate, "moments_dataset", interrupted)
    out = tmp_path / "resumed.npz"
    with pytest.raises(KeyboardInterrupt):
        generate(config, out, progress=False)
    assert len(list((tmp_path / "resumed.npz.parts").glob("chunk_*.npz"))) == 2
    monkeypatch.undo()
    resumed = load_dataset(generate(config, out, resume=True, progress=False))
    assert resumed.metadata["config"]["sampler"]["kernel"] == "chees"
    for name in ("eta", "mu_T", "cov_TT", "ess", "rhat", "flags"):
        np.testing.assert_array_equal(getattr(reference, name), getattr(resumed, name),
                                      err_msg=name)


def test_dataset_file_contents(tmp_path):
    config = write_config(tmp_path, {**SMALL_MCMC, "eta": {"num": 10}, "method": "auto"})
    path = generate(config, tmp_path / "d.npz", progress=False)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"eta", "mu_T", "cov_TT", "ess", "rhat", "flags", "metadata"}
        meta = json.loads(str(data["metadata"]))
    assert meta["method"] == "closed_form" and meta["family"] == {"name": "Gamma", "args": {}}
    assert meta["counts"]["n"] == 10 and meta["stat_names"] == ["log_x", "x"]
    assert {"jax", "blackjax", "bayes-et"} <= set(meta["versions"])
    ds = load_dataset(path)
    assert np.all(np.isinf(ds.ess)) and ds.cov_TT.shape == (10, 2, 2)
    with pytest.raises(ValueError, match="--force"):
        generate(config, path, progress=False)


def test_cli_generate_and_one_line_config_errors(tmp_path, capsys):
    good = write_config(tmp_path, {"family": "Quartic", "eta": {"num": 5}, "method": "auto"})
    assert cli.main(["generate", str(good), "--out", str(tmp_path / "q.npz")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_dataset(tmp_path / "q.npz").metadata["method"] == "quadrature"
    cases = [
        ({"family": "Nope", "eta": {"num": 5}}, "family.name: unknown family 'Nope'"),
        ({"family": "Gamma"}, "'eta' is missing"),
        ({"family": "Gamma", "eta": {"num": 5}, "colour": 1}, "'colour' is unknown"),
        ({"family": "Gamma", "eta": {"num": 5}, "sampler": {"num_samples": 0}},
         "'sampler.num_samples': got 0"),
        ({"family": "Gamma", "eta": {"num": -1}}, "'eta.num': got -1"),
        ({"family": "Gamma", "eta": {"num": 5, "box": {"x": [0.5, 2.0]}}},
         "eta.box lies (almost) outside the natural-parameter space"),
        ({"family": "Gamma", "eta": {"num": 5, "box": {"y": [0.5, 2.0]}}},
         "'eta.box.y' is unknown"),
        ({"family": "Gamma", "eta": {"num": 5, "design": "sobol"}}, "'eta.design': got 'sobol'"),
        ({"family": "Quartic", "eta": {"num": 5}, "method": "closed_form"}, "no closed form"),
        ({"family": {"import": "nowhere:Thing"}, "eta": {"num": 5}},
         "family.import: cannot import"),
    ]
    for i, (config, message) in enumerate(cases):
        path = write_config(tmp_path, config, f"bad{i}.yaml")
        assert cli.main(["generate", str(path), "--out", str(tmp_path / f"bad{i}.npz")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not (tmp_path / f"bad{i}.npz").exists()


def test_user_family_by_import(tmp_path, monkeypatch):
    (tmp_path / "my_family.py").write_text(textwrap.dedent('''
        import jax.numpy as jnp
        from bayes_et.expfam import ExponentialFamily, Positive

        class Tilted(ExponentialFamily):
            stat_shapes = {"x": (), "log_x": ()}
            support = Positive()
            eta_box = {"x": (-3.0, -0.5), "log_x": (0.0, 2.0)}

            def _compute_stats(self, x):
                return {"x": x, "log_x": jnp.log(x)}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(tmp_path, {"family": {"import": "my_family:Tilted"}, "eta": {"num": 6}})
    ds = load_dataset(generate(config, tmp_path / "t.npz", progress=False))
    assert ds.metadata["method"] == "quadrature"
    # it is a Gamma in disguise: E[x] = (eta_log_x + 1) / -eta_x
    np.testing.assert_allclose(ds.mu_T[:, 0], (ds.eta[:, 1] + 1) / -ds.eta[:, 0], rtol=1e-10)


SHARDED = textwrap.dedent('''
    import json, sys, jax, numpy as np
    from bayes_et.data import design_eta, mcmc_moments
    from bayes_et.expfam import Gamma
    assert len(jax.devices()) == 2, jax.devices()
    kernel, n, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    eta = design_eta(Gamma(), n, seed=2)  # more than one block: both devices work
    gate = {"nuts": 250.0, "chees": 800.0}[kernel]  # some eta re-run, some not
    sampler = dict(kernel=kernel, num_warmup=100, num_samples=200, ess_min=gate, max_retries=1)
    two = mcmc_moments(Gamma(), eta, jax.random.key(1), sampler, block=block)
    one = mcmc_moments(Gamma(), eta, jax.random.key(1), sampler, devices=jax.devices()[:1],
                       block=block)
    assert len(set(two.num_draws)) == 2 and np.array_equal(two.num_draws, one.num_draws)
    print(json.dumps({"two": two.mu_T.tolist(), "one": one.mu_T.tolist(),
                      "cov_two": two.cov_TT.tolist(), "cov_one": one.cov_TT.tolist()}))
''')


@pytest.mark.slow
@pytest.mark.parametrize("kernel, n, block", [("nuts", 300, 256), ("chees", 12, 4)])
def test_two_device_sharding_matches_one_device(kernel, n, block):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARDED, kernel, str(n), str(block)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["two"], out["one"], rtol=1e-6)
    np.testing.assert_allclose(out["cov_two"], out["cov_one"], rtol=1e-6)
