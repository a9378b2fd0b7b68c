"""Public simulation API: grids of runs (learning rates x seeds) and a single steppable run.

:func:`simulate` checks its inputs, lays out one row per (lr, seed) pair, and calls the
parallel kernel in chunks of iterations (so that a progress bar can move); :class:`NQMRun`
advances one run a few iterations at a time for callers, such as the AutoDrop loop, that
act between iterations. The same seed draws the same noise c(t) at every lr (common
random numbers), so curves at different lrs differ by the lr alone.

This module must not compute closed forms or AutoDrop decisions.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from autodrop_core.nqm._kernels import advance_run, advance_runs
from autodrop_core.nqm._model import Momentum, NoisyQuadratic, sgd
from autodrop_core.nqm._rng import COUNTER_SHIFT, fill_normals, mix64, run_key

__all__ = ["NQMRun", "Trajectories", "simulate", "step_angles", "window_means"]

FloatArray = npt.NDArray[np.float64]
Start = Literal["stationary"] | float | Sequence[float] | FloatArray
_START_STREAM = np.uint64(0xD1B54A32D192ED03)  # keys of the starting-point draws differ from the noise keys


def step_angles(dot: FloatArray, sq_norm: FloatArray, first_prev_sq_norm: float = 0.0) -> FloatArray:
    """Angle in degrees between successive steps, NaN where undefined (the spec's rule, vectorised).

    Args:
        dot: <d(t), d(t-1)> along the last axis.
        sq_norm: ||d(t)||^2 along the last axis.
        first_prev_sq_norm: ||d||^2 of the step before the first one (0: undefined).
    """
    dot = np.asarray(dot, dtype=np.float64)
    sq = np.asarray(sq_norm, dtype=np.float64)
    prev = np.concatenate([np.full((*sq.shape[:-1], 1), first_prev_sq_norm), sq[..., :-1]], axis=-1)
    denom = np.sqrt(sq) * np.sqrt(prev)
    ok = (denom > 0) & np.isfinite(denom)
    cosine = np.clip(np.divide(dot, denom, out=np.zeros_like(dot), where=ok), -1.0, 1.0)
    return np.where(ok, np.degrees(np.arccos(cosine)), np.nan)


def window_means(angles: FloatArray, window: int) -> FloatArray:
    """Mean of the last ``window`` angles along the last axis (NaN until ``window`` are seen)."""
    angles = np.asarray(angles, dtype=np.float64)
    out = np.full(angles.shape, np.nan)
    if window <= angles.shape[-1]:
        csum = np.cumsum(np.nan_to_num(angles, nan=0.0), axis=-1)
        csum = np.concatenate([np.zeros((*angles.shape[:-1], 1)), csum], axis=-1)
        out[..., window - 1 :] = (csum[..., window:] - csum[..., :-window]) / window
    return out


@dataclass(frozen=True)
class Trajectories:
    """The per-iteration record of a grid of runs, indexed [lr, seed, iteration].

    Attributes:
        lrs: the learning rates (L,).
        seeds: the seeds (S,).
        loss: excess loss 1/2 sum a_i x_i(t)^2 for t = 0..T, shape (L, S, T + 1).
        dot: <d(t), d(t-1)> for t = 1..T, shape (L, S, T) (0 at t = 1, as d(0) = 0).
        sq_norm: ||d(t)||^2 for t = 1..T, shape (L, S, T).
        final_x: x(T), shape (L, S, n).
    """

    lrs: FloatArray
    seeds: npt.NDArray[np.int64]
    loss: FloatArray
    dot: FloatArray
    sq_norm: FloatArray
    final_x: FloatArray

    def angles(self) -> FloatArray:
        """Angle between d(t) and d(t-1) in degrees, NaN at t = 1, shape (L, S, T)."""
        return step_angles(self.dot, self.sq_norm)


def _starting_points(model: NoisyQuadratic, start: Start, lrs: FloatArray, seeds: Sequence[int]) -> FloatArray:
    n = model.n
    x0 = np.empty((lrs.size, len(seeds), n))
    if isinstance(start, str):
        if start != "stationary":
            raise ValueError(f"start={start!r} is invalid: expected 'stationary', a number or an array of length {n}")
        a = model.curvature
        for i, lr in enumerate(lrs):
            sd = np.sqrt(lr * a * model.variance / (2.0 - lr * a))
            for j, seed in enumerate(seeds):
                _fill_start(run_key(seed), x0[i, j])
                x0[i, j] *= sd
        return x0
    values = np.asarray(start, dtype=np.float64)
    if values.ndim > 1 or (values.ndim == 1 and values.size != n) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"start of shape {values.shape} is invalid: expected 'stationary', a finite number or {n} finite values"
        )
    x0[...] = values
    return x0


def _fill_start(key: np.uint64, out: FloatArray) -> None:
    fill_normals(np.uint64(mix64(key ^ _START_STREAM)), np.uint64(0), out)


def _check_lrs(model: NoisyQuadratic, lrs: Sequence[float], optimizer: Momentum) -> FloatArray:
    values = np.atleast_1d(np.asarray(lrs, dtype=np.float64))
    limit = model.max_stable_lr(optimizer)
    for lr in values.tolist():
        if not (np.isfinite(lr) and 0 < lr < limit):
            raise ValueError(
                f"lr={lr!r} is invalid: expected 0 < lr < {limit:.6g} (stability limit of {optimizer.name})"
            )
    return values


def _check_iters(model: NoisyQuadratic, iters: int, first: int = 0) -> None:
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters={iters!r} is invalid: expected an integer >= 1")
    if (first + iters) * model.n >= 2 ** (64 - COUNTER_SHIFT):
        raise ValueError(f"iters={iters} with n={model.n}: expected iterations * n < 2**48 (noise counter space)")


def simulate(
    model: NoisyQuadratic,
    lrs: Sequence[float],
    seeds: Sequence[int],
    iters: int,
    optimizer: Momentum | None = None,
    start: Start = "stationary",
    progress: bool = False,
    chunk: int = 250,
) -> Trajectories:
    """Run every (lr, seed) pair for ``iters`` iterations, in parallel, in float64.

    Args:
        model: the NQM.
        lrs: learning rates, each below the optimizer's stability limit.
        seeds: seeds; seed k draws the same noise at every lr.
        iters: iterations per run.
        optimizer: unified momentum settings (plain SGD when omitted).
        start: ``"stationary"`` draws x(0) from plain SGD's stationary law at each lr
            (x_i ~ N(0, lr a_i S_i / (2 - lr a_i))); a number or n numbers give a fixed x(0).
        progress: show a progress bar on stderr.
        chunk: iterations per kernel call (only the progress bar's granularity).

    Returns:
        The :class:`Trajectories`; the same for any number of threads.
    """
    optimizer = optimizer or sgd()
    lr_values = _check_lrs(model, lrs, optimizer)
    seed_list = [int(seed) for seed in seeds]
    keys = np.array([run_key(seed) for seed in seed_list], dtype=np.uint64)
    _check_iters(model, iters)
    if isinstance(start, str) and start == "stationary" and optimizer.beta != 0:
        raise ValueError("start='stationary' is plain SGD's law: give momentum runs a fixed start and a burn-in")
    n_lr, n_seed, runs = lr_values.size, len(seed_list), lr_values.size * len(seed_list)
    x = _starting_points(model, start, lr_values, seed_list).reshape(runs, model.n)
    ys = x.copy()
    prev_step = np.zeros_like(x)
    run_lrs = np.repeat(lr_values, n_seed)
    run_keys = np.tile(keys, n_lr)
    loss = np.empty((runs, iters + 1))
    loss[:, 0] = model.loss(x)
    dot = np.empty((runs, iters))
    sq_norm = np.empty((runs, iters))
    sd = np.sqrt(model.variance)
    bar = _progress_bar(iters, progress, f"nqm {model.name}")
    for first in range(0, iters, chunk):
        last = min(iters, first + chunk)
        advance_runs(
            model.curvature, sd, x, ys, prev_step, run_lrs, float(optimizer.s), float(optimizer.beta), run_keys,
            first, loss[:, first + 1 : last + 1], dot[:, first:last], sq_norm[:, first:last],
        )
        bar.update(last - first)
    bar.close()
    shape = (n_lr, n_seed)
    return Trajectories(
        lr_values, np.array(seed_list, dtype=np.int64), loss.reshape(*shape, iters + 1),
        dot.reshape(*shape, iters), sq_norm.reshape(*shape, iters), x.reshape(*shape, model.n),
    )


class _NoBar:
    def update(self, _: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool, label: str) -> _NoBar:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    bar: _NoBar = tqdm(total=total, desc=label, unit="it", file=sys.stderr, leave=False)
    return bar


class NQMRun:
    """One run that the caller advances a few iterations at a time and may edit in between.

    Args:
        model: the NQM.
        lr: the starting lr.
        seed: the run's seed (the same noise as :func:`simulate` with this seed).
        optimizer: unified momentum settings (plain SGD when omitted).
        start: a number or n numbers (x(0)), or ``"stationary"`` (plain SGD at ``lr``).

    ``lr`` may be changed between calls; :meth:`set_x` replaces the parameters (as when
    AutoDrop applies an average) and keeps the last step d(t) and the momentum buffer.
    """

    def __init__(
        self,
        model: NoisyQuadratic,
        lr: float,
        seed: int = 0,
        optimizer: Momentum | None = None,
        start: Start = 1.0,
    ) -> None:
        self.model = model
        self.optimizer = optimizer or sgd()
        self._lr = float(_check_lrs(model, [lr], self.optimizer)[0])
        self._key = run_key(seed)
        self.x = _starting_points(model, start, np.array([self._lr]), [seed])[0, 0]
        self.ys = self.x.copy()
        self.prev_step = np.zeros_like(self.x)
        self.iteration = 0
        self._sd = np.sqrt(model.variance)

    @property
    def lr(self) -> float:
        """The lr used by the next iteration."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = float(_check_lrs(self.model, [value], self.optimizer)[0])

    def set_x(self, x: FloatArray) -> None:
        """Replace the parameters (shape (n,), finite)."""
        values = np.asarray(x, dtype=np.float64)
        if values.shape != self.x.shape or not np.all(np.isfinite(values)):
            raise ValueError(f"x of shape {values.shape} is invalid: expected {self.x.shape}, finite values")
        self.x[...] = values

    def step(self, iters: int = 1) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Advance ``iters`` iterations; return per-iteration (loss, dot, sq_norm) after each."""
        _check_iters(self.model, iters, self.iteration)
        loss, dot, sq_norm = np.empty(iters), np.empty(iters), np.empty(iters)
        advance_run(
            self.model.curvature, self._sd, self.x, self.ys, self.prev_step, self._lr,
            float(self.optimizer.s), float(self.optimizer.beta), self._key, self.iteration, loss, dot, sq_norm,
        )
        self.iteration += iters
        return loss, dot, sq_norm
