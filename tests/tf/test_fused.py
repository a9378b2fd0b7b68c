"""The numba reduction of the TensorFlow adapter (``autodrop_tf._fused_cpu``): exact sums, the same decisions.

Small test models stay on the TensorFlow path (``MIN_NUMEL``); here the numba pass is
switched on for them, checked against an exactly rounded sum, and run side by side
with the TensorFlow path through windows, applied averages and drops.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")

from autodrop_tf import AutoDrop, _fused_cpu  # noqa: E402
from autodrop_tf._ops import chunk_sizes  # noqa: E402


def _exact(xs: list[np.ndarray], snaps: list[np.ndarray], heads: list[np.ndarray], bases: list[np.ndarray]
           ) -> tuple[float, float]:
    steps = [x.astype(np.float64) - s for x, s in zip(xs, snaps, strict=True)]
    prevs = [h.astype(np.float64) - b for h, b in zip(heads, bases, strict=True)]
    dot = math.fsum(float(v) for s, p in zip(steps, prevs, strict=True) for v in (s * p).ravel())
    return dot, math.fsum(float(v) for s in steps for v in (s * s).ravel())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head_is_snapshot", [True, False])
def test_the_numba_reduction_is_float64_exact_to_1e_13(dtype: type, head_is_snapshot: bool) -> None:
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 16, 32), (32,), (600_001,), (1,)]  # 600,001 elements: three chunks
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    snaps = [(x + 1e-3 * rng.standard_normal(x.shape)).astype(dtype) for x in xs]
    heads = snaps if head_is_snapshot else [(x + 1e-3 * rng.standard_normal(x.shape)).astype(dtype) for x in xs]
    bases = [(x + 1e-3 * rng.standard_normal(x.shape)).astype(dtype) for x in xs]
    as_tensors = [[tf.constant(a) for a in group] for group in (xs, snaps, heads, bases)]
    if head_is_snapshot:
        as_tensors[2] = as_tensors[1]  # the same list, as the adapter passes it: its buffers are read once
    chunks = [chunk_sizes(x.size) for x in xs]
    dot, sq, new_average = _fused_cpu.reduce_buffers(*as_tensors, chunks)
    exact_dot, exact_sq = _exact(xs, snaps, heads, bases)
    assert dot == pytest.approx(exact_dot, rel=1e-13, abs=0.0)
    assert sq == pytest.approx(exact_sq, rel=1e-13, abs=0.0)
    assert new_average is None


def test_the_static_verdict_is_kept_but_the_switch_is_read_at_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = [tf.Variable(tf.zeros(_fused_cpu.MIN_NUMEL)), tf.Variable(tf.zeros(3))]
    memo: dict[str, bool] = {}
    assert _fused_cpu.eligible(variables, memo) and memo == {"static": True}
    monkeypatch.setattr(_fused_cpu, "USE_FUSED_CPU", False)
    assert not _fused_cpu.eligible(variables, memo)
    monkeypatch.setattr(_fused_cpu, "USE_FUSED_CPU", True)
    small = [tf.Variable(tf.zeros(3))]
    assert not _fused_cpu.eligible(small, {}) and not _fused_cpu.eligible([tf.Variable(tf.zeros(70_000, tf.int32))])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_average_formed_in_the_pass_rounds_as_the_reference_bit_for_bit(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts: list[np.ndarray] = []
    real = _fused_cpu.fused.aligned_parts
    monkeypatch.setattr(_fused_cpu.fused, "aligned_parts", lambda *a: parts.extend(out := real(*a)) or out)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(s).astype(dtype) for s in [(600_001,), (5, 7)]]
    chunks = [chunk_sizes(x.size) for x in xs]
    averages = [rng.standard_normal(x.size) for x in xs]
    weight = 2.0 / 7.0
    w_chunks = [[tf.constant(part) for part in np.split(w, np.cumsum(c)[:-1])] for w, c in zip(averages, chunks)]
    x_t = [tf.constant(x) for x in xs]
    _, _, new_average = _fused_cpu.reduce_buffers(x_t, x_t, x_t, x_t, chunks, (w_chunks, weight))
    assert new_average is not None
    assert all(int(t.__dlpack_device__()[0]) == 1 for group in new_average for t in group)
    addresses = [buffer.address for buffer in _fused_cpu._buffers([t for g in new_average for t in g], [])]
    assert all(a % 64 == 0 for a in addresses)  # as TF needs
    assert addresses == [part.ctypes.data for part in parts]  # adopted without a copy, a variable's chunks in one block
    for x, w, got in zip(xs, averages, new_average, strict=True):
        expected = w + (x.ravel().astype(np.float64) - w) * weight  # two roundings, as in the reference
        np.testing.assert_array_equal(np.concatenate([g.numpy() for g in got]), expected)


def test_a_buffer_of_another_size_is_refused_naming_the_variable_before_any_read() -> None:
    x = [tf.zeros([4, 5]), tf.zeros([100])]
    bad = [tf.zeros([4, 5]), tf.zeros([99])]
    with pytest.raises(RuntimeError, match=r"variable 1: its base is float32\(99,\), not float32\(100,\)"):
        _fused_cpu.reduce_buffers(x, x, x, bad, [[20], [100]])


def _run(fused: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list[np.ndarray]]:
    monkeypatch.setattr(_fused_cpu, "USE_FUSED_CPU", fused)
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0)
    rng = np.random.default_rng(3)
    variables = [tf.Variable(rng.standard_normal(s).astype(np.float32)) for s in [(64, 32), (32,), (500,)]]
    extras = [tf.Variable(rng.standard_normal(7).astype(np.float32))]  # averaged, not reduced (BatchNorm-like)
    drift = [rng.standard_normal(v.shape).astype(np.float32) for v in variables]
    autodrop = AutoDrop(variables, lrs=0.1, extra_variables=extras, threshold=5.0, max_threshold=60.0, drop_delay=4)
    for _ in range(24):
        for v, d in zip(variables, drift, strict=True):  # a steady direction plus noise: the angle settles
            v.assign_add(0.01 * d + 0.004 * rng.standard_normal(v.shape).astype(np.float32))
        extras[0].assign_add(0.01 * rng.standard_normal(7).astype(np.float32))
        autodrop.end_epoch()
    return list(autodrop.history), [v.numpy() for v in variables + extras]


def test_the_numba_path_decides_and_averages_as_the_tensorflow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = _fused_cpu.reduce_buffers
    monkeypatch.setattr(_fused_cpu, "reduce_buffers", lambda *a: calls.append(len(a) > 5 and a[5] is not None)
                        or real(*a))
    graph_history, graph_weights = _run(False, monkeypatch)
    assert not calls
    fused_history, fused_weights = _run(True, monkeypatch)
    # every epoch with a previous step (not the first: s(t-1) = 0 there, the TensorFlow path)
    assert len(calls) == sum(d.angle is not None for d in fused_history) == 23
    # x(t) absorbed in the pass at every window epoch after the first (whose weight 1 the core sets only then)
    absorbed = [d.average_weight is not None and d.average_weight < 1.0 for d in fused_history[1:]]
    assert calls == absorbed and sum(calls) >= 4
    assert any(d.dropped for d in graph_history) and any(d.apply_average for d in graph_history)
    for g, f in zip(graph_history, fused_history, strict=True):
        assert (g.triggered, g.dropped, g.apply_average, g.average_weight, g.lrs) == (
            f.triggered, f.dropped, f.apply_average, f.average_weight, f.lrs)
        if g.angle is not None:
            assert f.angle == pytest.approx(g.angle, rel=0.0, abs=1e-9)
    for g, f in zip(graph_weights, fused_weights, strict=True):
        np.testing.assert_array_equal(g, f)  # the averages round alike on both paths, bit for bit
