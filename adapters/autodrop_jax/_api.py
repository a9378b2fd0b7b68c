"""The functional API: ``init`` builds the state, ``update`` runs one epoch end.

``update`` is the adapter pattern of the spec in JAX terms: one jitted reduction,
one host transfer of the per-leaf partial sums, the core's decision on the host,
then (only when the decision says so) a jitted averaging step. On CPU, for models with a
large float32/float64 leaf and numba installed, one numba pass over the buffers replaces
the reduction program (``_fused_cpu.py``). It is pure in the
functional sense: it returns new parameters and a new state and changes neither
input, so a rejected epoch simply returns nothing. It must not be called inside
``jax.jit`` (the decision needs concrete numbers) and must not re-implement any
rule of the core.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autodrop_core import (
    AutoDropConfig,
    Controller,
    Decision,
    InvalidReductionError,
    StateError,
    advance,
    initial_state,
)
from autodrop_jax import _fused_cpu, _programs
from autodrop_jax._state import (
    HEAD_IS_COPY,
    HEAD_IS_SNAPSHOT,
    HEAD_IS_STEP,
    AutoDropState,
    Buffers,
    decode_buffers,
    decode_core,
    encode_buffers,
    encode_core,
)

__all__ = ["accumulation_dtype", "from_checkpoint", "init", "step_reductions", "update"]


def accumulation_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on (also inside ``jax.enable_x64()``), else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


class _LeafNames(Sequence[str]):
    """The key paths of a pytree's leaves (``jax.tree_util.keystr``), formed on first use.

    They only name leaves in errors; forming them costs about 3 microseconds a leaf, which
    an epoch end that raises nothing never pays.
    """

    def __init__(self, tree: Any) -> None:
        self._tree = tree
        self._names: list[str] | None = None

    def _all(self) -> list[str]:
        if self._names is None:
            pairs, _ = jax.tree_util.tree_flatten_with_path(self._tree)
            self._names = [jax.tree_util.keystr(path) or "<root>" for path, _ in pairs]
            self._tree = None
        return self._names

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())


#: jnp.issubdtype(dtype, jnp.floating) by dtype (a microsecond or two a leaf otherwise)
_FLOATING: dict[Any, bool] = {}


def _is_floating(dtype: Any) -> bool:
    verdict = _FLOATING.get(dtype)
    if verdict is None:
        verdict = _FLOATING[dtype] = bool(jnp.issubdtype(dtype, jnp.floating))
    return verdict


def _float_leaves(params: Any, what: str) -> tuple[list[jax.Array], Any, Sequence[str]]:
    flat, treedef = jax.tree_util.tree_flatten(params)
    if not flat:
        raise ValueError(f"{what} holds no arrays: AutoDrop needs at least one trainable parameter")
    names = _LeafNames(params)
    leaves = []
    for i, leaf in enumerate(flat):
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError(
                f"{what}{names[i]} is a tracer: call autodrop_jax outside jax.jit/vmap/grad (once per epoch, "
                "on concrete arrays), since the decision needs the epoch's numbers on the host"
            )
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not _is_floating(dtype):
            kind = dtype if dtype is not None else type(leaf).__name__
            raise TypeError(f"{what}{names[i]} must be a floating-point array, got {kind}")
        leaves.append(leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf))
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
    return _assemble(
        treedef, cfg, encode_core(initial_state(cfg), cfg), _programs.copy_leaves(leaves), None, None, None, None
    )


def _assemble(
    treedef: Any,
    config: AutoDropConfig,
    core: Any,
    snapshot: list[Any],
    base: list[Any] | None,
    head: tuple[int, list[Any]] | None,
    average: list[Any] | None,
    average_lo: list[Any] | None,
) -> AutoDropState:
    """A state from its real buffers (None: absent, stored as 0-d placeholders)."""
    acc = accumulation_dtype()
    tree = lambda leaves: jax.tree.unflatten(treedef, leaves)  # noqa: E731
    buffers = Buffers(base=base is not None, head=HEAD_IS_SNAPSHOT if head is None else head[0],
                      average=average is not None)
    return AutoDropState(
        snapshot=tree(snapshot),
        step_base=tree(base if base is not None else _programs.placeholders(snapshot)),
        step_head=tree(head[1] if head is not None else _programs.placeholders(snapshot)),
        average=tree(average if average is not None else _programs.placeholders(snapshot, acc)),
        average_lo=tree(average_lo if average_lo is not None else _programs.placeholders(snapshot, acc)),
        layout=encode_buffers(buffers),
        core=core,
        config=config,
    )


def _matching_leaves(state: AutoDropState, params: Any) -> tuple[list[jax.Array], Any, Sequence[str]]:
    leaves, treedef, names = _float_leaves(params, "params")
    snap_leaves, snap_def = jax.tree.flatten(state.snapshot)
    if treedef != snap_def:
        raise ValueError(f"params have tree structure {treedef}, but the AutoDrop state was built for {snap_def}")
    for i, (x, x_hat) in enumerate(zip(leaves, snap_leaves, strict=True)):
        if x.shape != x_hat.shape or x.dtype != x_hat.dtype:
            raise ValueError(
                f"params{names[i]} is {x.dtype}{list(x.shape)}, expected {x_hat.dtype}{list(x_hat.shape)} "
                "as when the AutoDrop state was built"
            )
    acc = accumulation_dtype()
    step_dtype = np.dtype(jax.tree.leaves(state.average)[0].dtype)
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
    leaves, _, names = _matching_leaves(state, params)
    dot, sq_norm, _, _ = _reduce(state, decode_buffers(state.layout), leaves, names, copying=False)
    return dot, sq_norm


def _reduce(
    state: AutoDropState,
    buffers: Buffers,
    leaves: list[jax.Array],
    names: Sequence[str],
    *,
    copying: bool = True,
    weight: float | None = None,
) -> tuple[float, float, list[jax.Array], tuple[list[jax.Array], list[jax.Array] | None] | None]:
    """The epoch's reduction over the state's real buffers (placeholders never go in).

    Returns ``(dot, sq_norm, copies, absorbed)``: the two sums (float64 on the host), fresh
    copies of x(t) (the candidate snapshot; empty when not ``copying``) and, where the
    numba pass could fold it in (a drop pending: ``weight`` is the pending average
    weight), ``(W', W'_lo)`` with W' = W + weight (x(t) - W) (``W'_lo`` None under x64),
    else None. On CPU, for large float32/float64 models on one device with numba
    installed, one numba pass (``_fused_cpu.py``) does it all; else the XLA program does
    the reduction and the copies.
    """
    snapshot = jax.tree.leaves(state.snapshot)
    base = _placed(state.step_base, snapshot) if buffers.base else None
    head = _placed(state.step_head, snapshot) if buffers.head != HEAD_IS_SNAPSHOT else None
    if buffers.head != HEAD_IS_STEP and _fused_cpu.eligible(leaves, snapshot, base, head):
        absorb = absorb_pair = None
        if weight is not None and buffers.average:
            average = _placed(state.average, snapshot)
            acc = accumulation_dtype()
            if acc == np.float64 and _fused_cpu.averages_fit(leaves, average):
                absorb = (average, weight)
            elif acc == np.float32:
                average_lo = _placed(state.average_lo, snapshot)
                if _fused_cpu.averages_fit(leaves, average, average_lo):
                    absorb_pair = (average, average_lo, _programs.split_weight_on_host(weight, acc))
        result = _fused_cpu.reduce_epoch(leaves, snapshot, base, head, names, copying=copying, absorb=absorb,
                                         absorb_pair=absorb_pair)
        absorbed = None if result.averages is None else (result.averages, result.averages_lo)
        return result.dot, result.sq_norm, result.copies or [], absorbed
    acc_name = accumulation_dtype().name
    partials, copies, _ = _programs.reduce_epoch(leaves, snapshot, base, head, acc=acc_name)  # s(t) is not kept
    dot, sq_norm = _programs.sum_partials(partials)
    return dot, sq_norm, copies, None


def _placed(tree: Any, snapshot: list[jax.Array]) -> list[jax.Array]:
    """The leaves of a real buffer on the device, with the snapshot's shardings.

    orbax restores a buffer that the restore target (a fresh :func:`init` state) holds as a
    0-d host placeholder as a host array of the saved shape; it goes to the device here, once.
    """
    return [
        leaf if isinstance(leaf, jax.Array) else jax.device_put(leaf, like.sharding)
        for leaf, like in zip(jax.tree.leaves(tree), snapshot, strict=True)
    ]


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
    buffers = decode_buffers(state.layout)
    # While a drop is pending the weight is known before the reductions: the numba pass may absorb x(t) too.
    pending_weight = Controller(config, core).pending_average_weight
    dot, sq_norm, copies, absorbed = _reduce(state, buffers, leaves, names, weight=pending_weight)
    try:
        decision, new_core = advance(config, core, dot, sq_norm)
    except InvalidReductionError as err:
        bad = _programs.nonfinite_leaves(leaves)
        if not bad:
            raise
        raise InvalidReductionError(
            err.epoch, err.field, err.value, "finite parameters", f"params{names[bad[0]]} holds NaN or infinity"
        ) from err

    snapshot = jax.tree.leaves(state.snapshot)
    average: list[jax.Array] | None = None
    average_lo: list[jax.Array] | None = None
    if buffers.average:
        average = _placed(state.average, snapshot)
        if average[0].dtype == np.float32:  # without x64 W is a float32 (hi, lo) pair
            average_lo = _placed(state.average_lo, snapshot)
    flat = _programs.single_device(leaves)
    # Normal epoch: B <- S, S <- x(t), A <- absent (A is S).
    out_leaves, new_snapshot, head = leaves, copies, None
    if decision.average_weight is not None:
        first = decision.average_weight == 1.0
        if not first and average is None:
            raise StateError(
                f"epoch {decision.epoch} continues an averaging window, but the state holds no running average "
                "(its buffer layout says W is absent): the state was not produced by autodrop_jax"
            )
        if absorbed is not None and decision.average_weight == pending_weight:
            average, average_lo = absorbed  # the numba pass formed W'
        else:  # the decision is the authority (it agrees with the pending weight whenever one exists)
            weight = _programs.split_weight(decision.average_weight, accumulation_dtype())
            if first:
                average, average_lo = None, None  # W <- x(t): the old W (if any) is not read
            average, average_lo = _programs.absorb(leaves, average, average_lo, weight, first=first, flat=flat)
    else:
        average, average_lo = None, None
    if decision.apply_average:
        assert average is not None  # an applied average always absorbs this epoch first
        # S <- the written average, A <- x(t) as it was before (s(t) = x(t) - x̂(t-1)), B <- old S; W is freed.
        out_leaves, new_snapshot = _programs.apply_average(average, average_lo, leaves, flat=flat)
        head = (HEAD_IS_COPY, copies)
        average, average_lo = None, None
    new_state = _assemble(
        treedef, config, encode_core(new_core, config), new_snapshot, snapshot, head, average, average_lo
    )
    return jax.tree.unflatten(treedef, out_leaves), new_state, decision


def _lookup(saved: Any, path: tuple[Any, ...], where: str) -> Any:
    """The leaf at a key path of ``like`` inside a nested mapping/sequence restored without a target."""
    node = saved
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            name: Any = key.key
        elif isinstance(key, jax.tree_util.SequenceKey):
            name = key.idx
        elif isinstance(key, jax.tree_util.GetAttrKey):
            name = key.name
        else:  # FlattenedIndexKey and custom keys
            name = getattr(key, "key", key)
        if isinstance(node, Mapping):
            found = [k for k in (name, str(name)) if k in node]
            if not found:
                raise StateError(f"the saved {where} has no entry {name!r} (at {jax.tree_util.keystr(path)})")
            node = node[found[0]]
        elif isinstance(node, Sequence) and isinstance(name, int) and name < len(node):
            node = node[name]
        elif hasattr(node, str(name)):
            node = getattr(node, str(name))
        else:
            raise StateError(f"the saved {where} has no entry {name!r} (at {jax.tree_util.keystr(path)})")
    return node


def _saved_leaves(saved: Any, like_paths: list[tuple[Any, ...]], like_def: Any, where: str) -> list[Any]:
    if isinstance(saved, Mapping) or not jax.tree_util.all_leaves([saved]):
        if jax.tree.structure(saved) == like_def:
            return list(jax.tree.leaves(saved))
        return [_lookup(saved, path, where) for path in like_paths]
    raise StateError(f"the saved {where} is a single array, expected a tree like the parameters")


def from_checkpoint(saved: Any, like: AutoDropState) -> AutoDropState:
    """An :class:`AutoDropState` from a checkpoint, in this version's layout, placed like ``like``.

    Restore the AutoDrop part of an orbax checkpoint *without* a target (the state's
    buffers change shape with its phase, so a fresh ``init`` is no restore target), then
    pass it here with a fresh ``init`` state of the same configuration and parameters::

        raw = checkpointer.restore(path)            # plain dicts of arrays
        state = autodrop_jax.from_checkpoint(raw["autodrop"], autodrop_jax.init(params, lrs, **settings))

    Args:
        saved: the restored fields of the state: a mapping (``snapshot``, ``step_base``,
            ``step_head``, ``average``, ``average_lo``, ``layout``, ``core``) or an
            :class:`AutoDropState`. A checkpoint of layout 1 (autodrop before the layout
            change: ``snapshot``, ``prev_step``, ``average``, ``average_lo``, ``core``) is
            read too: its explicit s(t-1) is kept for one epoch and the run continues
            bit for bit as it would have with the old version.
        like: a state built by :func:`init` with the same configuration, parameter tree,
            dtypes and shardings; each real buffer is placed with the sharding of
            ``like``'s snapshot leaf.

    Raises:
        autodrop_core.StateError: a field is missing, has the wrong shape or dtype, or the
            saved state was written with another configuration.
    """
    fields = dict(saved) if isinstance(saved, Mapping) else {
        name: getattr(saved, name) for name in ("snapshot", "step_base", "step_head", "average", "average_lo",
                                                "layout", "core") if hasattr(saved, name)
    }
    if not isinstance(saved, (Mapping, AutoDropState)):
        raise StateError(f"from_checkpoint needs a mapping of the state's fields or an AutoDropState, got {saved!r}")
    old = "prev_step" in fields
    needed = ("snapshot", "prev_step", "average", "average_lo", "core") if old else (
        "snapshot", "step_base", "step_head", "average", "average_lo", "layout", "core")
    missing = [name for name in needed if name not in fields]
    if missing:
        raise StateError(f"the saved AutoDrop state lacks {missing} (it has {sorted(fields)})")
    config = like.config
    core_state = decode_core(fields["core"], config)  # refuses another configuration
    pairs, like_def = jax.tree_util.tree_flatten_with_path(like.snapshot)
    paths = [path for path, _ in pairs]
    like_leaves = [leaf for _, leaf in pairs]
    acc = accumulation_dtype()

    def real(name: str, dtype: Any = None) -> list[jax.Array]:
        out = []
        for path, want, got in zip(paths, like_leaves, _saved_leaves(fields[name], paths, like_def, name), strict=True):
            dt = np.dtype(want.dtype if dtype is None else dtype)
            if tuple(np.shape(got)) != tuple(want.shape) or np.dtype(got.dtype) != dt:
                raise StateError(
                    f"the saved {name}{jax.tree_util.keystr(path)} is {np.dtype(got.dtype)}{list(np.shape(got))}, "
                    f"expected {dt}{list(want.shape)}"
                )
            out.append(jax.device_put(got, want.sharding))
        return out

    if old:
        buffers = Buffers(base=False, head=HEAD_IS_STEP, average=core_state.pending > 0)
    else:
        buffers = decode_buffers(fields["layout"])
        if buffers.average != (core_state.pending > 0):
            raise StateError(
                f"the saved buffer layout says W is {'present' if buffers.average else 'absent'}, but the core "
                f"state has pending={core_state.pending}: the fields come from different states"
            )
    snapshot = real("snapshot")
    base = real("step_base") if buffers.base else None
    head: tuple[int, list[jax.Array]] | None = None
    if buffers.head == HEAD_IS_COPY:
        head = (HEAD_IS_COPY, real("step_head"))
    elif buffers.head == HEAD_IS_STEP:
        head = (HEAD_IS_STEP, real("prev_step" if old else "step_head", acc))
    average = real("average", acc) if buffers.average else None
    average_lo = real("average_lo", acc) if buffers.average and acc == np.float32 else None
    core = np.asarray(jax.device_get(fields["core"]), dtype=np.uint32)
    return _assemble(like_def, config, core, snapshot, base, head, average, average_lo)
