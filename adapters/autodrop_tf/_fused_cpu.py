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
_ITEM_BYTES = {"float32": 4, "float64": 8}


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


def eligible(variables: Sequence[Any], memo: dict[str, bool] | None = None) -> bool:
    """Whether the numba pass can take these variables: plain CPU float32/float64, one large enough.

    ``memo`` (the caller's dict, kept with the variables) holds the verdict on what cannot
    change for a given list of variables (their types, dtypes, devices and sizes: reading
    ``device`` twice per variable costs half a millisecond an epoch end for a ResNet-18);
    the switch, numba and the distribution strategy in force are checked at every call.
    """
    if not USE_FUSED_CPU or not variables or tf.distribute.has_strategy() or not fused.available():
        return False
    if memo is not None and "static" in memo:
        return memo["static"]
    verdict = _static_eligible(variables)
    if memo is not None:
        memo["static"] = verdict
    return verdict


def _static_eligible(variables: Sequence[Any]) -> bool:
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
    same_head = heads is snaps  # a zero-length head: s(t-1) = x̂(t-1) - base, read once
    found = _buffers([*xs, *snaps, *(() if same_head else heads), *bases], keep)  # every header in one call
    columns = (1, 1, 2) if same_head else (1, 2, 3)  # where snapshot, head and base sit in ``found``
    w_found: Iterator[fused.Buffer] = iter(())
    if averages is not None:
        if [len(group) for group in averages] != [len(c) for c in chunks]:
            raise RuntimeError(f"the running average is in {[len(g) for g in averages]} chunks per variable, "
                               f"expected {[len(c) for c in chunks]}")
        w_found = iter(_buffers([c for group in averages for c in group], keep))
    for i, x_tensor in enumerate(xs):
        x = found[i]
        count, code = x.elements, x.dtype
        if code not in _ITEM_BYTES:  # (``_buffers`` has refused a strided one)
            raise RuntimeError(f"variable {i}: x(t) is {x_tensor.dtype.name}{x_tensor.shape}, not float32/float64")
        row = [x.address]
        for k, what, group in zip(columns, ("snapshot", "head", "base"), (snaps, heads, bases), strict=True):
            other = found[k * n + i]
            if other.elements != count or other.dtype != code:  # never read past a buffer's end
                t = group[i]
                raise RuntimeError(f"variable {i}: its {what} is {t.dtype.name}{t.shape}, "
                                   f"not {x_tensor.dtype.name}{x_tensor.shape}")
            row.append(other.address)
        lengths = chunks[i]
        if sum(lengths) != count:
            raise RuntimeError(f"variable {i}: chunks of {sum(lengths)} elements for {count}")
        item = _ITEM_BYTES[code]
        start = 0
        if averages is not None:  # one allocation per variable (huge pages), a view per chunk
            new_average[i] = fused.aligned_parts(lengths)
        for j, length in enumerate(lengths):
            average = out = 0
            if averages is not None:
                w_buffer = next(w_found)
                average = w_buffer.address
                if w_buffer.dtype != "float64" or w_buffer.elements != length:
                    chunk_w = averages[i][j]
                    raise RuntimeError(f"variable {i}: its average chunk {j} is {chunk_w.dtype.name}"
                                       f"{chunk_w.shape}, not float64({length},)")
                out = new_average[i][j].ctypes.data
            offset = start * item
            rows.append((*(a + offset for a in row), 0, average, out))
            sizes.append(length)
            dtypes.append(code)
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
