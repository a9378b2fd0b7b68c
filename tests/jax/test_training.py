"""A real optax training loop matches an independent computation of the spec, epoch by epoch.

An MLP learns a random teacher with SGD + momentum, two parameter groups in
``optax.multi_transform``. Each epoch the parameters the loop saw are copied into the
numpy reference adapter (float64 reductions and averages), and its decisions, lrs
and averaged parameters must equal the JAX adapter's, with and without x64.
"""

from __future__ import annotations

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from autodrop_numpy import NumpyAutoDrop

SETTINGS = {"threshold": 1.0, "max_threshold": 8.0, "drop_factor": 0.5, "drop_delay": 3, "min_lr": 1e-3}
GROUPS = ("hidden", "head")


def mlp(params, x):
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["head"]["w"] + params["head"]["b"]


def setup(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    teacher = rng.standard_normal((8, 3)).astype(np.float32)
    y = np.tanh(x @ teacher) + 0.1 * rng.standard_normal((256, 3)).astype(np.float32)
    params = {
        "hidden": {"w": 0.3 * rng.standard_normal((8, 16)), "b": np.zeros(16)},
        "head": {"w": 0.3 * rng.standard_normal((16, 3)), "b": np.zeros(3)},
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    labels = {"hidden": {"w": "hidden", "b": "hidden"}, "head": {"w": "head", "b": "head"}}
    tx = optax.multi_transform(
        {
            "hidden": optax.inject_hyperparams(optax.sgd)(learning_rate=0.2, momentum=0.9),
            "head": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9),
        },
        labels,
    )
    return jnp.asarray(x), jnp.asarray(y), params, tx


def test_optax_loop_matches_the_numpy_reference_epoch_by_epoch(x64, checker, as_numpy):
    x, y, params, tx = setup()
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, xb, yb):
        grads = jax.grad(lambda p: jnp.mean((mlp(p, xb) - yb) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    lrs = autodrop_jax.learning_rates(opt_state, groups=GROUPS)
    state = autodrop_jax.init(params, lrs, **SETTINGS)
    oracle = NumpyAutoDrop(as_numpy(params), lrs=lrs, **SETTINGS)
    check = checker(x64)
    counts = {"triggered": 0, "apply_average": 0, "dropped": 0}
    for _ in range(30):
        for i in range(0, 256, 32):
            params, opt_state = train_step(params, opt_state, x[i : i + 32], y[i : i + 32])
        for dst, src in zip(oracle.params, as_numpy(params), strict=True):
            dst[...] = src
        params, state, decision = autodrop_jax.update(state, params)
        opt_state = autodrop_jax.set_learning_rates(opt_state, decision.lrs, groups=GROUPS)
        check(decision, oracle.end_epoch())
        assert oracle.lrs == decision.lrs
        for got, want in zip(as_numpy(params), oracle.params, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert autodrop_jax.learning_rates(opt_state, groups=GROUPS) == tuple(
            float(np.float32(lr)) for lr in decision.lrs
        )
        for name in counts:
            counts[name] += bool(getattr(decision, name))
    assert counts["dropped"] >= 2, f"the run must drop the lr at least twice, saw {counts}"
