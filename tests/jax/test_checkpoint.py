"""Checkpoints: the state is a pytree that orbax saves and restores; resuming from any epoch is exact."""

from __future__ import annotations

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from autodrop_core import StateError

SETTINGS = {"threshold": 0.5, "max_threshold": 4.0, "drop_factor": 0.5, "drop_delay": 3, "min_lr": 0.01}
EPOCHS = 14


def start():
    rng = np.random.default_rng(7)
    return {"w": jnp.asarray(rng.standard_normal((5, 4)), jnp.float32), "b": jnp.zeros(4, jnp.float32)}


def train_one_epoch(params, epoch):
    """A deterministic stand-in for an epoch of training: a noisy step in a fixed direction."""
    rng = np.random.default_rng(1000 + epoch)
    return jax.tree.map(lambda x: x + 0.05 * (1.0 + 0.1 * jnp.asarray(rng.standard_normal(x.shape), x.dtype)), params)


def run(state, params, first, last, saver=None):
    decisions, trail = [], []
    for epoch in range(first, last):
        params, state, decision = autodrop_jax.update(state, train_one_epoch(params, epoch))
        decisions.append(decision)
        trail.append(params)
        if saver is not None:
            saver(epoch, state, params)
    return decisions, trail


def test_resuming_from_every_epoch_through_orbax_is_exact(tmp_path):
    params0 = start()
    saved = {}
    checkpointer = ocp.StandardCheckpointer()

    def saver(epoch, state, params):
        checkpointer.save(tmp_path / f"epoch{epoch}", {"autodrop": state, "params": params})
        saved[epoch] = state.core_state.pending

    reference, trail = run(autodrop_jax.init(params0, 0.1, **SETTINGS), params0, 0, EPOCHS, saver)
    checkpointer.wait_until_finished()
    assert any(pending > 0 for pending in saved.values()), "some checkpoint must fall inside an averaging window"
    assert any(d.apply_average for d in reference)
    for epoch in range(EPOCHS - 1):
        target = {"autodrop": autodrop_jax.init(params0, 0.1, **SETTINGS), "params": params0}
        restored = checkpointer.restore(tmp_path / f"epoch{epoch}", target)
        decisions, resumed = run(restored["autodrop"], restored["params"], epoch + 1, EPOCHS)
        assert decisions == reference[epoch + 1 :], f"resuming after epoch {epoch} diverged"
        for got, want in zip(resumed, trail[epoch + 1 :], strict=True):
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    checkpointer.close()


def test_state_passes_through_jit_unchanged_without_x64():
    params0 = start()
    reference, _ = run(autodrop_jax.init(params0, 0.1, **SETTINGS), params0, 0, 8)
    params, state = params0, autodrop_jax.init(params0, 0.1, **SETTINGS)
    for epoch in range(8):
        params, state, decision = autodrop_jax.update(state, train_one_epoch(params, epoch))
        state = jax.jit(lambda s: s)(state)  # the float64 core fields travel as uint32 bits
        assert isinstance(state.core, jax.Array)
        assert decision == reference[epoch]


def test_restoring_into_a_target_with_another_configuration_is_refused(tmp_path):
    params0 = start()
    state = autodrop_jax.init(params0, 0.1, **SETTINGS)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", state)
    checkpointer.wait_until_finished()
    other = autodrop_jax.init(params0, 0.1, **{**SETTINGS, "drop_factor": 0.1})
    restored = checkpointer.restore(tmp_path / "ckpt", other)
    checkpointer.close()
    with pytest.raises(StateError, match="different configuration"):
        autodrop_jax.update(restored, params0)
