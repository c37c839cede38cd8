import numpy as np
import pytest

from bayes_et.data import Dataset, design_eta, load_dataset, save_dataset, split_dataset
from bayes_et.expfam import Gamma, Gaussian


def make(n=20, flagged=(3, 7)):
    rng = np.random.default_rng(0)
    flags = np.zeros(n, np.int32)
    flags[list(flagged)] = 1
    return Dataset(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)), np.ones((n, 2, 2)),
                   np.full((n, 2), 100.0), np.ones((n, 2)), flags, {"note": "test"})


def test_save_load_round_trip(tmp_path):
    ds = make()
    save_dataset(tmp_path / "d.npz", ds)
    back = load_dataset(tmp_path / "d.npz")
    for name in ("eta", "mu_T", "cov_TT", "ess", "rhat", "flags"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.metadata["note"] == "test" and back.metadata["invalid_rows"]["total"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(tmp_path / "missing.npz")


def test_split_is_disjoint_seeded_and_drops_flagged():
    ds = make()
    train, val, test = split_dataset(ds, (0.8, 0.1, 0.1), seed=1)
    rows = [set(map(tuple, part.eta)) for part in (train, val, test)]
    assert sum(map(len, rows)) == 18 and not (rows[0] & rows[1] or rows[0] & rows[2])
    assert all(np.all(part.flags == 0) for part in (train, val, test))
    again = split_dataset(ds, (0.8, 0.1, 0.1), seed=1)[0]
    np.testing.assert_array_equal(again.eta, train.eta)
    assert len(split_dataset(ds, (0.5, 0.5), include_flagged=True)[0]) == 10
    with pytest.raises(ValueError, match="sum to 1"):
        split_dataset(ds, (0.8, 0.3))


def test_designs_stay_in_box_and_valid():
    family = Gamma()
    lo, hi = np.array([0.5, -5.0]), np.array([5.0, -0.2])
    for design in ("uniform", "log_uniform"):
        eta = design_eta(family, 500, design=design, box=(lo, hi), seed=0)
        assert eta.shape == (500, 2) and np.all(eta >= lo) and np.all(eta <= hi)
        assert np.all(np.asarray(family.is_valid_eta(eta)))
    grid = design_eta(Gaussian(), 5, design="grid")
    assert grid.shape == (25, 2)
    with pytest.raises(ValueError, match="one sign"):
        design_eta(Gaussian(), 5, design="log_uniform")
    with pytest.raises(ValueError, match="outside the natural-parameter space"):
        design_eta(family, 5, box=(np.array([0.0, 0.5]), np.array([1.0, 2.0])))
