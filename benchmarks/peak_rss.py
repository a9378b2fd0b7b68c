"""The growth of this process's resident memory during one call (Linux), for the memory benchmarks.

Resets the kernel's high-water mark of the resident set (``5`` into
``/proc/self/clear_refs``), reads the resident size, runs the call, and returns the new
high-water mark minus that size: the most memory the call held at once beyond what was
resident before. Freed heap memory that the C allocator keeps would hide reuse, so the
benchmarks run in processes started with ``MALLOC_MMAP_THRESHOLD_=65536``: every large
buffer is then its own mapping, returned to the system when freed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["peak_during", "warm_up_fused_kernels"]

T = TypeVar("T")


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_during(call: Callable[[], T]) -> tuple[int, T]:
    """Bytes by which the resident set grew at its highest during ``call()`` (0 if it never grew), and its result."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = _status("VmRSS")
    result = call()
    return max(0, _status("VmHWM") - before), result


def warm_up_fused_kernels() -> None:
    """Import and compile the shared numba kernels (``autodrop_core.fused``) now, outside any measured call.

    Their compilation holds a hundred MB or so for a moment, once per process; an adapter
    whose first large epoch end compiles them would count it in that epoch's peak.
    """
    from autodrop_core import fused

    if not fused.available():
        return
    import numpy as np

    for dtype in ("float32", "float64"):
        x, w = np.zeros(8, dtype=dtype), np.zeros(8)
        row = (x.ctypes.data,) * 4 + (0, w.ctypes.data, w.ctypes.data)
        fused.reduce_pass(dtype, [row], (8,), threads=1, absorbing=True, weight=0.5, firsts=[False])
