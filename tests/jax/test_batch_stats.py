"""BatchNorm statistics (linen batch_stats, nnx.BatchStat) are averaged with the parameters' weights."""

from __future__ import annotations

import autodrop_jax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

EAGER = {"threshold": 5.0, "max_threshold": 60.0, "drop_delay": 3, "min_lr": 1e-5}
EPOCHS = 15


def _data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (np.tanh(x @ rng.normal(size=(8, 1))) + 0.1 * rng.normal(size=(256, 1))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


class _Oracle:
    """W <- W + c (x - W) in float64 numpy, over the flattened extra state."""

    def __init__(self) -> None:
        self.w: list[np.ndarray] | None = None

    def expected(self, extras, decision) -> list[np.ndarray] | None:
        x = [np.asarray(a, np.float64) for a in jax.tree.leaves(extras)]
        c = decision.average_weight
        if c is not None:
            self.w = x if c == 1.0 or self.w is None else [w + c * (xi - w) for w, xi in zip(self.w, x)]
        return self.w if decision.apply_average else None


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(16)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.8)(x)
        return nn.Dense(1)(jnp.tanh(x))


def test_linen_batch_stats_are_replaced_by_their_average_over_the_window_when_the_parameters_are():
    x, y = _data()
    net = _Net()
    variables = net.init(jax.random.key(0), x[:2], train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, stats, opt_state, xb, yb):
        def loss(p):
            out, updates = net.apply({"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"])
            return jnp.mean((out - yb) ** 2), updates["batch_stats"]

        (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    drop = autodrop_jax.init(params, 0.05, **EAGER)
    extras = autodrop_jax.init_extras(stats)
    oracle, applied = _Oracle(), 0
    for _ in range(EPOCHS):
        for i in range(0, 256, 32):
            params, stats, opt_state = step(params, stats, opt_state, x[i : i + 32], y[i : i + 32])
        params, drop, decision = autodrop_jax.update(drop, params)
        expected = oracle.expected(stats, decision)
        new_stats, extras = autodrop_jax.update_extras(extras, stats, decision)
        if expected is None:
            assert new_stats is stats or all(a is b for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(stats)))
        else:
            applied += 1
            for got, want in zip(jax.tree.leaves(new_stats), expected):
                assert got.dtype == jnp.float32
                np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-7)
            assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(stats)))
        stats = new_stats
        opt_state = autodrop_jax.set_learning_rates(opt_state, decision.lrs)
    assert applied >= 1, "the run must apply at least one average"


def test_nnx_batch_stats_are_averaged_through_nnx_state():
    nnx = pytest.importorskip("flax.nnx")
    x, y = _data()

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(8, 16, rngs=rngs)
            self.bn = nnx.BatchNorm(16, momentum=0.8, rngs=rngs)
            self.b = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.b(jnp.tanh(self.bn(self.a(x))))

    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9),
                              wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        grads = nnx.grad(lambda m: jnp.mean((m(xb) - yb) ** 2))(model)
        optimizer.update(model, grads)

    drop = autodrop_jax.init(nnx.state(model, nnx.Param), 0.05, **EAGER)
    extras = autodrop_jax.init_extras(nnx.state(model, nnx.BatchStat))
    oracle, applied = _Oracle(), 0
    for _ in range(EPOCHS):
        for i in range(0, 256, 32):
            step(model, optimizer, x[i : i + 32], y[i : i + 32])
        params, drop, decision = autodrop_jax.update(drop, nnx.state(model, nnx.Param))
        stats = nnx.state(model, nnx.BatchStat)
        expected = oracle.expected(stats, decision)
        new_stats, extras = autodrop_jax.update_extras(extras, stats, decision)
        nnx.update(model, params)
        nnx.update(model, new_stats)
        autodrop_jax.set_learning_rates(optimizer.opt_state, decision.lrs)
        if expected is not None:
            applied += 1
            for got, want in zip(jax.tree.leaves(nnx.state(model, nnx.BatchStat)), expected):
                np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-7)
    assert applied >= 1
