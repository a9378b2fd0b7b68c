"""What streaming (non-temporal) stores change in the shared numba pass, A/B in one process.

``autodrop_core.fused`` writes a pass's outputs (the copy of x(t), W') with non-temporal
stores on x86-64 (``fused.STREAMING_STORES``). This script builds the kernels both ways in
one process and times them on the ResNet-18 shapes (11.17M float32 parameters in 62
tensors) with the same buffers, calls interleaved (plain, streaming, plain, ...) so that
both see the same load, for three passes:

* ``outside``: sums and the copy (what an epoch end outside a window runs);
* ``pair``: sums, the copy and a float32 (hi, lo) W' (JAX without x64, in a window);
* ``float64``: sums, the copy and a float64 W' (torch, TensorFlow, JAX x64, in a window).

It first checks that both builds write the same bits, then prints the median time of each
and the median of the per-pair ratios (streaming / plain). The outputs are reused from
call to call (no page faults: the adapters' fresh outputs are measured by the step
benchmarks). Each thread count runs in its own process, pinned before numba starts.

Usage: ``python benchmarks/bench_streaming.py [--threads 1 2] [--repeats N]``. Measures
only; asserts nothing but the equal bits.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _children import pin_to_cores  # (next to this file; imports only the standard library)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def resnet18_sizes() -> tuple[int, ...]:
    sys.path.insert(0, str(HERE))
    from bench_jax_step import resnet18_shapes

    return tuple(math.prod(s) for s in resnet18_shapes())


def measure(threads: int, repeats: int) -> None:
    import numpy as np

    from autodrop_core import fused

    sizes = resnet18_sizes()
    rng = np.random.default_rng(0)

    def group(dtype: str = "float32") -> list[Any]:
        arrays = [fused.aligned_empty(n, dtype) for n in sizes]
        for a in arrays:
            a[:] = rng.standard_normal(a.size)
        return arrays

    if not fused.STREAMING_STORES:
        print(f"{threads} thread(s): this CPU ({os.uname().machine}) takes plain stores only; nothing to compare")
        return
    x, snapshot, base, hi = (group() for _ in range(4))
    lo = [(1e-8 * a).astype(np.float32) for a in group()]  # a low half is tiny next to its high half
    wide = group("float64")
    builds = {}
    for streaming in (False, True):
        fused.STREAMING_STORES = streaming
        builds[streaming] = fused._build()

    def outputs() -> dict[str, tuple[list[Any], ...]]:
        return {"outside": (group(),), "pair": (group(), group(), group()), "float64": (group(), group("float64"))}

    def run(kind: str, streaming: bool, out: tuple[list[Any], ...]) -> list[tuple[float, float]]:
        fused._kernels = builds[streaming]
        n = len(sizes)
        if kind == "outside":
            rows = [(x[i].ctypes.data, snapshot[i].ctypes.data, snapshot[i].ctypes.data, base[i].ctypes.data,
                     out[0][i].ctypes.data, 0, 0) for i in range(n)]
            return fused.reduce_pass("float32", rows, sizes, threads=threads, copying=True)
        if kind == "pair":
            rows = [(x[i].ctypes.data, snapshot[i].ctypes.data, snapshot[i].ctypes.data, base[i].ctypes.data,
                     out[0][i].ctypes.data, hi[i].ctypes.data, out[1][i].ctypes.data, lo[i].ctypes.data,
                     out[2][i].ctypes.data) for i in range(n)]
            return fused.reduce_pass("float32", rows, sizes, threads=threads, copying=True, absorbing=True,
                                     firsts=[False] * n, pair_weight=(0.25, 1e-9))
        rows = [(x[i].ctypes.data, snapshot[i].ctypes.data, snapshot[i].ctypes.data, base[i].ctypes.data,
                 out[0][i].ctypes.data, wide[i].ctypes.data, out[1][i].ctypes.data) for i in range(n)]
        return fused.reduce_pass("float32", rows, sizes, threads=threads, copying=True, absorbing=True,
                                 firsts=[False] * n, weight=0.25)

    plain_out, streamed_out = outputs(), outputs()
    print(f"{threads} thread(s), {sum(sizes):,} float32 parameters in {len(sizes)} tensors, medians of {repeats}")
    for kind in ("outside", "pair", "float64"):
        same = run(kind, False, plain_out[kind]) == run(kind, True, streamed_out[kind])
        for a, b in zip(plain_out[kind], streamed_out[kind], strict=True):
            same = same and all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
        if not same:
            raise SystemExit(f"{kind}: the builds with and without streaming stores wrote different bits")
        pairs = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(kind, False, plain_out[kind])
            middle = time.perf_counter()
            run(kind, True, plain_out[kind])
            pairs.append((middle - start, time.perf_counter() - middle))
        plain_ms = 1e3 * statistics.median(p for p, _ in pairs)
        streamed_ms = 1e3 * statistics.median(s for _, s in pairs)
        ratio = statistics.median(s / p for p, s in pairs)
        print(f"  {kind:8s} plain {plain_ms:6.2f} ms, streaming {streamed_ms:6.2f} ms, "
              f"median ratio {ratio:.3f} (same bits)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        pin_to_cores(args.child)  # before numba starts its threads
        measure(args.child, args.repeats)
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for threads in args.threads:
        subprocess.run([sys.executable, __file__, "--child", str(threads), "--repeats", str(args.repeats)],
                       check=True, env=env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
