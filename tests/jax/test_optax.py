"""The optax helpers write lrs into inject_hyperparams states, nested or per group; flax TrainState works."""

from __future__ import annotations

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

PARAMS = {"enc": {"w": jnp.ones((3, 2))}, "dec": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}}
LABELS = {"enc": {"w": "encoder"}, "dec": {"w": "decoder", "b": "decoder"}}


def injected_lrs(opt_state):
    found = jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda n: isinstance(n, (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState))
    )
    return [float(n.hyperparams["learning_rate"]) for n in found if hasattr(n, "hyperparams")]


def test_single_injected_optimizer_gets_the_lr_with_its_dtype_and_other_state_untouched():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    opt_state = tx.init(PARAMS)
    _, opt_state = tx.update(jax.tree.map(jnp.ones_like, PARAMS), opt_state, PARAMS)
    new = autodrop_jax.set_learning_rates(opt_state, (0.01,))
    assert injected_lrs(new) == [pytest.approx(0.01)]
    assert new.hyperparams["learning_rate"].dtype == opt_state.hyperparams["learning_rate"].dtype
    assert new.hyperparams["momentum"] is opt_state.hyperparams["momentum"]
    assert jax.tree.leaves(new.inner_state) == jax.tree.leaves(opt_state.inner_state)
    assert injected_lrs(opt_state) == [pytest.approx(0.1)]  # the input is not mutated


def test_state_nested_in_a_chain_is_found():
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))
    new = autodrop_jax.set_learning_rates(tx.init(PARAMS), 1e-4)
    assert injected_lrs(new) == [pytest.approx(1e-4)]


def multi_transform():
    return optax.multi_transform(
        {
            "encoder": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
            "decoder": optax.chain(optax.clip(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=0.01)),
        },
        LABELS,
    )


def test_per_group_lrs_go_to_the_multi_transform_labels_named_by_groups():
    opt_state = multi_transform().init(PARAMS)
    assert autodrop_jax.learning_rates(opt_state, groups=("encoder", "decoder")) == pytest.approx((0.1, 0.01))
    new = autodrop_jax.set_learning_rates(opt_state, (0.5, 0.05), groups=("decoder", "encoder"))
    assert autodrop_jax.learning_rates(new, groups=("decoder", "encoder")) == pytest.approx((0.5, 0.05))


def test_without_groups_lrs_follow_the_pytree_order_of_the_injected_states():
    opt_state = multi_transform().init(PARAMS)
    order = autodrop_jax.learning_rates(opt_state)  # multi_transform keeps its labels sorted: decoder, encoder
    assert order == pytest.approx((0.01, 0.1))
    new = autodrop_jax.set_learning_rates(opt_state, (0.001, 0.01))
    assert autodrop_jax.learning_rates(new) == pytest.approx((0.001, 0.01))
    assert autodrop_jax.learning_rates(autodrop_jax.set_learning_rates(opt_state, 0.3)) == pytest.approx((0.3, 0.3))


def test_mismatched_groups_are_refused_with_what_was_found():
    opt_state = multi_transform().init(PARAMS)
    with pytest.raises(ValueError, match="3 learning rates but 2 inject_hyperparams states"):
        autodrop_jax.set_learning_rates(opt_state, (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match=r"matches 0 of groups=\['encoder', 'head'\]"):
        autodrop_jax.set_learning_rates(opt_state, (0.1, 0.2), groups=("encoder", "head"))
    with pytest.raises(ValueError, match=r"names 1 groups, expected 2"):
        autodrop_jax.set_learning_rates(opt_state, (0.1, 0.2), groups=("encoder",))


def test_an_optimizer_without_inject_hyperparams_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"optax.inject_hyperparams\(optax.sgd\)\(learning_rate=...\)"):
        autodrop_jax.set_learning_rates(optax.sgd(0.1).init(PARAMS), 0.01)


def test_flax_train_state_loop_drops_the_lr_its_optimizer_uses():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 3)), jnp.float32)
    y = x @ jnp.asarray([[1.0], [-2.0], [0.5]])

    def loss(params, x, y):
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    @jax.jit
    def train_step(state, x, y):
        return state.apply_gradients(grads=jax.grad(loss)(state.params, x, y))

    params = {"w": jnp.zeros((3, 1)), "b": jnp.zeros(1)}
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
    train_state = TrainState.create(apply_fn=None, params=params, tx=tx)
    drop = autodrop_jax.init(train_state.params, autodrop_jax.learning_rates(train_state.opt_state),
                             drop_delay=2, threshold=0.5, min_lr=1e-5)
    drops = 0
    for _ in range(12):
        for _ in range(5):
            train_state = train_step(train_state, x, y)
        train_state, drop, decision = autodrop_jax.update_train_state(drop, train_state)
        drops += decision.dropped
        assert autodrop_jax.learning_rates(train_state.opt_state) == pytest.approx(decision.lrs)
    assert drops >= 1
    assert float(loss(train_state.params, x, y)) < float(loss(params, x, y))
