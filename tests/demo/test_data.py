"""The datasets: built locally, cached on disk, split as documented, global random state untouched."""

from __future__ import annotations

import random

import mnist1d
import mnist1d.data
import numpy as np
import pytest
import torch
from autodrop_demo import _data, load_digits_augmented, load_digits_split, load_mnist1d


def test_mnist1d_is_generated_locally_and_never_downloaded(monkeypatch):
    monkeypatch.setenv("AUTODROP_CACHE", "off")
    def refuse(*args, **kwargs):
        raise AssertionError("get_dataset downloads: it must never be called")

    monkeypatch.setattr(mnist1d.data, "get_dataset", refuse)
    monkeypatch.setattr(mnist1d, "get_dataset", refuse)
    _data._mnist1d_arrays.cache_clear()
    split = load_mnist1d()
    assert split.x_train.shape == (4000, 40) and split.x_test.shape == (1000, 40)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert set(split.y_test.tolist()) == set(range(10))


def test_building_mnist1d_restores_python_and_numpy_random_state(monkeypatch):
    monkeypatch.setenv("AUTODROP_CACHE", "off")  # make sure make_dataset runs
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


def test_generated_mnist1d_is_cached_on_disk_and_reloaded_identically(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTODROP_CACHE", str(tmp_path))
    _data._mnist1d_arrays.cache_clear()
    fresh = load_mnist1d(num_samples=500)
    files = list(tmp_path.glob("mnist1d-n500-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    _data._mnist1d_arrays.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("a cached set must not be generated again")

    monkeypatch.setattr(_data, "_generate_mnist1d", refuse)
    cached = load_mnist1d(num_samples=500)
    assert torch.equal(cached.x_train, fresh.x_train) and torch.equal(cached.y_test, fresh.y_test)
    assert len(cached.y_train) == 400 and len(cached.y_test) == 100


def test_a_damaged_cache_file_is_regenerated(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTODROP_CACHE", str(tmp_path))
    _data._mnist1d_arrays.cache_clear()
    fresh = load_mnist1d(num_samples=300)
    (path,) = tmp_path.glob("mnist1d-n300-*.npz")
    path.write_bytes(b"not an npz file")
    _data._mnist1d_arrays.cache_clear()
    assert torch.equal(load_mnist1d(num_samples=300).x_train, fresh.x_train)


def test_the_jittered_digits_keep_test_variants_apart_from_training_images():
    split = load_digits_augmented(0.1)
    assert len(split.y_train) + len(split.y_val) == 1258 * 12 and len(split.y_test) == 539 * 4
    assert float(split.x_train.min()) >= 0.0 and float(split.x_train.max()) <= 1.0
    assert torch.equal(split.x_train, load_digits_augmented(0.1).x_train)  # fixed seeds
    base = load_digits_split()
    assert torch.bincount(split.y_test).tolist() == (torch.bincount(base.y_test) * 4).tolist()
