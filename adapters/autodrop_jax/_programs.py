"""The device programs: one jitted reduction per epoch, one jitted averaging step when due.

Everything here works on flat lists of leaves and stays on the device: the
reduction returns the per-leaf partial sums of the two scalars as one small array,
which the caller moves to the host in a single transfer and adds up in float64. No
function here reads a value back to the host, decides anything, or mutates its
inputs (none is donated, so a rejected epoch leaves every caller buffer intact).
Elementwise outputs keep the sharding of their inputs; the only cross-device traffic
of a sharded run is the all-reduce of per-leaf scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "absorb",
    "apply_average",
    "compensation_leaves",
    "copy_leaves",
    "nonfinite_leaves",
    "reduce_epoch",
    "split_weight",
    "sum_partials",
    "zeros_like_leaves",
]

Leaves = list[jax.Array]


@jax.jit
def reduce_epoch(params: Leaves, snapshot: Leaves, prev_step: Leaves) -> tuple[jax.Array, Leaves, Leaves]:
    """Form s(t) element by element, reduce it, and take the next snapshot, in one program.

    Args:
        params: x(t), the leaves of the parameter pytree.
        snapshot: x̂(t-1), same shapes and dtypes as ``params``.
        prev_step: s(t-1) in the accumulation dtype (float32 or float64).

    Returns:
        ``(partials, steps, copies)``: ``partials[0, i]`` = <s_i(t), s_i(t-1)> and
        ``partials[1, i]`` = ||s_i(t)||^2 for leaf i, in the accumulation dtype;
        ``steps`` = s(t) in that dtype; ``copies`` = fresh buffers holding x(t), the
        candidate snapshot (the caller's arrays may be donated later, ours must not).
    """
    dots, squares, steps, copies = [], [], [], []
    for x, x_hat, s_prev in zip(params, snapshot, prev_step, strict=True):
        acc = s_prev.dtype
        step = x.astype(acc) - x_hat.astype(acc)
        dots.append(jnp.sum(step * s_prev))
        squares.append(jnp.sum(step * step))
        steps.append(step)
        copies.append(jnp.copy(x))
    partials = jnp.stack([jnp.stack(dots), jnp.stack(squares)])
    return partials, steps, copies


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


@partial(jax.jit, static_argnames="first")
def absorb(
    params: Leaves, average: Leaves, average_lo: Leaves, weight: tuple[jax.Array, jax.Array], *, first: bool
) -> tuple[Leaves, Leaves]:
    """W <- W + c (x(t) - W); with ``first`` (c = 1) simply W <- x(t).

    W is ``average`` in the accumulation dtype. Without x64 it is carried as an
    unevaluated float32 pair (``average`` + ``average_lo``, |lo| <= half an ulp of hi)
    and c as a float32 pair too, so that the applied average rounds like the float64
    reference's instead of collecting one float32 rounding of |W| per absorbed vector,
    which would be large next to the small late-training steps. With x64 the
    ``average_lo`` leaves are 0-d placeholders and W is plain float64.
    """
    c_hi, c_lo = weight
    new_hi, new_lo = [], []
    for x, hi, lo in zip(params, average, average_lo, strict=True):
        xa = x.astype(hi.dtype)
        compensated = hi.dtype == jnp.float32
        if first:
            new_hi.append(xa)
            # lo - lo (lo is always finite) rather than a constant, so that it keeps lo's sharding.
            new_lo.append(lo - lo)
        elif not compensated:
            new_hi.append(hi + c_hi.astype(hi.dtype) * (xa - hi))
            new_lo.append(lo)
        else:
            gap = (xa - hi) - lo  # x - hi is exact when x and W are close (Sterbenz)
            move = c_hi * gap + c_lo * gap
            s, e = _two_sum(hi, move)
            hi2, lo2 = _two_sum(s, e + lo)
            new_hi.append(hi2)
            new_lo.append(lo2)
    return new_hi, new_lo


def split_weight(weight: float, dtype: np.dtype) -> tuple[jax.Array, jax.Array]:
    """c as a (hi, lo) pair in ``dtype`` (lo = 0 for float64): float64(c) == hi + lo to ~1e-16."""
    hi = np.asarray(weight, dtype=dtype)
    lo = np.asarray(weight - float(hi), dtype=dtype)
    return jnp.asarray(hi), jnp.asarray(lo)


def _round_to_odd(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """The float32 neighbour of the exact hi + lo whose last bit is odd (hi itself when lo == 0).

    Casting that to a format at least two bits narrower (float16, bfloat16) rounds
    hi + lo correctly, as the float64 reference's direct cast does; casting ``hi``
    alone would round twice and could miss a tie that ``lo`` breaks.
    """
    odd = (jax.lax.bitcast_convert_type(hi, jnp.uint32) & 1) == 1
    toward = jnp.nextafter(hi, jnp.where(lo > 0, jnp.inf, -jnp.inf).astype(hi.dtype))
    return jnp.where((lo == 0) | odd, hi, toward)


@jax.jit
def apply_average(average: Leaves, average_lo: Leaves, like: Leaves) -> tuple[Leaves, Leaves]:
    """The new parameters (W rounded to each parameter's dtype) and a separate snapshot copy."""
    new_params = []
    for hi, lo, x in zip(average, average_lo, like, strict=True):
        if hi.dtype != jnp.float32:  # float64 W (x64): one rounding, as in the reference
            value = hi.astype(x.dtype)
        elif jnp.dtype(x.dtype).itemsize < 4:
            value = _round_to_odd(hi, lo).astype(x.dtype)
        else:
            value = (hi + lo).astype(x.dtype)
        new_params.append(value)
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


@jax.jit
def copy_leaves(leaves: Leaves) -> Leaves:
    """Fresh buffers with the same values, dtypes and shardings."""
    return [jnp.copy(x) for x in leaves]


def zeros_like_leaves(leaves: Sequence[jax.Array], dtype: np.dtype) -> Leaves:
    """Zeros of each leaf's shape in ``dtype``, placed with each leaf's sharding."""
    return [jnp.zeros(x.shape, dtype, device=x.sharding) for x in leaves]


def compensation_leaves(leaves: Sequence[jax.Array], dtype: np.dtype) -> Leaves:
    """The low halves of W: zeros like each leaf in float32, 0-d placeholders under x64.

    The placeholders are scalars rather than empty arrays because orbax refuses to
    save arrays of size zero.
    """
    if np.dtype(dtype) == np.float64:
        return [jnp.zeros((), dtype) for _ in leaves]
    return zeros_like_leaves(leaves, dtype)
