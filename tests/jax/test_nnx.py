"""flax.nnx: AutoDrop over nnx.state(model, nnx.Param), lrs written in place into nnx.Optimizer."""

from __future__ import annotations

from pathlib import Path

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip("flax.nnx")

EAGER = {"threshold": 5.0, "max_threshold": 60.0, "drop_delay": 3, "min_lr": 1e-5}
EPOCHS = 15


def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1)) + 0.3 * rng.normal(size=(256, 1))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def _tx():
    return optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)


@nnx.jit
def _nnx_step(model, optimizer, x, y):
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)


def _nnx_run(epochs: int = EPOCHS):
    x, y = _data()
    model = nnx.Linear(8, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
    drop = autodrop_jax.init(nnx.state(model, nnx.Param), 0.05, **EAGER)
    decisions = []
    for _ in range(epochs):
        for i in range(0, 256, 32):
            _nnx_step(model, optimizer, x[i : i + 32], y[i : i + 32])
        autodrop_jax.check_learning_rates(drop, optimizer.opt_state)
        params, drop, decision = autodrop_jax.update(drop, nnx.state(model, nnx.Param))
        nnx.update(model, params)
        autodrop_jax.set_learning_rates(optimizer.opt_state, decision.lrs)  # in place for nnx
        decisions.append(decision)
    return model, optimizer, decisions


def _plain_run(kernel, bias, epochs: int = EPOCHS):
    x, y = _data()
    params = {"bias": bias, "kernel": kernel}
    tx = _tx()
    opt_state = tx.init(params)
    drop = autodrop_jax.init(params, 0.05, **EAGER)

    @jax.jit
    def step(p, s, xb, yb):
        g = jax.grad(lambda q: jnp.mean((xb @ q["kernel"] + q["bias"] - yb) ** 2))(p)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    decisions = []
    for _ in range(epochs):
        for i in range(0, 256, 32):
            params, opt_state = step(params, opt_state, x[i : i + 32], y[i : i + 32])
        params, drop, decision = autodrop_jax.update(drop, params)
        opt_state = autodrop_jax.set_learning_rates(opt_state, decision.lrs)
        decisions.append(decision)
    return decisions


def test_an_nnx_loop_decides_as_the_plain_optax_loop_and_keeps_the_optarray():
    _, optimizer, decisions = _nnx_run()
    start = nnx.Linear(8, 1, rngs=nnx.Rngs(0))
    twin = _plain_run(start.kernel.get_value(), start.bias.get_value())
    assert any(d.dropped for d in decisions)
    assert [(d.triggered, d.apply_average, d.dropped, d.lrs) for d in decisions] == [
        (d.triggered, d.apply_average, d.dropped, d.lrs) for d in twin
    ]
    for got, want in zip(decisions, twin):
        assert (got.angle is None) == (want.angle is None)
        if want.angle is not None:
            assert got.angle == pytest.approx(want.angle, abs=1e-3)
    lr = optimizer.opt_state.hyperparams["learning_rate"]
    assert type(lr).__name__ == "OptArray" and float(lr.get_value()) == pytest.approx(decisions[-1].lrs[0])


def test_orbax_restores_nnx_state_of_the_optimizer_after_autodrop_wrote_an_lr(tmp_path: Path):
    ocp = pytest.importorskip("orbax.checkpoint")
    _, optimizer, decisions = _nnx_run(12)
    assert any(d.dropped for d in decisions)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "opt", nnx.state(optimizer))
    checkpointer.wait_until_finished()
    fresh = nnx.Optimizer(nnx.Linear(8, 1, rngs=nnx.Rngs(3)), _tx(), wrt=nnx.Param)
    restored = checkpointer.restore(tmp_path / "opt", nnx.state(fresh))
    nnx.update(fresh, restored)
    assert float(fresh.opt_state.hyperparams["learning_rate"].get_value()) == pytest.approx(decisions[-1].lrs[0])
