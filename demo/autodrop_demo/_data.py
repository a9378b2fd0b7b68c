"""The datasets of the demo and the benchmark, built locally and kept off the global RNGs.

MNIST-1D comes from ``mnist1d.data.make_dataset`` with the package's default arguments
(5000 signals of length 40, 4000 for training, 1000 for test, generated from seed 42),
or with more samples (``num_samples``; every other argument at its default), which makes
a task on which lr drops matter.
``make_dataset`` reseeds Python's ``random`` and numpy's global generator; this module
saves both states and puts them back, so that a caller's random streams are unchanged.
The digits come from scikit-learn's bundled ``load_digits`` (no download either).

Generating MNIST-1D takes seconds per thousand signals, so a generated set is kept as
an ``.npz`` file under ``$AUTODROP_CACHE`` (default ``$XDG_CACHE_HOME/autodrop``, else
``~/.cache/autodrop``) and reused by later runs and by the benchmark's worker processes;
``AUTODROP_CACHE=off`` disables the cache. The file name carries every generator
argument, so a cached set is always the one ``make_dataset`` would produce.

This module must not download anything (never ``mnist1d.get_dataset``) and must not
leave any global random state changed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Split", "load_digits_augmented", "load_digits_split", "load_mnist1d"]


@dataclass(frozen=True)
class Split:
    """Tensors of one task: training, validation (possibly empty) and test sets.

    Attributes:
        name: a short name for reports ("mnist1d", "digits").
        x_train, y_train: inputs (float32) and integer labels used for the gradient steps.
        x_val, y_val: a validation split carved from the training data (may hold 0 rows).
        x_test, y_test: the held-out test set.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device) -> Split:
        """The same split with every tensor moved to ``device``."""
        tensors = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return Split(name=self.name, **tensors)


def _carve(
    name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, val_fraction: float
) -> Split:
    """Split the last ``val_fraction`` of the (already shuffled) training rows off as validation."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    n_val = round(len(y) * val_fraction)
    cut = len(y) - n_val

    def f32(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32))  # a fresh, writable copy

    def i64(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.int64))

    return Split(
        name=name,
        x_train=f32(x[:cut]), y_train=i64(y[:cut]),
        x_val=f32(x[cut:]), y_val=i64(y[cut:]),
        x_test=f32(x_test), y_test=i64(y_test),
    )


def _cache_folder() -> Path | None:
    setting = os.environ.get("AUTODROP_CACHE", "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autodrop"


def _generate_mnist1d(args: object) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset

    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _store(path: Path, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` to ``path`` atomically; a failure only costs the next run the generation time."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **data)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass  # the cache is an optimisation: a read-only home must not stop a run
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(num_samples: int = 5000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.num_samples = num_samples
    settings = {k: v for k, v in sorted(vars(args).items()) if k != "url"}
    digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    folder = _cache_folder()
    path = None if folder is None else folder / f"mnist1d-n{num_samples}-{digest}.npz"
    data = None
    if path is not None and path.exists():
        try:
            with np.load(path) as stored:
                data = {k: stored[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            data = None  # a damaged cache file is regenerated
    if data is None:
        data = _generate_mnist1d(args)
        if path is not None:
            _store(path, data)
    arrays = (data["x"], data["y"], data["x_test"], data["y_test"])
    for a in arrays:
        a.setflags(write=False)
    return arrays


def load_mnist1d(val_fraction: float = 0.0, num_samples: int = 5000, name: str = "mnist1d") -> Split:
    """MNIST-1D as generated by ``make_dataset``, with its default arguments but ``num_samples``.

    Args:
        val_fraction: share of the training signals kept aside for validation, in [0, 1).
        num_samples: signals generated; 80% train, 20% test (the package's split).
        name: the split's name in reports.

    Returns:
        A :class:`Split` with inputs of shape ``(n, 40)``; by default 4000 training and
        1000 test signals.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"num_samples must be an integer >= 10, got {num_samples!r}")
    x, y, x_test, y_test = _mnist1d_arrays(num_samples)
    return _carve(name, x, y, x_test, y_test, val_fraction)


def load_digits_split(val_fraction: float = 0.0, test_fraction: float = 0.3) -> Split:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1], split at a fixed seed.

    The split uses its own ``numpy.random.Generator`` (seed 0), never the global one.

    Args:
        val_fraction: share of the training rows kept aside for validation, in [0, 1).
        test_fraction: share of all rows held out for test, in (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    n_test = round(len(y) * test_fraction)
    return _carve("digits", x[n_test:], y[n_test:], x[:n_test], y[:n_test], val_fraction)


def _jitter(images: np.ndarray, copies: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``copies`` random variants of each 8x8 image: a shift of up to one pixel, a contrast
    scale in [0.7, 1.3] and Gaussian pixel noise (sd 0.15), clipped to [0, 1]."""
    n = len(images)
    padded = np.pad(images.reshape(n, 8, 8), ((0, 0), (1, 1), (1, 1)))
    index = np.repeat(np.arange(n), copies)
    dy, dx = rng.integers(0, 3, size=(2, len(index)))
    rows = dy[:, None] + np.arange(8)[None, :]
    cols = dx[:, None] + np.arange(8)[None, :]
    shifted = padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]
    scale = rng.uniform(0.7, 1.3, size=(len(index), 1, 1))
    noisy = shifted * scale + rng.normal(0.0, 0.15, size=shifted.shape)
    return np.clip(noisy, 0.0, 1.0).reshape(len(index), 64), index


def load_digits_augmented(val_fraction: float = 0.0, copies: int = 12) -> Split:
    """scikit-learn's digits made into a larger, harder task by random jitter.

    The 1797 images are split as in :func:`load_digits_split` (30% test, seed 0); each
    training image yields ``copies`` jittered variants and each test image
    ``copies // 3`` (own generators, seeds 1 and 2), so no test variant comes from a
    training image. With the default 12 copies: 15,084 training and 2,160 test images.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 3:
        raise ValueError(f"copies must be an integer >= 3, got {copies!r}")
    base = load_digits_split(0.0)
    x_train, idx_train = _jitter(base.x_train.numpy().astype(np.float64), copies, np.random.default_rng(1))
    x_test, idx_test = _jitter(base.x_test.numpy().astype(np.float64), copies // 3, np.random.default_rng(2))
    y_train = base.y_train.numpy()[idx_train]
    y_test = base.y_test.numpy()[idx_test]
    order = np.random.default_rng(3).permutation(len(y_train))
    return _carve("digits-jitter", x_train[order], y_train[order], x_test, y_test, val_fraction)
