"""No silent failure in JAX: a schedule in inject_hyperparams, and lrs changed behind AutoDrop's back."""

from __future__ import annotations

import math

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

from autodrop_core import LRConflictError

EAGER = {"threshold": 5.0, "max_threshold": 60.0, "drop_delay": 3, "min_lr": 1e-5}


def _problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1)) + 0.3 * rng.normal(size=(256, 1))).astype(np.float32)
    params = {"w": jnp.asarray(rng.normal(size=(8, 1)).astype(np.float32) * 0.1), "b": jnp.zeros((1,))}
    return jnp.asarray(x), jnp.asarray(y), params


def _loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


@jax.jit
def _train_step(state: TrainState, x, y) -> TrainState:
    return state.apply_gradients(grads=jax.grad(_loss)(state.params, x, y))


def _epoch(state: TrainState, x, y) -> TrainState:
    for i in range(0, len(x), 32):
        state = _train_step(state, x[i : i + 32], y[i : i + 32])
    return state


def test_a_learning_rate_schedule_in_inject_hyperparams_is_refused_with_what_to_do_instead():
    x, y, params = _problem()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.exponential_decay(0.1, 10, 0.5))
    train_state = TrainState.create(apply_fn=None, params=params, tx=tx)
    state = autodrop_jax.init(params, lrs=0.1, **EAGER)
    for call in (
        lambda: autodrop_jax.set_learning_rates(train_state.opt_state, 0.01),
        lambda: autodrop_jax.learning_rates(train_state.opt_state),
        lambda: autodrop_jax.update_train_state(state, _epoch(train_state, x, y)),
    ):
        with pytest.raises(ValueError, match=r"'learning_rate' of the inject_hyperparams state .* is a schedule.*"
                                             r"learning_rate=0\.1"):
            call()


def test_a_train_state_loop_never_trips_the_check_and_drops():
    x, y, params = _problem()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)
    train_state = TrainState.create(apply_fn=None, params=params, tx=tx)
    state = autodrop_jax.init(params, lrs=0.05, **EAGER)
    decisions = []
    for _ in range(15):
        train_state = _epoch(train_state, x, y)
        train_state, state, decision = autodrop_jax.update_train_state(state, train_state)
        decisions.append(decision)
    assert any(d.dropped for d in decisions)
    assert autodrop_jax.learning_rates(train_state.opt_state) == pytest.approx(state.lrs, rel=1e-7)


def test_an_lr_changed_behind_autodrops_back_is_refused_naming_the_state_both_lrs_and_the_fix():
    x, y, params = _problem()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
    train_state = TrainState.create(apply_fn=None, params=params, tx=tx)
    state = autodrop_jax.init(params, lrs=0.05, **EAGER)
    train_state = _epoch(train_state, x, y)
    train_state, state, _ = autodrop_jax.update_train_state(state, train_state)
    meddled = train_state.replace(opt_state=autodrop_jax.set_learning_rates(train_state.opt_state, 0.2))
    meddled = _epoch(meddled, x, y)
    # 0.2 and 0.05 as float32 without x64 (0.2000000029...), exactly with x64
    expected = (r"opt_state.*hyperparams\['learning_rate'\] \(group 0\) is 0\.2(0000\d*)?\b"
                r".*AutoDrop wrote 0\.05(0000\d*)?\b.*inject_hyperparams\(optax\.sgd\)")
    with pytest.raises(LRConflictError, match=expected) as info:
        autodrop_jax.update_train_state(state, meddled)
    assert info.value.group == 0 and math.isclose(info.value.found, 0.2, rel_tol=1e-7)
    assert state.epoch == 1  # the functional state is untouched: continue with it after fixing the lr


def test_init_with_other_lrs_than_the_optimizer_is_refused_at_the_first_epoch():
    x, y, params = _problem()
    train_state = TrainState.create(apply_fn=None, params=params, tx=optax.inject_hyperparams(optax.sgd)(0.05))
    state = autodrop_jax.init(params, lrs=0.1, **EAGER)
    with pytest.raises(LRConflictError, match=r"is 0\.05(0000\d*)?\b.*AutoDrop wrote 0\.1"):
        autodrop_jax.check_learning_rates(state, _epoch(train_state, x, y).opt_state)


def test_log_scalars_is_a_flat_dict_of_finite_floats_with_pending():
    _, _, params = _problem()
    state = autodrop_jax.init(params, lrs=0.1, drop_delay=2)
    moved = jax.tree.map(lambda a: a + 1.0, params)
    _, state, decision = autodrop_jax.update(state, moved)
    log = autodrop_jax.log_scalars(decision, state)
    assert "autodrop/angle" not in log and log["autodrop/pending"] == 0.0 and log["autodrop/lr_0"] == 0.1
    assert all(isinstance(v, float) and math.isfinite(v) for v in log.values())
