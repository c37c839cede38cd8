"""Fault injection: bad input through the CLI and the API, damaged files, planted links.

Each scenario asserts exit status 2 with one line naming the key, file or value and no
traceback (or the correct result), and that files that should not change are
byte-identical afterwards."""

import json
import os
import sys
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from bayes_et import cli
from bayes_et.data import generate, load_dataset, save_dataset
from bayes_et.params import load_header, save_model
from bayes_et.params._serialisation import _digest
from bayes_et.train import load_run, train_run

ROOT = Path(__file__).resolve().parents[2]

TINY_TRAIN = {"architecture": "mlp", "network": {"width": 8, "depth": 1}, "batch_size": 64,
              "stages": [{"name": "map", "epochs": 3}, {"name": "vi", "epochs": 1}],
              "predictive": {"num_samples": 8}, "validation": {"num_samples": 4}}
GAMMA = {"family": "Gamma", "eta": {"num": 200}, "method": "closed_form"}


def write_yaml(folder: Path, name: str, data) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links as their target text), by relative path."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(folder))] = os.readlink(path).encode()
        elif path.is_file():
            out[str(path.relative_to(folder))] = path.read_bytes()
    return out


def fails(capsys, argv: list[str], *fragments: str) -> str:
    """The CLI exits 2 with one line naming each fragment, and no traceback."""
    capsys.readouterr()  # what earlier commands printed
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out, captured.err
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("bayes-et "), captured.err  # bars aside
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A Gamma dataset and a tiny trained run on it, shared by the scenarios (read-only)."""
    root = tmp_path_factory.mktemp("faults")
    data = generate(GAMMA, root / "gamma.npz", progress=False)
    run = train_run(TINY_TRAIN, data=str(data), out=root / "run", progress=False)
    beta = generate({"family": "Beta", "eta": {"num": 50}, "method": "closed_form"},
                    root / "beta.npz", progress=False)
    return {"root": root, "data": data, "run": run, "beta": beta}


# ------------------------------------------------------------------ settings (one layer)

BAD_DATA_CONFIGS = [
    ({"sampler": {"ess_min": float("inf")}}, "config key 'sampler.ess_min': got inf"),
    ({"sampler": {"ess_min": float("nan")}}, "config key 'sampler.ess_min': got nan"),
    ({"sampler": {"rhat_max": 0.5}}, "config key 'sampler.rhat_max': got 0.5"),
    ({"sampler": {"num_chains": 1}}, "config key 'sampler.num_chains': got 1"),
    ({"sampler": {"ess_min": 1e9}}, "every eta is flagged"),
    ({"sampler": {"target_accept": "high"}}, "config key 'sampler.target_accept'"),
    ({"eta": {"num": True}}, "config key 'eta.num': got True"),
    ({"eta": {"num": 0}}, "config key 'eta.num': got 0"),
    ({"eta": {"num": 10, "design": "sobol"}}, "config key 'eta.design'"),
    ({"chunk_size": 1.5}, "config key 'chunk_size': got 1.5"),
    ({"colour": "red"}, "config key 'colour' is unknown"),
    ({"family": "Gama"}, "family.name: unknown family 'Gama'"),
    # found by an adversarial probe: overflowing boxes, relative imports, huge dimensions
    ({"eta": {"num": 8, "box": {"x": [-1e308, 1e308]}}}, "'eta.box.x': got [-1e+308, 1e+308]"),
    ({"eta": {"num": 8, "box": {"log_x": [-1.7e308, 1.7e308]}}}, "'eta.box.log_x'"),
    ({"family": {"import": "../../etc/passwd:X"}}, "family.import: cannot import"),
    ({"family": {"import": ".relative:X"}}, "family.import: cannot import"),
    ({"family": {"name": "MultivariateNormal", "args": {"d": 10**6}}}, "d must be an int in"),
    ({"family": {"name": "LaplaceProduct", "args": {"d": 5000}}}, "d must be an int in"),
]


@pytest.mark.parametrize("change, message", BAD_DATA_CONFIGS,
                         ids=[m for _, m in BAD_DATA_CONFIGS])
def test_bad_data_config_is_one_line_and_writes_nothing(change, message, tmp_path, capsys):
    config = write_yaml(tmp_path, "bad.yaml", {**GAMMA, "method": "mcmc", **change})
    before = snapshot(tmp_path)
    fails(capsys, ["generate", str(config), "--out", str(tmp_path / "d.npz")], message)
    assert snapshot(tmp_path) == before


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("family: Gamma\neta: {num: 5\nmethod: closed_form\n")
    fails(capsys, ["generate", str(config)], "broken.yaml", "line 3, column", "YAML syntax")


def test_config_that_is_not_a_mapping(tmp_path, capsys):
    config = tmp_path / "list.yaml"
    config.write_text("- family\n- Gamma\n")
    fails(capsys, ["generate", str(config), "--out", str(tmp_path / "x.npz")],
          "config key '<top level>'", "a mapping")


def test_missing_config_file(tmp_path, capsys):
    fails(capsys, ["train", str(tmp_path / "none.yaml")], "no such file")


@pytest.mark.parametrize("change, message", [
    ({"split": [0.5, 0.5, 0.5]}, "config key 'split'"),
    ({"stages": [{"name": "map", "epochs": 3, "lr": -1}]}, "config key 'stages[0].lr': got -1"),
    ({"batch_size": "big"}, "config key 'batch_size': got 'big'"),
    ({"likelihood": {"noise_floor": float("nan")}}, "config key 'likelihood.noise_floor'"),
])
def test_bad_train_config_fails_before_any_work(change, message, work, tmp_path, capsys):
    config = write_yaml(tmp_path, "t.yaml", {**TINY_TRAIN, **change})
    fails(capsys, ["train", str(config), "--data", str(work["data"]), "--out",
                   str(tmp_path / "run")], message)
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.parametrize("providers, solver, message", [
    ({"mu": {"network": "RUN", "max_spread": "big"}}, {}, "'providers.mu.max_spread': got 'big'"),
    ({"mu": {"sampling": {"num_chains": 1}}}, {}, "'providers.mu.sampling.num_chains': got 1"),
    ({}, {"tol": float("nan")}, "config key 'solver.tol': got nan"),
    ({}, {"max_iter": 0}, "config key 'solver.max_iter': got 0"),
])
def test_bad_cavi_config_fails_at_load(providers, solver, message, work, tmp_path, capsys):
    providers = {k: ({**v, "network": str(work["run"])} if "network" in v else v)
                 for k, v in providers.items()}
    config = write_yaml(tmp_path, "c.yaml", {
        "example": "normal_gamma", "data": [0.1, 0.5, 1.2],
        "arguments": {"mu0": 0.0, "lambda0": 1.0, "a0": 1.0, "b0": 1.0},
        "providers": providers, "solver": solver})
    fails(capsys, ["cavi", str(config), "--out", str(tmp_path / "out")], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("example", "data"), [
    ("normal_gamma", [1e308, -1e308]), ("normal_gamma", [1e200, 1.0]),
    ("quartic_prior", [-3e154, 2.0, 1e155])])
def test_cavi_data_that_overflows_is_one_line_without_warnings(example, data, tmp_path,
                                                               capsys):
    """Data whose squares overflow: the non-finite eta0 is refused in one line, and no
    numpy warning reaches the user first (here any RuntimeWarning would raise)."""
    config = yaml.safe_load((ROOT / "configs" / "cavi" / f"{example}.yaml").read_text())
    config["data"] = data
    path = write_yaml(tmp_path, "c.yaml", config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fails(capsys, ["cavi", str(path), "--out", str(tmp_path / "out")], "must be finite")
    assert not (tmp_path / "out").exists()


def test_box_without_valid_eta_leaves_nothing_blocking(tmp_path, capsys):
    bad = write_yaml(tmp_path, "bad.yaml", {"family": "Gamma", "method": "closed_form", "eta": {
        "num": 10, "box": {"log_x": [-5.0, -2.0], "x": [-1.0, 1.0]}}})
    out = tmp_path / "d.npz"
    fails(capsys, ["generate", str(bad), "--out", str(out)], "eta.box")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
    good = write_yaml(tmp_path, "good.yaml", {**GAMMA, "eta": {"num": 10}})
    assert cli.main(["generate", str(good), "--out", str(out)]) == 0  # no --force needed


# ------------------------------------------------------------------ the run-folder layer


def test_generate_never_replaces_without_force(work, tmp_path, capsys):
    out = tmp_path / "d.npz"
    out.write_bytes(work["data"].read_bytes())
    config = write_yaml(tmp_path, "other.yaml", {**GAMMA, "eta": {"num": 20}})
    before = snapshot(tmp_path)
    fails(capsys, ["generate", str(config), "--out", str(out)], "exists; pass --force")
    fails(capsys, ["generate", str(config), "--out", str(out), "--resume"],
          "finished and was made from another config")
    assert snapshot(tmp_path) == before
    assert cli.main(["generate", str(config), "--out", str(out), "--force"]) == 0
    assert len(load_dataset(out)) == 20


def test_resume_onto_a_finished_file_of_the_same_config_keeps_it(work, tmp_path):
    out = tmp_path / "d.npz"
    out.write_bytes(work["data"].read_bytes())
    assert generate(GAMMA, out, resume=True, progress=False) == out
    assert out.read_bytes() == work["data"].read_bytes()


@pytest.mark.parametrize("target, message", [
    ("folder", "is a folder or a link"),
    ("under_file/d.npz", "is a file, so"),
])
def test_output_paths_are_checked_before_work(target, message, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "under_file").write_text("x")
    config = write_yaml(tmp_path, "g.yaml", GAMMA)
    fails(capsys, ["generate", str(config), "--out", str(tmp_path / target)], message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    config = write_yaml(tmp_path, "g.yaml", GAMMA)
    fails(capsys, ["generate", str(config), "--out", str(locked / "d.npz")], "not writable")


def test_planted_links_at_temporary_names_are_not_followed(work, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in (".d.npz.tmp", ".result.json.tmp", ".d.npz.parts"):
        (tmp_path / name).symlink_to(victim)
    generate(GAMMA, tmp_path / "d.npz", progress=False)
    assert victim.read_text() == "keep me" and len(load_dataset(tmp_path / "d.npz")) == 200


def test_train_never_replaces_a_run_without_force_and_force_replaces_it_whole(work, tmp_path,
                                                                             capsys):
    run = _copy_run(work, tmp_path)
    config = write_yaml(tmp_path, "t.yaml", TINY_TRAIN)
    (run / "evaluation-old.json").write_text("{}")
    before = snapshot(run)
    fails(capsys, ["train", str(config), "--data", str(work["data"]), "--out", str(run)],
          "exists and is not empty; pass --force")
    assert snapshot(run) == before
    assert cli.main(["train", str(config), "--data", str(work["data"]), "--out", str(run),
                     "--force"]) == 0
    assert not (run / "evaluation-old.json").exists()  # no stale files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "t.yaml"]


def test_cavi_never_replaces_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    fails(capsys, ["cavi", "configs/cavi/normal_gamma.yaml", "--out", str(out)],
          "exists and is not empty")
    assert (out / "mine.txt").read_text() == "mine"


def test_run_never_replaces_an_existing_data_npz_without_force(work, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "data.npz").write_bytes(work["data"].read_bytes())
    before = snapshot(out)
    fails(capsys, ["run", "--out", str(out)], "exists and is not empty; pass --force")
    assert snapshot(out) == before


def test_evaluate_twice_needs_force(work, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for path in work["run"].iterdir():
        (run / path.name).write_bytes(path.read_bytes())
    assert cli.main(["evaluate", str(run), "--data", str(work["data"])]) == 0
    before = snapshot(run)
    fails(capsys, ["evaluate", str(run), "--data", str(work["data"])], "pass --force")
    assert snapshot(run) == before
    assert cli.main(["evaluate", str(run), "--data", str(work["data"]), "--force"]) == 0


def test_versions_are_recorded_in_every_file(work, tmp_path):
    from PIL import Image

    from bayes_et.params import load_header

    assert "jax" in load_dataset(work["data"]).metadata["versions"]
    assert "jax" in load_header(work["run"] / "model.eqx")["versions"]
    assert "jax" in json.loads((work["run"] / "metrics.json").read_text())["versions"]
    assert "jax" in Image.open(work["run"] / "calibration.png").text["Software"]


# ------------------------------------------------------------------ data files


def _damaged(work, tmp_path, **changes) -> Path:
    data = load_dataset(work["data"], check=False)
    arrays = {k: np.array(getattr(data, k)) for k in ("eta", "mu_T", "cov_TT", "ess", "rhat",
                                                       "flags")}
    for name, change in changes.items():
        arrays[name] = change(arrays[name])
    path = tmp_path / "damaged.npz"
    np.savez(path, **arrays, metadata=np.array(json.dumps(data.metadata)))
    return path


def _nan_rows(a):
    a[:10] = np.nan
    return a


def _zero_ess(a):
    a[:10] = 0.0
    return a


def _outside(a):
    a[:10, 1] = 1.0  # Gamma needs eta_x < 0
    return a


def test_nan_rows_are_excluded_from_training_and_counted(work, tmp_path):
    path = _damaged(work, tmp_path, mu_T=_nan_rows)
    run = train_run(TINY_TRAIN, data=str(path), out=tmp_path / "run", progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["excluded_rows"]["invalid"] == 10 and metrics["num_rows"] == 200
    assert metrics["num_train"] + metrics["num_validation"] + metrics["num_test"] == 190
    assert np.isfinite(metrics["test"]["mean_z2"]) and np.isfinite(metrics["test"]["crps"])


@pytest.mark.parametrize("changes, reason", [
    ({"ess": _zero_ess}, "ess_not_positive"),
    ({"eta": _outside}, "eta_outside_space"),
], ids=["ess_zero", "eta_outside"])
def test_bad_rows_are_flagged_and_left_out_of_every_split(changes, reason, work, tmp_path):
    from bayes_et.data import DataFlag, flag_invalid_rows, split_dataset
    from bayes_et.expfam import Gamma

    data = flag_invalid_rows(load_dataset(_damaged(work, tmp_path, **changes)), Gamma())
    assert data.metadata["invalid_rows"][reason] == 10
    assert np.all(data.flags[:10] & DataFlag.INVALID) and not np.any(data.flags[10:])
    splits = split_dataset(data)
    assert sum(len(s) for s in splits) == 190
    assert all(np.all(s.ess > 0) and np.all(np.asarray(Gamma().is_valid_eta(s.eta)))
               for s in splits)


def test_a_dataset_with_no_usable_rows_is_refused(work, tmp_path, capsys):
    path = _damaged(work, tmp_path, ess=lambda a: np.zeros_like(a))
    config = write_yaml(tmp_path, "t.yaml", TINY_TRAIN)
    fails(capsys, ["train", str(config), "--data", str(path), "--out", str(tmp_path / "r")],
          "0 usable rows of 200")


@pytest.mark.parametrize("changes, message", [
    ({"flags": lambda a: a[:10]}, "flags has shape (10,)"),
    ({"cov_TT": lambda a: a[:, :1]}, "cov_TT has shape (200, 1, 2)"),
    ({"eta": lambda a: a.astype(str)}, "eta has shape"),
])
def test_inconsistent_arrays_are_refused(changes, message, work, tmp_path, capsys):
    path = _damaged(work, tmp_path, **changes)
    config = write_yaml(tmp_path, "t.yaml", TINY_TRAIN)
    fails(capsys, ["train", str(config), "--data", str(path), "--out", str(tmp_path / "r")],
          message)


def test_truncated_dataset(work, tmp_path, capsys):
    path = tmp_path / "cut.npz"
    path.write_bytes(work["data"].read_bytes()[:3000])
    fails(capsys, ["evaluate", str(work["run"]), "--data", str(path)], "truncated or not an")


def test_garbled_metadata(work, tmp_path, capsys):
    data = load_dataset(work["data"])
    path = tmp_path / "garbled.npz"
    np.savez(path, **{k: getattr(data, k) for k in ("eta", "mu_T", "cov_TT", "ess", "rhat",
                                                     "flags")}, metadata=np.array("{not json"))
    fails(capsys, ["evaluate", str(work["run"]), "--data", str(path)], "garbled metadata")


def test_not_a_dataset(work, tmp_path, capsys):
    path = tmp_path / "plain.npz"
    np.savez(path, x=np.zeros(3))
    fails(capsys, ["evaluate", str(work["run"]), "--data", str(path)], "lacks arrays")


def test_evaluate_refuses_data_of_another_family(work, capsys):
    """Beta and Gamma both have 2-dim eta: compared by name and arguments, not dimension."""
    fails(capsys, ["evaluate", str(work["run"]), "--data", str(work["beta"])],
          "holds {'name': 'Beta'", "'name': 'Gamma'}")


def test_family_arguments_count():
    from bayes_et.expfam import MultivariateNormal, same_family

    assert same_family(MultivariateNormal(3), {"name": "MultivariateNormal", "args": {"d": 3}})
    assert not same_family(MultivariateNormal(3), MultivariateNormal(2))
    assert not same_family(MultivariateNormal(3), {"name": "Gamma"})


# ------------------------------------------------------------------ model files


def _copy_run(work, tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for path in work["run"].iterdir():
        (run / path.name).write_bytes(path.read_bytes())
    return run


def _rewrite_header(path: Path, change, rehash: bool) -> None:
    line, _, leaves = path.read_bytes().partition(b"\n")
    header = json.loads(line)
    change(header)
    if rehash:
        header["sha256"] = _digest(header, leaves)
    path.write_bytes(json.dumps(header).encode() + b"\n" + leaves)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "content hash mismatch"),
    (lambda p: _rewrite_header(p, lambda h: h["hyperparams"].update(
        family={"name": "Beta", "args": {}}), rehash=False), "content hash mismatch"),
    (lambda p: p.write_bytes(p.read_bytes()[:-8] + bytes(b ^ 0xFF for b in p.read_bytes()[-8:])),
     "content hash mismatch"),  # flipped bits: never the bytes that were there
    (lambda p: p.write_bytes(b"{not json\n" + p.read_bytes()), "not a bayes_et model file"),
    (lambda p: _rewrite_header(p, lambda h: h["hyperparams"].update(eta_dim=3), rehash=True),
     "header field 'stat_names'"),
    (lambda p: _rewrite_header(p, lambda h: h["hyperparams"].update(architecture="cnn"),
                               rehash=True), "header field 'architecture'"),
    (lambda p: _rewrite_header(p, lambda h: h["hyperparams"].update(
        residual_field_per_coordinate="yes"), rehash=True),
     "header field 'residual_field_per_coordinate'"),
    (lambda p: _rewrite_header(p, lambda h: h["hyperparams"].update(
        slope_squares=[["x", "x"]]), rehash=True), "header field 'slope_squares'"),
    (lambda p: _rewrite_header(p, lambda h: h["hyperparams"].update(
        slope_squares=[[["x"], "x"]]), rehash=True), "header field 'slope_squares'"),
], ids=["truncated", "relabelled", "weights_altered", "garbled", "eta_dim", "architecture",
        "field_lengths", "slope_squares", "slope_squares_unhashable"])
def test_damaged_model_files_are_refused(damage, message, work, tmp_path, capsys):
    run = _copy_run(work, tmp_path)
    damage(run / "model.eqx")
    fails(capsys, ["evaluate", str(run), "--data", str(work["data"])], message)
    with pytest.raises(ValueError, match=message.replace("'", ".")):
        load_run(run)


def test_a_field_of_an_earlier_version_with_one_length_loads_as_that_length_repeated(
        work, tmp_path):
    run = _copy_run(work, tmp_path)
    model = load_run(run).model
    d = model.field.z.shape[1]
    one = model.field.log_lengthscale[:, 1]  # the second coordinate's, for every coordinate
    repeated = eqx.tree_at(lambda m: m.field.log_lengthscale, model,
                           jnp.repeat(one[:, None], d, 1))
    header = load_header(run / "model.eqx")["hyperparams"]
    del header["residual_field_per_coordinate"]  # as an earlier version wrote it
    save_model(run / "model.eqx", eqx.tree_at(lambda m: m.field.log_lengthscale, model, one),
               **header)
    loaded = load_run(run).model.field
    z = jnp.asarray(np.random.default_rng(0).normal(size=(5, d)), jnp.float32)
    for method in ("__call__", "variance", "gradient"):
        np.testing.assert_array_equal(jax.vmap(getattr(loaded, method))(z),
                                      jax.vmap(getattr(repeated.field, method))(z))


# ------------------------------------------------------------------ no code from files

EVIL = '''
from pathlib import Path
Path(__file__).with_name("imported.txt").write_text("ran")
from bayes_et.expfam import Gamma
class X(Gamma):
    pass
'''


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    (tmp_path / "evil_mod.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "imported.txt"
    sys.modules.pop("evil_mod", None)


def test_a_dataset_does_not_choose_what_is_imported(work, tmp_path, evil_module, capsys):
    data = load_dataset(work["data"])
    path = tmp_path / "evil.npz"
    save_dataset(path, type(data)(data.eta, data.mu_T, data.cov_TT, data.ess, data.rhat,
                                  data.flags, {**data.metadata,
                                               "family": {"import": "evil_mod:X", "args": {}}}))
    config = write_yaml(tmp_path, "t.yaml", TINY_TRAIN)
    fails(capsys, ["train", str(config), "--data", str(path), "--out", str(tmp_path / "r")],
          "'evil_mod:X'", "never chooses what is imported")
    assert not evil_module.exists() and "evil_mod" not in sys.modules
    # the user asks for it by name: then it is imported (their choice, not the file's)
    assert cli.main(["train", str(config), "--data", str(path), "--out", str(tmp_path / "r"),
                     "--family", "evil_mod:X"]) == 0
    assert evil_module.exists()


def test_a_model_file_does_not_choose_what_is_imported(work, tmp_path, evil_module):
    run = _copy_run(work, tmp_path)
    _rewrite_header(run / "model.eqx", lambda h: h["hyperparams"].update(
        family={"import": "evil_mod:X", "args": {}}), rehash=True)
    with pytest.raises(ValueError, match="never chooses what is imported"):
        load_run(run)
    assert not evil_module.exists()


# ------------------------------------------------------------------ numbers that lie


def test_quadrature_refuses_instead_of_answering_wrong(tmp_path, capsys):
    config = write_yaml(tmp_path, "g.yaml", {"family": "Gamma", "method": "quadrature", "eta": {
        "num": 4, "box": {"log_x": [-1 + 1e-7, -1 + 1e-7], "x": [-1.0, -1.0]}}})
    fails(capsys, ["generate", str(config), "--out", str(tmp_path / "g.npz")],
          "mass reaches the end of the search grid")


def test_a_network_answering_nan_is_flagged_and_the_fallback_answers(work):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from bayes_et.cavi import ExactMoments, NetworkMoments, WithFallback, examples, run_cavi
    from bayes_et.expfam import Gamma

    model = load_run(work["run"]).model
    broken = jax.tree_util.tree_map(lambda a: jnp.full_like(a, jnp.nan) if eqx.is_inexact_array(
        a) and a.ndim == 2 else a, model)
    provider = WithFallback(NetworkMoments(broken, family=Gamma()), ExactMoments(Gamma()))
    x = examples.simulate(20, 1.0, 1.0, 0)
    problem = examples.normal_gamma(x, mu0=0.0, lambda0=1.0, a0=1.0, b0=1.0)
    result = run_cavi(problem, {"tau": provider})
    exact = run_cavi(problem)
    assert "non_finite" in result.flags["tau"] and "answered_by_fallback" in result.flags["tau"]
    np.testing.assert_allclose(result.eta["tau"], exact.eta["tau"], rtol=1e-6)
