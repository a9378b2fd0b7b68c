"""The framework calls an epoch end makes per tensor, timed alone, with warm and with cold caches.

An epoch end on the numba path (``autodrop_core.fused``) moves its bytes in one pass, and
around it makes a few calls into the framework for every tensor: reading a buffer's
address, allocating and adopting a fresh output, reading a variable, exporting or
writing one. Their sum is a floor under the cost outside the pass
(``bench_outside_pass.py``), and it grows with the number of tensors, not their size.
Here each kind of call is timed on its own, in batches of as many calls, on as many
distinct tensors, as one epoch end outside a window makes for the 62 tensors of the
ResNet-18 shapes (11.17M float32 parameters; each row names the code its count comes
from), in one graph for all of them where TensorFlow's epoch end runs one: back to back
(warm caches), and right after the shared probe (``bandwidth.py``), which streams 512 MiB
through the caches as the pass and an epoch of training do (cold caches, as in the step
benchmarks). Each row prints the median per call, warm and cold, and the cold batch's
total; the last line sets their cold sum against the share of the bound that 1.3x leaves
(0.3 times the time 16 bytes per parameter take at the fastest probe of the run).

Run: ``python benchmarks/bench_framework_floor.py [--frameworks torch jax tensorflow]
[--threads 1 2] [--repeats 15]``. Each framework and thread count runs in its own
process, pinned to that many cores before the framework starts. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _children import pin_to_cores, run_children  # (next to this file; imports only the standard library)

HERE = Path(__file__).resolve().parent
FRAMEWORKS = ("torch", "jax", "tensorflow")

#: (label, calls per epoch end outside a window, where the count comes from, setup -> one batch of calls)
Row = tuple[str, int, str, Callable[[], Callable[[], Any]]]


def _rows(framework: str, threads: int, shapes: list[tuple[int, ...]]) -> list[Row]:
    """Each row's batch makes exactly as many calls as an epoch end does, each on its own object."""
    import numpy as np

    n = len(shapes)
    rng = np.random.default_rng(0)
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        read = [torch.randn(s) for _ in range(3) for s in shapes]  # x, x̂(t-1), x̂(t-2)

        def pointers() -> Callable[[], Any]:
            return lambda: [t.data_ptr() for t in read]

        def checks() -> Callable[[], Any]:
            return lambda: [(t.dtype, t.shape, t.device.type, t.is_contiguous()) for t in read]

        def fresh() -> Callable[[], Any]:
            return lambda: [torch.empty(s) for s in shapes]

        return [
            ("data_ptr()", 3 * n, "_fused_cpu._launch: x, x̂(t-1), x̂(t-2)", pointers),
            ("dtype, shape, device, is_contiguous()", 3 * n, "_fused_cpu.fits: x and two buffers", checks),
            ("torch.empty (and its free)", n, "_fused_cpu._empty: the copy of x(t)", fresh),
        ]
    if framework == "jax":
        import jax
        import jax.numpy as jnp
        from autodrop_jax import _fused_cpu

        from autodrop_core import fused

        read = [jnp.asarray(rng.standard_normal(s), jnp.float32) for _ in range(3) for s in shapes]
        counts = [math.prod(s) for s in shapes]
        f32 = [np.dtype(np.float32)] * n
        outputs = [fused.aligned_empty(c, "float32") for c in counts]

        def pointers() -> Callable[[], Any]:
            return lambda: [a.unsafe_buffer_pointer() for a in read]

        def ready() -> Callable[[], Any]:
            return lambda: jax.block_until_ready(read)

        def allocate() -> Callable[[], Any]:
            return lambda: _fused_cpu._empty(counts, f32)

        def adopt() -> Callable[[], Any]:
            return lambda: _fused_cpu._adopt(outputs, read[:n])

        return [
            ("unsafe_buffer_pointer()", 3 * n, "_fused_cpu.reduce_epoch: x, x̂(t-1), x̂(t-2)", pointers),
            ("block_until_ready (per array)", 3 * n, "_fused_cpu.reduce_epoch: the arrays the pass reads", ready),
            ("aligned numpy output (and its free)", n, "_fused_cpu._empty: the copy of x(t)", allocate),
            ("adoption by jaxlib (and its free)", n, "_fused_cpu._adopt: the copy of x(t)", adopt),
        ]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from autodrop_tf._ops import _direct

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    variables = [tf.Variable(rng.standard_normal(s, dtype=np.float32)) for _ in range(3) for s in shapes]
    values = [tf.constant(rng.standard_normal(s, dtype=np.float32)) for _ in range(3) for s in shapes]

    def reads() -> Callable[[], Any]:  # one graph over all of them, as the epoch end's read
        return _direct(tf.function(lambda: [tf.convert_to_tensor(v) for v in variables]), [])

    def exports() -> Callable[[], Any]:
        return lambda: [tf.experimental.dlpack.to_dlpack(t) for t in values]

    def writes() -> Callable[[], Any]:  # one graph over x̂(t) and x̂(t-1)'s variables, as the commit's
        targets = variables[n:]

        def write(new: list[Any]) -> Any:
            for var, value in zip(targets, new, strict=True):
                var.assign(value)
            return tf.constant(True)

        graph = _direct(tf.function(write), [tf.TensorSpec(None, v.dtype) for v in targets])
        return lambda: graph(values[:2 * n])

    return [
        ("variable read, one graph for all", 3 * n, "_ops._reduce_fused: x, x̂(t-1), x̂(t-2)", reads),
        ("DLPack export", 3 * n, "_fused_cpu._buffers: the tensors read", exports),
        ("assign, one graph for all", 2 * n, "_ops.commit: x̂(t), x̂(t-1)", writes),
    ]


def child(framework: str, threads: int, repeats: int) -> None:
    pin_to_cores(threads)  # before the framework sizes its thread pools
    sys.path.insert(0, str(HERE))
    import bandwidth
    from bench_jax_step import resnet18_shapes  # (that module imports no framework at its top)

    shapes = [tuple(s) for s in resnet18_shapes()]
    n = len(shapes)
    parameters = sum(math.prod(s) for s in shapes)
    rows = _rows(framework, threads, shapes)
    probes = bandwidth.Interleaved(threads)
    print(f"{framework}, {threads} thread(s), {n} tensors ({parameters:,} float32 parameters), medians of "
          f"{repeats} batches, per call in microseconds, warm / cold (after the probe):")
    cold_total = 0.0
    for label, per_epoch, source, setup in rows:
        batch = setup()
        for _ in range(3):  # traced, compiled, allocator warmed
            batch()
        warm, cold = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            batch()
            warm.append(time.perf_counter() - start)
        for _ in range(repeats):
            probes.probe()
            start = time.perf_counter()
            batch()
            cold.append(time.perf_counter() - start)
        warm_us = 1e6 * statistics.median(warm) / per_epoch
        cold_us = 1e6 * statistics.median(cold) / per_epoch
        total_ms = 1e-3 * cold_us * per_epoch
        cold_total += total_ms
        print(f"  {label:42s} {warm_us:6.2f} / {cold_us:6.2f} us  x {per_epoch:3d} a call = {total_ms:5.2f} ms cold"
              f"  ({source})")
    bound = probes.bound_ms(16 * parameters)
    print(f"  these calls, cold: {cold_total:.2f} ms per epoch end outside a window; the bound there is "
          f"{bound:.2f} ms ({probes.describe()}), so 1.3x leaves {0.3 * bound:.2f} ms for all work outside the pass")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child[0], int(args.child[1]), args.repeats)
        return 0
    run_children(__file__, args.frameworks, args.threads, ["--repeats", str(args.repeats)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
