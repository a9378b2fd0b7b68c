"""Bad input: NaN or infinity is refused with the epoch named, and nothing is lost."""

from __future__ import annotations

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autodrop_core import InvalidReductionError


def run(state, steps):
    decisions = []
    for x in steps:
        _, state, decision = autodrop_jax.update(state, x)
        decisions.append(decision)
    return state, decisions


def steps(n):
    return [{"w": jnp.array([1.0 * t, 2.0 + 0.1 * t * t]), "b": jnp.array(0.5 * t)} for t in range(1, n + 1)]


def fresh():
    return autodrop_jax.init(steps(1)[0] | {"w": jnp.zeros(2), "b": jnp.array(0.0)}, lrs=0.1, drop_delay=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_parameters_name_the_epoch_and_the_leaf(bad):
    state, _ = run(fresh(), steps(3))
    poisoned = {"w": jnp.array([4.0, bad]), "b": jnp.array(2.0)}
    with pytest.raises(InvalidReductionError, match=r"epoch 4: .* \(params\['w'\] holds NaN or infinity\)") as info:
        autodrop_jax.update(state, poisoned)
    assert info.value.epoch == 4


def test_a_refused_epoch_changes_nothing_and_can_be_retried():
    good = steps(6)
    state, reference = run(fresh(), good)
    state, first = run(fresh(), good[:3])
    before = jax.tree.map(np.array, state)
    with pytest.raises(InvalidReductionError):
        autodrop_jax.update(state, {"w": jnp.array([np.nan, 0.0]), "b": jnp.array(1.0)})
    after = jax.tree.map(np.array, state)
    assert jax.tree.structure(before) == jax.tree.structure(after)
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(x, y)
    assert state.epoch == 3
    _, rest = run(state, good[3:])
    assert first + rest == reference


def test_overflowing_reductions_are_refused_with_the_value():
    with jax.enable_x64(False):  # float32 sums overflow; the state must be built under the same setting
        state = autodrop_jax.init({"w": jnp.zeros(2, jnp.float32)}, lrs=0.1)
        with pytest.raises(InvalidReductionError, match=r"epoch 1: sq_norm=inf is invalid"):
            autodrop_jax.update(state, {"w": jnp.full(2, 3e38, jnp.float32)})
