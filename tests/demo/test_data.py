"""The two datasets: built locally, split as documented, global random state untouched."""

from __future__ import annotations

import random

import mnist1d
import mnist1d.data
import numpy as np
import pytest
import torch
from autodrop_demo import _data, load_digits_split, load_mnist1d


def test_mnist1d_is_generated_locally_and_never_downloaded(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("get_dataset downloads: it must never be called")

    monkeypatch.setattr(mnist1d.data, "get_dataset", refuse)
    monkeypatch.setattr(mnist1d, "get_dataset", refuse)
    _data._mnist1d_arrays.cache_clear()
    split = load_mnist1d()
    assert split.x_train.shape == (4000, 40) and split.x_test.shape == (1000, 40)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert set(split.y_test.tolist()) == set(range(10))


def test_building_mnist1d_restores_python_and_numpy_random_state():
    _data._mnist1d_arrays.cache_clear()
    random.seed(5)
    np.random.seed(5)
    py, nps = random.getstate(), np.random.get_state()
    load_mnist1d()
    assert random.getstate() == py
    assert np.array_equal(np.random.get_state()[1], nps[1]) and np.random.get_state()[2] == nps[2]


def test_the_validation_split_is_carved_from_the_training_rows():
    whole, carved = load_mnist1d(), load_mnist1d(0.1)
    assert len(carved.y_val) == 400 and len(carved.y_train) == 3600
    assert torch.equal(torch.cat([carved.x_train, carved.x_val]), whole.x_train)
    assert torch.equal(carved.x_test, whole.x_test)


def test_digits_are_split_at_a_fixed_seed_without_touching_numpy_global_state():
    np.random.seed(3)
    state = np.random.get_state()
    a, b = load_digits_split(0.1), load_digits_split(0.1)
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(a.x_train, b.x_train)
    assert len(a.y_test) == 539 and len(a.y_train) + len(a.y_val) == 1797 - 539
    assert float(a.x_train.max()) <= 1.0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_a_validation_fraction_outside_zero_one_is_rejected_with_its_value(fraction):
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\), got"):
        load_mnist1d(fraction)
