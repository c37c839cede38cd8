import json

import equinox as eqx
import jax
import numpy as np
import pytest

import bayes_et.params as bp


def build(width, depth):
    return bp.BayesianMLP(2, 1, width, depth, key=jax.random.key(0))


def test_round_trip_is_bit_identical(tmp_path):
    model = bp.BayesianMLP(2, 1, 8, 2, key=jax.random.key(7), init_stdv=0.05)
    path = bp.save_model(tmp_path / "m.eqx", model, width=8, depth=2)
    loaded = bp.load_model(path, build=build)
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(loaded), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert eqx.tree_equal(model, bp.load_model(path, like=build(8, 2)))
    header = bp.load_header(path)
    assert header["hyperparams"] == {"width": 8, "depth": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.eqx"]  # no temporary left behind
    assert json.loads(path.read_bytes().split(b"\n")[0])["format"] == "bayes_et.model/1"


def test_bad_inputs(tmp_path):
    model = build(4, 1)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        bp.save_model(tmp_path / "m.eqx", model, fn=print)
    assert not any(tmp_path.iterdir())
    (tmp_path / "junk.eqx").write_bytes(b"not a model\n")
    with pytest.raises(ValueError, match="not a bayes_et model file"):
        bp.load_model(tmp_path / "junk.eqx", like=model)
    bp.save_model(tmp_path / "m.eqx", model)
    with pytest.raises(ValueError, match="template"):
        bp.load_model(tmp_path / "m.eqx")
