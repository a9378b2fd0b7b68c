"""The machine's memory-bandwidth bound: one probe that every step benchmark shares.

Each framework's own copies and sums run at very different speeds on the same CPU
(XLA's CPU copies reach about a third of torch's), so a bound measured with a
framework's ops says more about the framework than about the machine. This probe is a
numba kernel, outside every framework, that streams the access pattern of an AutoDrop
epoch end: it reads three float32 arrays and writes one (``d = a + b + c``, elementwise,
over arrays far larger than the caches, in packed SIMD instructions: see
:func:`vector_instructions`), on ``threads`` threads, with plain stores (the shared
pass's streaming stores were slower than this on the machines measured). The bandwidth is the
bytes it reads and writes (16 per element; the write-allocate traffic is not counted,
as it is not counted for the adapters) over the fastest of ``repeats`` runs. A
benchmark turns bytes into a bound with :func:`bound_ms`, and reports with :class:`KernelTime`
what the operating system spent inside its timed calls (the bound does not count it: a
fresh output is zeroed by the kernel at its first touch). Nothing here is asserted.

Run alone: ``python benchmarks/bandwidth.py [--threads 1 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "Interleaved", "KernelTime", "bandwidth_gbs", "bound_ms", "describe", "ms_at", "probe_gbs", "vector_instructions",
]

_ELEMENTS = 1 << 25  # 128 MiB per float32 array: four of them, far beyond any cache
_BYTES_PER_ELEMENT = 16  # three float32 reads and one float32 write


@functools.cache
def _kernel() -> Any:
    import numba

    # The loop body is a function of its own, called on slices: numba vectorizes it (AVX
    # adds and loads, several elements an instruction). Written inline in the ``prange``
    # loop, with bounds computed per chunk, the same loop compiled to scalar code, which
    # on a machine whose core can stream faster than one element at a time measured the
    # core instead of the memory (8.2 GB/s against 20.9 on one thread of an AMD EPYC,
    # 2026-12-03; see docs/memory.md).
    @numba.njit(nogil=True, cache=False)
    def triad(a: Any, b: Any, c: Any, d: Any) -> None:
        for i in range(a.size):
            d[i] = a[i] + b[i] + c[i]

    @numba.njit(parallel=True, nogil=True, cache=False)
    def stream(a: Any, b: Any, c: Any, d: Any, chunks: int) -> None:
        n = a.size
        size = (n + chunks - 1) // chunks
        for k in numba.prange(chunks):
            lo = k * size
            hi = min(n, lo + size)
            triad(a[lo:hi], b[lo:hi], c[lo:hi], d[lo:hi])

    stream.triad = triad  # type: ignore[attr-defined]  # for vector_instructions()
    return stream


@functools.cache
def vector_instructions() -> int:
    """How many packed (SIMD) float32 adds the probe's loop compiled to: 0 means a scalar probe.

    A scalar loop can be slower than the memory it is meant to measure; the benchmarks
    print this count with the bandwidth.
    """
    import re

    stream = _kernel()
    a = np.zeros(64, dtype=np.float32)
    stream(a, a, a, np.empty_like(a), 1)
    listing = "\n".join(stream.triad.inspect_asm().values())  # type: ignore[attr-defined]
    return len(re.findall(r"\b(?:v?addps)\b", listing))


@functools.cache
def _arrays() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(_ELEMENTS, dtype=np.float32) for _ in range(3))
    return a, b, c, np.empty_like(a)


def probe_gbs(threads: int = 1, repeats: int = 1) -> float:
    """GB/s (1e9 bytes) of the three-reads-one-write stream on ``threads`` threads, fastest of ``repeats``.

    Benchmarks that interleave their timings with this probe get a bound measured under
    the same load as each timing (the machine may be shared).
    """
    import numba

    stream = _kernel()
    a, b, c, d = _arrays()
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        if not getattr(probe_gbs, "_warm", False):
            stream(a, b, c, d, threads)  # compile and touch every page first
            probe_gbs._warm = True  # type: ignore[attr-defined]
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            stream(a, b, c, d, threads)
            best = min(best, time.perf_counter() - start)
    finally:
        numba.set_num_threads(previous)
    return _BYTES_PER_ELEMENT * _ELEMENTS / best / 1e9


@functools.cache
def bandwidth_gbs(threads: int = 1, repeats: int = 7) -> float:
    """The fastest of ``repeats`` probes on ``threads`` threads, in GB/s (cached per process)."""
    return probe_gbs(threads, repeats)


def ms_at(bytes_moved: float, gbs: float) -> float:
    """The time, in ms, that moving ``bytes_moved`` bytes takes at ``gbs`` GB/s."""
    return bytes_moved / (gbs * 1e9) * 1e3


def bound_ms(bytes_moved: float, threads: int = 1) -> float:
    """The time, in ms, that moving ``bytes_moved`` bytes takes at this machine's bandwidth."""
    return ms_at(bytes_moved, bandwidth_gbs(threads))


def _kind() -> str:
    """``vectorized``, or a warning that the probe compiled to scalar code (its bound is then too loose)."""
    return "vectorized" if vector_instructions() else "SCALAR: it may measure the core, not the memory"


def describe(threads: int = 1) -> str:
    """One line for a benchmark's report: the probe, its thread count and its bandwidth."""
    return (f"machine bandwidth (shared numba probe, 3 float32 reads + 1 write, {_kind()}, {threads} thread"
            f"{'s' if threads != 1 else ''}): {bandwidth_gbs(threads):.1f} GB/s")


class Interleaved:
    """Probes taken between a benchmark's timed calls, and the two ratios they give.

    * :meth:`bound_ms`: the bound at the fastest probe of the whole run (the ``repeats``
      at the start and every interleaved one): the machine's bandwidth, which a call
      time is divided by for the strict ratio that the goal is judged on.
    * :meth:`paired_ratio`: the median over calls of each call's time over the bound at
      the probe taken right after it, under the same load: on a shared machine whose
      bandwidth drifts, it tells the adapter's own overhead apart from the machine's.
    """

    def __init__(self, threads: int, repeats: int = 7) -> None:
        self.threads = threads
        self.repeats = repeats
        self.start_gbs = bandwidth_gbs(threads, repeats)
        self.after: list[float] = []  # one per probe() call, in order

    def probe(self) -> float:
        """One probe now (call it right after a timed call); its GB/s."""
        gbs = probe_gbs(self.threads)
        self.after.append(gbs)
        return gbs

    def fastest_gbs(self) -> float:
        return max([self.start_gbs, *self.after])

    def bound_ms(self, bytes_moved: float) -> float:
        """The bound at the run's fastest probe."""
        return ms_at(bytes_moved, self.fastest_gbs())

    def paired_ratio(self, times_ms: list[float], gbs_after: list[float], bytes_moved: float) -> float:
        """Median of time / bound at the probe after it, over paired calls and probes."""
        return statistics.median(t / ms_at(bytes_moved, g) for t, g in zip(times_ms, gbs_after, strict=True))

    def describe(self) -> str:
        after = ""
        if self.after:
            after = f", median of the {len(self.after)} after calls {statistics.median(self.after):.1f}"
        return (f"machine bandwidth (shared numba probe, 3 float32 reads + 1 write, {_kind()}, {self.threads} thread"
                f"{'s' if self.threads != 1 else ''}): {self.fastest_gbs():.1f} GB/s, the fastest of "
                f"{self.repeats + len(self.after)} probes in this run ({self.repeats} at the start{after})")


class KernelTime:
    """System CPU time and page faults of this process during timed calls (``getrusage``), per call.

    Memory an allocator has just taken from the operating system is zeroed by the kernel
    when a page is first touched: that time is system time, it grows with the fresh bytes
    a call writes, and it is not in the bound. Use ``with meter.measure(): call()``.
    """

    def __init__(self) -> None:
        self.system_ms: list[float] = []
        self.faults: list[int] = []

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        before = resource.getrusage(resource.RUSAGE_SELF)
        yield
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.system_ms.append((after.ru_stime - before.ru_stime) * 1e3)
        self.faults.append(after.ru_minflt - before.ru_minflt + after.ru_majflt - before.ru_majflt)

    def summary(self) -> dict[str, float]:
        """Medians and means of the system ms and page faults per call."""
        if not self.faults:
            return {}
        return {"system_ms_median": statistics.median(self.system_ms),
                "system_ms_mean": statistics.mean(self.system_ms),
                "faults_median": statistics.median(self.faults), "faults_mean": statistics.mean(self.faults)}

    @staticmethod
    def describe(summary: dict[str, float]) -> str:
        """One report line's words for a :meth:`summary` (which may come back from a worker process as JSON)."""
        return (f"system time {summary['system_ms_median']:.1f} ms, {summary['faults_median']:.0f} page faults "
                f"(medians; means {summary['system_ms_mean']:.1f} ms, {summary['faults_mean']:.0f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    for threads in args.threads:
        print(describe(threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
