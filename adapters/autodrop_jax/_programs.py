"""The device programs: one jitted reduction per epoch, one jitted averaging step when due.

Everything here works on flat lists of leaves and stays on the device: the previous
step s(t-1) is formed on the fly from two parameter-dtype buffers (it is not stored), the
reduction returns the per-leaf partial sums of the two scalars as one small array,
which the caller moves to the host in a single transfer and adds up in float64. No
function here reads a value back to the host, decides anything, or mutates its
inputs (none is donated, so a rejected epoch leaves every caller buffer intact).
Elementwise outputs keep the sharding of their inputs; the only cross-device traffic
of a sharded run is the all-reduce of per-leaf scalars.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "absorb",
    "apply_average",
    "compensation_leaves",
    "copy_leaves",
    "nonfinite_leaves",
    "placeholders",
    "reduce_epoch",
    "single_device",
    "split_weight",
    "split_weight_on_host",
    "sum_partials",
    "zeros_like_leaves",
]

Leaves = list[jax.Array]

#: XLA:CPU compiles the reduction (and the copies) with its classic loop emitter: the newer
#: fusion emitters run its elementwise part (s(t), materialized for the two sums) about
#: twice slower on convolution-shaped leaves (jaxlib 0.10.2, ResNet-18 shapes, see
#: benchmarks/bench_jax_step.py); for the averaging arithmetic on 1-d views they are the
#: faster ones, so those programs keep the default. Elementwise results are IEEE-exact
#: either way, and the reductions give the same bits (tests/jax/test_layout.py compares
#: with the run recorded before this option).
_CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def _jit_options() -> dict[str, Any]:
    """``compiler_options`` for :func:`jax.jit` on the CPU backend, if this jax and jaxlib accept them."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda v: v + 1, compiler_options=_CPU_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # an older jax without compiler_options, or a jaxlib without the flag: only slower
        return {}
    return {"compiler_options": dict(_CPU_OPTIONS)}


class _Program:
    """A function jitted on first use (when the backend is known) with :func:`_jit_options`."""

    def __init__(self, fn: Callable[..., Any], static_argnames: tuple[str, ...], classic: bool) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._static = static_argnames
        self._classic = classic
        self._jitted: Any = None

    def _get(self) -> Any:
        if self._jitted is None:
            options = _jit_options() if self._classic else {}
            self._jitted = jax.jit(self._fn, static_argnames=self._static, **options)
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self._get().lower(*args, **kwargs)


def _program(*static_argnames: str, classic: bool = False) -> Callable[[Callable[..., Any]], _Program]:
    """jit with ``static_argnames``; ``classic``: with XLA:CPU's classic loop emitter (:data:`_CPU_OPTIONS`)."""
    return lambda fn: _Program(fn, static_argnames, classic)


def _flat(x: jax.Array, flat: bool) -> jax.Array:
    """A 1-d view for elementwise work (free in XLA): loops over a minor dimension of 3 vectorize badly.

    Only for leaves on one device (``flat``): flattening a sharded array would make XLA reshard it.
    """
    return x.reshape(-1) if flat else x


def single_device(leaves: Sequence[jax.Array]) -> bool:
    """Whether every leaf lives on one device (then the elementwise programs may flatten it)."""
    return all(len(x.sharding.device_set) == 1 for x in leaves)


def _previous_step(
    snapshot: jax.Array, base: jax.Array | None, head: jax.Array | None, step: jax.Array
) -> jax.Array | None:
    """s(t-1) = acc(A) - acc(B) for one leaf, formed on the fly in the accumulation dtype of ``step``.

    ``base`` B = x̂(t-2) (None: s(t-1) = 0); ``head`` A = None means A is the snapshot,
    a parameter-dtype array is x(t-1) after an applied average, and an array already in
    the accumulation dtype with no ``base`` is an explicit s(t-1) (a layout-1 checkpoint).
    One subtraction of the same two parameter-dtype values, rounded once in the
    accumulation dtype: the bits the stored step of layout 1 had.
    """
    acc = step.dtype
    if base is None:
        return head if head is not None else None
    a = snapshot if head is None else head
    return a.astype(acc) - base.astype(acc)


@_program("acc", classic=True)
def reduce_epoch(
    params: Leaves, snapshot: Leaves, base: Leaves | None, head: Leaves | None, *, acc: str
) -> tuple[jax.Array, Leaves, Leaves]:
    """Form s(t) and s(t-1) element by element, reduce them, and take the next snapshot, in one program.

    Args:
        params: x(t), the leaves of the parameter pytree.
        snapshot: x̂(t-1), same shapes and dtypes as ``params``.
        base: x̂(t-2) (parameter dtype), or None when s(t-1) = 0 (the first epoch).
        head: None when s(t-1) = x̂(t-1) - x̂(t-2); else x(t-1) in the parameter dtype
            (the epoch after an applied average), or, with ``base`` None, s(t-1) itself
            in the accumulation dtype (read from a layout-1 checkpoint).
        acc: the accumulation dtype's name (float32, or float64 under x64).

    Returns:
        ``(partials, copies, scratch)``: ``partials[0, i]`` = <s_i(t), s_i(t-1)> and
        ``partials[1, i]`` = ||s_i(t)||^2 for leaf i, in the accumulation dtype;
        ``copies`` = fresh buffers holding x(t), the candidate snapshot (the caller's
        arrays may be donated later, ours must not); ``scratch`` = s(t), and s(t-1) where
        it is formed from a narrower parameter dtype, which the caller drops at once
        (nothing here is kept: s(t) is formed again from x̂(t) and x̂(t-1) when it is
        needed as the previous step). XLA:CPU materializes s(t) anyway, since two
        reductions read it, and s(t-1) where a conversion keeps it out of the dot's
        fusion; as outputs they are one buffer per leaf, which the allocator reuses from
        epoch to epoch, where as temporaries they would be one buffer of all leaves
        together, mapped and faulted in afresh on every call (25% slower in float32,
        40% under x64, on the ResNet-18 shapes). Reading s(t) from memory, as layout 1
        did, also keeps the rounding of the sums bit for bit (a fused (x - x̂)^2
        reduction changes the last bit of some float32 partials).
    """
    zero = jnp.zeros((), acc)
    n = len(params)
    bases = base if base is not None else [None] * n
    heads = head if head is not None else [None] * n
    dots, squares, copies, steps = [], [], [], []
    for x, x_hat, b, a in zip(params, snapshot, bases, heads, strict=True):
        step = x.astype(acc) - x_hat.astype(acc)
        prev = _previous_step(x_hat, b, a, step)
        # s(t-1) = 0: multiply by zero rather than skip, so that a NaN or infinite step
        # gives a NaN dot, as the stored zeros of layout 1 did.
        dots.append(jnp.sum(step * (zero if prev is None else prev)))
        squares.append(jnp.sum(step * step))
        copies.append(jnp.copy(x))
        steps.append(step)
        if prev is not None and (b is not None and jnp.dtype(b.dtype) != jnp.dtype(acc)):
            steps.append(prev)
    partials = jnp.stack([jnp.stack(dots), jnp.stack(squares)])
    return partials, copies, steps


def sum_partials(partials: jax.Array) -> tuple[float, float]:
    """Move the per-leaf partials to the host (the epoch's one transfer) and add them in float64.

    The leaves are added one by one in pytree order, as the numpy reference adds
    its tensors; float32 partials from a run without x64 are widened first.
    """
    host = np.asarray(jax.device_get(partials), dtype=np.float64)
    dot = 0.0
    sq_norm = 0.0
    for leaf_dot, leaf_sq in zip(host[0].tolist(), host[1].tolist(), strict=True):
        dot += leaf_dot
        sq_norm += leaf_sq
    return dot, sq_norm


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Knuth's error-free sum: a + b == s + e exactly (no products, so FMA cannot spoil it)."""
    s = a + b
    b_virtual = s - a
    e = (a - (s - b_virtual)) + (b - b_virtual)
    return s, e


@_program("first", "flat")
def absorb(
    params: Leaves,
    average: Leaves | None,
    average_lo: Leaves | None,
    weight: tuple[jax.Array, jax.Array],
    *,
    first: bool,
    flat: bool = False,
) -> tuple[Leaves, Leaves | None]:
    """W <- W + c (x(t) - W); with ``first`` (c = 1) simply W <- x(t).

    W is ``average`` in the accumulation dtype (the dtype of ``weight``). Without x64
    it is carried as an unevaluated float32 pair (``average`` + ``average_lo``,
    |lo| <= half an ulp of hi) and c as a float32 pair too, so that the applied average
    rounds like the float64 reference's instead of collecting one float32 rounding of
    |W| per absorbed vector, which would be large next to the small late-training
    steps. With x64 there is no low half: ``average_lo`` is None in and out. With
    ``first`` the old W is not read (pass None: outside a window no W exists). With
    ``flat`` (every leaf on one device, see :func:`single_device`) the arithmetic runs on
    1-d views, bit for bit the same and 3 to 4 times faster on convolution-shaped leaves.
    """
    c_hi, c_lo = weight
    acc = c_hi.dtype
    compensated = acc == jnp.float32
    n = len(params)
    his = average if average is not None else [None] * n
    los = average_lo if average_lo is not None else [None] * n
    new_hi, new_lo = [], []
    for x, hi, lo in zip(params, his, los, strict=True):
        xa = _flat(x, flat).astype(acc)
        hi = None if hi is None else _flat(hi, flat)
        lo = None if lo is None else _flat(lo, flat)
        if first:
            new_hi.append(xa)
            # +0 everywhere, computed from xa rather than a constant so that it keeps x's sharding.
            new_lo.append(jnp.where(jnp.isfinite(xa), xa - xa, jnp.zeros((), acc)))
        elif not compensated:
            new_hi.append(hi + c_hi.astype(acc) * (xa - hi))
        else:
            gap = (xa - hi) - lo  # x - hi is exact when x and W are close (Sterbenz)
            move = c_hi * gap + c_lo * gap
            s, e = _two_sum(hi, move)
            hi2, lo2 = _two_sum(s, e + lo)
            new_hi.append(hi2)
            new_lo.append(lo2)
    new_hi = [w.reshape(x.shape) for w, x in zip(new_hi, params, strict=True)]
    if not compensated:
        return new_hi, None
    return new_hi, [w.reshape(x.shape) for w, x in zip(new_lo, params, strict=True)]


def split_weight(weight: float, dtype: np.dtype) -> tuple[jax.Array, jax.Array]:
    """c as a (hi, lo) pair in ``dtype`` (lo = 0 for float64): float64(c) == hi + lo to ~1e-16."""
    hi, lo = split_weight_on_host(weight, dtype)
    return jnp.asarray(hi), jnp.asarray(lo)


def split_weight_on_host(weight: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_weight`'s pair as 0-d numpy arrays, for the numba pass (no device transfer)."""
    hi = np.asarray(weight, dtype=dtype)
    return hi, np.asarray(weight - float(hi), dtype=dtype)


def _round_to_odd(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """The float32 neighbour of the exact hi + lo whose last bit is odd (hi itself when lo == 0).

    Casting that to a format at least two bits narrower (float16, bfloat16) rounds
    hi + lo correctly, as the float64 reference's direct cast does; casting ``hi``
    alone would round twice and could miss a tie that ``lo`` breaks.
    """
    odd = (jax.lax.bitcast_convert_type(hi, jnp.uint32) & 1) == 1
    toward = jnp.nextafter(hi, jnp.where(lo > 0, jnp.inf, -jnp.inf).astype(hi.dtype))
    return jnp.where((lo == 0) | odd, hi, toward)


@_program("flat")
def apply_average(
    average: Leaves, average_lo: Leaves | None, like: Leaves, *, flat: bool = False
) -> tuple[Leaves, Leaves]:
    """The new parameters (W rounded to each parameter's dtype) and a separate snapshot copy.

    ``average_lo`` is None with x64 (float64 W, no low half); ``flat`` as in :func:`absorb`.
    """
    new_params = []
    los = average_lo if average_lo is not None else [None] * len(average)
    for hi, lo, x in zip(average, los, like, strict=True):
        hi = _flat(hi, flat)
        if lo is None:  # float64 W (x64): one rounding, as in the reference
            value = hi.astype(x.dtype)
        elif jnp.dtype(x.dtype).itemsize < 4:
            value = _round_to_odd(hi, _flat(lo, flat)).astype(x.dtype)
        else:
            value = (hi + _flat(lo, flat)).astype(x.dtype)
        new_params.append(value.reshape(x.shape))
    return new_params, [jnp.copy(p) for p in new_params]


@jax.jit
def _finite_flags(leaves: Leaves) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def nonfinite_leaves(leaves: Sequence[jax.Array]) -> list[int]:
    """Indices of the leaves holding NaN or infinity (used only to explain a rejected epoch)."""
    if not leaves:
        return []
    flags = np.asarray(jax.device_get(_finite_flags(list(leaves))))
    return [i for i, ok in enumerate(flags.tolist()) if not ok]


@_program(classic=True)
def copy_leaves(leaves: Leaves) -> Leaves:
    """Fresh buffers with the same values, dtypes and shardings."""
    return [jnp.copy(x) for x in leaves]


#: The read-only 0-d zeros :func:`placeholders` hands out, one per dtype (made once: a state has
#: 62 to 186 placeholders per epoch end for a ResNet-18, at 0.3 microseconds each if fresh).
_PLACEHOLDERS: dict[np.dtype, np.ndarray] = {}


def _placeholder(dtype: Any) -> np.ndarray:
    key = np.dtype(dtype)
    zero = _PLACEHOLDERS.get(key)
    if zero is None:
        zero = np.zeros((), key)
        zero.setflags(write=False)
        _PLACEHOLDERS[key] = zero
    return zero


def placeholders(leaves: Sequence[Any], dtype: Any = None) -> list[np.ndarray]:
    """0-d host zeros, one per leaf (each leaf's dtype, or ``dtype``): an absent buffer of the state.

    They keep the pytree's structure and dtypes fixed whatever the phase (orbax, ``jax.jit``
    and a rebuild from saved leaves see the same tree), hold no device memory, and are
    never passed to a device program. Scalars rather than empty arrays because orbax
    refuses to save arrays of size zero. Read-only and shared: every placeholder of a
    dtype is the same array.
    """
    if dtype is not None:
        one = _placeholder(dtype)
        return [one] * len(leaves)
    return [_placeholder(x.dtype) for x in leaves]


def zeros_like_leaves(leaves: Sequence[jax.Array], dtype: np.dtype) -> Leaves:
    """Zeros of each leaf's shape in ``dtype``, placed with each leaf's sharding (the extras' W)."""
    return [jnp.zeros(x.shape, dtype, device=x.sharding) for x in leaves]


def compensation_leaves(leaves: Sequence[jax.Array], dtype: np.dtype) -> Leaves:
    """The low halves of the extras' W: zeros like each leaf in float32, 0-d placeholders under x64."""
    if np.dtype(dtype) == np.float64:
        return [jnp.zeros((), dtype) for _ in leaves]
    return zeros_like_leaves(leaves, dtype)
