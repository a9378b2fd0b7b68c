"""optax and flax glue: read and write learning rates in ``optax.inject_hyperparams`` states.

The helpers find every injected-hyperparameter state inside an optimizer state,
however deeply it sits in ``optax.chain``, ``optax.multi_transform`` or masks, and
map AutoDrop's parameter groups onto them (one lr for all, one per state in pytree
order, or by ``multi_transform`` label). They run on the host between jitted steps,
return new states instead of mutating, and must never be called inside ``jax.jit``.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Hashable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from autodrop_core import Decision, LRConflictError
from autodrop_jax._api import update
from autodrop_jax._state import AutoDropState

__all__ = ["check_learning_rates", "learning_rates", "set_learning_rates", "update_train_state"]

_LR_FIX = (
    "Make AutoDrop the only writer of this learning rate: build the optimizer with a number "
    "(optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)), write only decision.lrs into it "
    "(autodrop_jax.set_learning_rates or update_train_state), and start AutoDrop (autodrop_jax.init) after a "
    "warmup, with the lr the warmup ends at."
)

_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _is_injected(node: Any) -> bool:
    return isinstance(node, _INJECTED)


def _labels(path: Sequence[Any]) -> tuple[Hashable, ...]:
    """The ``multi_transform`` labels on the way to a node (keys just below ``inner_states``)."""
    found = []
    for before, key in itertools.pairwise(path):
        below_inner_states = isinstance(before, jax.tree_util.GetAttrKey) and before.name == "inner_states"
        if below_inner_states and isinstance(key, jax.tree_util.DictKey):
            found.append(key.key)
    return tuple(found)


def _injected_states(opt_state: Any, hyperparam: str) -> list[tuple[str, tuple[Hashable, ...]]]:
    pairs = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_injected)[0]
    found = [
        (jax.tree_util.keystr(path), _labels(path))
        for path, node in pairs
        if _is_injected(node) and hyperparam in node.hyperparams
    ]
    for path, node in pairs:
        if _is_injected(node) and hyperparam in (getattr(node, "hyperparams_states", None) or {}):
            raise ValueError(
                f"the {hyperparam!r} of the inject_hyperparams state at opt_state{jax.tree_util.keystr(path)} is a "
                f"schedule: every optax update writes the schedule's value back, so AutoDrop's drops would not take "
                f"effect. AutoDrop is itself the schedule: build the optimizer with a number, e.g. "
                f"optax.inject_hyperparams(optax.sgd)({hyperparam}=0.1), and tune how AutoDrop drops it with "
                f"min_lr, drop_factor, threshold and drop_delay (for a warmup, call autodrop_jax.init when it ends)"
            )
    if not found:
        raise ValueError(
            f"no optax.inject_hyperparams state with a {hyperparam!r} hyperparameter in this optimizer state; "
            f"build the optimizer as optax.inject_hyperparams(optax.sgd)({hyperparam}=...) (inside chain or "
            "multi_transform is fine)"
        )
    return found


def _assignment(
    found: list[tuple[str, tuple[Hashable, ...]]], n_groups: int, groups: Sequence[Hashable] | None
) -> dict[str, int]:
    """Which group's lr goes to each injected state, keyed by the state's path."""
    if groups is None:
        if n_groups == 1:
            return {path: 0 for path, _ in found}
        if len(found) != n_groups:
            raise ValueError(
                f"{n_groups} learning rates but {len(found)} inject_hyperparams states "
                f"({[path for path, _ in found]}); pass groups=(label, ...) naming the multi_transform label of "
                "each group, or use one state per group"
            )
        return {path: i for i, (path, _) in enumerate(found)}
    if len(groups) != n_groups:
        raise ValueError(f"groups={list(groups)!r} names {len(groups)} groups, expected {n_groups} (one per lr)")
    assignment = {}
    for path, labels in found:
        hits = [i for i, group in enumerate(groups) if group in labels]
        if len(hits) != 1:
            raise ValueError(
                f"the inject_hyperparams state at opt_state{path} (multi_transform labels {list(labels)}) matches "
                f"{len(hits)} of groups={list(groups)!r}, expected exactly one"
            )
        assignment[path] = hits[0]
    return assignment


def learning_rates(
    opt_state: Any, *, groups: Sequence[Hashable] | None = None, hyperparam: str = "learning_rate"
) -> tuple[float, ...]:
    """The current lr of each group, read from the ``inject_hyperparams`` states.

    With ``groups`` the result has one lr per label (the first matching state's);
    without, one per injected state in pytree order. Handy for :func:`init`'s ``lrs``.
    """
    found = _injected_states(opt_state, hyperparam)
    pairs = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_injected)[0]
    values = {
        jax.tree_util.keystr(path): float(np.asarray(_plain(node.hyperparams[hyperparam])))
        for path, node in pairs
        if _is_injected(node) and hyperparam in node.hyperparams
    }
    if groups is None:
        return tuple(values[path] for path, _ in found)
    assignment = _assignment(found, len(groups), groups)
    return tuple(values[next(p for p, g in assignment.items() if g == i)] for i in range(len(groups)))


def _is_nnx_variable(node: Any) -> bool:
    """A flax.nnx Variable (``nnx.Optimizer`` keeps injected hyperparameters in ``OptArray``s)."""
    return hasattr(node, "get_value") and hasattr(node, "set_value")


def _plain(value: Any) -> Any:
    return value.get_value() if _is_nnx_variable(value) else value


def _with_value(old: Any, value: float) -> Any:
    if _is_nnx_variable(old):
        # nnx: write into the Variable itself, so nnx.state(optimizer) keeps its OptArray (and an orbax
        # checkpoint of it keeps restoring), and the nnx.Optimizer holding it sees the new lr.
        old.set_value(_with_value(old.get_value(), value))
        return old
    if isinstance(old, jax.Array):
        return jax.device_put(np.asarray(value, dtype=old.dtype), old.sharding)
    return np.asarray(value, dtype=np.result_type(old))


def set_learning_rates(
    opt_state: Any,
    lrs: Sequence[float] | float,
    *,
    groups: Sequence[Hashable] | None = None,
    hyperparam: str = "learning_rate",
) -> Any:
    """A copy of ``opt_state`` whose injected learning rates are ``lrs``.

    Args:
        opt_state: a state of an optimizer built with ``optax.inject_hyperparams``,
            possibly nested in ``optax.chain`` / ``optax.multi_transform``.
        lrs: one lr per AutoDrop group (``decision.lrs``), or one float.
        groups: for several groups, the ``multi_transform`` label of each group, in
            the order of ``lrs``. Without it, one lr goes to every injected state, or
            (several lrs) the i-th lr to the i-th injected state in pytree order.
        hyperparam: the name of the injected hyperparameter.

    Each new value keeps the dtype and sharding of the value it replaces. The other
    hyperparameters and the optimizer's moments are untouched. A ``flax.nnx``
    Variable (``nnx.Optimizer`` holds its injected lr in an ``OptArray``) is written in
    place, so ``optimizer.opt_state`` itself gets the new lr and ``nnx.state(optimizer)``
    keeps its structure for orbax.

    Raises:
        ValueError: no injected state holds ``hyperparam``, or the groups do not map
            one-to-one onto the injected states.
    """
    if isinstance(lrs, (int, float, numbers.Real)):
        lr_values: tuple[float, ...] = (float(lrs),)
    else:
        lr_values = tuple(float(v) for v in lrs)
    assignment = _assignment(_injected_states(opt_state, hyperparam), len(lr_values), groups)

    def replace(path: Any, node: Any) -> Any:
        key = jax.tree_util.keystr(path)
        if not _is_injected(node) or key not in assignment:
            return node
        value = _with_value(node.hyperparams[hyperparam], lr_values[assignment[key]])
        return node._replace(hyperparams={**node.hyperparams, hyperparam: value})

    return jax.tree_util.tree_map_with_path(replace, opt_state, is_leaf=_is_injected)


def check_learning_rates(
    state: AutoDropState,
    opt_state: Any,
    *,
    groups: Sequence[Hashable] | None = None,
    hyperparam: str = "learning_rate",
) -> None:
    """Refuse an optimizer state whose injected lr is not the one AutoDrop holds for this epoch.

    Call it once per epoch before :func:`update` (``update_train_state`` does). Each
    injected value is compared with ``state.lrs`` of its group, rounded to the value's
    own dtype (as :func:`set_learning_rates` writes it).

    Raises:
        autodrop_core.LRConflictError: another writer (a schedule, an optax
            transformation, your code, or an ``init`` with other lrs than the optimizer
            was built with) changed an lr; it names the state's path and group, the lr
            AutoDrop holds and the lr found, and what to do.
        ValueError: as :func:`set_learning_rates` (no injected state, a schedule, groups).
    """
    lrs = state.lrs
    found = _injected_states(opt_state, hyperparam)
    assignment = _assignment(found, len(lrs), groups)
    pairs = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_injected)[0]
    for path, node in pairs:
        key = jax.tree_util.keystr(path)
        if not _is_injected(node) or key not in assignment:
            continue
        value = np.asarray(_plain(node.hyperparams[hyperparam]))
        group = assignment[key]
        written = float(np.asarray(lrs[group], dtype=value.dtype))
        if float(value) != written:
            raise LRConflictError(
                group, written, float(value), f"opt_state{key}.hyperparams[{hyperparam!r}] (group {group})", _LR_FIX
            )


def update_train_state(
    state: AutoDropState,
    train_state: Any,
    *,
    groups: Sequence[Hashable] | None = None,
    hyperparam: str = "learning_rate",
) -> tuple[Any, AutoDropState, Decision]:
    """:func:`update` for a flax ``TrainState`` (anything with ``params``, ``opt_state``, ``replace``).

    Returns:
        ``(train_state, state, decision)``: the train state with the parameters to
        continue from and the new lrs written into its ``opt_state``, the new
        AutoDrop state and the decision. On error nothing is returned.

    Raises:
        autodrop_core.LRConflictError: the optimizer state's lr is not the one AutoDrop
            holds for this epoch (see :func:`check_learning_rates`).
    """
    check_learning_rates(state, train_state.opt_state, groups=groups, hyperparam=hyperparam)
    params, new_state, decision = update(state, train_state.params)
    opt_state = set_learning_rates(train_state.opt_state, decision.lrs, groups=groups, hyperparam=hyperparam)
    return train_state.replace(params=params, opt_state=opt_state), new_state, decision
