"""The reduction at millions of parameters: within 1e-6 degrees of a float64 reference.

The reference forms every step in float64 with numpy and adds the products with
``math.fsum`` (correctly rounded), so it is the true angle of the float32 parameters
to within 1e-15 relative. A single flat float32 dot over the same numbers is shown
alongside: it is what the adapter must not do.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from autodrop_torch import AutoDrop

from autodrop_core import step_angle

SHAPES = [(1024, 1024), (512, 2048), (3 * 3 * 256, 256), (1000,), (7, 11, 13)]  # 2.7M parameters


def _epochs() -> list[list[np.ndarray]]:
    """x̂(0), x(1), x(2) as float32 arrays: late-training sized steps, about 100 degrees apart."""
    rng = np.random.default_rng(7)
    start = [rng.normal(0, 0.05, s).astype(np.float32) for s in SHAPES]
    first = [rng.normal(0, 1e-4, s) for s in SHAPES]
    second = [-0.2 * f + rng.normal(0, 1e-4, s.shape) for f, s in zip(first, start)]
    x1 = [(a + f).astype(np.float32) for a, f in zip(start, first)]
    x2 = [(a + f).astype(np.float32) for a, f in zip(x1, second)]
    return [start, x1, x2]


def _true_angle(x0: list[np.ndarray], x1: list[np.ndarray], x2: list[np.ndarray]) -> float:
    s1 = np.concatenate([(b.astype(np.float64) - a).ravel() for a, b in zip(x0, x1)])
    s2 = np.concatenate([(b.astype(np.float64) - a).ravel() for a, b in zip(x1, x2)])
    angle = step_angle(math.fsum(s2 * s1), math.fsum(s2 * s2), math.fsum(s1 * s1))
    assert angle is not None
    return angle


def _scheduler_after(x0: list[np.ndarray], x1: list[np.ndarray], x2: list[np.ndarray]) -> AutoDrop:
    """An AutoDrop that has seen the parameters go x̂(0) -> x(1) -> x(2), one step() each."""
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in x0]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = AutoDrop(opt)
    for values in (x1, x2):
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(torch.from_numpy(v))
        opt.step()  # no gradients: changes nothing, counts as the epoch's training for AutoDrop
        sched.step()
    return sched


def test_the_angle_of_millions_of_float32_parameters_is_within_1e_6_degrees_of_the_float64_reference(
    reduction_path: str,
) -> None:
    x0, x1, x2 = _epochs()
    assert sum(a.size for a in x0) > 2_500_000
    sched = _scheduler_after(x0, x1, x2)
    assert sched.last_decision is not None and sched.last_decision.angle is not None
    true = _true_angle(x0, x1, x2)
    assert 95 < true < 105
    assert abs(sched.last_decision.angle - true) < 1e-6

    # What a single flat float32 reduction would have reported, for the record.
    s1 = torch.cat([torch.from_numpy(b - a).ravel() for a, b in zip(x0, x1)])
    s2 = torch.cat([torch.from_numpy(b - a).ravel() for a, b in zip(x1, x2)])
    flat = step_angle(float(torch.dot(s2, s1)), float(torch.dot(s2, s2)), float(torch.dot(s1, s1)))
    assert flat is not None
    print(f"angle error: adapter {abs(sched.last_decision.angle - true):.2e} deg, "
          f"flat float32 dot {abs(flat - true):.2e} deg")


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")
def test_the_fused_cpu_reduction_gives_the_same_bits_on_one_thread_or_two() -> None:
    x0, x1, x2 = _epochs()
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            results.append(_scheduler_after(x0, x1, x2).last_reductions)
        finally:
            torch.set_num_threads(1)
    assert results[0] == results[1] and results[0] is not None
