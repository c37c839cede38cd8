"""Nothing lost, nothing faked: concurrent runs, staging folders of other configs, names that
become paths, --force on special files and inputs, runs that carry their data, convergence
that damping cannot fake, and a strict YAML reader. Each class is tried with several cases
(other commands, names, keys) rather than one example; every refusal is exit status 2 with
one line and leaves the files as they were."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_faults import GAMMA, TINY_TRAIN, fails, snapshot, write_yaml

from bayes_et import cli
from bayes_et._files import MARKER, check_name, exclusive, fingerprint, run_folder, write_text
from bayes_et.cavi import examples, load_cavi_config, run_cavi
from bayes_et.data import generate, load_dataset
from bayes_et.data._generate import generate_into
from bayes_et.train import train_run

ROOT = Path(__file__).resolve().parents[2]
NORMAL_GAMMA = str(ROOT / "configs/cavi/normal_gamma.yaml")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A Gamma dataset and a tiny run trained on it (read-only for the scenarios)."""
    root = tmp_path_factory.mktemp("lost")
    data = generate(GAMMA, root / "gamma.npz", progress=False)
    run = train_run(TINY_TRAIN, data=str(data), out=root / "run", progress=False)
    return {"root": root, "data": data, "run": run,
            "train": write_yaml(root, "tiny.yaml", TINY_TRAIN),
            "gamma": write_yaml(root, "gamma.yaml", GAMMA)}


def commands(work, out: Path) -> dict[str, list[str]]:
    """One invocation of each command that writes `out`."""
    return {
        "generate": ["generate", str(work["gamma"]), "--out", str(out)],
        "train": ["train", str(work["train"]), "--data", str(work["data"]), "--out", str(out)],
        "extend": ["extend", str(work["run"]), "--data", str(work["data"]), "--out", str(out)],
        "cavi": ["cavi", NORMAL_GAMMA, "--out", str(out)],
        "run": ["run", "--out", str(out)],
    }


# ------------------------------------------------------------------ 1. concurrent runs


@pytest.mark.parametrize("command", ["generate", "train", "extend", "cavi", "run"])
def test_a_second_run_into_an_output_being_written_stops_at_once(command, work, tmp_path,
                                                                 capsys):
    out = tmp_path / ("out.npz" if command == "generate" else "out")
    with exclusive(out):  # another run holds the output
        fails(capsys, commands(work, out)[command], "being written by another bayes-et run")
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_two_processes_into_one_out_one_wins_whole(tmp_path):
    argv = [sys.executable, "-m", "bayes_et.cli", "cavi", NORMAL_GAMMA, "--out", "out"]
    procs = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    finally:  # neither left running when one times out
        for p in procs:
            p.kill()
            p.wait()
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser and ("being written" in loser or "exists" in loser), loser
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"result.json", "cavi.png", MARKER}
    json.loads((tmp_path / "out" / "result.json").read_text())


def test_the_final_rename_refuses_an_output_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="exists and is not empty"), \
            run_folder(out, force=False, config={"a": 1}) as folder:
        write_text(folder / "mine.txt", "mine")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert (tmp_path / ".out.partial" / "mine.txt").is_file()  # kept for a rerun


# ------------------------------------------------------------------ 2. staging folders


def _stale_staging(out: Path, files: dict[str, bytes], config=None, marked=True) -> Path:
    staging = out.parent / f".{out.name}.partial"
    staging.mkdir()
    if marked:
        (staging / MARKER).write_text(json.dumps({"fingerprint": fingerprint(config)}))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    return staging


@pytest.mark.parametrize(("command", "stale"), [
    ("cavi", "fallback-mu.npz"), ("cavi", "data-mu.yaml"), ("train", "added.npz"),
    ("extend", "calibration.npz")])
def test_a_killed_run_of_another_config_is_never_shipped(command, stale, work, tmp_path,
                                                         capsys):
    out = tmp_path / "out"
    staging = _stale_staging(out, {stale: b"another config's"}, config={"other": True})
    argv = commands(work, out)[command]
    fails(capsys, argv, "killed run of another config", "--force")
    assert (staging / stale).read_bytes() == b"another config's"  # refused: untouched
    capsys.readouterr()
    assert cli.main([*argv, "--force"]) == 0
    assert not (out / stale).exists() or (out / stale).read_bytes() != b"another config's"


def test_a_killed_run_of_the_same_config_is_resumed(tmp_path):
    out, config = tmp_path / "out", {"kind": "test", "n": 3}
    with pytest.raises(RuntimeError), run_folder(out, force=False, config=config) as folder:
        write_text(folder / "chunk.txt", "done before the kill")
        raise RuntimeError("killed")
    with run_folder(out, force=False, config=config) as folder:
        assert (folder / "chunk.txt").read_text() == "done before the kill"
    assert (out / "chunk.txt").is_file() and (out / MARKER).is_file()


@pytest.mark.parametrize("command", ["cavi", "train", "generate"])
def test_a_run_killed_while_marking_its_staging_folder_is_resumed(command, work, tmp_path):
    """SIGKILL between a staging folder's mkdir and its marker's (or manifest's) rename
    leaves only the marker's temporary file: the rerun takes the folder over (CI saw 'not
    made by bayes_et')."""
    out = tmp_path / ("out.npz" if command == "generate" else "out")
    staging, marker = ((tmp_path / "out.npz.parts", "manifest.json") if command == "generate"
                       else (tmp_path / ".out.partial", MARKER))
    staging.mkdir()
    (staging / f".{marker}.k1ll3d.tmp").write_text('{"finger')
    argv = {"cavi": ["cavi", NORMAL_GAMMA], "generate": ["generate", str(work["gamma"])],
            "train": ["train", str(work["train"]), "--data", str(work["data"])]}[command]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert not staging.exists()
    if command != "generate":
        assert (out / MARKER).is_file() and not list(out.glob(f".{MARKER}.*"))
    else:
        assert len(load_dataset(out).eta) == GAMMA["eta"]["num"]


def test_a_killed_runs_inner_lock_is_not_shipped(tmp_path):
    """SIGKILL between an inner output's rename and its lock's unlink leaves the lock file
    in the staging folder; the resumed run ships the folder without it."""
    out, config = tmp_path / "out", {"kind": "test"}
    with pytest.raises(RuntimeError), run_folder(out, force=False, config=config) as folder:
        write_text(folder / "data.npz", "rows")
        write_text(folder / ".data.npz.lock", "")  # what the kill leaves
        raise RuntimeError("killed")
    with run_folder(out, force=False, config=config) as folder:
        with exclusive(folder / "model.eqx"):
            write_text(folder / "model.eqx", "weights")
    assert {p.name for p in out.iterdir()} == {"data.npz", "model.eqx", MARKER}


@pytest.mark.parametrize("force", [False, True])
def test_a_staging_folder_bayes_et_did_not_make_is_never_deleted(force, tmp_path, capsys):
    out = tmp_path / "out"
    staging = _stale_staging(out, {"thesis.tex": b"years of work"}, marked=False)
    fails(capsys, ["cavi", NORMAL_GAMMA, "--out", str(out)] + ["--force"] * force,
          "not made by bayes_et")
    assert (staging / "thesis.tex").read_bytes() == b"years of work"


@pytest.mark.parametrize("force", [False, True])
def test_generate_never_deletes_a_parts_folder_without_manifest(force, work, tmp_path, capsys):
    out = tmp_path / "d.npz"
    parts = tmp_path / "d.npz.parts"
    parts.mkdir()
    (parts / "notes.txt").write_text("mine")
    fails(capsys, ["generate", str(work["gamma"]), "--out", str(out)] + ["--force"] * force,
          "not made by bayes_et")
    assert (parts / "notes.txt").read_text() == "mine"


def test_a_finished_dataset_drops_its_leftover_parts(tmp_path):
    """Killed after OUT.npz was written but before OUT.npz.parts went: the rerun keeps the
    dataset and removes the parts (they would be shipped in the run folder)."""
    target = tmp_path / "data.npz"
    generate(GAMMA, target, progress=False)
    parts = tmp_path / "data.npz.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"fingerprint": "x"}))
    before = target.read_bytes()
    generate_into(GAMMA, target, progress=False)
    assert target.read_bytes() == before and not parts.exists()


# ------------------------------------------------------------------ 3. names that become paths

HOSTILE_NAMES = ["a/../../victim", "../up", ".hidden", "-rf", "a b", "", "x" * 65, "névé",
                 "a\nb", "a\\b", "con:x", "a/b"]


def _two_factor_config(name: str) -> dict:
    return {"model": {
        "factors": {name: {"family": "Gaussian", "eta0": [0.0, -0.5]},
                    "b": {"family": "Gaussian", "eta0": [0.0, -0.5]}},
        "couplings": [{"factors": [name, "b"], "A": [[0.3, 0.0], [0.0, 0.0]]}]}}


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n) for n in HOSTILE_NAMES])
def test_a_factor_name_that_cannot_name_a_file_is_refused_before_work(name, tmp_path, capsys):
    with pytest.raises(ValueError, match="factor name: .* cannot name a file; allowed"):
        load_cavi_config(_two_factor_config(name))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(_two_factor_config(name)))  # JSON is YAML
    before = snapshot(tmp_path.parent)
    fails(capsys, ["cavi", str(config), "--out", str(tmp_path / "out"), f"--region={name}"],
          "cannot name a file")
    assert snapshot(tmp_path.parent) == before


@pytest.mark.parametrize("name", ["mu", "z_1", "Tau-2", "x" * 64, "_"])
def test_names_within_the_rule_are_accepted(name):
    assert check_name("factor name", name) == name
    model = load_cavi_config(_two_factor_config(name)).model
    assert run_cavi(model).converged


# ------------------------------------------------------------------ 4. --force and inputs


@pytest.mark.parametrize("command", ["generate", "train", "cavi"])
def test_force_never_replaces_a_special_file(command, work, tmp_path, capsys):
    out = tmp_path / ("fifo.npz" if command == "generate" else "fifo")
    os.mkfifo(out)
    argv = commands(work, out)[command] + ["--force"]
    fails(capsys, argv, str(out))
    assert stat.S_ISFIFO(out.stat().st_mode)


def test_force_never_writes_over_the_config_it_reads(work, tmp_path, capsys):
    config = write_yaml(tmp_path, "gamma.npz", GAMMA)  # a config with an .npz name
    before = config.read_bytes()
    fails(capsys, ["generate", str(config), "--out", str(config), "--force"], "input")
    assert config.read_bytes() == before


@pytest.mark.parametrize("command", ["train", "extend", "cavi"])
def test_force_never_deletes_a_folder_holding_the_commands_inputs(command, work, tmp_path,
                                                                  capsys):
    out = tmp_path / "out"
    if command == "extend":
        out = work["run"]
        argv = ["extend", str(out), "--data", str(work["data"]), "--out", str(out)]
    elif command == "train":
        out.mkdir()
        data = out / "d.npz"
        data.write_bytes(work["data"].read_bytes())
        (out / MARKER).write_text("{}")
        argv = ["train", str(work["train"]), "--data", str(data), "--out", str(out)]
    else:
        out.mkdir()
        config = out / "c.yaml"
        config.write_text(Path(NORMAL_GAMMA).read_text())
        (out / MARKER).write_text("{}")
        argv = ["cavi", str(config), "--out", str(out)]
    before = snapshot(out)
    fails(capsys, [*argv, "--force"], "an input of this command")
    assert snapshot(out) == before


def test_force_replaces_only_folders_bayes_et_wrote(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("not bayes_et's")
    fails(capsys, ["cavi", NORMAL_GAMMA, "--out", str(out), "--force"],
          "not written by bayes_et")
    assert (out / "notes.txt").read_text() == "not bayes_et's"
    capsys.readouterr()
    assert cli.main(["cavi", NORMAL_GAMMA, "--out", str(tmp_path / "ours")]) == 0
    assert cli.main(["cavi", NORMAL_GAMMA, "--out", str(tmp_path / "ours"), "--force"]) == 0


@pytest.mark.parametrize("out", ["", "."])
def test_an_empty_or_current_folder_out_is_refused(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(capsys, ["cavi", NORMAL_GAMMA, "--out", out, "--force"], "--out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_honour_the_umask(mask, tmp_path):
    old = os.umask(mask)
    try:
        written = write_text(tmp_path / "a.txt", "x")
        generated = generate(GAMMA, tmp_path / "d.npz", progress=False)
    finally:
        os.umask(old)
    for path in (written, generated):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


# ------------------------------------------------------------------ 5. runs carry their data


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_a_run_keeps_its_rows_and_extend_finds_them_from_any_folder(work, tmp_path,
                                                                    monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    generate(GAMMA, first / "d.npz", progress=False)
    generate({**GAMMA, "eta": {"num": 300}, "seed": 5}, second / "d.npz", progress=False)
    monkeypatch.chdir(first)
    run = train_run(TINY_TRAIN, data="d.npz", out="run", progress=False)
    assert len(load_dataset(run / "data.npz")) == 200  # carried in the run
    monkeypatch.chdir(second)  # the same relative path names 300 other rows here
    out = cli.main(["extend", str(first / "run"), "--data", str(work["data"]), "--out",
                    str(tmp_path / "ext")])
    assert out == 0
    metrics = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    assert metrics["num_rows"] == 200 and metrics["added_rows"] == 200


# ------------------------------------------------------------------ 6. convergence


@pytest.mark.parametrize("model", [
    "normal_gamma", pytest.param("quartic_prior", marks=pytest.mark.slow), "random_effects"])
def test_damping_cannot_fake_convergence(model):
    build = {
        "normal_gamma": lambda: examples.normal_gamma(examples.simulate(20, 1.0, 1.0, 0),
                                                      0.0, 1.0, 1.0, 1.0),
        "quartic_prior": lambda: examples.quartic_prior(examples.simulate(5, 0.5, 1.0, 1),
                                                        [0.0, 2.0, 0.0, -1.0], 2.0, 2.0),
        "random_effects": lambda: examples.gaussian_random_effects(
            np.linspace(0.3, 1.5, 12), 0.25, 10.0),
    }[model]()
    exact = run_cavi(build, tol=1e-10, max_iter=2000)
    stuck = run_cavi(build, damping=0.999999, max_iter=50)
    assert exact.converged and not stuck.converged
    slow = run_cavi(build, damping=0.8, tol=1e-10, max_iter=5000)
    assert slow.converged and slow.iterations > exact.iterations
    for name in exact.names:
        np.testing.assert_allclose(slow.eta[name], exact.eta[name], rtol=1e-7, atol=1e-9)


def test_the_cli_says_not_converged_under_heavy_damping(tmp_path, capsys):
    config = yaml.safe_load(Path(NORMAL_GAMMA).read_text())
    config["solver"] = {"damping": 0.999999, "max_iter": 20}
    path = write_yaml(tmp_path, "c.yaml", config)
    assert cli.main(["cavi", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "NOT converged" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "result.json").read_text())["converged"] is False


# ------------------------------------------------------------------ 7. a strict YAML reader

BAD_YAML = [
    ("family: Gamma\nfamily: Beta\n", "duplicate key 'family'"),
    ("family: Gamma\neta: {num: 5, num: 6}\n", "duplicate key 'num'"),
    ("family: Gamma\nsampler:\n  num_chains: 4\n  num_chains: 2\n", "line 3"),
    ("family: Gamma\nseed: !!binary aGVsbG8=\n", "not allowed"),
    ("family: Gamma\nseed: !!set {a, b}\n", "not allowed"),
    ("family: Gamma\nseed: !!timestamp 2024-01-01\n", "not allowed"),
    ("family: Gamma\nseed: !!python/object:os.system {}\n", "YAML error"),
    ("family: Gamma\neta: {num: 5}\nseed: 2024-01-01\n", "config key 'seed': got '2024-01-01'"),
    ("family: Gamma\nseed: 9223372036854775808\n", "config key 'seed'"),
    ("family: Gamma\neta: {num: 1000000000000000000000000000000}\n", "config key 'eta.num'"),
    ("family: Gamma\n1: 2\n", "strings"),
    ("family: Gamma\n\"\\e[2Jkey\": 1\n", "is unknown"),
]


@pytest.mark.parametrize(("text", "message"), BAD_YAML, ids=[m for _, m in BAD_YAML])
def test_the_yaml_reader_is_strict_and_one_line(text, message, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    line = fails(capsys, ["generate", str(config), "--out", str(tmp_path / "d.npz")], message)
    assert "\x1b" not in line  # user text is escaped, never sent to the terminal raw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_an_alias_bomb_is_refused_small(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\nexample: normal_gamma\n")
    fails(capsys, ["cavi", str(config), "--out", str(tmp_path / "out")], "more than")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_cavi", interrupted)
    assert cli.main(["cavi", NORMAL_GAMMA]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "interrupted" in err


# ------------------------------------------------------------------ 8. diverged training


@pytest.mark.parametrize(("architecture", "lr"), [("mlp", 10.0), ("mlp", 3.0),
                                                  ("glu", 10.0), ("quadratic", 10.0)])
def test_a_diverged_training_is_an_error_not_a_run(architecture, lr, work, tmp_path, capsys):
    config = write_yaml(tmp_path, "t.yaml", {
        **TINY_TRAIN, "architecture": architecture,
        "stages": [{"name": "map", "epochs": 3, "lr": lr}, {"name": "vi", "epochs": 1}]})
    fails(capsys, ["train", str(config), "--data", str(work["data"]), "--out",
                   str(tmp_path / "run")], "training diverged", "lr")
    assert not (tmp_path / "run").exists()


def test_a_short_undertrained_run_is_not_called_diverged(work):
    """The tiny runs of the suite stay near the targets' spread: kept, with their metrics."""
    metrics = json.loads((work["run"] / "metrics.json").read_text())
    assert max(metrics["test"]["nrmse"].values()) < 10


# ------------------------------------------------------------------ 9. checks before work


@pytest.mark.parametrize(("section", "message"), [
    ({"cavi": {"example": "quartic_prior", "arguments": {"eta_prior": [0.0, 2.0, 0.0, -1.0],
                                                         "a0": 2.0, "b0": 2.0},
               "data": {"simulate": {"n": 5, "mean": 0.5, "sd": 1.0, "seed": 1}},
               "solver": {"num_draws": 65}}}, "cavi.solver.num_draws"),
    ({"slice": {"start": [0.0, 0.0, 0.0, -1.0], "stop": [0.0, 0.0, 0.0, -1.0]}}, "slice"),
    ({"train": {"architecture": "mlp", "data": "x.npz"}}, "train.data"),
])
def test_run_refuses_crossed_settings_before_generating(section, message, tmp_path, capsys):
    from bayes_et.quickstart import default_config_path

    config = yaml.safe_load(Path(default_config_path()).read_text())
    for key, value in section.items():
        config[key] = {**config[key], **value} if key != "cavi" else value
    path = write_yaml(tmp_path, "run.yaml", config)
    fails(capsys, ["run", str(path), "--out", str(tmp_path / "out")], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


# ------------------------------------------------------------------ 10. inputs checked, sized


PAIR = {"a": {"family": "Gaussian", "eta0": [0.0, -0.5]},
        "b": {"family": "Gaussian", "eta0": [0.0, -0.5]}}


@pytest.mark.parametrize(("change", "message"), [
    ({"likelihood": {"noise_floor": 1e300}}, "likelihood.noise_floor"),
    ({"likelihood": {"init_misfit": 1e300}}, "likelihood.init_misfit"),
    ({"architecture": "convex_potential", "network": {"strong_convexity": -5}},
     "network.strong_convexity"),
    ({"architecture": "geometric_flow", "network": {"rtol": float("nan")}}, "network.rtol"),
    ({"architecture": "glow", "network": {"max_log_scale": 1e9}}, "network.max_log_scale"),
    ({"network": {"width": 4096, "depth": 4096}}, "weights"),
])
def test_network_and_likelihood_options_are_checked_before_work(change, message, work,
                                                                tmp_path, capsys):
    config = write_yaml(tmp_path, "t.yaml", {**TINY_TRAIN, **change})
    fails(capsys, ["train", str(config), "--data", str(work["data"]), "--out",
                   str(tmp_path / "run")], message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("suffix", [".npy", ".txt", ".npz"])
def test_data_that_is_not_a_dataset_is_one_line(suffix, tmp_path, capsys):
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, np.zeros(3))
    else:
        path.write_text("1, 2, 3\n")
    fails(capsys, ["train", str(ROOT / "configs/train/mlp.yaml"), "--data", str(path),
                   "--out", str(tmp_path / "run")], "not an .npz file")


@pytest.mark.parametrize("config", [
    {"model": {"factors": PAIR, "couplings": [{"factors": "ab", "A": [[0.3, 0], [0, 0]]}]}},
    {"model": {"factors": PAIR, "couplings": [{"factors": [["a"], "b"], "A": [[1, 0], [0, 0]]}]}},
    {"model": {"factors": PAIR, "couplings": [{"factors": ["a", "c"], "A": [[1, 0], [0, 0]]}]}},
    {"example": "gaussian_random_effects", "arguments": {"noise_sd": -1, "prior_precision": 1.0},
     "data": [1.0, 2.0]},
    {"example": "gaussian_random_effects", "arguments": {"noise_sd": 0, "prior_precision": 1.0},
     "data": [1.0, 2.0]},
], ids=["string pair", "nested list", "unknown factor", "negative noise_sd", "zero noise_sd"])
def test_a_malformed_model_is_one_line(config, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))
    fails(capsys, ["cavi", str(path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("change", "key"), [
    ({"seed": 2**32}, "seed"), ({"chunk_size": 10**8}, "chunk_size"),
    ({"sampler": {"num_warmup": 10**9}}, "sampler.num_warmup"),
    ({"sampler": {"num_samples": 10**9}}, "sampler.num_samples"),
])
def test_integers_are_bounded_to_what_the_code_holds(change, key, tmp_path, capsys):
    config = write_yaml(tmp_path, "d.yaml", {**GAMMA, "method": "mcmc", **change})
    fails(capsys, ["generate", str(config), "--out", str(tmp_path / "d.npz")],
          f"config key '{key}'")


# ------------------------------------------------------------------ 5b. runs carry their data


def test_a_run_moved_elsewhere_still_extends(work, tmp_path):
    moved = tmp_path / "moved"
    os.rename(train_run(TINY_TRAIN, data=str(work["data"]), out=tmp_path / "run",
                        progress=False), moved)
    assert cli.main(["extend", str(moved), "--data", str(work["data"]), "--out",
                     str(tmp_path / "ext")]) == 0
    assert json.loads((tmp_path / "ext" / "metrics.json").read_text())["num_rows"] == 200


@pytest.mark.parametrize("change", ["rewritten", "deleted"])
def test_a_runs_rows_do_not_follow_its_source(change, tmp_path):
    source = generate(GAMMA, tmp_path / "d.npz", progress=False)
    run = train_run(TINY_TRAIN, data=str(source), out=tmp_path / "run", progress=False)
    before = (run / "data.npz").read_bytes()
    if change == "rewritten":  # in place, as np.savez does: same inode, new bytes
        with open(source, "r+b") as f:
            f.write(b"\0" * 64)
    else:
        source.unlink()
    assert (run / "data.npz").read_bytes() == before
    assert len(load_dataset(run / "data.npz")) == 200


def test_a_data_config_run_holds_its_generated_rows(tmp_path):
    run = train_run(TINY_TRAIN, data=str(write_yaml(tmp_path, "g.yaml", GAMMA)),
                    out=tmp_path / "run", progress=False)
    assert len(load_dataset(run / "data.npz")) == 200
    assert not (run / "data.npz.parts").exists()


# ------------------------------------------------------------------ 6b. convergence


def test_an_update_held_at_the_edge_of_the_space_is_not_converged():
    """log p = -a^2 - b^2 + 3 a^2 b^2: the raw update leaves the space, the shortened one
    barely moves; its small step is no fixed point."""
    from bayes_et.cavi import CAVIModel, Factor
    from bayes_et.expfam import Gaussian

    coupling = np.zeros((2, 2))
    coupling[1, 1] = 3.0
    model = CAVIModel({"a": Factor(Gaussian(), [0.0, -1.0]),
                       "b": Factor(Gaussian(), [0.0, -1.0])}, {("a", "b"): coupling})
    result = run_cavi(model, max_iter=200, tol=1e-3)
    assert not result.converged and result.delta[-1] > 1e-3


# ------------------------------------------------------------------ 10b. amplification


@pytest.mark.parametrize(("text", "fragment"), [
    ("family: \"\\e]0;owned\\a\"\neta: {num: 5}\n", "unknown family"),
    ("family: Gamma\neta: {num: 5, \"\\e[2J\": 1}\n", "is unknown"),
    ("family: Gamma\neta: {num: 5}\nmethod: \"\\e[31mred\"\n", "method"),
])
def test_control_characters_in_user_text_are_escaped(text, fragment, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    line = fails(capsys, ["generate", str(config), "--out", str(tmp_path / "d.npz")], fragment)
    assert "\x1b" not in line and "\x07" not in line


def test_a_huge_value_is_shown_short(tmp_path, capsys):
    config = write_yaml(tmp_path, "c.yaml", {**GAMMA, "method": "x" * 10**6})
    line = fails(capsys, ["generate", str(config), "--out", str(tmp_path / "d.npz")], "method")
    assert len(line) < 2000


def test_a_long_flat_config_is_refused_small(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("family: Gamma\nbig: [" + ", ".join(["1"] * 200_001) + "]\n")
    fails(capsys, ["generate", str(config), "--out", str(tmp_path / "d.npz")], "more than")


@pytest.mark.parametrize(("eta_dim", "network"), [(10**9, {}), (3, {"width": 4096, "depth": 64}),
                                                  (3, {"width": 10**6})])
def test_a_network_too_large_is_refused_before_it_is_built(eta_dim, network):
    import jax

    from bayes_et.et import build

    with pytest.raises(ValueError, match="eta_dim|weights|network.width"):
        build("mlp", eta_dim, network, jax.random.key(0))


# ------------------------------------------------------------------ found by a fresh probe


@pytest.mark.parametrize("argv", [
    ["cavi", "c.yaml", "--region", "-rf"], ["train"], ["bogus"], ["generate", "c.yaml", "--out"],
    ["evaluate", "run"], ["cavi", "c.yaml", "--region-num", "many"], ["run", "--frobnicate"]],
    ids=lambda argv: " ".join(argv))
def test_command_line_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("bayes-et"), err
    assert "usage:" not in err


@pytest.mark.parametrize(("command", "option"), [
    ("cavi", "--out"), ("generate", "--out"), ("train", "--data"), ("train", "--out"),
    ("extend", "--data")])
@pytest.mark.parametrize("bad", ["out\nx", "a\x1b[2Jb", "tab\there"], ids=["newline", "esc", "tab"])
def test_a_path_with_a_control_character_is_refused_before_work(command, option, bad, work,
                                                                 tmp_path, capsys):
    argv = {"cavi": ["cavi", NORMAL_GAMMA], "generate": ["generate", str(work["gamma"])],
            "train": ["train", str(work["train"]), "--data", str(work["data"])],
            "extend": ["extend", str(work["run"]), "--data", str(work["data"])]}[command]
    argv = argv + [option, str(tmp_path / bad)] if option not in argv else [
        *argv[:argv.index(option) + 1], str(tmp_path / bad), *argv[argv.index(option) + 2:]]
    line = fails(capsys, argv, option, "control character")
    assert "\x1b" not in line and "\n" not in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["generate", "train", "cavi", "run"])
def test_yaml_nested_too_deeply_is_one_line(command, work, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    extra = ["--data", str(work["data"])] if command == "train" else []
    fails(capsys, [command, str(config), *extra, "--out", str(tmp_path / "o")],
          "nested too deeply")


@pytest.fixture
def interruptible():
    """SIGINT handled here while the test runs, so that its child starts with SIGINT at the
    default, as from a terminal: where this run was started in the background by a
    non-interactive shell, SIGINT is ignored and a child inherits that (the Unix convention
    for background jobs, which the command keeps)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("delay", [0.5, 2.0])
@pytest.mark.parametrize("command", ["train", "cavi"])
def test_ctrl_c_of_the_command_during_compilation_is_one_line_and_130(command, delay, work,
                                                                       tmp_path,
                                                                       interruptible):
    """A real SIGINT to `python -m bayes_et.cli`, `delay` s after its staging folder
    appears (data load, XLA compilation, the first epochs or sweeps; for cavi inside the
    sampling provider's host callback): never ignored (a probe saw a training go on to the
    end), never a wrapped traceback or a crash in the teardown (status -11), one line."""
    if command == "train":
        config = write_yaml(tmp_path, "t.yaml", {**TINY_TRAIN, "stages": [
            {"name": "map", "epochs": 100_000, "patience": 100_000}]})
        argv = ["train", str(config), "--data", str(work["data"])]
    else:
        config = yaml.safe_load(Path(NORMAL_GAMMA).read_text())
        config["providers"] = {"mu": "sampling", "tau": "exact"}
        argv = ["cavi", str(write_yaml(tmp_path, "c.yaml", config))]
    proc = subprocess.Popen([sys.executable, "-m", "bayes_et.cli", *argv, "--out", "out"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    staging = tmp_path / ".out.partial"
    try:
        while proc.poll() is None and not staging.exists():
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:  # a command that ignored the signal is not left running after the test
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err[-3000:]
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip() and "%|" not in x]
    assert len(lines) == 1 and "interrupted" in lines[0], err[-500:]
    assert not (tmp_path / "out").exists()
