"""Optional one-pass CPU kernels for the step, its two reductions and the average (numba).

With plain torch ops the CPU path reads and writes each parameter's bytes several times
(upcast, subtract, two dots, snapshot copy). When numba is installed and a tensor is a
large contiguous float32 or float64 CPU tensor, one kernel pass forms s(t) = x(t) - x̂(t-1)
element by element in float64, writes it out, copies x (the next snapshot, adopted only
once the core accepts the epoch) and accumulates both sums in float64. Sums are blocked
(a float64 partial per block of 4096 elements, then the partials in order), so the
result does not depend on threads and is accurate to about 1e-13 relative. A second
kernel updates the running average W in place with the same two roundings as the
reference. Both must compute exactly what the torch path computes, up to the order of
float64 additions, and nothing else; the step kernel writes only into new tensors.
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

__all__ = ["MIN_NUMEL", "available", "fits", "fits_blend", "fused_blend", "fused_step", "run_many"]

_BLOCK = 4096

#: Smaller tensors take the torch path: for them the kernels gain nothing, and a model
#: made only of small tensors never pays numba's import and compile time (about 1 s).
MIN_NUMEL = 1 << 16
_kernel: Any = None
_blend: Any = None
_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


def available() -> bool:
    """True when numba can be imported (it is only imported on first use)."""
    return _kernel is not None or importlib.util.find_spec("numba") is not None


def _build() -> Any:
    import numba
    import numpy as np

    # No fastmath: the additions keep their written order on every machine.
    @numba.njit(nogil=True, cache=False)
    def kernel(x: Any, x_hat: Any, prev: Any, out: Any, copy: Any) -> tuple[float, float]:
        dot = 0.0
        sq = 0.0
        n = x.size
        for start in range(0, n, _BLOCK):
            block_dot = 0.0
            block_sq = 0.0
            for i in range(start, min(start + _BLOCK, n)):
                s = np.float64(x[i]) - np.float64(x_hat[i])
                out[i] = s
                copy[i] = x[i]
                block_dot += s * prev[i]
                block_sq += s * s
            dot += block_dot
            sq += block_sq
        return dot, sq

    @numba.njit(nogil=True, cache=False)
    def blend(average: Any, x: Any, weight: float) -> None:
        for i in range(x.size):
            delta = np.float64(x[i]) - average[i]
            delta = delta * weight  # two roundings, as the reference: no fused multiply-add
            average[i] = average[i] + delta

    return kernel, blend


def fits(x: Tensor, snapshot: Tensor, prev: Tensor) -> bool:
    """Whether the kernel takes this tensor (large, CPU, contiguous, float32/float64, float64 steps)."""
    return (
        x.numel() >= MIN_NUMEL
        and x.device.type == "cpu"
        and snapshot.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and snapshot.dtype == x.dtype
        and prev.dtype == torch.float64
        and x.is_contiguous()
        and snapshot.is_contiguous()
        and prev.is_contiguous()
    )


def _ensure_built() -> None:
    global _kernel, _blend
    if _kernel is None:
        _kernel, _blend = _build()


def fits_blend(average: Tensor, x: Tensor) -> bool:
    """Whether :func:`fused_blend` takes this pair (large, CPU, contiguous, float32/64 into float64)."""
    return (
        x.numel() >= MIN_NUMEL
        and average.device.type == "cpu"
        and x.device.type == "cpu"
        and average.dtype == torch.float64
        and x.dtype in (torch.float32, torch.float64)
        and average.is_contiguous()
        and x.is_contiguous()
    )


def fused_blend(average: Tensor, x: Tensor, weight: float) -> None:
    """W = W + weight * (x - W) in place, in one pass, with the reference's roundings."""
    _ensure_built()
    _blend(average.view(-1).numpy(), x.reshape(-1).numpy(), weight)


def fused_step(x: Tensor, snapshot: Tensor, prev: Tensor) -> tuple[Tensor, Tensor, float, float]:
    """One pass: s(t) in float64, a copy of x, <s(t), s(t-1)> and ||s(t)||^2.

    The copy is the next snapshot x̂(t) for an epoch that applies no average; the caller
    adopts it (or not) once the core has accepted the epoch, so nothing is modified here.
    """
    _ensure_built()
    out = torch.empty(x.shape, dtype=torch.float64)
    copy = torch.empty_like(x, memory_format=torch.contiguous_format)
    dot, sq = _kernel(x.reshape(-1).numpy(), snapshot.reshape(-1).numpy(), prev.reshape(-1).numpy(),
                      out.view(-1).numpy(), copy.view(-1).numpy())
    return out, copy, float(dot), float(sq)


StepResult = tuple[Tensor, Tensor, float, float]


def run_many(jobs: list[tuple[int, Tensor, Tensor, Tensor]]) -> dict[int, Future[StepResult]]:
    """:func:`fused_step` over many tensors, on as many threads as torch uses.

    The kernel releases the GIL. Each tensor's sums are its own, so the result does not
    depend on the number of threads; the caller adds them in tensor order.

    Args:
        jobs: ``(index, x, snapshot, prev)`` per tensor.

    Returns:
        A future per index, largest tensors started first.
    """
    global _pool, _pool_threads
    if not jobs:
        return {}
    _ensure_built()
    threads = torch.get_num_threads()
    futures: dict[int, Future[StepResult]] = {}
    if threads <= 1:
        for index, x, snapshot, prev in jobs:
            future: Future[StepResult] = Future()
            future.set_result(fused_step(x, snapshot, prev))
            futures[index] = future
        return futures
    if _pool is None or _pool_threads != threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="autodrop")
        _pool_threads = threads
    for index, x, snapshot, prev in sorted(jobs, key=lambda job: -job[1].numel()):
        futures[index] = _pool.submit(fused_step, x, snapshot, prev)
    return futures
