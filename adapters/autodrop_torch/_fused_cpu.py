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
allocates the outputs and keeps every tensor alive for the call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autodrop_core import fused

__all__ = ["MIN_NUMEL", "available", "fits", "fits_average", "run_many"]

#: A model whose tensors are all smaller than this takes the torch path: it never pays
#: numba's import and compile time (a few seconds). Once one tensor is this large, every
#: tensor the kernels can take goes through them (fewer, cheaper calls than torch ops).
MIN_NUMEL = 1 << 16


def available() -> bool:
    """True when numba can be imported (it is only imported on first use)."""
    return fused.available()


def fits(x: Tensor, *others: Tensor) -> bool:
    """Whether the kernels can take this tensor: CPU, contiguous, float32/float64, ``others`` alike.

    Size is the caller's concern (see :data:`MIN_NUMEL`).
    """
    if x.dtype not in _DTYPES or x.device.type != "cpu" or not x.is_contiguous():
        return False
    shape, dtype = x.shape, x.dtype
    for o in others:
        if o.dtype != dtype or o.shape != shape or o.device.type != "cpu" or not o.is_contiguous():
            return False
    return True


def fits_average(x: Tensor, average: Tensor | None) -> bool:
    """Whether the window kernel can also absorb x into ``average`` (float64, CPU, contiguous, same shape)."""
    return average is None or (
        average.device.type == "cpu" and average.dtype == torch.float64 and average.is_contiguous()
        and average.shape == x.shape
    )


StepResult = tuple[Tensor, Tensor | None, float, float]
Job = tuple[int, Tensor, Tensor, Tensor, Tensor, "tuple[Tensor | None, float] | None"]
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


#: Outputs of at least this many bytes are allocated by numpy, which asks Linux for
#: transparent huge pages on them (``madvise``); torch's CPU allocator does not unless
#: ``THP_MEM_ALLOC_ENABLE=1`` is set. 0 turns it off.
HUGE_PAGE_BYTES = 1 << 22


def _empty(shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """A fresh contiguous CPU tensor (its memory from numpy when it is large, see :data:`HUGE_PAGE_BYTES`)."""
    count = shape.numel()
    if HUGE_PAGE_BYTES and count * dtype.itemsize >= HUGE_PAGE_BYTES:
        import numpy as np

        return torch.from_numpy(np.empty(tuple(shape), dtype=np.float32 if dtype == torch.float32 else np.float64))
    return torch.empty(shape, dtype=dtype)


def _launch(tensors: list[tuple[Tensor | None, ...]], absorb: bool, weight: float,
            firsts: list[bool], threads: int) -> list[tuple[float, float]]:
    """One parallel pass over ``tensors`` (each ``(x, x̂, head, base, copy, W, W')``): (dot, sq) per tensor."""
    addresses = [tuple(0 if t is None else t.data_ptr() for t in group) for group in tensors]
    sizes = tuple(group[0].numel() for group in tensors)  # type: ignore[union-attr]
    dtypes = [_DTYPES[group[0].dtype] for group in tensors]  # type: ignore[union-attr]
    try:
        return fused.reduce_pass(dtypes, addresses, sizes, threads=threads,  # type: ignore[arg-type]
                                 copying=True, absorbing=absorb, weight=weight, firsts=firsts)
    finally:
        # numba's OpenMP layer can share torch's OpenMP runtime, and starting it sets that
        # runtime's thread count to numba's: torch's is put back as it was
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def run_many(jobs: list[Job]) -> dict[int, StepResult]:
    """One pass over many tensors, on as many threads as torch uses.

    Args:
        jobs: ``(index, x, snapshot, head, base, absorb)`` per tensor, where
            ``s(t-1) = head - base`` (pass the snapshot as both for a zero previous step)
            and ``absorb`` is ``(W, c)`` to also form W' = W + c (x - W) (``W`` None:
            W' = x, the first vector of a window) or None. Every job of one call absorbs
            with the same ``c``, or none does.

    Returns:
        ``(copy, new_average or None, dot, sq_norm)`` per index: a fresh contiguous copy of
        x, a fresh float64 W', <s(t), s(t-1)> and ||s(t)||^2. Nothing passed in is modified.
    """
    if not jobs:
        return {}
    weights = {job[5][1] for job in jobs if job[5] is not None}
    absorb = any(job[5] is not None for job in jobs)
    if len(weights) > 1 or (absorb and any(job[5] is None for job in jobs)):
        raise ValueError(f"the jobs of one pass absorb with one weight or none: got {sorted(weights)}")
    weight = weights.pop() if weights else 0.0
    threads = torch.get_num_threads()
    tensors: list[tuple[Tensor | None, ...]] = []
    firsts, outputs = [], []
    for _, x, snapshot, head, base, job_absorb in jobs:
        copy = _empty(x.shape, x.dtype)
        out = _empty(x.shape, torch.float64) if job_absorb is not None else None
        average = None if job_absorb is None else job_absorb[0]
        tensors.append((x, snapshot, head, base, copy, average, out))
        firsts.append(average is None)
        outputs.append((copy, out))
    sums = _launch(tensors, absorb, weight, firsts, threads)
    return {index: (copy, out, dot, sq)
            for (index, *_), (copy, out), (dot, sq) in zip(jobs, outputs, sums, strict=True)}
