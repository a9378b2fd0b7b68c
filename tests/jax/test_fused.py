"""The numba CPU epoch end of the JAX adapter (``autodrop_jax._fused_cpu``): exact sums, the same decisions.

Small test models stay on the XLA path (``MIN_NUMEL``); here the numba pass is switched
on for them, checked against an exactly rounded sum, run side by side with the XLA path
through windows, applied averages and drops, and its copies are checked to be the numpy
buffers the kernel wrote (adopted by JAX without a copy).
"""

from __future__ import annotations

import importlib.util
import math

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from autodrop_jax import _fused_cpu, _programs

from autodrop_core import InvalidReductionError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")

SHAPES = [(3, 3, 16, 32), (32,), (70_001,), (1,), (0,)]


def _exact(xs, snaps, heads, bases) -> tuple[float, float]:
    steps = [np.asarray(x, np.float64) - np.asarray(s, np.float64) for x, s in zip(xs, snaps, strict=True)]
    prevs = [np.asarray(h, np.float64) - np.asarray(b, np.float64) for h, b in zip(heads, bases, strict=True)]
    dot = math.fsum(float(v) for s, p in zip(steps, prevs, strict=True) for v in (s * p).ravel())
    return dot, math.fsum(float(v) for s in steps for v in (s * s).ravel())


def _leaves(dtype: type, head_is_snapshot: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    snaps = [(x + 1e-3 * rng.standard_normal(x.shape)).astype(dtype) for x in xs]
    heads = snaps if head_is_snapshot else [(x + 1e-3 * rng.standard_normal(x.shape)).astype(dtype) for x in xs]
    bases = [(x + 1e-3 * rng.standard_normal(x.shape)).astype(dtype) for x in xs]
    return xs, snaps, heads, bases


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head_is_snapshot", [True, False])
def test_the_numba_reduction_is_float64_exact_to_1e_13(dtype: type, head_is_snapshot: bool) -> None:
    xs, snaps, heads, bases = _leaves(dtype, head_is_snapshot)
    with jax.enable_x64(dtype == np.float64):
        as_jax = [[jnp.asarray(a) for a in group] for group in (xs, snaps, heads, bases)]
        x, s, h, b = as_jax
        names = [f"[{i}]" for i in range(len(SHAPES))]
        result = _fused_cpu.reduce_epoch(x, s, b, None if head_is_snapshot else h, names)
        copies = [np.asarray(c) for c in result.copies]
    exact_dot, exact_sq = _exact(xs, snaps, heads, bases)
    assert result.dot == pytest.approx(exact_dot, rel=1e-13, abs=0.0)
    assert result.sq_norm == pytest.approx(exact_sq, rel=1e-13, abs=0.0)
    for want, got in zip(xs, copies, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert result.averages is None


def test_the_first_epoch_has_a_zero_previous_step_and_a_nonfinite_step_gives_nan() -> None:
    xs, snaps, _, _ = _leaves(np.float32, True)
    x, s = [jnp.asarray(a) for a in xs], [jnp.asarray(a) for a in snaps]
    result = _fused_cpu.reduce_epoch(x, s, None, None, list("abcde"), copying=False)
    assert result.dot == 0.0 and result.copies is None
    assert result.sq_norm == pytest.approx(_exact(xs, snaps, snaps, snaps)[1], rel=1e-13)
    x[1] = x[1].at[3].set(jnp.inf)
    assert math.isnan(_fused_cpu.reduce_epoch(x, s, None, None, list("abcde")).dot)


def test_a_buffer_of_another_size_or_dtype_is_refused_naming_the_leaf_before_any_read() -> None:
    x = [jnp.zeros([4, 5], jnp.float32), jnp.zeros([100], jnp.float32)]
    bad = [jnp.zeros([4, 5], jnp.float32), jnp.zeros([99], jnp.float32)]
    with pytest.raises(RuntimeError, match=r"params\['w'\]: its step base is float32\[99\], expected float32\[100\]"):
        _fused_cpu.reduce_epoch(x, x, bad, None, ["['v']", "['w']"])
    with pytest.raises(RuntimeError, match=r"params\['v'\]: its snapshot is bfloat16\[4, 5\], expected float32"):
        _fused_cpu.reduce_epoch(x, [x[0].astype(jnp.bfloat16), x[1]], x, None, ["['v']", "['w']"])
    with jax.enable_x64(True):
        xs = [jnp.zeros([8], jnp.float32)]
        with pytest.raises(RuntimeError, match=r"params\[0\]: its running average is float32\[8\], expected float64"):
            _fused_cpu.reduce_epoch(xs, xs, xs, None, ["[0]"], absorb=(xs, 0.5))


@pytest.mark.parametrize("route", ["direct", "device_put"])
def test_the_copies_and_averages_are_the_kernels_numpy_buffers_adopted_without_a_copy(
    monkeypatch: pytest.MonkeyPatch, route: str,
) -> None:
    if route == "device_put":  # where jaxlib's direct transfer is missing or fails its check
        monkeypatch.setattr(_fused_cpu, "_direct_adopter", lambda device: None)
    allocated: list[np.ndarray] = []
    real = _fused_cpu._empty
    monkeypatch.setattr(_fused_cpu, "_empty", lambda *a: allocated.extend((out := real(*a))[0]) or out)
    xs, snaps, heads, bases = _leaves(np.float32, False)
    with jax.enable_x64(True):
        x, s, h, b = ([jnp.asarray(a) for a in group] for group in (xs, snaps, heads, bases))
        w = [jnp.asarray(a, jnp.float64) + 0.5 for a in bases]
        result = _fused_cpu.reduce_epoch(x, s, b, h, list("abcde"), absorb=(w, 0.25))
        assert result.copies is not None and result.averages is not None
        assert len(allocated) == 2 * len(xs)
        for i, (copy, average) in enumerate(zip(result.copies, result.averages, strict=True)):
            assert copy.shape == xs[i].shape and average.dtype == jnp.float64
            if not xs[i].size:
                continue  # an empty leaf has no buffer to compare
            assert copy.unsafe_buffer_pointer() == allocated[i].ctypes.data  # no copy on adoption
            assert average.unsafe_buffer_pointer() == allocated[len(xs) + i].ctypes.data
            assert copy.unsafe_buffer_pointer() != x[i].unsafe_buffer_pointer()  # never the caller's buffer
            assert copy.unsafe_buffer_pointer() % _fused_cpu.ALIGNMENT == 0
            assert copy.sharding.device_set == x[i].sharding.device_set
            np.testing.assert_array_equal(np.asarray(copy), xs[i])
            want = np.asarray(w[i]) + (xs[i].astype(np.float64) - np.asarray(w[i])) * 0.25
            np.testing.assert_array_equal(np.asarray(average), want)  # two roundings, no fused multiply-add


def test_jaxlibs_direct_transfer_passes_its_check_here_and_a_failing_or_wrong_one_is_not_used() -> None:
    from jax._src import core as jax_core
    from jax._src.lib import xla_client

    device = jax.devices("cpu")[0]
    assert _fused_cpu._direct_adopter(device) is not None  # the fast route is taken on the jaxlibs we test

    def broken(*args: object, **kwargs: object) -> object:
        raise TypeError("batched_device_put() takes other arguments now")

    def copies_wrongly(aval: object, sharding: object, xs: list[np.ndarray], *rest: object) -> object:
        return jax.device_put(xs[0] + 1, device)

    def uncommitted(aval: object, sharding: object, xs: list[np.ndarray], devices: object, committed: bool) -> object:
        return xla_client.batched_device_put(aval, sharding, xs, devices, False)

    for put in (broken, copies_wrongly, uncommitted):
        assert _fused_cpu._checked_adopter(device, put, jax_core.ShapedArray) is None, put.__name__
    assert _fused_cpu._checked_adopter(device, xla_client.batched_device_put, jax_core.ShapedArray) is not None


@pytest.mark.parametrize("weight", [2.0 / 3.0, 2.0 / 7.0, 0.5, 2.0 / 25.0])
def test_the_pass_absorbs_into_a_float32_pair_with_the_bits_of_the_xla_program(weight: float) -> None:
    rng = np.random.default_rng(5)
    shapes = [(3, 3, 16, 32), (70_001,), (1,), (0,)]
    with jax.enable_x64(False):
        x = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
        snap = [jnp.asarray(np.asarray(a) - 1e-3, jnp.float32) for a in x]
        hi = [jnp.asarray(np.asarray(a) + 1e-2 * rng.standard_normal(a.shape), jnp.float32) for a in x]
        lo = [jnp.asarray(np.abs(np.asarray(h)) * rng.uniform(-2.0**-25, 2.0**-25, h.shape), jnp.float32) for h in hi]
        pair = _programs.split_weight(weight, np.dtype(np.float32))
        want_hi, want_lo = _programs.absorb(x, hi, lo, pair, first=False, flat=True)
        result = _fused_cpu.reduce_epoch(x, snap, snap, None, ["a", "b", "c", "d"], absorb_pair=(hi, lo, pair))
    assert result.averages is not None and result.averages_lo is not None and result.copies is not None
    got_hi, got_lo = result.averages, result.averages_lo
    for w, g, a in zip(want_hi + want_lo, got_hi + got_lo, x + x, strict=True):
        assert g.shape == a.shape and g.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    for g, a in zip(got_hi + got_lo + result.copies, x + x + x, strict=True):
        assert g.size == 0 or g.unsafe_buffer_pointer() != a.unsafe_buffer_pointer()
    for c, a in zip(result.copies, x, strict=True):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(a))


def test_a_pair_average_of_the_wrong_dtype_or_with_a_float64_one_is_refused_before_any_read() -> None:
    with jax.enable_x64(True):
        xs = [jnp.zeros([8], jnp.float32)]
        pair = _programs.split_weight(0.5, np.dtype(np.float32))
        wide = [jnp.zeros([8], jnp.float64)]
        with pytest.raises(RuntimeError, match=r"params\[0\]: its running average's low half is float64\[8\]"):
            _fused_cpu.reduce_epoch(xs, xs, xs, None, ["[0]"], absorb_pair=(xs, wide, pair))
        with pytest.raises(ValueError, match=r"absorb .* or absorb_pair .*, not both"):
            _fused_cpu.reduce_epoch(xs, xs, xs, None, ["[0]"], absorb=(wide, 0.5), absorb_pair=(xs, xs, pair))


def test_only_large_single_device_float32_or_float64_models_are_eligible(monkeypatch: pytest.MonkeyPatch) -> None:
    big = [jnp.zeros(_fused_cpu.MIN_NUMEL, jnp.float32), jnp.zeros(3, jnp.float32)]  # float32 under x64 too
    assert _fused_cpu.eligible(big, big, None)
    assert not _fused_cpu.eligible([jnp.zeros(_fused_cpu.MIN_NUMEL - 1, jnp.float32)])  # small: XLA path
    assert not _fused_cpu.eligible([big[0], jnp.zeros(3, jnp.bfloat16)])
    assert not _fused_cpu.eligible(big, [big[0], np.zeros(3, np.float32)])  # a host array, not a jax.Array
    monkeypatch.setattr(_fused_cpu, "USE_FUSED_CPU", False)
    assert not _fused_cpu.eligible(big)


def _run(
    fused: bool, monkeypatch: pytest.MonkeyPatch, calls: list[bool], pairs: list[bool]
) -> tuple[list, list[np.ndarray]]:
    monkeypatch.setattr(_fused_cpu, "USE_FUSED_CPU", fused)
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0)
    real = _fused_cpu.reduce_epoch

    def spy(*args, **kwargs):
        calls.append(kwargs.get("absorb") is not None)
        pairs.append(kwargs.get("absorb_pair") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(_fused_cpu, "reduce_epoch", spy)
    rng = np.random.default_rng(3)
    shapes = [(64, 32), (32,), (500,)]
    dtypes = [jnp.float32, jnp.float32, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32]
    params = [jnp.asarray(rng.standard_normal(s), d) for s, d in zip(shapes, dtypes, strict=True)]
    drift = [rng.standard_normal(s) for s in shapes]
    state = autodrop_jax.init(params, 0.1, threshold=5.0, max_threshold=60.0, drop_delay=3)
    history = []
    for _ in range(24):  # a steady direction plus noise: the angle settles
        params = [jnp.asarray(np.asarray(p, np.float64) + 0.01 * d + 0.004 * rng.standard_normal(p.shape), p.dtype)
                  for p, d in zip(params, drift, strict=True)]
        params, state, decision = autodrop_jax.update(state, params)
        history.append(decision)
    return history, [np.asarray(p) for p in params]


def test_the_numba_path_decides_as_the_xla_path_through_windows_averages_and_drops(
    x64: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    xla_calls: list[bool] = []
    xla_pairs: list[bool] = []
    xla_history, xla_params = _run(False, monkeypatch, xla_calls, xla_pairs)
    assert not xla_calls and not xla_pairs
    fused_calls: list[bool] = []
    fused_pairs: list[bool] = []
    fused_history, fused_params = _run(True, monkeypatch, fused_calls, fused_pairs)
    assert len(fused_calls) == 24  # every epoch end, the first and the one after an applied average included
    # while a drop is pending the pass absorbs x(t) too: into a float64 W under x64, else into the float32 pair
    continued = sum(d.average_weight is not None and d.average_weight != 1.0 for d in fused_history)
    assert continued > 0
    assert (sum(fused_calls), sum(fused_pairs)) == ((continued, 0) if x64 else (0, continued))
    assert any(d.dropped for d in xla_history) and any(d.apply_average for d in xla_history)
    applied = [d.epoch for d in xla_history if d.apply_average]
    for g, f in zip(xla_history, fused_history, strict=True):
        assert (g.triggered, g.dropped, g.apply_average, g.average_weight, g.lrs) == (
            f.triggered, f.dropped, f.apply_average, f.average_weight, f.lrs)
        if g.angle is not None:
            if not x64:
                # The XLA path sums in float32 (a few float32 roundoffs u of relative error in
                # the cosine, so about u / sin(angle) radians), the numba path in float64.
                tolerance = math.degrees(8 * 2.0**-24 / max(math.sin(math.radians(g.angle)), 1e-3))
            elif g.epoch <= applied[0]:
                tolerance = 1e-9  # both float64: only the order of additions differs
            else:
                # XLA:CPU contracts W + c (x - W) into a fused multiply-add, the kernel rounds twice
                # as the numpy reference does: W differs in its last bits, so do the steps after
                tolerance = 1e-7  # (observed: at most 8.3e-9)
            assert f.angle == pytest.approx(g.angle, rel=0.0, abs=tolerance), f"epoch {g.epoch}"
    for g, f in zip(xla_params, fused_params, strict=True):
        if x64:  # the applied averages differ in the last bit where the FMA rounds otherwise
            np.testing.assert_allclose(f, g, rtol=2.0 ** (-23 if g.dtype == np.float32 else -50), atol=0)
        else:  # the pair absorb has the XLA path's arithmetic, the copies are exact: the same bits
            np.testing.assert_array_equal(g, f)


def test_a_nonfinite_epoch_on_the_numba_path_names_the_leaf_and_returns_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0)
    params = {"a": jnp.ones(10, jnp.float32), "b": jnp.zeros(5, jnp.float32)}
    state = autodrop_jax.init(params, 0.1)
    _, state, _ = autodrop_jax.update(state, {"a": params["a"] * 2, "b": params["b"]})
    before = [np.asarray(leaf).copy() for leaf in jax.tree.leaves(state)]
    with pytest.raises(InvalidReductionError, match=r"params\['b'\] holds NaN or infinity"):
        autodrop_jax.update(state, {"a": params["a"] * 3, "b": params["b"].at[2].set(jnp.nan)})
    for want, got in zip(before, jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import autodrop_jax
from autodrop_jax import _fused_cpu

_fused_cpu.MIN_NUMEL = 0
calls = []
real = _fused_cpu.reduce_epoch
_fused_cpu.reduce_epoch = lambda *a, **k: calls.append(1) or real(*a, **k)
mesh = Mesh(np.array(jax.devices()), ("a",))
sharded = jax.device_put(jnp.arange(64, dtype=jnp.float32), NamedSharding(mesh, P("a")))
plain = jnp.arange(64, dtype=jnp.float32)
for params, want in (([sharded], 0), ([plain], 3)):
    calls.clear()
    assert _fused_cpu.eligible(params) == (want > 0)
    state = autodrop_jax.init(params, 0.1)
    for epoch in range(3):
        params, state, _ = autodrop_jax.update(state, [params[0] + epoch + 1.0])
    assert len(calls) == want, (params[0].sharding, calls)
print("ok")
"""


def test_a_sharded_model_keeps_the_xla_path(run_python) -> None:
    assert run_python(SHARDED, devices=2).strip().endswith("ok")


def test_a_buffer_of_another_dtype_is_refused_by_the_leafs_key_path_before_any_read() -> None:
    from autodrop_jax._api import _LeafNames

    params = {"dense": {"w": jnp.ones((4, 8), jnp.float32)}, "out": jnp.ones(8, jnp.float32)}
    leaves = jax.tree.leaves(params)
    snapshot = [leaves[0], jnp.ones(8, jnp.int32)]  # the second leaf's snapshot has the wrong dtype
    names = _LeafNames(params)
    with pytest.raises(RuntimeError, match=r"params\['out'\]: its snapshot is int32\[8\], expected float32\[8\]"):
        _fused_cpu.reduce_epoch(leaves, snapshot, None, None, names)
    assert list(names) == ["['dense']['w']", "['out']"] and len(names) == 2


def _fused_run(monkeypatch: pytest.MonkeyPatch, epochs: int, **settings: object):
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 1)
    rng = np.random.default_rng(11)
    params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in SHAPES]
    state = autodrop_jax.init(params, 0.1, **settings)
    for _ in range(epochs):
        params = [p + jnp.asarray(1e-3 * rng.standard_normal(p.shape), jnp.float32) for p in params]
        params, state, _ = autodrop_jax.update(state, params)
    return params, state


def test_the_state_buffers_the_pass_wrote_are_read_from_the_registry_and_leave_it_when_they_die(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params, state = _fused_run(monkeypatch, 4, threshold=45.0, max_threshold=90.0, drop_delay=50)
    assert state.core_state.pending > 0  # inside a window: snapshot, base and the W pair are all the pass's
    owned = [leaf for tree in (state.snapshot, state.step_base, state.average, state.average_lo)
             for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array) and leaf.size]  # (not the placeholders)
    assert len(owned) == (3 if jax.config.jax_enable_x64 else 4) * (len(SHAPES) - 1)
    for leaf in owned:
        found = _fused_cpu._own(leaf)
        assert found is not None and found[1] == leaf.unsafe_buffer_pointer()
        np.testing.assert_array_equal(found[0], np.asarray(leaf))
    assert _fused_cpu._own(params[0]) is None  # the caller's arrays are never in it
    live = len(_fused_cpu._OWN)
    del owned
    state = None
    assert len(_fused_cpu._OWN) < live  # the dead state's entries are gone


def test_a_deleted_state_buffer_is_refused_by_jax_not_read_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    params, state = _fused_run(monkeypatch, 3)
    snapshot = jax.tree.leaves(state.snapshot)
    snapshot[0].delete()  # as a donation would
    assert _fused_cpu._own(snapshot[0]) is None
    with pytest.raises(RuntimeError, match="deleted"):
        autodrop_jax.update(state, params)


def test_a_decoded_core_state_is_the_one_that_was_encoded_with_or_without_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autodrop_jax import _state

    for settings in ({"threshold": 45.0, "max_threshold": 90.0, "drop_delay": 3}, {"trigger": "calibrated"}):
        _, state = _fused_run(monkeypatch, 6, **settings)
        cached = state.core_state
        _state._ENCODED.clear()
        assert state.core_state == cached  # decoded from the bits, validated: the same record
        assert len(_state._ENCODED) == 0  # decoding enters nothing
    for _ in range(3 * _state._ENCODED_MAX):
        _fused_run(monkeypatch, 1)
    assert len(_state._ENCODED) <= _state._ENCODED_MAX


def test_placeholders_are_shared_read_only_zeros() -> None:
    one, two = _programs.placeholders([jnp.zeros(3), jnp.zeros(2)], np.float32)
    assert one is two and one.shape == () and one == 0 and not one.flags.writeable
    with pytest.raises(ValueError):
        one[...] = 1.0
