"""init/update follow the spec epoch by epoch, exactly like the numpy reference adapter."""

from __future__ import annotations

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from autodrop_jax import _programs
from autodrop_numpy import NumpyAutoDrop

from autodrop_core import ConfigError

SETTINGS = {"threshold": 0.5, "max_threshold": 4.0, "drop_factor": 0.5, "drop_delay": 3, "min_lr": 0.01}


def make_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "dense": {"w": rng.standard_normal((6, 5)).astype(np.float32), "b": np.zeros(5, np.float32)},
        "scale": np.float32(1.5) * np.ones((), np.float32),
        "half": rng.standard_normal((3, 2)).astype(np.float16),
        "empty": np.zeros((0, 4), np.float32),
    }


def drift(params: object, rng: np.random.Generator, direction: list[np.ndarray]) -> object:
    """x(t) = x̂(t-1) + (fixed direction + noise): angles of a few degrees that wander."""
    leaves, treedef = jax.tree.flatten(jax.device_get(params))
    moved = [
        (np.asarray(x, np.float32) + 0.05 * (u + 0.08 * rng.standard_normal(u.shape))).astype(x.dtype)
        for x, u in zip(leaves, direction, strict=True)
    ]
    return jax.tree.unflatten(treedef, moved)


@pytest.mark.parametrize("extension", [{}, {"angle_window": 3, "reset_on_drop": True}], ids=["paper", "window3-reset"])
def test_decisions_and_parameters_match_the_numpy_reference(x64, extension, checker, as_numpy):
    rng = np.random.default_rng(1)
    params = make_params(rng)
    direction = [rng.standard_normal(np.shape(x)).astype(np.float32) for x in jax.tree.leaves(params)]
    settings = {**SETTINGS, **extension}
    state = autodrop_jax.init(params, lrs=(0.1, 0.2), **settings)
    oracle = NumpyAutoDrop(as_numpy(params), lrs=(0.1, 0.2), **settings)
    check = checker(x64)
    seen = {"triggered": 0, "apply_average": 0, "dropped": 0}
    for _ in range(40):
        params = drift(params, rng, direction)
        for dst, src in zip(oracle.params, as_numpy(params), strict=True):
            dst[...] = src
        params, state, decision = autodrop_jax.update(state, params)
        want = oracle.end_epoch()
        check(decision, want)
        for name in seen:
            seen[name] += bool(getattr(decision, name))
        for got, expected in zip(as_numpy(params), oracle.params, strict=True):
            np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=2e-7, atol=0)
    assert all(count > 0 for count in seen.values()), f"the run must exercise every branch, saw {seen}"


def test_first_epoch_has_no_angle_and_the_earliest_trigger_is_epoch_three():
    state = autodrop_jax.init({"w": jnp.zeros(3)}, lrs=0.1, drop_delay=1, threshold=1.0)
    decisions = []
    for t in range(1, 4):
        _, state, decision = autodrop_jax.update(state, {"w": jnp.full(3, float(t))})
        decisions.append(decision)
    assert [d.angle for d in decisions[:2]] == [None, 0.0]
    assert [d.triggered for d in decisions] == [False, False, True]
    assert decisions[2].dropped and state.lrs == (0.1 * 0.1,)


def test_parameters_come_back_untouched_when_no_average_is_applied():
    params = {"w": jnp.arange(4.0)}
    state = autodrop_jax.init(params, lrs=0.1)
    out, _, decision = autodrop_jax.update(state, params)
    assert not decision.apply_average
    assert out["w"] is params["w"]


def test_applied_average_is_the_linearly_weighted_mean_of_the_last_drop_delay_vectors():
    # Constant steps: delta = 0 at epoch 3, so x(3), x(4), x(5) are averaged with weights 1, 2, 3.
    state = autodrop_jax.init({"w": jnp.zeros(2)}, lrs=0.1, drop_delay=3)
    for t in range(1, 6):
        out, state, decision = autodrop_jax.update(state, {"w": jnp.array([t, 2.0 * t])})
    assert decision.apply_average and decision.dropped
    expected = (1 * 3 + 2 * 4 + 3 * 5) / 6
    np.testing.assert_allclose(np.asarray(out["w"]), [expected, 2 * expected], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(state.snapshot["w"]), np.asarray(out["w"]))


def test_state_owns_its_buffers_so_donating_the_parameters_is_safe():
    state = autodrop_jax.init({"w": jnp.ones(3)}, lrs=0.1, drop_delay=1, threshold=1.0)
    train = jax.jit(lambda p: jax.tree.map(lambda x: x + 1.0, p), donate_argnums=0)
    params = train({"w": jnp.ones(3)})
    for _ in range(4):  # epoch 3 applies an average: its result is donated next
        params, state, _ = autodrop_jax.update(state, params)
        params = train(params)
    for leaf in jax.tree.leaves((state.snapshot, state.step_base, state.step_head, state.average)):
        assert not isinstance(leaf, jax.Array) or not leaf.is_deleted()


def test_one_host_transfer_per_epoch_and_no_recompilation_once_warm(monkeypatch):
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones(4)}
    state = autodrop_jax.init(params, lrs=0.1, drop_delay=2, threshold=45.0, max_threshold=90.0)

    def epochs(state, params, first, last):
        decisions = []
        for t in range(first, last):
            params, state, decision = autodrop_jax.update(state, jax.tree.map(lambda x, t=t: x + t, params))
            decisions.append(decision)
        return state, params, decisions

    state, params, warmup = epochs(state, params, 1, 7)  # compiles the reduction, absorb and apply
    assert any(d.apply_average for d in warmup)
    compiles, transfers = [], []
    real_get = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: transfers.append(1) or real_get(x))
    listener = lambda event, _secs, **_: compiles.append(event) if "backend_compile" in event else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with jax.transfer_guard_device_to_host("disallow"):
            _, _, decisions = epochs(state, params, 7, 15)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert any(d.apply_average for d in decisions) and any(d.average_weight == 1.0 for d in decisions)
    assert len(transfers) == len(decisions)
    assert compiles == []


def test_params_of_another_structure_are_refused():
    state = autodrop_jax.init({"w": jnp.ones(3, jnp.float32)}, lrs=0.1)  # float32 with and without x64
    with pytest.raises(ValueError, match="tree structure"):
        autodrop_jax.update(state, {"v": jnp.ones(3, jnp.float32)})
    with pytest.raises(ValueError, match=r"params\['w'\] is float32\[4\], expected float32\[3\]"):
        autodrop_jax.update(state, {"w": jnp.ones(4, jnp.float32)})


def test_integer_or_empty_parameter_trees_are_refused():
    with pytest.raises(TypeError, match=r"params\['n'\] must be a floating-point array, got int32"):
        autodrop_jax.init({"w": jnp.ones(2), "n": jnp.ones(2, jnp.int32)}, lrs=0.1)
    with pytest.raises(ValueError, match="no arrays"):
        autodrop_jax.init({}, lrs=0.1)


def test_bad_configuration_names_the_field_and_range():
    with pytest.raises(ConfigError, match=r"drop_factor=1.5 is invalid: expected .*0 < drop_factor < 1"):
        autodrop_jax.init({"w": jnp.ones(2)}, lrs=0.1, drop_factor=1.5)


def test_switching_x64_between_init_and_update_is_refused():
    with jax.enable_x64(False):
        state = autodrop_jax.init({"w": jnp.ones(2)}, lrs=0.1)
    with jax.enable_x64(True), pytest.raises(ValueError, match="jax_enable_x64 is now on"):
        autodrop_jax.update(state, {"w": jnp.ones(2, jnp.float32)})


def test_x64_accumulates_in_float64_and_float32_otherwise(x64):
    state = autodrop_jax.init({"w": jnp.ones(2, jnp.float32)}, lrs=0.1)
    expected = np.float64 if x64 else np.float32
    assert state.average["w"].dtype == expected and state.average_lo["w"].dtype == expected
    assert state.snapshot["w"].dtype == np.float32


def test_step_reductions_are_the_spec_scalars():
    state = autodrop_jax.init({"w": jnp.zeros(2)}, lrs=0.1)
    _, state, _ = autodrop_jax.update(state, {"w": jnp.array([1.0, 0.0])})
    dot, sq_norm = autodrop_jax.step_reductions(state, {"w": jnp.array([2.0, 3.0])})
    assert (dot, sq_norm) == (1.0, 10.0)
    assert state.epoch == 1


def test_float32_average_rounds_into_float16_like_the_float64_reference():
    # W = hi + lo exactly on a float16 tie broken by lo: rounding hi alone would pick the wrong side.
    rng = np.random.default_rng(0)
    base = rng.standard_normal(4000).astype(np.float16).astype(np.float32)
    hi = base + np.spacing(base.astype(np.float16)).astype(np.float32) / 2
    lo = (rng.choice([-1.0, 0.0, 1.0], size=hi.shape) * np.spacing(hi) / 4).astype(np.float32)
    want = (hi.astype(np.float64) + lo.astype(np.float64)).astype(np.float16)
    got, _ = _programs.apply_average([jnp.asarray(hi)], [jnp.asarray(lo)], [jnp.zeros(hi.shape, jnp.float16)])
    np.testing.assert_array_equal(np.asarray(got[0]), want)
    assert (hi.astype(np.float16) != want).sum() > 0  # the case really is one double rounding gets wrong


def test_calling_update_inside_jit_is_refused_with_the_reason():
    state = autodrop_jax.init({"w": jnp.ones(2)}, lrs=0.1)
    with pytest.raises(TypeError, match=r"params\['w'\] is a tracer: call autodrop_jax outside jax.jit"):
        jax.jit(lambda p: autodrop_jax.update(state, p)[0])({"w": jnp.ones(2)})
