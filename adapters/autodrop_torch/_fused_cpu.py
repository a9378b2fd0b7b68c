"""Optional one-pass CPU kernels for the step, its two reductions and the average (numba).

With plain torch ops the CPU path reads and writes each parameter's bytes several times
(upcast, subtract, two dots, copy). When numba is installed and a tensor is a large
contiguous float32 or float64 CPU tensor, one kernel pass reads x(t), x̂(t-1) and the
two tensors the previous step is formed from (s(t-1) = A - B, see ``_buffers.py``),
forms s(t) = x(t) - x̂(t-1) and s(t-1) element by element in float64, accumulates both
sums in float64 and writes a copy of x (the next snapshot, adopted only once the core
accepts the epoch); inside an averaging window the same pass also writes the new
running average W' = W + c (x - W) into a fresh float64 tensor, with the reference's two
roundings. Sums are blocked (a float64 partial per block of 4096 elements, vectorised
within the block, then the partials in order), so the result does not depend on threads
and is accurate to about 1e-13 relative. The kernels compute exactly what the torch path
computes, up to the order of float64 additions, and nothing else; they write only into
new tensors.

All the tensors of an epoch go through one parallel launch of the kernels that every
adapter's CPU path shares (:mod:`autodrop_core.fused`), on as many threads as torch
uses, by the tensors' data pointers (no per-tensor Python dispatch); this module only
checks the tensors, allocates the outputs and keeps every tensor alive for the call.

The outputs of one pass share a few numpy allocations of at most :data:`BLOCK_BYTES`
(one tensor per parameter, each a view at an aligned offset), and each is entered in a
record (:data:`_OWN`) with its address, shape, dtype and version counter. The next
passes read those of the scheduler's state (x̂(t-1), x̂(t-2), W) from the record instead
of asking torch for each one's dtype, device, layout and pointer; a tensor that was
modified in place since (its version counter moved), or that is not an output of this
module (a checkpoint's, say), is checked by torch as any other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autodrop_core import fused

__all__ = ["BLOCK_BYTES", "MIN_NUMEL", "available", "plan", "run_many"]

#: A model whose tensors are all smaller than this takes the torch path: it never pays
#: numba's import and compile time (a few seconds). Once one tensor is this large, every
#: tensor the kernels can take goes through them (fewer, cheaper calls than torch ops).
MIN_NUMEL = 1 << 16


def available() -> bool:
    """True when numba can be imported (it is only imported on first use)."""
    return fused.available()


StepResult = tuple[Tensor, Tensor | None, float, float]
#: ``(index, x, addresses, absorbing)``: the addresses of x, x̂(t-1), head, base and W (0:
#: none) from :func:`plan`; ``absorbing`` also writes W' (W 0: W' = x).
Job = tuple[int, Tensor, tuple[int, int, int, int, int], bool]
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}

#: The outputs of one pass are allocated in blocks of at most this many bytes, each
#: holding consecutive outputs of one dtype (an output larger than it gets one of its
#: own): 9 allocations instead of 62 for ResNet-18's shapes. numpy allocates them, so
#: blocks of 4 MiB or more get transparent huge pages where Linux offers them
#: (``madvise``), which torch's CPU allocator does not ask for unless
#: ``THP_MEM_ALLOC_ENABLE=1`` is set. Small enough that glibc reuses the blocks an
#: earlier epoch end freed instead of mapping fresh ones (see ``docs/memory.md``).
BLOCK_BYTES = 8 << 20


#: The outputs of :func:`run_many`, each with (its address, shape, dtype, version counter
#: when it was written); an entry goes when its tensor dies.
_OWN = fused.OutputRecord()


def _address(t: Tensor, shape: torch.Size, dtype: torch.dtype) -> int | None:
    """``t``'s data address when the kernels can read it as a dense CPU buffer of ``shape`` and ``dtype``."""
    facts = _OWN.facts(t)
    if facts is not None and facts[2] is dtype and facts[1] == shape and t._version == facts[3]:
        return facts[0]
    if t.dtype != dtype or not t.is_cpu or t.shape != shape or not t.is_contiguous():
        return None
    return t.data_ptr()


def plan(x: Tensor, snapshot: Tensor, head: Tensor, base: Tensor,
         average: Tensor | None) -> tuple[int, int, int, int, int] | None:
    """The addresses of x, x̂(t-1), head, base and W (0 when ``average`` is None), or None.

    None when the kernels cannot take this tensor: x must be a contiguous float32 or
    float64 CPU tensor, the snapshot, head and base alike, W float64 of x's shape. Size is
    the caller's concern (see :data:`MIN_NUMEL`).
    """
    dtype = x.dtype
    if dtype not in _DTYPES or not x.is_cpu or not x.is_contiguous():  # (``is_cpu``: 60 ns, ``device``: 400)
        return None
    shape = x.shape
    at_snapshot = _address(snapshot, shape, dtype)
    at_head = at_snapshot if head is snapshot else _address(head, shape, dtype)
    at_base = _address(base, shape, dtype)
    at_average = 0 if average is None else _address(average, shape, torch.float64)
    if at_snapshot is None or at_head is None or at_base is None or at_average is None:
        return None
    return x.data_ptr(), at_snapshot, at_head, at_base, at_average


def _empty(shapes: list[torch.Size], dtype: torch.dtype) -> tuple[list[Tensor], list[int]]:
    """Fresh contiguous CPU tensors of these shapes, views into blocks of at most :data:`BLOCK_BYTES`.

    Each starts on a 64-byte boundary; returns the tensors and their addresses. A block
    is freed with the last view of it (the outputs of one pass live and die together).
    """
    item = dtype.itemsize
    step = 64 // item
    tensors: list[Tensor] = []
    addresses: list[int] = []
    i, n = 0, len(shapes)
    while i < n:
        counts = []
        total = 0
        j = i
        while j < n:
            count = shapes[j].numel()
            padded = -(-count // step) * step
            if j > i and (total + padded) * item > BLOCK_BYTES:
                break
            counts.append((count, padded))
            total += padded
            j += 1
        block, address = fused.aligned_empty_at(total, _DTYPES[dtype])
        offset = 0
        for k, (count, padded) in zip(range(i, j), counts):
            tensors.append(torch.from_numpy(block[offset:offset + count].reshape(shapes[k])))
            addresses.append(address + offset * item)
            offset += padded
        i = j
    return tensors, addresses


def _register(tensors: list[Tensor], addresses: list[int]) -> None:
    for t, address in zip(tensors, addresses, strict=True):
        _OWN.add(t, (address, t.shape, t.dtype, t._version))


def _launch(rows: list[tuple[int, ...]], sizes: tuple[int, ...], dtypes: list[str], absorb: bool,
            weight: float, firsts: list[bool], threads: int) -> list[tuple[float, float]]:
    """One parallel pass over the address ``rows`` (x, x̂, head, base, copy, W, W'): (dot, sq) per tensor."""
    try:
        return fused.reduce_pass(dtypes, rows, sizes, threads=threads,  # type: ignore[arg-type]
                                 copying=True, absorbing=absorb, weight=weight, firsts=firsts)
    finally:
        # numba's OpenMP layer can share torch's OpenMP runtime, and starting it sets that
        # runtime's thread count to numba's: torch's is put back as it was
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def run_many(jobs: list[Job], weight: float = 0.0) -> dict[int, StepResult]:
    """One pass over many tensors, on as many threads as torch uses.

    Args:
        jobs: ``(index, x, addresses, absorbing)`` per tensor, the addresses from
            :func:`plan`; s(t-1) = head - base (the snapshot as both: a zero previous
            step). With ``absorbing`` the pass also forms W' = W + c (x - W) (W address 0:
            W' = x, the first vector of a window). Every job absorbs, or none does.
        weight: c, the same for every job.

    Returns:
        ``(copy, new_average or None, dot, sq_norm)`` per index: a fresh contiguous copy of
        x, a fresh float64 W', <s(t), s(t-1)> and ||s(t)||^2. Nothing passed in is
        modified; the caller keeps the tensors behind the addresses alive for the call.
    """
    if not jobs:
        return {}
    absorb = jobs[0][3]
    if any(job[3] != absorb for job in jobs):
        raise ValueError("the jobs of one pass all absorb into a running average, or none does")
    shapes = [job[1].shape for job in jobs]
    copies: list[Tensor | None] = [None] * len(jobs)
    copy_at = [0] * len(jobs)
    for dtype in {job[1].dtype for job in jobs}:
        where = [k for k, job in enumerate(jobs) if job[1].dtype is dtype]
        made, at = _empty([shapes[k] for k in where], dtype)
        for k, t, a in zip(where, made, at, strict=True):
            copies[k], copy_at[k] = t, a
    outs: list[Tensor | None] = [None] * len(jobs)
    out_at = [0] * len(jobs)
    if absorb:
        made, out_at = _empty(shapes, torch.float64)
        outs = list(made)
    rows = [(*job[2][:4], copy_at[k], job[2][4], out_at[k]) for k, job in enumerate(jobs)]
    sizes = tuple(shape.numel() for shape in shapes)
    dtypes = [_DTYPES[job[1].dtype] for job in jobs]
    firsts = [job[2][4] == 0 for job in jobs]
    sums = _launch(rows, sizes, dtypes, absorb, weight, firsts, torch.get_num_threads())
    _register(copies, copy_at)  # type: ignore[arg-type]  # every copy is made
    if absorb:
        _register(outs, out_at)  # type: ignore[arg-type]
    return {job[0]: (copy, out, dot, sq)  # type: ignore[misc]
            for job, copy, out, (dot, sq) in zip(jobs, copies, outs, sums, strict=True)}
