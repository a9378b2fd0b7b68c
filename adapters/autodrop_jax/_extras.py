"""State that is averaged with the parameters but not measured: linen ``batch_stats``, ``nnx.BatchStat``.

BatchNorm running statistics are not trained by gradients, so they take no part in
the angle; but when AutoDrop replaces the parameters by their running average, the
statistics must be the average over the same epochs with the same weights, or the
averaged model is evaluated with statistics of the last epoch's weights. The torch and
Keras adapters do this for buffers; here :func:`init_extras` and :func:`update_extras`
do it for any float pytree, driven by the decision :func:`autodrop_jax.update` just
returned. Like ``update`` they are functional (new arrays, inputs unchanged), must be
called outside ``jax.jit`` and apply no rule of their own: the decision's
``average_weight`` and ``apply_average`` say everything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from autodrop_core import Decision
from autodrop_jax import _programs
from autodrop_jax._api import _float_leaves, accumulation_dtype

__all__ = ["ExtrasAverage", "init_extras", "update_extras"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ExtrasAverage:
    """The running average of the extra state (save it with orbax next to the AutoDrop state).

    Attributes:
        average: W in the accumulation dtype (meaningful only while a drop is pending).
        average_lo: without x64, the low float32 halves of W; with x64, 0-d placeholders.
    """

    average: Any
    average_lo: Any


def init_extras(extras: Any) -> ExtrasAverage:
    """An empty running average shaped like ``extras`` (e.g. ``variables["batch_stats"]``).

    Raises:
        TypeError: a leaf is not a floating-point array (integer counters cannot be averaged:
            leave them out of ``extras``).
        ValueError: ``extras`` holds no arrays.
    """
    leaves, treedef, _ = _float_leaves(extras, "extras")
    acc = accumulation_dtype()
    return ExtrasAverage(
        average=jax.tree.unflatten(treedef, _programs.zeros_like_leaves(leaves, acc)),
        average_lo=jax.tree.unflatten(treedef, _programs.compensation_leaves(leaves, acc)),
    )


def update_extras(average: ExtrasAverage, extras: Any, decision: Decision) -> tuple[Any, ExtrasAverage]:
    """Absorb ``extras`` as the decision says; when it applies the average, return the averaged extras.

    Call it right after ``update`` with the same epoch's decision and the extra state as
    it stands at the end of that epoch.

    Returns:
        ``(extras, average)``: the extras to continue with (the inputs themselves, or
        the running average rounded to each leaf's dtype when ``decision.apply_average``)
        and the new running average.

    Raises:
        ValueError: ``extras`` do not have the structure, shapes or dtypes ``init_extras`` saw.
    """
    leaves, treedef, names = _float_leaves(extras, "extras")
    avg, avg_lo = jax.tree.leaves(average.average), jax.tree.leaves(average.average_lo)
    avg_def = jax.tree.structure(average.average)
    if treedef != avg_def:
        raise ValueError(f"extras have tree structure {treedef}, but the ExtrasAverage was built for {avg_def}")
    for name, x, w in zip(names, leaves, avg, strict=True):
        if x.shape != w.shape:
            raise ValueError(f"extras{name} has shape {list(x.shape)}, expected {list(w.shape)} as at init_extras")
    out = leaves
    flat = _programs.single_device(leaves)
    compensated = avg[0].dtype == np.float32  # without x64: a float32 (hi, lo) pair; with x64, lo is unused
    if decision.average_weight is not None:
        weight = _programs.split_weight(decision.average_weight, avg[0].dtype)
        first = decision.average_weight == 1.0
        hi_in, lo_in = (None, None) if first else (avg, avg_lo if compensated else None)
        avg, new_lo = _programs.absorb(leaves, hi_in, lo_in, weight, first=first, flat=flat)
        if new_lo is not None:
            avg_lo = new_lo
    if decision.apply_average:
        out, _ = _programs.apply_average(avg, avg_lo if compensated else None, leaves, flat=flat)
    new = ExtrasAverage(average=jax.tree.unflatten(treedef, avg), average_lo=jax.tree.unflatten(treedef, avg_lo))
    return jax.tree.unflatten(treedef, out), new
