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
from typing import Any, NamedTuple

import keras

from autodrop_core import fused

__all__ = ["MIN_NUMEL", "USE_FUSED_CPU", "Reduced", "reduce_buffers", "values"]

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


def values(variables: Sequence[Any], memo: dict[str, Any] | None = None) -> list[Any]:
    """The variables' current values as backend tensors, for :func:`reduce_buffers` and as x(t).

    On TensorFlow the tensors share the variables' buffers, and TensorFlow copies such a
    buffer on the variable's next write while the tensor is alive (copy on write), so a
    read is x(t) as ``keras.ops.copy`` would give it, without a copy now. Plain variables
    are read by one graph of ``ReadVariableOp``s (kept in ``memo``, the caller's dict,
    for as long as the same variables come in): one call instead of one eager op per
    variable, 2.3 against 1.5 ms for a ResNet-18's 62 variables after a training epoch
    (docs/memory.md). Without ``memo``, or where functions run eagerly, one
    ``ReadVariableOp`` per variable. Other backends: the variables' own values
    (``variable.value``).
    """
    out = [v.value for v in variables]
    if keras.backend.backend() != "tensorflow":
        return out
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return [tf.identity(v) for v in out]
    from autodrop_tf._ops import _plain

    plain = [_plain(v) for v in out]
    if memo is not None and out and all(plain) and not tf.config.functions_run_eagerly():
        # the graph holds the variables it reads, so no variable of a later call can reuse their ids
        key = tuple(id(v) for v in out)
        found = memo.get("reader")
        if found is None or found[0] != key:
            found = memo["reader"] = (key, _reader(out))
        return list(found[1]())
    return [tf.raw_ops.ReadVariableOp(resource=v.handle, dtype=v.dtype) if is_plain else tf.identity(v)
            for v, is_plain in zip(out, plain, strict=True)]


def _reader(variables: list[Any]) -> Any:
    """One graph that reads every variable (a ``ReadVariableOp`` each), called without argument matching."""
    import tensorflow as tf
    from autodrop_tf._ops import _direct

    def read() -> list[Any]:
        return [tf.convert_to_tensor(v) for v in variables]

    return _direct(tf.function(read), [])


def _capsule(tensor: Any) -> Any:
    """A DLPack capsule of a backend tensor's host buffer (JAX's arrays are waited for first)."""
    wait = getattr(tensor, "block_until_ready", None)
    if wait is not None:  # JAX dispatches asynchronously
        wait()
    try:
        return tensor.__dlpack__()  # (TensorFlow variables come in as reads: see values())
    except (RuntimeError, BufferError):  # torch refuses tensors that require grad: export their data
        return tensor.detach().__dlpack__()


def _export(tensors: Sequence[Any], keep: list[Any]) -> list[fused.Buffer]:
    """The host buffers of backend tensors, every header read in one call (the capsules go into ``keep``).

    TensorFlow's tensors are exported by ``to_dlpack`` directly: asking one for an attribute
    it lacks (``block_until_ready``) goes through its ``__getattr__``, which costs as much
    as the export itself.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        capsules = [tf.experimental.dlpack.to_dlpack(t) for t in tensors]
    else:
        capsules = [_capsule(t) for t in tensors]
    keep.extend(capsules)
    return fused.dlpack_buffers(capsules)


def _from_host(arrays: Sequence[Any], like: Sequence[Any]) -> list[Any]:
    """Backend tensors over numpy arrays' memory, shaped like ``like``, without a copy where the backend allows it."""
    shaped = [a.reshape(tuple(x.shape)) for a, x in zip(arrays, like, strict=True)]
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return [torch.from_numpy(a) for a in shaped]
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in shaped]
    if backend == "jax" and shaped:
        import jax

        # device_put of an aligned numpy array to the CPU aliases its buffer (no copy)
        return list(jax.device_put(shaped, jax.devices("cpu")[0]))
    return [keras.ops.convert_to_tensor(a) for a in shaped]


class Reduced(NamedTuple):
    """What one pass gives: per variable ``(<s_i(t), s_i(t-1)>, ||s_i(t)||^2)``, W' and the copies of x(t)."""

    pairs: list[tuple[float, float]]
    averages: list[Any] | None
    copies: list[Any] | None


def reduce_buffers(
    xs: Sequence[Any],
    snaps: Sequence[Any],
    heads: Sequence[Any],
    bases: Sequence[Any],
    absorb: tuple[Sequence[Any], float] | None = None,
    *,
    copying: bool = False,
) -> Reduced | None:
    """The per-variable sums (s(t-1) = head - base), W' and copies of x(t) in one pass; None if it cannot run.

    With ``absorb = (W, c)`` (float64 running averages, one per variable) the same pass
    forms W' = W + c (x(t) - W) with the callback's two roundings, into fresh backend
    tensors; with ``copying`` it also writes a copy of each x(t) into fresh memory (the
    next snapshot, for backends whose tensors do not copy on write: torch and JAX).
    Every tensor passed in is read in place and never written.
    """
    if not USE_FUSED_CPU or not xs or not fused.available():
        return None
    keep: list[Any] = []
    n = len(xs)
    same_head = heads is snaps  # s(t-1) = x̂(t-1) - base: the snapshots are exported once
    try:
        found = _export([*xs, *snaps, *(() if same_head else heads), *bases], keep)
        averages = _export(absorb[0], keep) if absorb is not None else None
    except (AttributeError, TypeError, ValueError, RuntimeError, BufferError):
        return None  # not exportable, or not in host memory
    columns = (0, 1, 1, 2) if same_head else (0, 1, 2, 3)  # where x, snapshot, head and base sit in ``found``
    buffers = [[found[k * n + i] for k in columns] for i in range(n)]
    if not any(group[0].elements >= MIN_NUMEL for group in buffers):
        return None
    for i, group in enumerate(buffers):
        x = group[0]
        if x.dtype is None or any((b.elements, b.dtype, b.dense) != (x.elements, x.dtype, True) for b in group):
            return None  # another dtype, a strided view, or buffers that disagree: keras.ops
        if averages is not None and (averages[i].elements, averages[i].dtype, averages[i].dense) != (
                x.elements, "float64", True):
            return None

    def empty(dtypes: list[str]) -> tuple[list[Any], list[int]]:  # the arrays and their addresses (0: empty)
        made = [fused.aligned_empty_at(group[0].elements, dtype) for group, dtype in zip(buffers, dtypes, strict=True)]
        return [a for a, _ in made], [address if a.size else 0 for a, address in made]

    none: tuple[list[Any] | None, list[int]] = (None, [0] * n)
    fresh, fresh_at = empty(["float64"] * n) if averages is not None else none
    copies, copies_at = empty([str(group[0].dtype) for group in buffers]) if copying else none
    rows = [(*(b.address for b in group), copies_at[i], 0 if averages is None else averages[i].address,
             fresh_at[i]) for i, group in enumerate(buffers)]
    out = fused.reduce_pass([str(group[0].dtype) for group in buffers], rows,
                            tuple(group[0].elements for group in buffers), threads=_threads(),
                            copying=copies is not None, absorbing=fresh is not None,
                            weight=0.0 if absorb is None else absorb[1], firsts=[False] * len(buffers))
    del keep  # the capsules give the buffers back only now, after the pass
    return Reduced(out, None if fresh is None else _from_host(fresh, xs),
                   None if copies is None else _from_host(copies, xs))
