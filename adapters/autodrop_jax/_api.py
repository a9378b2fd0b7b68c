"""The functional API: ``init`` builds the state, ``update`` runs one epoch end.

``update`` is the adapter pattern of the spec in JAX terms: one jitted reduction,
one host transfer of the per-leaf partial sums, the core's decision on the host,
then (only when the decision says so) a jitted averaging step. It is pure in the
functional sense: it returns new parameters and a new state and changes neither
input, so a rejected epoch simply returns nothing. It must not be called inside
``jax.jit`` (the decision needs concrete numbers) and must not re-implement any
rule of the core.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autodrop_core import AutoDropConfig, Decision, InvalidReductionError, advance, initial_state
from autodrop_jax import _programs
from autodrop_jax._state import AutoDropState, decode_core, encode_core

__all__ = ["accumulation_dtype", "init", "step_reductions", "update"]


def accumulation_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on (also inside ``jax.enable_x64()``), else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def _float_leaves(params: Any, what: str) -> tuple[list[jax.Array], Any, list[str]]:
    pairs, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not pairs:
        raise ValueError(f"{what} holds no arrays: AutoDrop needs at least one trainable parameter")
    leaves, names = [], []
    for path, leaf in pairs:
        name = jax.tree_util.keystr(path) or "<root>"
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError(
                f"{what}{name} is a tracer: call autodrop_jax outside jax.jit/vmap/grad (once per epoch, "
                "on concrete arrays), since the decision needs the epoch's numbers on the host"
            )
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            kind = dtype if dtype is not None else type(leaf).__name__
            raise TypeError(f"{what}{name} must be a floating-point array, got {kind}")
        leaves.append(leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf))
        names.append(name)
    return leaves, treedef, names


def init(params: Any, lrs: Sequence[float] | float, **config: Any) -> AutoDropState:
    """A fresh AutoDrop state for a parameter pytree, before the first epoch.

    Args:
        params: x̂(0), the trainable parameters (any pytree of floating-point arrays,
            sharded or not). They are copied, never kept by reference.
        lrs: starting lr of each parameter group (one float means one group).
        **config: the spec's settings: ``min_lr``, ``drop_factor``, ``threshold``,
            ``max_threshold``, ``drop_delay``, ``angle_window``, ``reset_on_drop``, ``trigger``.

    Raises:
        autodrop_core.ConfigError: a setting is out of its valid range.
        TypeError: a leaf of ``params`` is not a floating-point array.
    """
    # One number is one group; a string or any other non-sequence goes to the core
    # unchanged, which refuses it whole (tuple('0.1') would be read character by character).
    lr_tuple: Any = lrs
    if isinstance(lrs, numbers.Real):
        lr_tuple = (lrs,)
    elif isinstance(lrs, Iterable) and not isinstance(lrs, (str, bytes)):
        lr_tuple = tuple(lrs)
    cfg = AutoDropConfig(lrs=lr_tuple, **config)
    leaves, treedef, _ = _float_leaves(params, "params")
    acc = accumulation_dtype()
    return AutoDropState(
        snapshot=jax.tree.unflatten(treedef, _programs.copy_leaves(leaves)),
        prev_step=jax.tree.unflatten(treedef, _programs.zeros_like_leaves(leaves, acc)),
        average=jax.tree.unflatten(treedef, _programs.zeros_like_leaves(leaves, acc)),
        average_lo=jax.tree.unflatten(treedef, _programs.compensation_leaves(leaves, acc)),
        core=encode_core(initial_state(cfg), cfg),
        config=cfg,
    )


def _matching_leaves(state: AutoDropState, params: Any) -> tuple[list[jax.Array], Any, list[str]]:
    leaves, treedef, names = _float_leaves(params, "params")
    snap_leaves, snap_def = jax.tree.flatten(state.snapshot)
    if treedef != snap_def:
        raise ValueError(f"params have tree structure {treedef}, but the AutoDrop state was built for {snap_def}")
    for name, x, x_hat in zip(names, leaves, snap_leaves, strict=True):
        if x.shape != x_hat.shape or x.dtype != x_hat.dtype:
            raise ValueError(
                f"params{name} is {x.dtype}{list(x.shape)}, expected {x_hat.dtype}{list(x_hat.shape)} "
                "as when the AutoDrop state was built"
            )
    acc = accumulation_dtype()
    step_dtype = jax.tree.leaves(state.prev_step)[0].dtype
    if step_dtype != acc:
        raise ValueError(
            f"the AutoDrop state accumulates in {step_dtype} but jax_enable_x64 is now "
            f"{'on' if acc == np.float64 else 'off'} ({acc}): use it with the x64 setting it was built under"
        )
    return leaves, treedef, names


def step_reductions(state: AutoDropState, params: Any) -> tuple[float, float]:
    """The spec's two scalars for the epoch that just ended, without deciding anything.

    Returns:
        ``(dot, sq_norm)`` = (<s(t), s(t-1)>, ||s(t)||^2), combined on the host in float64.
    """
    leaves, _, _ = _matching_leaves(state, params)
    partials, _, _ = _programs.reduce_epoch(leaves, jax.tree.leaves(state.snapshot), jax.tree.leaves(state.prev_step))
    return _programs.sum_partials(partials)


def update(state: AutoDropState, params: Any) -> tuple[Any, AutoDropState, Decision]:
    """End one epoch: reduce on the device, decide on the host, average when due.

    Call it once per epoch with the parameters x(t) after that epoch's training, then
    train the next epoch from the returned parameters with ``decision.lrs`` (see
    :func:`autodrop_jax.set_learning_rates` for optax).

    Args:
        state: the state returned by :func:`init` or the previous :func:`update`.
        params: x(t), same tree structure, shapes and dtypes as at :func:`init`.

    Returns:
        ``(params, state, decision)``: the parameters to continue from (the input
        arrays themselves, or the running average when ``decision.apply_average``),
        the new state, and the core's :class:`autodrop_core.Decision`.

    Raises:
        autodrop_core.InvalidReductionError: the reductions are NaN or infinite (the
            message names the epoch and the first leaf holding NaN or infinity).
            Nothing is returned, so the caller still holds the unchanged state.
        ValueError: ``params`` do not match the state, or the x64 setting changed.
    """
    leaves, treedef, names = _matching_leaves(state, params)
    config = state.config
    core = decode_core(state.core, config)
    partials, steps, copies = _programs.reduce_epoch(
        leaves, jax.tree.leaves(state.snapshot), jax.tree.leaves(state.prev_step)
    )
    dot, sq_norm = _programs.sum_partials(partials)
    try:
        decision, new_core = advance(config, core, dot, sq_norm)
    except InvalidReductionError as err:
        bad = _programs.nonfinite_leaves(leaves)
        if not bad:
            raise
        raise InvalidReductionError(
            err.epoch, err.field, err.value, "finite parameters", f"params{names[bad[0]]} holds NaN or infinity"
        ) from err

    average, average_lo = jax.tree.leaves(state.average), jax.tree.leaves(state.average_lo)
    if average and average[0].dtype == np.float64:
        # x64: the low halves are unused 0-d placeholders. Fresh, uncommitted ones go into the
        # programs, never the state's: a restore (orbax) commits those to one device, which a
        # jitted program over sharded parameters refuses.
        average_lo = _programs.compensation_leaves(leaves, np.dtype(np.float64))
    out_leaves, snapshot = leaves, copies
    if decision.average_weight is not None:
        weight = _programs.split_weight(decision.average_weight, average[0].dtype)
        first = decision.average_weight == 1.0
        average, average_lo = _programs.absorb(leaves, average, average_lo, weight, first=first)
    if decision.apply_average:
        out_leaves, snapshot = _programs.apply_average(average, average_lo, leaves)
    new_state = AutoDropState(
        snapshot=jax.tree.unflatten(treedef, snapshot),
        prev_step=jax.tree.unflatten(treedef, steps),
        average=jax.tree.unflatten(treedef, average),
        average_lo=jax.tree.unflatten(treedef, average_lo),
        core=encode_core(new_core, config),
        config=config,
    )
    return jax.tree.unflatten(treedef, out_leaves), new_state, decision
