"""The callback's two reductions in one numba pass over the backend's own buffers, on CPU.

``keras.ops`` forms each variable's steps and sums as separate backend ops, one variable
at a time, each sum copied to the host. When numba is installed and every watched
variable is a large float32/float64 tensor in host memory, the buffers of x(t),
x̂(t-1) and the two that s(t-1) is formed from are handed to the kernels every adapter
shares (:mod:`autodrop_core.fused`) through the DLPack protocol (``__dlpack__``, which
torch, JAX and TensorFlow tensors all have): one pass, float64 steps and sums, read in
place. Anything else (another device, dtype or layout, a backend tensor that cannot be
exported) returns None and the callback keeps ``keras.ops``.

This module decides nothing and writes nothing; it keeps every exported tensor alive
(its capsule) until the pass has returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from autodrop_core import fused

__all__ = ["MIN_NUMEL", "USE_FUSED_CPU", "reduce_buffers"]

#: Use the numba pass when it applies (tests switch it off, or on for small models).
USE_FUSED_CPU = True
#: Models whose variables are all smaller than this keep ``keras.ops``: they never pay
#: numba's import and compile time (a few seconds).
MIN_NUMEL = 1 << 16


def _threads() -> int:
    """The threads the backend computes on (the pass uses as many)."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return int(torch.get_num_threads())
    if backend == "tensorflow":
        import tensorflow as tf

        intra = int(tf.config.threading.get_intra_op_parallelism_threads())
        return intra if intra > 0 else fused.host_threads()
    return fused.host_threads()


def _export(tensor: Any, keep: list[Any]) -> fused.Buffer:
    """The host buffer of a backend tensor (its DLPack capsule goes into ``keep``)."""
    wait = getattr(tensor, "block_until_ready", None)
    if wait is not None:  # JAX dispatches asynchronously
        wait()
    try:
        capsule = tensor.__dlpack__()
    except AttributeError:  # a TensorFlow variable: export a read of it, which shares its buffer
        capsule = tensor.read_value().__dlpack__()
    except (RuntimeError, BufferError):  # torch refuses tensors that require grad: export their data
        capsule = tensor.detach().__dlpack__()
    keep.append(capsule)
    return fused.dlpack_buffer(capsule)


def _from_host(array: Any) -> Any:
    """A backend tensor over a numpy array's memory, without a copy where the backend allows it."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.from_numpy(array)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return keras.ops.convert_to_tensor(array)  # JAX: a copy into its own buffer


def reduce_buffers(
    xs: Sequence[Any],
    snaps: Sequence[Any],
    heads: Sequence[Any],
    bases: Sequence[Any],
    absorb: tuple[Sequence[Any], float] | None = None,
) -> tuple[list[tuple[float, float]], list[Any] | None] | None:
    """``(<s_i(t), s_i(t-1)>, ||s_i(t)||^2)`` per variable i (s(t-1) = head - base), and W'; None if it cannot run.

    With ``absorb = (W, c)`` (float64 running averages, one per variable) the same pass
    forms W' = W + c (x(t) - W) with the callback's two roundings, into fresh backend
    tensors. Every tensor is read in place; nothing passed in is written.
    """
    if not USE_FUSED_CPU or not xs or not fused.available():
        return None
    keep: list[Any] = []
    try:
        buffers = [[_export(t, keep) for t in group] for group in zip(xs, snaps, heads, bases, strict=True)]
        averages = [_export(w, keep) for w in absorb[0]] if absorb is not None else None
    except (AttributeError, TypeError, ValueError, RuntimeError, BufferError):
        return None  # not exportable, or not in host memory
    if not any(group[0].elements >= MIN_NUMEL for group in buffers):
        return None
    for i, group in enumerate(buffers):
        x = group[0]
        if x.dtype is None or any((b.elements, b.dtype, b.dense) != (x.elements, x.dtype, True) for b in group):
            return None  # another dtype, a strided view, or buffers that disagree: keras.ops
        if averages is not None and (averages[i].elements, averages[i].dtype, averages[i].dense) != (
                x.elements, "float64", True):
            return None
    fresh = [fused.aligned_empty(group[0].elements) for group in buffers] if averages is not None else None
    rows = [(*(b.address for b in group), 0, 0 if averages is None else averages[i].address,
             0 if fresh is None else fresh[i].ctypes.data) for i, group in enumerate(buffers)]
    out = fused.reduce_pass([str(group[0].dtype) for group in buffers], rows,
                            tuple(group[0].elements for group in buffers), threads=_threads(),
                            absorbing=fresh is not None, weight=0.0 if absorb is None else absorb[1],
                            firsts=[False] * len(buffers))
    del keep  # the capsules give the buffers back only now, after the pass
    if fresh is None:
        return out, None
    return out, [_from_host(a.reshape(tuple(x.shape))) for a, x in zip(fresh, xs, strict=True)]
