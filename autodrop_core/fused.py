"""One-pass CPU kernels (numba) for an epoch end's reductions, shared by the adapters' CPU paths.

An adapter hands over, per tensor, the addresses of its buffers in host memory: x(t),
x̂(t-1), the two the previous step is formed from (s(t-1) = head - base) and optionally
a copy to write x(t) into, a running average W and a W' to write. W is float64, or for
float32 tensors a float32 (hi, lo) pair (the JAX adapter's W without x64).
One parallel pass (``numba.prange``) forms s(t) = x(t) - x̂(t-1) and s(t-1) element by
element in float64, accumulates <s(t), s(t-1)> and ||s(t)||^2 in float64, and writes
the copy and W' = W + c (x - W), nothing else: for a float64 W with two roundings, as
the numpy reference; for a pair W (hi, lo) and a pair c (c_hi, c_lo) in compensated
float32: gap = (x - hi) - lo, move = fma(c_hi, gap, c_lo * gap) (one rounding, the
contraction XLA:CPU makes of c_hi * gap + c_lo * gap), then hi + move + lo renormalised
by two error-free two-sums (Knuth), operation for operation the JAX adapter's XLA program.

Sums are blocked: a float64 partial per block of 4096 elements (reassociated within
the block, so that it vectorizes), the blocks of a range of :data:`SPLIT` elements
added in order from 0.0, then the ranges of a tensor in order from 0.0. The blocks of
all tensors are laid end to end and cut into one contiguous lane per thread with equal
element counts; the partials are added afterwards in block order, so the sums are the
same bits on 1 thread or 16. Accurate to about 1e-13 relative.

On x86-64 the outputs are written with streaming (non-temporal) stores
(:data:`STREAMING_STORES`): each block's copy is streamed from x while the block is in
cache, each block's W' is formed in a per-lane scratch block and streamed out. A
streaming store does not read the line it overwrites first, so an output costs its own
bytes of memory traffic instead of twice them; the values are the same bits either way.

The outputs an adapter hands to its framework can be entered in an :class:`OutputRecord`
(by identity, with whatever facts the adapter wants back: address, shape, dtype), so
that a later pass reads those facts instead of asking the framework for each buffer.

This module must not decide anything, must not allocate or free the caller's memory,
and must not be imported by ``autodrop_core`` itself (it needs numpy and numba, the
``torch-fast`` extra). The caller keeps every buffer alive for the call.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import platform
import threading
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = [
    "BLOCK", "COLUMNS", "SPLIT", "STREAMING_STORES", "Buffer", "OutputRecord", "aligned_empty", "aligned_empty_at",
    "aligned_parts", "available", "dlpack_buffer", "dlpack_buffers", "host_threads", "launch_lock", "plan",
    "pointer_to", "reduce_pass",
]

#: Elements per block: the unit of reassociation and of the lanes.
BLOCK = 4096
#: Elements per range: fixed (it does not depend on the number of threads), so the sums don't.
SPLIT = 1 << 20

#: Columns of the address table: x, x̂(t-1), head, base, copy (0: none), W (0: W' = x), W' (0: none),
#: then, for a pair W, the low halves of W and of W'; a row may end after W' (the rest 0).
COLUMNS = ("x", "snapshot", "head", "base", "copy", "average", "new_average", "average_lo", "new_average_lo")

#: Whether the passes write their outputs with non-temporal (streaming) stores: on x86-64,
#: where ``movntps`` lets a written line skip the read that a plain store first makes of it.
STREAMING_STORES = platform.machine().lower() in ("x86_64", "amd64")

_kernels: Any = None
_build_lock = threading.Lock()
#: numba's "workqueue" threading layer (the fallback where neither OpenMP nor TBB is
#: found) aborts when two Python threads launch parallel kernels at once: launches from
#: this module take turns, and an adapter's own parallel kernels hold it too.
launch_lock = threading.Lock()


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_valid.restype = ctypes.c_int
_capsule_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]

#: DLPack's device type of host memory, and its dtype codes for float32/float64
_KDL_CPU = 1
_DTYPES = {(2, 32): "float32", (2, 64): "float64"}


class Buffer(NamedTuple):
    """What :func:`dlpack_buffer` reads from a DLPack capsule."""

    address: int  #: of the first element
    elements: int  #: how many
    dtype: str | None  #: "float32", "float64", or None for any other type
    dense: bool  #: row-major and contiguous (no strides, or the row-major ones)


def dlpack_buffer(capsule: Any) -> Buffer:
    """The host buffer behind an unconsumed legacy DLPack capsule (``"dltensor"``), read in place.

    The capsule keeps the memory alive: hold it for as long as the address is used.

    Raises:
        ValueError: the capsule is not an unconsumed ``"dltensor"`` capsule, or its tensor
            is not in host memory (its DLPack device type is named).
    """
    return dlpack_buffers([capsule])[0]


def dlpack_buffers(capsules: Sequence[Any]) -> list[Buffer]:
    """:func:`dlpack_buffer` for many capsules at once: one compiled call reads every header.

    1.4 microseconds a capsule, against 4.5 for reading a header through ``ctypes``
    structures. The capsules keep the memory alive: hold them for as long as the
    addresses are used.

    Raises:
        ValueError: as :func:`dlpack_buffer`, naming the first bad capsule's index.
    """
    if not capsules:
        return []
    import numpy as np

    try:  # PyCapsule_GetPointer checks the capsule's name (a consumed one is "used_dltensor")
        pointers = np.array([_capsule_pointer(capsule, b"dltensor") for capsule in capsules], dtype=np.int64)
    except (ValueError, TypeError, ctypes.ArgumentError):
        bad = next(i for i, c in enumerate(capsules) if not _capsule_valid(c, b"dltensor"))
        raise ValueError(f"capsule {bad}: {capsules[bad]!r} is not an unconsumed 'dltensor' DLPack capsule") from None
    table = _header_reader()(pointers)
    out = []
    for i, (address, count, device, code, bits, lanes, dense) in enumerate(table.tolist()):
        if device != _KDL_CPU:
            raise ValueError(f"capsule {i}: the tensor is on DLPack device type {device}, not in host memory (1)")
        dtype = _DTYPES.get((code, bits)) if lanes == 1 else None
        out.append(Buffer(address, count, dtype, bool(dense)))
    return out


@functools.cache
def _header_reader() -> Any:
    """A compiled reader of DLTensor headers, one row per pointer.

    The header is DLPack's ``DLTensor`` (dlpack.h), the head of a ``DLManagedTensor``:
    ``void* data`` at byte 0, ``DLDevice device`` (int32 type, int32 id) at 8, ``int32
    ndim`` at 16, ``DLDataType dtype`` (uint8 code, uint8 bits, uint16 lanes) at 20,
    ``int64* shape`` at 24, ``int64* strides`` at 32 (NULL: row-major), ``uint64
    byte_offset`` at 40. A row: address of the first element, element count, device type,
    dtype code, bits, lanes, dense (row-major and contiguous; extents of 1 may have any stride).
    """
    import numba
    import numpy as np
    from numba.core import types

    int64_at, int32_at = pointer_to(types.int64), pointer_to(types.int32)
    uint8_at, uint16_at = pointer_to(types.uint8), pointer_to(types.uint16)

    @numba.njit(nogil=True)
    def read(pointers: Any) -> Any:
        out = np.empty((pointers.size, 7), dtype=np.int64)
        for i in range(pointers.size):
            p = pointers[i]
            ndim = int32_at(p + 16)[0]
            shape = int64_at(p + 24)[0]
            strides = int64_at(p + 32)[0]
            count = 1
            for k in range(ndim):
                count *= int64_at(shape + 8 * k)[0]
            dense = 1
            if strides != 0 and ndim > 0:
                expected = 1
                for k in range(ndim - 1, -1, -1):
                    extent = int64_at(shape + 8 * k)[0]
                    if extent != 1 and int64_at(strides + 8 * k)[0] != expected:
                        dense = 0
                    expected *= extent
            out[i, 0] = int64_at(p)[0] + int64_at(p + 40)[0]  # data + byte_offset
            out[i, 1] = count
            out[i, 2] = int32_at(p + 8)[0]  # device type
            out[i, 3] = uint8_at(p + 20)[0]  # dtype code
            out[i, 4] = uint8_at(p + 21)[0]  # bits
            out[i, 5] = uint16_at(p + 22)[0]  # lanes
            out[i, 6] = dense
        return out

    return read


class _Entry(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a recorded output, carrying its key and its facts."""

    __slots__ = ("facts", "key")
    facts: Any
    key: int


class OutputRecord:
    """Outputs a pass handed to a framework, by identity, each with the facts an adapter wants back.

    An entry lives as long as its object and no longer: it holds a weak reference, whose
    callback drops the entry when the object dies, so an ``id`` reused by a new object
    is never mistaken for a recorded one. The record keeps nothing alive and knows
    nothing of the framework: whether a recorded object may still be read as recorded
    (torch: its version counter has not moved; JAX: it was not deleted) is the adapter's
    check, made on the facts it gets back. The facts must not refer to the object
    itself (the entry would then keep it alive for good).
    """

    __slots__ = ("_drop", "_entries")

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        entries = self._entries

        def drop(entry: _Entry) -> None:  # (a closure, not a bound method: no cycle through self)
            if entries.get(entry.key) is entry:
                del entries[entry.key]

        self._drop = drop

    def add(self, obj: Any, facts: Any) -> None:
        """Record ``obj`` (it must take weak references) with ``facts`` (not None), replacing its earlier entry."""
        if facts is None:
            raise ValueError("OutputRecord.add: facts is None, which facts() returns for an object not recorded; "
                             "record a tuple or any other object")
        key = id(obj)
        entry = _Entry(obj, self._drop)
        entry.key = key
        entry.facts = facts
        self._entries[key] = entry

    def facts(self, obj: Any) -> Any:
        """The facts recorded with ``obj``, or None when it is not recorded (or is another object under its id)."""
        entry = self._entries.get(id(obj))
        if entry is None or entry() is not obj:
            return None
        return entry.facts

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, obj: object) -> bool:
        return self.facts(obj) is not None


def aligned_empty(count: int, dtype: str = "float64") -> Any:
    """A fresh 1-d numpy array whose data starts on a 64-byte boundary (TensorFlow's kernels need it)."""
    return aligned_empty_at(count, dtype)[0]


def aligned_empty_at(count: int, dtype: str = "float64") -> tuple[Any, int]:
    """:func:`aligned_empty` and the address of its first element (reading ``.ctypes.data`` costs 2 microseconds)."""
    import numpy as np

    item = np.dtype(dtype).itemsize
    spare = np.empty(count + 64 // item, dtype=dtype)
    address = spare.ctypes.data
    skip = (-address % 64) // item
    return spare[skip:skip + count], address + skip * item


def aligned_parts(lengths: Sequence[int], dtype: str = "float64") -> list[Any]:
    """Fresh 1-d numpy arrays of these lengths, views into one allocation, each on a 64-byte boundary.

    One allocation for a variable's chunks instead of one per chunk: numpy backs
    allocations of 4 MiB or more with transparent huge pages where the kernel offers them
    (one page fault per 2 MiB instead of per 4 KiB), and glibc gives chunks of a few MiB
    back to the kernel when they are freed, so that separate fresh chunks are faulted in
    again at every epoch end (twice the time of the pass that writes them). The memory is
    freed when the last view is.
    """
    import numpy as np

    step = 64 // np.dtype(dtype).itemsize
    padded = [-(-n // step) * step for n in lengths]
    block = aligned_empty(sum(padded), dtype)
    out = []
    start = 0
    for n, room in zip(lengths, padded, strict=True):
        out.append(block[start:start + n])
        start += room
    return out


def host_threads() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available() -> bool:
    """True when numba can be imported (it is only imported on first use)."""
    return _kernels is not None or importlib.util.find_spec("numba") is not None


def _build() -> Any:
    import llvmlite.ir as llvm_ir
    import numba
    import numpy as np
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def fused_multiply_add(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        """a * b + c in float32 with one rounding (LLVM's fma)."""
        signature = types.float32(types.float32, types.float32, types.float32)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            f32 = llvm_ir.FloatType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f32], llvm_ir.FunctionType(f32, [f32, f32, f32]))
            return builder.call(fn, args)

        return signature, codegen

    streaming = STREAMING_STORES

    def stream_copy_intrinsic(item: Any) -> Any:
        """``n`` elements from address ``src`` to address ``dst``, written around the caches where the CPU can.

        On x86-64: plain stores up to the first 32-byte boundary of ``dst``, then 32-byte
        vectors stored with LLVM's ``!nontemporal`` hint (``movntps``/``movntpd``: the line
        is not read before it is overwritten, half the traffic of a plain store), plain
        stores for the tail, and an ``sfence`` so that the stores are visible before the
        pass returns. Elsewhere, plain stores only. The values are copied bit for bit.
        ``dst`` must be aligned to its element size (every output is an adapter's own
        numpy, torch or TensorFlow allocation), so that the head ends on the boundary.
        """
        width = item.bitwidth // 8
        lanes_per_vector = 32 // width

        @intrinsic
        def stream_copy(typingctx: Any, src: Any, dst: Any, n: Any) -> Any:
            signature = types.void(types.intp, types.intp, types.intp)

            def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
                source, target, count = args
                i64 = llvm_ir.IntType(64)
                scalar = context.get_value_type(item)
                vector = llvm_ir.VectorType(scalar, lanes_per_vector)

                def const(value: int) -> Any:
                    return llvm_ir.Constant(i64, value)

                def copy_scalars(first: Any, how_many: Any) -> None:
                    with cgutils.for_range(builder, how_many) as loop:
                        offset = builder.mul(builder.add(first, loop.index), const(width))
                        value = builder.load(builder.inttoptr(builder.add(source, offset), scalar.as_pointer()))
                        builder.store(value, builder.inttoptr(builder.add(target, offset), scalar.as_pointer()))

                if not streaming:  # the launches stream only where streaming; this keeps any CPU's code valid
                    copy_scalars(const(0), count)
                    return context.get_dummy_value()
                # elements before dst's first 32-byte boundary (dst is element-aligned), at most count
                to_boundary = builder.udiv(builder.and_(builder.sub(const(0), target), const(31)), const(width))
                head = builder.select(builder.icmp_signed("<", to_boundary, count), to_boundary, count)
                copy_scalars(const(0), head)
                vectors = builder.udiv(builder.sub(count, head), const(lanes_per_vector))
                hint = builder.module.add_metadata([llvm_ir.Constant(llvm_ir.IntType(32), 1)])
                start = builder.mul(head, const(width))
                with cgutils.for_range(builder, vectors) as loop:
                    offset = builder.add(start, builder.mul(loop.index, const(32)))
                    source_vector = builder.inttoptr(builder.add(source, offset), vector.as_pointer())
                    value = builder.load(source_vector, align=width)
                    store = builder.store(value, builder.inttoptr(builder.add(target, offset), vector.as_pointer()),
                                          align=32)
                    store.set_metadata("nontemporal", hint)
                done = builder.add(head, builder.mul(vectors, const(lanes_per_vector)))
                copy_scalars(done, builder.sub(count, done))
                fence = builder.module.declare_intrinsic("llvm.x86.sse.sfence", [],
                                                         llvm_ir.FunctionType(llvm_ir.VoidType(), []))
                builder.call(fence, [])
                return context.get_dummy_value()

            return signature, codegen

        return stream_copy

    # Within a block the two sums may be reassociated (so that they vectorize); nothing
    # else may be: the steps, the copy and W' keep the reference's roundings.
    @numba.njit(nogil=True, fastmath={"reassoc"})
    def block_sums(x: Any, x_hat: Any, head: Any, base: Any) -> tuple[float, float]:
        dot = 0.0
        sq = 0.0
        for i in range(x.size):
            s = np.float64(x[i]) - np.float64(x_hat[i])
            prev = np.float64(head[i]) - np.float64(base[i])
            dot += s * prev
            sq += s * s
        return dot, sq

    @numba.njit(nogil=True, fastmath={"reassoc"})
    def block_sums_and_copy(x: Any, x_hat: Any, head: Any, base: Any, copy: Any) -> tuple[float, float]:
        dot = 0.0
        sq = 0.0
        for i in range(x.size):
            xi = x[i]
            s = np.float64(xi) - np.float64(x_hat[i])
            prev = np.float64(head[i]) - np.float64(base[i])
            copy[i] = xi
            dot += s * prev
            sq += s * s
        return dot, sq

    @numba.njit(nogil=True)
    def block_absorb(x: Any, average: Any, out: Any, weight: float, first: bool) -> None:
        for i in range(x.size):
            xd = np.float64(x[i])
            if first:
                out[i] = xd
            else:
                w = average[i]
                delta = (xd - w) * weight  # two roundings, as the reference: no fused multiply-add
                out[i] = w + delta

    @numba.njit(nogil=True)
    def block_absorb_pair(x: Any, hi: Any, lo: Any, out_hi: Any, out_lo: Any, c_hi: Any, c_lo: Any,
                          first: bool) -> None:
        for i in range(x.size):
            xi = x[i]
            if first:
                out_hi[i] = xi
                out_lo[i] = np.float32(0.0)
                continue
            h = hi[i]
            low = lo[i]
            gap = (xi - h) - low  # exact when x and W are close (Sterbenz)
            move = fused_multiply_add(c_hi, gap, c_lo * gap)
            s = h + move  # two error-free sums (Knuth's two-sum)
            virtual = s - h
            e = (h - (s - virtual)) + (move - virtual)
            u = e + low
            s2 = s + u
            virtual2 = s2 - s
            out_hi[i] = s2
            out_lo[i] = (s - (s2 - virtual2)) + (u - virtual2)

    @numba.njit(nogil=True)
    def no_pair(x: Any, hi: Any, lo: Any, out_hi: Any, out_lo: Any, c_hi: Any, c_lo: Any, first: bool) -> None:
        return None  # float64 tensors have no pair W (reduce_pass refuses the combination)

    as_f64 = pointer_to(types.float64)
    as_f32 = pointer_to(types.float32)
    stream_f32 = stream_copy_intrinsic(types.float32)
    stream_f64 = stream_copy_intrinsic(types.float64)

    def make_launch(item: Any) -> Any:
        as_item = pointer_to(item)
        absorb_pair = block_absorb_pair if item == types.float32 else no_pair
        stream_item = stream_f32 if item == types.float32 else stream_f64
        item_bytes = item.bitwidth // 8
        block = BLOCK

        # With streaming stores the outputs are formed block by block in cache (the copy:
        # x itself; W': a per-lane scratch block) and then streamed out; else written in place.
        @numba.njit(nogil=True, parallel=True)
        def launch(addresses: Any, sizes: Any, blocks: Any, lanes: Any, firsts: Any, weight: float,
                   copying: bool, absorbing: bool, pair: bool, c_hi: Any, c_lo: Any, partials: Any) -> None:
            scratch_rows = lanes.size - 1 if absorbing and streaming else 0
            scratch = np.empty((scratch_rows if not pair else 0, block))
            scratch_hi = np.empty((scratch_rows if pair else 0, block), dtype=np.float32)
            scratch_lo = np.empty((scratch_rows if pair else 0, block), dtype=np.float32)
            for lane in numba.prange(lanes.size - 1):
                for j in range(lanes[lane], lanes[lane + 1]):
                    t, a, b = blocks[j, 0], blocks[j, 1], blocks[j, 2]
                    n = sizes[t]
                    m = b - a
                    x = numba.carray(as_item(addresses[t, 0]), n)[a:b]
                    x_hat = numba.carray(as_item(addresses[t, 1]), n)[a:b]
                    head = numba.carray(as_item(addresses[t, 2]), n)[a:b]
                    base = numba.carray(as_item(addresses[t, 3]), n)[a:b]
                    if copying and streaming:
                        dot, sq = block_sums(x, x_hat, head, base)
                        stream_item(addresses[t, 0] + a * item_bytes, addresses[t, 4] + a * item_bytes, m)
                    elif copying:
                        copy = numba.carray(as_item(addresses[t, 4]), n)[a:b]
                        dot, sq = block_sums_and_copy(x, x_hat, head, base, copy)
                    else:
                        dot, sq = block_sums(x, x_hat, head, base)
                    if absorbing and pair:  # the block is still in cache
                        first = firsts[t]
                        if streaming:
                            out_hi = scratch_hi[lane, :m]
                            out_lo = scratch_lo[lane, :m]
                        else:
                            out_hi = numba.carray(as_f32(addresses[t, 6]), n)[a:b]
                            out_lo = numba.carray(as_f32(addresses[t, 8]), n)[a:b]
                        hi = out_hi if first else numba.carray(as_f32(addresses[t, 5]), n)[a:b]
                        lo = out_lo if first else numba.carray(as_f32(addresses[t, 7]), n)[a:b]
                        absorb_pair(x, hi, lo, out_hi, out_lo, c_hi, c_lo, first)
                        if streaming:
                            stream_f32(out_hi.ctypes.data, addresses[t, 6] + a * 4, m)
                            stream_f32(out_lo.ctypes.data, addresses[t, 8] + a * 4, m)
                    elif absorbing:
                        first = firsts[t]
                        out = scratch[lane, :m] if streaming else numba.carray(as_f64(addresses[t, 6]), n)[a:b]
                        average = out if first else numba.carray(as_f64(addresses[t, 5]), n)[a:b]
                        block_absorb(x, average, out, weight, first)
                        if streaming:
                            stream_f64(out.ctypes.data, addresses[t, 6] + a * 8, m)
                    partials[j, 0] = dot
                    partials[j, 1] = sq

        return launch

    @numba.njit(nogil=True)
    def combine(blocks: Any, partials: Any, tensors: int, split: int) -> Any:
        totals = np.zeros((tensors, 2))
        range_dot = 0.0
        range_sq = 0.0
        for j in range(blocks.shape[0]):
            t = blocks[j, 0]
            range_dot += partials[j, 0]
            range_sq += partials[j, 1]
            if j + 1 == blocks.shape[0] or blocks[j + 1, 0] != t or blocks[j + 1, 1] % split == 0:
                totals[t, 0] += range_dot
                totals[t, 1] += range_sq
                range_dot = 0.0
                range_sq = 0.0
        return totals

    return {"float32": make_launch(types.float32), "float64": make_launch(types.float64)}, combine


@functools.cache
def pointer_to(item: Any) -> Any:
    """A numba intrinsic that reads an integer address as a pointer to ``item`` (a numba type).

    ``numba.carray(pointer_to(types.float32)(address), n)`` views ``n`` elements there;
    the caller keeps the memory alive. Imports numba on first use.
    """
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def as_pointer(typingctx: Any, address: Any) -> Any:
        signature = types.CPointer(item)(types.intp)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(item)))

        return signature, codegen

    return as_pointer


def _ensure_built() -> Any:
    global _kernels
    with _build_lock:
        if _kernels is None:
            _kernels = _build()
    return _kernels


@functools.lru_cache(maxsize=8)
def plan(sizes: tuple[int, ...], threads: int, block: int = BLOCK) -> tuple[Any, Any]:
    """The blocks and the lanes of a pass over tensors of these sizes on ``threads`` threads.

    ``blocks[j] = (tensor, start, end)`` for every block of ``block`` elements of every
    tensor, in order; lane
    k runs blocks ``lanes[k]`` to ``lanes[k+1]``, cut where the running element count
    passes k / threads of the total. Cached (a model's sizes do not change from epoch to
    epoch); the arrays are read-only.
    """
    import numpy as np

    rows = []
    for t, n in enumerate(sizes):
        starts = np.arange(0, n, block, dtype=np.int64)
        rows.append(np.stack([np.full_like(starts, t), starts, np.minimum(starts + block, n)], axis=1))
    blocks = np.concatenate(rows) if rows else np.empty((0, 3), dtype=np.int64)
    threads = max(1, min(threads, len(blocks)))
    lengths = blocks[:, 2] - blocks[:, 1]
    cuts = np.searchsorted(np.cumsum(lengths), np.arange(1, threads) * (lengths.sum() / threads), side="right")
    lanes = np.concatenate([[0], cuts, [len(blocks)]]).astype(np.int64)
    blocks.flags.writeable = False
    lanes.flags.writeable = False
    return blocks, lanes


def reduce_pass(
    dtype: str | Sequence[str],
    addresses: Sequence[tuple[int, ...]],
    sizes: tuple[int, ...],
    *,
    threads: int,
    copying: bool = False,
    absorbing: bool = False,
    weight: float = 0.0,
    firsts: list[bool] | None = None,
    pair_weight: tuple[float, float] | None = None,
) -> list[tuple[float, float]]:
    """One pass over the tensors: ``(dot, sq_norm)`` per tensor, in the order given.

    Args:
        dtype: ``"float32"`` or ``"float64"``, the dtype of x, x̂, head, base and the copy:
            one for every tensor, or one per tensor (one launch per dtype then).
        addresses: per tensor, the addresses of :data:`COLUMNS` (the unused ones 0; a row
            may stop after W'). Pass x̂ as head and base for a zero previous step.
        sizes: the element count of each tensor (all its buffers are dense, that long).
        threads: lanes (one per thread); numba's own thread count is left as it is.
        copying: write x into each tensor's copy.
        absorbing: write W' = W + c (x - W) into each tensor's W'.
        weight: c, the same for every tensor.
        firsts: per tensor, True where W is absent (W' = x); default all True.
        pair_weight: ``(c_hi, c_lo)``, both float32 values: W is a float32 (hi, lo) pair
            (columns ``average``/``average_lo``, W' into ``new_average``/``new_average_lo``)
            absorbed with c = c_hi + c_lo (see the module docstring); float32 tensors only.
            ``weight`` is then unused.

    Raises:
        ValueError: a dtype other than float32/float64, a table of the wrong shape, or a
            pair W for float64 tensors.
    """
    import numba
    import numpy as np

    dtypes = [dtype] * len(sizes) if isinstance(dtype, str) else list(dtype)
    for name in [dtype] if isinstance(dtype, str) else dtypes:
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype {name!r}: the kernels take 'float32' or 'float64'")
    if not len(addresses) == len(sizes) == len(dtypes):
        raise ValueError(f"{len(addresses)} address rows and {len(dtypes)} dtypes for {len(sizes)} sizes")
    widths = {len(row) for row in addresses}
    if not widths <= {7, len(COLUMNS)}:
        raise ValueError(f"address rows of {sorted(widths)} columns: each has 7 or {len(COLUMNS)} ({COLUMNS})")
    pair = pair_weight is not None and absorbing
    if pair and "float64" in dtypes:
        raise ValueError("pair_weight: a float32 (hi, lo) running average is for float32 tensors, "
                         f"not float64 (tensor {dtypes.index('float64')})")
    flags = np.array(firsts if firsts is not None else [True] * len(sizes), dtype=np.bool_)
    table = np.zeros((len(sizes), len(COLUMNS)), dtype=np.int64)
    if len(widths) == 1 and addresses:  # one conversion for the whole table, not one per row
        table[:, :widths.pop()] = np.array(addresses, dtype=np.int64)
    else:
        for i, row in enumerate(addresses):
            table[i, :len(row)] = row
    if pair:
        for i, n in enumerate(sizes):
            if n and not (table[i, 6] and table[i, 8] and (flags[i] or (table[i, 5] and table[i, 7]))):
                raise ValueError(f"pair_weight: tensor {i} lacks a half of W or W' (columns 5 to 8 of {COLUMNS})")
    c_hi, c_lo = (np.float32(c) for c in (pair_weight or (0.0, 0.0)))
    launches, combine = _ensure_built()
    lanes_wanted = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(sizes)
    for name in ("float32", "float64"):
        index = [i for i, d in enumerate(dtypes) if d == name]
        if not index:
            continue
        group = tuple(sizes[i] for i in index)
        blocks, lanes = plan(group, lanes_wanted)
        partials = np.empty((len(blocks), 2))
        with launch_lock:
            launches[name](table[index], np.array(group, dtype=np.int64), blocks, lanes, flags[index],
                           float(weight), bool(copying), bool(absorbing), pair, c_hi, c_lo, partials)
        for i, (dot, sq) in zip(index, combine(blocks, partials, len(group), SPLIT), strict=True):
            out[i] = (float(dot), float(sq))
    return out
