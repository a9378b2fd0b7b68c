"""The CPU reduction of an epoch end in one numba pass over the variables' own buffers.

TensorFlow's chunked float64 reduction (``_ops.py``) runs seven ops per chunk and
moves every byte several times. On CPU, when numba is installed and the watched
variables are large plain float32/float64 variables, the reduction instead hands the
buffers of the tensors it read (x(t), x̂(t-1), and the two that s(t-1) is formed from)
to the kernels every adapter shares (:mod:`autodrop_core.fused`) by their DLPack
addresses: one pass reads each byte once, and nothing is copied or written (the next
snapshot shares x's buffer, as on the TensorFlow path). The sums are float64, blocked,
and the same bits on any number of threads; they differ from the TensorFlow path's
only in the order of float64 additions (about 1e-13 relative).

This module decides nothing and writes nothing; it keeps every tensor it hands over
alive (its DLPack capsule) until the pass has returned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow as tf

from autodrop_core import fused

__all__ = ["MIN_NUMEL", "USE_FUSED_CPU", "eligible", "reduce_buffers"]

#: Use the numba pass when it applies (tests switch it off, or on for small models).
USE_FUSED_CPU = True
#: A model whose variables are all smaller than this keeps the TensorFlow path: it never
#: pays numba's import and compile time (a few seconds).
MIN_NUMEL = 1 << 16

_DTYPES = {tf.float32: "float32", tf.float64: "float64"}


def _buffers(tensors: Sequence[tf.Tensor], keep: list[Any]) -> list[fused.Buffer]:
    """The addresses, element counts and dtypes of CPU tensors (their capsules go into ``keep``)."""
    capsules = [tf.experimental.dlpack.to_dlpack(t) for t in tensors]
    keep.extend(capsules)
    buffers = fused.dlpack_buffers(capsules)
    for t, buffer in zip(tensors, buffers, strict=True):
        if not buffer.dense:
            raise RuntimeError(f"a tensor of shape {t.shape} is not dense and row-major")
    return buffers


def _threads() -> int:
    """TensorFlow's intra-op thread count where it is set, else the CPUs this process may use."""
    intra = int(tf.config.threading.get_intra_op_parallelism_threads())
    return intra if intra > 0 else fused.host_threads()


def eligible(variables: Sequence[Any]) -> bool:
    """Whether the numba pass can take these variables: plain CPU float32/float64, one large enough."""
    if not USE_FUSED_CPU or not variables or tf.distribute.has_strategy() or not fused.available():
        return False
    for var in variables:
        if isinstance(var, tf.distribute.DistributedValues) or var.dtype not in _DTYPES:
            return False
        if "GPU" in var.device.upper() or "TPU" in var.device.upper():
            return False
    return any(var.shape.num_elements() >= MIN_NUMEL for var in variables)


def reduce_buffers(
    xs: Sequence[tf.Tensor],
    snaps: Sequence[tf.Tensor],
    heads: Sequence[tf.Tensor],
    bases: Sequence[tf.Tensor],
    chunks: Sequence[Sequence[int]],
    absorb: tuple[Sequence[Sequence[tf.Tensor]], float] | None = None,
) -> tuple[float, float, list[list[tf.Tensor]] | None]:
    """dot = <s(t), s(t-1)> and ||s(t)||^2 over all variables (s(t-1) = head - base), and W'.

    Args:
        xs, snaps, heads, bases: per variable, x(t), x̂(t-1) and the two s(t-1) is formed
            from, as read (the buffers are read in place, never written).
        chunks: per variable, the lengths of the chunks its running average is kept in
            (``_ops.chunk_sizes``): the pass works chunk by chunk.
        absorb: ``(W, c)``: also form W' = W + c (x(t) - W) per chunk of W (float64
            tensors, in the layout of ``chunks``), into fresh float64 tensors.

    Returns:
        ``(dot, sq_norm, W' or None)``. Each chunk's sums come from the shared kernels;
        a variable's are its chunks' added in order from 0.0, the total the variables'
        added in order from 0.0 (the numpy reference adds its tensors so).
    """
    keep: list[Any] = []
    averages, weight = absorb if absorb is not None else (None, 0.0)
    new_average: list[list[Any]] = [[] for _ in xs]
    rows, sizes, dtypes = [], [], []
    n = len(xs)
    found = _buffers([*xs, *snaps, *heads, *bases], keep)  # every header in one call
    w_found: Iterator[fused.Buffer] = iter(())
    if averages is not None:
        if [len(group) for group in averages] != [len(c) for c in chunks]:
            raise RuntimeError(f"the running average is in {[len(g) for g in averages]} chunks per variable, "
                               f"expected {[len(c) for c in chunks]}")
        w_found = iter(_buffers([c for group in averages for c in group], keep))
    for i, x_tensor in enumerate(xs):
        x, count, code = found[i].address, found[i].elements, found[i].dtype
        row = [x]
        for k, (what, t) in enumerate((("snapshot", snaps[i]), ("head", heads[i]), ("base", bases[i])), start=1):
            other = found[k * n + i]
            if (other.elements, other.dtype) != (count, code):  # never read past a buffer's end
                raise RuntimeError(f"variable {i}: its {what} is {t.dtype.name}{t.shape}, "
                                   f"not {x_tensor.dtype.name}{x_tensor.shape}")
            row.append(other.address)
        if sum(chunks[i]) != count:
            raise RuntimeError(f"variable {i}: chunks of {sum(chunks[i])} elements for {count}")
        start = 0
        if averages is not None:  # one allocation per variable (huge pages), a view per chunk
            new_average[i] = fused.aligned_parts(chunks[i])
        for j, length in enumerate(chunks[i]):
            average = out = 0
            if averages is not None:
                chunk_w = averages[i][j]
                w_buffer = next(w_found)
                average = w_buffer.address
                if chunk_w.dtype != tf.float64 or w_buffer.elements != length:
                    raise RuntimeError(f"variable {i}: its average chunk {j} is {chunk_w.dtype.name}"
                                       f"{chunk_w.shape}, not float64({length},)")
                out = new_average[i][j].ctypes.data
            offset = start * x_tensor.dtype.size
            rows.append((*(a + offset for a in row), 0, average, out))
            sizes.append(length)
            dtypes.append(_DTYPES[x_tensor.dtype])
            start += length
    sums = fused.reduce_pass(dtypes, rows, tuple(sizes), threads=_threads(), absorbing=averages is not None,
                             weight=weight, firsts=[False] * len(sizes))
    del keep  # the capsules give the buffers back only now, after the pass
    dot = 0.0
    sq_norm = 0.0
    cursor = 0
    for lengths in chunks:  # the chunks in order (per variable from 0.0), then the variables in order
        leaf_dot = 0.0
        leaf_sq = 0.0
        for chunk_dot, chunk_sq in sums[cursor:cursor + len(lengths)]:
            leaf_dot += chunk_dot
            leaf_sq += chunk_sq
        cursor += len(lengths)
        dot += leaf_dot
        sq_norm += leaf_sq
    if averages is None:
        return dot, sq_norm, None
    # TensorFlow takes the fresh arrays over through DLPack, without a copy
    return dot, sq_norm, [[tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in group]
                          for group in new_average]
