"""Bytes per parameter that ``autodrop_torch.AutoDrop`` holds, for ``bench_memory.py``.

An 8M-parameter model (four 2048 x 1024 tensors) in float32 or bfloat16 is moved by
hand between steps (a stand-in for training: no optimizer step is needed to measure
memory). At rest: the storages of every tensor the scheduler keeps, each counted once,
after an epoch outside a window, inside one, and after an applied average. Peak: the
growth of the process's resident memory (VmHWM after a reset of the high-water mark)
during one ``step()`` inside a window, on top of what was held before it; run it in a
process started with ``MALLOC_MMAP_THRESHOLD_`` set low (``bench_memory.py`` does) so that
freed tensors leave the resident set at once. Measures only; asserts nothing.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_rss import peak_during

SHAPES = [(2048, 1024)] * 4  # 8.4M parameters


def _held(tracked: Any) -> list[Any]:
    if hasattr(tracked, "held"):
        return list(tracked.held())
    # Before the two-snapshot layout (commit e06a85e and earlier): snapshots, s(t-1), averages.
    groups = [tracked.snapshots, tracked.prev_steps, tracked.average or [], tracked.buffer_average or []]
    return [t for group in groups for t in group if t is not None]


def _held_bytes(sched: Any) -> int:
    storages: dict[int, int] = {}
    for t in _held(sched._tracked):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def measure_torch(dtype: str) -> dict[str, float]:
    import torch
    from autodrop_torch import AutoDrop, AutoDropUsageWarning

    warnings.filterwarnings("ignore", category=AutoDropUsageWarning)  # epochs moved by hand
    torch.set_num_threads(1)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(torch_dtype)) for s in SHAPES]
    count = sum(p.numel() for p in params)
    noise = [torch.empty(s, dtype=torch_dtype) for s in SHAPES]

    def move() -> None:
        with torch.no_grad():
            for p, n in zip(params, noise, strict=True):
                n.copy_(torch.randn(p.shape, generator=gen))
                p.add_(n, alpha=1e-3)

    # Warm-up on a small tensor: numba's import and compilation happen here, not in a measured step.
    small = [torch.nn.Parameter(torch.randn(1 << 16, generator=gen).to(torch_dtype))]
    warm = AutoDrop(torch.optim.SGD(small, lr=0.1), threshold=180.0, max_threshold=180.0, drop_delay=3)
    for _ in range(6):
        with torch.no_grad():
            small[0].add_(1e-3)
        warm.step()
    del warm, small

    quiet = AutoDrop(torch.optim.SGD(params, lr=0.1), threshold=1e-12, max_threshold=1e-12)
    for _ in range(3):
        move()
        quiet.step()
    move()
    before = _held_bytes(quiet)
    peak_outside = (before + peak_during(quiet.step)[0]) / count
    del quiet

    sched = AutoDrop(torch.optim.SGD(params, lr=0.1), threshold=180.0, max_threshold=180.0, drop_delay=4)
    result: dict[str, float] = {"params": float(count), "model_bytes_per_param": float(params[0].element_size())}
    result["peak_outside_bytes_per_param"] = peak_outside
    peaks = []
    for _ in range(8):
        move()
        before = _held_bytes(sched)
        peak, _ = peak_during(sched.step)
        decision = sched.last_decision
        assert decision is not None
        held = _held_bytes(sched) / count
        if decision.epoch == 2:
            result["rest_bytes_per_param"] = held
        if decision.epoch == 5:  # inside the window opened at epoch 3
            result["window_bytes_per_param"] = held
        if decision.apply_average:
            result["after_apply_bytes_per_param"] = held
        if decision.average_weight is not None and not decision.apply_average:
            peaks.append((before + peak) / count)
        if decision.apply_average:
            result["peak_apply_bytes_per_param"] = max(result.get("peak_apply_bytes_per_param", 0.0),
                                                       (before + peak) / count)
    result["peak_epoch_end_bytes_per_param"] = max(peaks)
    return result
