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


def noisy_epoch(params, epoch):
    """An epoch whose step direction is half drift, half noise: a stationary angle, as at saturation."""
    rng = np.random.default_rng(2000 + epoch)
    return jax.tree.map(lambda x: x + 0.05 * (1.0 + jnp.asarray(rng.standard_normal(x.shape), x.dtype)), params)


def run(state, params, first, last, saver=None, epoch_fn=train_one_epoch):
    decisions, trail = [], []
    for epoch in range(first, last):
        params, state, decision = autodrop_jax.update(state, epoch_fn(params, epoch))
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


def test_the_calibrated_triggers_history_survives_orbax_mid_window_exactly(tmp_path):
    settings = {"trigger": "calibrated", "drop_factor": 0.5, "drop_delay": 3}
    epochs = 40
    params0 = start()
    checkpointer = ocp.StandardCheckpointer()
    kept = (22, 23, 30)

    def saver(epoch, state, params):
        if epoch in kept:
            checkpointer.save(tmp_path / f"epoch{epoch}", {"autodrop": state, "params": params})

    reference, trail = run(autodrop_jax.init(params0, 0.1, **settings), params0, 0, epochs, saver, noisy_epoch)
    checkpointer.wait_until_finished()
    assert any(d.triggered for d in reference) and any(d.apply_average for d in reference)
    for epoch in kept:
        target = {"autodrop": autodrop_jax.init(params0, 0.1, **settings), "params": params0}
        restored = checkpointer.restore(tmp_path / f"epoch{epoch}", target)
        assert len(restored["autodrop"].core_state.recent) > 0
        decisions, resumed = run(restored["autodrop"], restored["params"], epoch + 1, epochs, epoch_fn=noisy_epoch)
        assert decisions == reference[epoch + 1 :], f"resuming after epoch {epoch} diverged"
        for a, b in zip(jax.tree.leaves(resumed[-1]), jax.tree.leaves(trail[-1]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    checkpointer.close()


def test_a_paper_trigger_checkpoint_keeps_its_layout_and_size():
    params0 = start()
    paper = autodrop_jax.init(params0, 0.1, **SETTINGS)
    calibrated = autodrop_jax.init(params0, 0.1, trigger="calibrated")
    assert np.asarray(calibrated.core).size > np.asarray(paper.core).size
    assert np.asarray(paper.core).view("<f8")[0] == 1.0  # layout 1, as before the calibrated trigger
