"""The CPU epoch end in one numba pass over the arrays' own buffers (reduction, copy, float64 absorb).

XLA:CPU runs the reduction program (``_programs.reduce_epoch``) as several loops: it
materialises s(t), copies x(t) in a pass of its own and, under x64, materialises the
widened s(t-1) too, moving more than twice the bytes an epoch end needs. On CPU, when
numba is installed and every leaf is a large enough float32/float64 array on one CPU
device, this module instead hands the addresses of the buffers (x(t), x̂(t-1), and the
two that s(t-1) is formed from) to the kernels every adapter shares
(:mod:`autodrop_core.fused`). One pass reads each byte once and writes:

* a fresh copy of x(t) (the candidate snapshot: the caller may donate its parameters
  later, so ours must not alias them), into numpy memory aligned to 64 bytes that JAX
  then adopts without a copy (:func:`_adopt`);
* while a drop is pending (the weight c is known before the reductions), the new running
  average W' = W + c (x(t) - W). Under x64 W is float64 and W' has the numpy reference's
  two roundings (XLA:CPU contracts the same expression into a fused multiply-add, so W'
  may differ from the XLA path's in its last bit). Without x64 W is a float32 (hi, lo)
  pair and c a float32 pair; the pass forms W' with the arithmetic of ``_programs.absorb``
  operation for operation, including the one fused multiply-add XLA:CPU makes of
  ``c_hi * gap + c_lo * gap``: the same bits as the XLA path.

The sums are float64 per leaf (blocked, the same bits on any number of threads), then
the leaves are added in order from 0.0, as ``_programs.sum_partials`` adds the XLA
partials. Under x64 they differ from the XLA path's only in the order of float64
additions (about 1e-13 relative); without x64 they are float64 where XLA's are float32,
so more exact.

This module decides nothing and never writes into a caller's buffer: every output is
freshly allocated, so a rejected epoch leaves the state as it was. It checks the dtype
and size of every buffer before the pass (never reads past a buffer's end) and keeps
every array alive until the pass has returned. The outputs it adopted are recorded
(:data:`_OWN`), so that a later pass takes their addresses, shapes and dtypes from the
record instead of from JAX; it never reads a recorded buffer whose JAX array was deleted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from autodrop_core import fused

__all__ = ["ALIGNMENT", "MIN_NUMEL", "USE_FUSED_CPU", "FusedResult", "averages_fit", "eligible", "reduce_epoch"]

#: Use the numba pass where it applies (tests switch it off, or on for small models).
USE_FUSED_CPU = True
#: A model whose leaves are all smaller than this keeps the XLA path: it never pays
#: numba's import and compile time (a few seconds).
MIN_NUMEL = 1 << 16
#: Byte alignment of the outputs: JAX:CPU adopts a numpy buffer through DLPack without a
#: copy only when it is aligned (64 bytes is enough for every jaxlib tested).
ALIGNMENT = 64

_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


#: Verdicts of :func:`_on_one_cpu` by sharding, keyed by ``id`` (each sharding is held here, so
#: its id cannot be reused): a model's leaves share a few sharding objects.
_ONE_CPU_VERDICTS: dict[int, tuple[Any, bool]] = {}


def _on_one_cpu(x: Any) -> bool:
    if not isinstance(x, jax.Array):
        return False
    sharding = x.sharding
    known = _ONE_CPU_VERDICTS.get(id(sharding))
    if known is not None and known[0] is sharding:
        return known[1]
    devices = sharding.device_set
    verdict = len(devices) == 1 and next(iter(devices)).platform == "cpu"
    if len(_ONE_CPU_VERDICTS) >= 64:
        _ONE_CPU_VERDICTS.clear()
    _ONE_CPU_VERDICTS[id(sharding)] = (sharding, verdict)
    return verdict


#: :func:`_public_row_major`'s verdicts by jaxlib's layout object (hashable, compared by value:
#: the dimension order and tiling), read as ``x._pjrt_layout``: 0.3 microseconds against 3
#: for ``x.format`` (private, so only a cache: where it is missing, the public route decides)
_LAYOUT_VERDICTS: dict[Any, bool] = {}


def _row_major(x: jax.Array) -> bool:
    """Whether the array's buffer is dense and row-major (JAX's default layout)."""
    try:
        pjrt = x._pjrt_layout  # type: ignore[attr-defined]
        known = _LAYOUT_VERDICTS.get(pjrt)
    except Exception:  # missing, or not hashable: no cache
        return _public_row_major(x)
    if known is None:
        known = _public_row_major(x)
        if len(_LAYOUT_VERDICTS) < 64:
            _LAYOUT_VERDICTS[pjrt] = known
    return known


def _public_row_major(x: jax.Array) -> bool:
    layout = getattr(getattr(x, "format", None), "layout", None)
    order = getattr(layout, "major_to_minor", None)
    if order is None:
        return True
    return tuple(order) == tuple(range(x.ndim)) and not tuple(getattr(layout, "tiling", ()) or ())


#: The outputs :func:`_adopt` handed to JAX without a copy, each with (the numpy array it
#: aliases, that array's address). The epoch ends that follow find their state's buffers
#: here instead of asking JAX for each one's pointer, readiness, shape and dtype (about
#: 1.5 microseconds an array against 5 with cold caches: 124 to 248 arrays an epoch end
#: for a ResNet-18). An entry goes when its JAX array dies, and is ignored if the array
#: was deleted (a donation): then JAX is asked, as for any other array, and refuses the
#: deleted buffer.
_OWN = fused.OutputRecord()


def _own(buffer: Any) -> tuple[np.ndarray, int] | None:
    """The numpy array and address behind one of :func:`_adopt`'s outputs, if ``buffer`` is one and alive."""
    facts = _OWN.facts(buffer)
    if facts is None or buffer.is_deleted():
        return None
    return facts


def _register(outputs: Sequence[jax.Array], arrays: Sequence[np.ndarray], addresses: Sequence[int]) -> None:
    for out, array, address in zip(outputs, arrays, addresses, strict=True):
        _OWN.add(out, (array, address))


def _fits(x: Any, other: Any, dtype: np.dtype | None = None) -> bool:
    """Whether ``other`` is a single-device CPU array of x's shape and of ``dtype`` (default x's).

    An output of :func:`_adopt` is checked by its entry in :data:`_OWN`, without asking JAX.
    """
    want = x.dtype if dtype is None else dtype
    own = _own(other)
    if own is not None:
        return bool(own[0].dtype == want and own[0].shape == x.shape)
    return _on_one_cpu(other) and np.dtype(other.dtype) == want and other.shape == x.shape


def eligible(*groups: Sequence[Any] | None) -> bool:
    """Whether the numba pass can take these leaves (the first group: x(t); the others: buffers read with it).

    Every array is on one CPU device (not sharded), float32 or float64, every group's
    leaf i has leaf i of x(t)'s shape and dtype, and one leaf of x(t) has at least
    :data:`MIN_NUMEL` elements. The leaves of x(t) must have the default (row-major)
    layout; the other groups are the state's buffers, which this adapter's programs and
    this module produce, in that layout. ``None`` groups are skipped.
    """
    if not USE_FUSED_CPU or not groups or not groups[0] or not fused.available():
        return False
    xs = groups[0]
    if not any(getattr(x, "size", 0) >= MIN_NUMEL for x in xs):
        return False
    if not all(_on_one_cpu(x) and x.dtype in _DTYPES and _row_major(x) for x in xs):
        return False
    for group in groups[1:]:
        if group is None:
            continue
        if len(group) != len(xs) or not all(_fits(x, other) for x, other in zip(xs, group, strict=True)):
            return False
    return True


def averages_fit(xs: Sequence[Any], averages: Sequence[Any], averages_lo: Sequence[Any] | None = None) -> bool:
    """Whether the pass can read this running average, shaped like x(t) and on one CPU device.

    W is float64 (``averages_lo`` None), or a float32 (hi, lo) pair for float32 leaves.
    """
    if averages_lo is None:
        return len(averages) == len(xs) and all(_fits(x, w, _F64) for x, w in zip(xs, averages, strict=True))
    return len(averages) == len(averages_lo) == len(xs) and all(
        x.dtype == _F32 and _fits(x, hi, _F32) and _fits(x, lo, _F32)
        for x, hi, lo in zip(xs, averages, averages_lo, strict=True)
    )


def _threads() -> int:
    """XLA:CPU sizes its thread pool from the cores this process may run on: the pass uses as many."""
    return fused.host_threads()


#: The outputs of one epoch end are allocated in blocks of at most this many bytes, each
#: holding consecutive leaves of one dtype (a leaf larger than it gets a block of its own).
BLOCK_BYTES = 8 << 20


def _empty(counts: Sequence[int], dtypes: Sequence[np.dtype]) -> tuple[list[np.ndarray], list[int]]:
    """Fresh 1-d numpy arrays of these element counts and dtypes, each starting on an :data:`ALIGNMENT` boundary.

    Returns the arrays and the addresses of their first elements (0 for an empty one).
    Consecutive leaves of one dtype share an allocation of at most :data:`BLOCK_BYTES`
    (views at aligned offsets; the block is freed with the last of them, and the leaves
    of one output live and die together): 9 allocations instead of 62 for the ResNet-18
    shapes, at about 3 microseconds each with cold caches. Blocks stay this small so that
    the memory allocator hands the blocks of earlier epochs' freed states back without
    new page faults (one allocation for all leaves, larger than glibc's largest heap
    chunk, would be mapped and faulted in afresh every epoch: 25% slower on the ResNet-18
    shapes, even with huge pages).
    """
    arrays: list[np.ndarray] = []
    addresses: list[int] = []
    n = len(counts)
    i = 0
    while i < n:
        dtype = dtypes[i]
        item = dtype.itemsize
        step = ALIGNMENT // item
        padded = []  # each leaf of the block, rounded up to whole alignment steps
        total = 0
        j = i
        while j < n and dtypes[j] == dtype:
            size = -(-counts[j] // step) * step
            if j > i and (total + size) * item > BLOCK_BYTES:
                break
            padded.append(size)
            total += size
            j += 1
        block, address = fused.aligned_empty_at(total, _DTYPES[dtype])  # (``dtype.name`` costs 3 microseconds)
        offset = 0
        for k in range(i, j):
            count = counts[k]
            arrays.append(block[offset:offset + count])
            addresses.append(address + offset * item if count else 0)
            offset += padded[k - i]
        i = j
    return arrays, addresses


def _adopt(arrays: Sequence[np.ndarray], addresses: Sequence[int], like: Sequence[jax.Array]) -> list[jax.Array]:
    """The numpy outputs as JAX arrays on the CPU device of ``like``, shaped like it, without a copy.

    A CPU device adopts an aligned numpy buffer (the JAX array keeps the numpy one
    alive). ``jax.device_put`` does so at about 35 microseconds a leaf, most of it
    Python-side argument handling; :func:`_direct_adopter` does the same transfer at
    about 7, and its outputs are entered in :data:`_OWN` (``addresses``: each array's).
    Where that route is missing or fails its check, ``jax.device_put`` of the whole list
    is used and nothing is entered.
    """
    if not arrays:
        return []
    device = next(iter(like[0].sharding.device_set))
    shaped = [a.reshape(x.shape) for a, x in zip(arrays, like, strict=True)]
    direct = _direct_adopter(device)
    if direct is None:
        return list(jax.device_put(shaped, device))
    outputs = [direct(a) for a in shaped]
    _register(outputs, shaped, addresses)
    return outputs


@functools.cache
def _direct_adopter(device: Any) -> Any:
    """A one-array transfer to ``device`` by jaxlib's ``batched_device_put`` (the call ``jax.device_put`` ends in).

    It is reached through ``jax._src`` (not public API): None (use ``jax.device_put``)
    where the names are missing, else :func:`_checked_adopter`'s verdict on it.
    """
    try:
        from jax._src import core as jax_core
        from jax._src.lib import xla_client

        return _checked_adopter(device, xla_client.batched_device_put, jax_core.ShapedArray)
    except Exception:  # any failure means: use the public route
        return None


def _checked_adopter(device: Any, put: Any, shaped_array: Any) -> Any:
    """``put`` as a one-array transfer, if it passes a check on this jaxlib; else None.

    The check: the transfer of a small aligned array must be a committed JAX array with
    the same type, shape, dtype, sharding and values as ``jax.device_put``'s, must alias
    the numpy buffer (not copy it), and must not raise. Only float32/float64 arrays whose
    dtype JAX keeps under the current x64 setting are passed to ``put``; any other goes
    through ``jax.device_put``.
    """
    sharding = jax.sharding.SingleDeviceSharding(device)

    avals: dict[tuple[tuple[int, ...], np.dtype], Any] = {}

    def direct(a: np.ndarray) -> jax.Array:
        # float32 is always kept; float64 only under x64 (else device_put narrows it)
        if a.dtype != _F32 and (a.dtype != _F64 or jax.dtypes.canonicalize_dtype(_F64) != _F64):
            return jax.device_put(a, device)
        key = (a.shape, a.dtype)
        aval = avals.get(key)
        if aval is None:  # a model has a few shapes: each abstract value is made once
            aval = avals[key] = shaped_array(a.shape, a.dtype)
        return put(aval, sharding, [a], [device], True)

    try:
        probe = fused.aligned_empty(48, "float32").reshape(3, 16)
        probe[...] = np.arange(48, dtype=np.float32).reshape(3, 16)
        got, want = direct(probe), jax.device_put(probe, device)
        same = (type(got) is type(want) and got.shape == want.shape and got.dtype == want.dtype
                and got.sharding == want.sharding and bool(getattr(got, "committed", getattr(got, "_committed", True)))
                and not got.weak_type and np.array_equal(np.asarray(got), probe)
                and got.unsafe_buffer_pointer() == probe.ctypes.data)  # adopted, not copied: :data:`_OWN` relies on it
    except Exception:  # any failure means: use the public route
        return None
    return direct if same else None


def _address(what: str, names: Sequence[str], i: int, x: jax.Array, count: int, buffer: jax.Array,
             dtype: np.dtype, own: tuple[np.ndarray, int] | None = None) -> int:
    """The buffer's address, after checking that it holds ``count`` (x's size) elements of ``dtype``.

    ``own``: the buffer's entry in :data:`_OWN` (:func:`_own`), whose numpy array is checked
    and whose address is taken instead of asking JAX. ``names[i]`` names the leaf in the
    errors (looked up only then).
    """
    held: Any = buffer if own is None else own[0]
    if held.dtype != dtype or (held.shape != x.shape and held.size != count):
        raise RuntimeError(f"params{names[i]}: its {what} is {np.dtype(held.dtype)}{list(held.shape)}, "
                           f"expected {dtype}{list(x.shape)}: refused before any read")
    if own is not None:  # a numpy array of count elements holds them all
        return own[1] if count else 0
    if buffer.shape != x.shape:  # the same shape and dtype on one CPU device hold as many bytes
        nbytes = buffer.on_device_size_in_bytes()
        if nbytes < count * dtype.itemsize:
            raise RuntimeError(f"params{names[i]}: its {what} buffer holds {nbytes} bytes, fewer than "
                               f"{count} x {dtype.itemsize}: refused before any read")
    return int(buffer.unsafe_buffer_pointer()) if count else 0


@dataclass(frozen=True)
class FusedResult:
    """What one pass returns: the two sums (float64, leaves added in order), the copies, W' (or None).

    ``averages_lo`` is the low half of a float32 pair W' (None for a float64 one).
    """

    dot: float
    sq_norm: float
    copies: list[jax.Array] | None
    averages: list[jax.Array] | None
    averages_lo: list[jax.Array] | None = None


def reduce_epoch(
    params: Sequence[jax.Array],
    snapshot: Sequence[jax.Array],
    base: Sequence[jax.Array] | None,
    head: Sequence[jax.Array] | None,
    names: Sequence[str],
    *,
    copying: bool = True,
    absorb: tuple[Sequence[jax.Array], float] | None = None,
    absorb_pair: tuple[Sequence[jax.Array], Sequence[jax.Array], tuple[Any, Any]] | None = None,
) -> FusedResult:
    """dot = <s(t), s(t-1)> and ||s(t)||^2 over all leaves, the copies of x(t) and W', in one pass.

    Args:
        params: x(t), single-device CPU float32/float64 arrays (see :func:`eligible`).
        snapshot: x̂(t-1), like ``params``.
        base: x̂(t-2) (None: s(t-1) = 0, the first epoch).
        head: None when s(t-1) = x̂(t-1) - x̂(t-2); else x(t-1) in the parameter dtype
            (the epoch after an applied average).
        names: each leaf's key path, for the errors.
        copying: also return a fresh copy of each leaf of x(t) (the candidate snapshot).
        absorb: ``(W, c)``: also return W' = W + c (x(t) - W) per leaf, W float64.
        absorb_pair: ``(W_hi, W_lo, (c_hi, c_lo))``: the same for a float32 (hi, lo) pair W
            and a float32 pair c (float32 leaves, without x64), with the XLA program's
            arithmetic (see the module docstring). At most one of ``absorb`` and this.

    Raises:
        RuntimeError: a buffer has another dtype or size than its leaf of x(t) (named),
            checked for every buffer before the pass reads any.
    """
    if absorb is not None and absorb_pair is not None:
        raise ValueError("reduce_epoch: pass absorb (a float64 W) or absorb_pair (a float32 pair W), not both")
    n = len(params)
    averages_in = absorb[0] if absorb is not None else absorb_pair[0] if absorb_pair is not None else None
    averages_lo_in = absorb_pair[1] if absorb_pair is not None else None
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    dtypes = [np.dtype(x.dtype) for x in params]
    counts = [int(x.size) for x in params]
    average_dtype = f32 if absorb_pair is not None else f64
    # The state's buffers: (what, the group, their dtype; None: x's), and each leaf's entry in _OWN.
    groups = [("snapshot", snapshot, None), ("step base", base, None), ("step head", head, None),
              ("running average", averages_in, average_dtype), ("running average's low half", averages_lo_in, f32)]
    owned = [[_own(b) for b in group] if group is not None else [] for _, group, _ in groups]
    # dispatch is asynchronous: the buffers are read only once every producer has finished (the
    # outputs of _adopt were written before they were adopted: they are ready)
    jax.block_until_ready([*params, *(b for (_, group, _), entries in zip(groups, owned, strict=True)
                                      for b, entry in zip(group or [], entries, strict=True) if entry is None)])
    none: tuple[list[Any], list[int]] = ([None] * n, [0] * n)
    copies_out, copies_at = _empty(counts, dtypes) if copying else none
    averages_out, averages_at = _empty(counts, [average_dtype] * n) if averages_in is not None else none
    averages_lo_out, averages_lo_at = _empty(counts, [f32] * n) if averages_lo_in is not None else none

    def address(k: int, i: int) -> int:
        what, group, want = groups[k]
        assert group is not None
        return _address(what, names, i, params[i], counts[i], group[i], want or dtypes[i], owned[k][i])

    rows = []
    for i, (x, count, dtype) in enumerate(zip(params, counts, dtypes, strict=True)):
        x_address = _address("value", names, i, x, count, x, dtype)
        snap = address(0, i)
        if base is None:
            head_address = base_address = snap  # s(t-1) = x̂ - x̂ = 0 (NaN where x̂ is not finite)
        else:
            base_address = address(1, i)
            head_address = snap if head is None else address(2, i)
        average_address = 0 if averages_in is None else address(3, i)
        average_lo_address = 0 if averages_lo_in is None else address(4, i)
        rows.append((x_address, snap, head_address, base_address, copies_at[i], average_address,
                     averages_at[i], average_lo_address, averages_lo_at[i]))
    pair_weight = None
    if absorb_pair is not None:
        c_hi, c_lo = (float(np.float32(np.asarray(c))) for c in absorb_pair[2])
        pair_weight = (c_hi, c_lo)
    per_leaf = fused.reduce_pass([_DTYPES[d] for d in dtypes], rows, tuple(counts), threads=_threads(),
                                 copying=copying, absorbing=averages_in is not None,
                                 weight=0.0 if absorb is None else float(absorb[1]), firsts=[False] * n,
                                 pair_weight=pair_weight)
    dot = 0.0
    sq_norm = 0.0
    for leaf_dot, leaf_sq in per_leaf:
        dot += leaf_dot
        sq_norm += leaf_sq
    return FusedResult(
        dot, sq_norm,
        _adopt(copies_out, copies_at, params) if copying else None,
        _adopt(averages_out, averages_at, params) if averages_in is not None else None,
        _adopt(averages_lo_out, averages_lo_at, params) if averages_lo_in is not None else None,
    )
