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
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

__all__ = ["MIN_NUMEL", "available", "fits", "fused_step", "run_many"]

_BLOCK = 4096

#: A model whose tensors are all smaller than this takes the torch path: it never pays
#: numba's import and compile time (about 1 s). Once one tensor is this large, every
#: tensor the kernels can take goes through them (fewer, cheaper calls than torch ops).
MIN_NUMEL = 1 << 16
_kernels: Any = None
_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


def available() -> bool:
    """True when numba can be imported (it is only imported on first use)."""
    return _kernels is not None or importlib.util.find_spec("numba") is not None


def _build() -> Any:
    import numba
    import numpy as np

    # Within a block of 4096 elements the two sums may be reassociated (so that they
    # vectorize: one pass then runs at the memory bandwidth); nothing else may be: the
    # steps, the copy and W' keep the reference's roundings, and the block partials are
    # added in order. The result does not depend on the number of threads.
    @numba.njit(nogil=True, fastmath={"reassoc"})
    def block_step(x: Any, x_hat: Any, head: Any, base: Any, copy: Any) -> tuple[float, float]:
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
    def step(x: Any, x_hat: Any, head: Any, base: Any, copy: Any) -> tuple[float, float]:
        dot = 0.0
        sq = 0.0
        n = x.size
        for a in range(0, n, _BLOCK):
            b = min(a + _BLOCK, n)
            block_dot, block_sq = block_step(x[a:b], x_hat[a:b], head[a:b], base[a:b], copy[a:b])
            dot += block_dot
            sq += block_sq
        return dot, sq

    @numba.njit(nogil=True)
    def step_and_absorb(
        x: Any, x_hat: Any, head: Any, base: Any, copy: Any, average: Any, out: Any, weight: float, first: bool
    ) -> tuple[float, float]:
        dot = 0.0
        sq = 0.0
        n = x.size
        for a in range(0, n, _BLOCK):
            b = min(a + _BLOCK, n)
            block_dot, block_sq = block_step(x[a:b], x_hat[a:b], head[a:b], base[a:b], copy[a:b])
            block_absorb(x[a:b], average[a:b], out[a:b], weight, first)  # the block is still in cache
            dot += block_dot
            sq += block_sq
        return dot, sq

    return step, step_and_absorb


def _ensure_built() -> Any:
    global _kernels
    if _kernels is None:
        _kernels = _build()
    return _kernels


def fits(x: Tensor, *others: Tensor) -> bool:
    """Whether the kernels can take this tensor: CPU, contiguous, float32/float64, ``others`` alike.

    Size is the caller's concern (see :data:`MIN_NUMEL`).
    """
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.is_contiguous()
        and all(
            o.device.type == "cpu" and o.shape == x.shape and o.dtype == x.dtype and o.is_contiguous() for o in others
        )
    )


def fits_average(x: Tensor, average: Tensor | None) -> bool:
    """Whether the window kernel can also absorb x into ``average`` (float64, CPU, contiguous, same shape)."""
    return average is None or (
        average.device.type == "cpu" and average.dtype == torch.float64 and average.is_contiguous()
        and average.shape == x.shape
    )


StepResult = tuple[Tensor, Tensor | None, float, float]

#: Elements per job: large tensors are cut into ranges this long (a multiple of the
#: block), so that threads share out a model with a few big tensors evenly. The cut
#: does not depend on the number of threads, so neither do the sums.
SPLIT = 1 << 20


class Pending:
    """One tensor's kernel result, complete once every range job of it is done."""

    def __init__(self, copy: Tensor, out: Tensor | None, parts: list[Future[tuple[float, float]]]) -> None:
        self._copy, self._out, self._parts = copy, out, parts

    def result(self) -> StepResult:
        dot = 0.0
        sq = 0.0
        for part in self._parts:  # in range order, whatever order the threads finished in
            part_dot, part_sq = part.result()
            dot += part_dot
            sq += part_sq
        return self._copy, self._out, float(dot), float(sq)


def _done(value: tuple[float, float]) -> Future[tuple[float, float]]:
    future: Future[tuple[float, float]] = Future()
    future.set_result(value)
    return future


def fused_step(
    x: Tensor,
    snapshot: Tensor,
    head: Tensor,
    base: Tensor,
    absorb: tuple[Tensor | None, float] | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> Pending:
    """One pass: a copy of x, <s(t), s(t-1)> and ||s(t)||^2; with ``absorb`` also W'.

    ``s(t-1) = head - base`` (pass the snapshot as both for a zero previous step).
    ``absorb`` is ``(W, c)`` (``W`` None: W' = x, the first vector of a window). The
    outputs are allocated here; the ranges of :data:`SPLIT` elements run on ``pool``
    (or here, in order, without one). ``result()`` gives ``(copy, new_average or None,
    dot, sq_norm)``; nothing passed in is modified.
    """
    step, step_and_absorb = _ensure_built()
    copy = torch.empty_like(x, memory_format=torch.contiguous_format)
    arrays = [t.reshape(-1).numpy() for t in (x, snapshot, head, base)] + [copy.view(-1).numpy()]
    out = None
    if absorb is not None:
        out = torch.empty(x.shape, dtype=torch.float64)
        average = absorb[0]
        out_flat = out.view(-1).numpy()
        arrays += [out_flat if average is None else average.view(-1).numpy(), out_flat]
    n = x.numel()
    parts: list[Future[tuple[float, float]]] = []
    for a in range(0, max(n, 1), SPLIT):
        b = min(a + SPLIT, n)
        views = [array[a:b] for array in arrays]
        if absorb is None:
            job: tuple[Any, ...] = (step, *views)
        else:
            job = (step_and_absorb, *views, float(absorb[1]), absorb[0] is None)
        parts.append(pool.submit(*job) if pool is not None else _done(job[0](*job[1:])))
    return Pending(copy, out, parts)


Job = tuple[int, Tensor, Tensor, Tensor, Tensor, "tuple[Tensor | None, float] | None"]


def run_many(jobs: list[Job]) -> dict[int, Pending]:
    """:func:`fused_step` over many tensors, on as many threads as torch uses.

    The kernels release the GIL. Each range's sums are its own and are added in range
    order, so the result does not depend on the number of threads.

    Args:
        jobs: ``(index, x, snapshot, head, base, absorb)`` per tensor.

    Returns:
        A pending result per index (its ``result()`` waits for the tensor's ranges).
    """
    global _pool, _pool_threads
    if not jobs:
        return {}
    _ensure_built()
    threads = torch.get_num_threads()
    pool = None
    if threads > 1:
        if _pool is None or _pool_threads != threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="autodrop")
            _pool_threads = threads
        pool = _pool
    results: dict[int, Pending] = {}
    for index, *args in sorted(jobs, key=lambda job: -job[1].numel()):  # largest first
        results[index] = fused_step(*args, pool=pool)
    return results
