"""Cost of ``autodrop_tf.AutoDrop.end_epoch()`` against the memory-bandwidth bound, on CPU.

A ResNet-18-shaped parameter set (CIFAR variant: 11,173,962 float32 parameters in 62
``tf.Variable``s). One epoch end outside an averaging window must read x, x̂ and s(t-1)
and write s(t) and x̂(t): 4 + 4 + 8 + 8 + 4 = 28 bytes per float32 parameter (steps are
float64). The bound is the time TensorFlow's fastest streaming kernel measured in this
same run (``tf.reduce_sum`` over the same 62 variables and buffers, one ``tf.function``)
needs to stream 28 bytes per parameter; as it prices writes like reads, it is a lower
bound. ratio = end_epoch / bound (goal: at most 1.5).

Also reported, all from this run: an epoch end inside an averaging window (W is
updated too); the copy-on-write that the new snapshot (which shares x's buffer) costs
the first optimizer update after the epoch end; and the angle error of the float64
reductions against ``math.fsum``, next to that of single float32 tensordots.

Run: ``python benchmarks/bench_tf_step.py [--repeats 10]``. It prints medians; nothing
is asserted (speed goals live in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from autodrop_tf import AutoDrop


def resnet18_shapes() -> list[tuple[int, ...]]:
    """The 62 parameter shapes of ResNet-18 for CIFAR-10 (3x3 stem, 10 classes), Keras layout."""
    shapes: list[tuple[int, ...]] = [(3, 3, 3, 64), (64,), (64,)]
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            shapes += [(3, 3, cin, cout), (cout,), (cout,), (3, 3, cout, cout), (cout,), (cout,)]
            if block == 0 and stage > 0:
                shapes += [(1, 1, cin, cout), (cout,), (cout,)]
            cin = cout
    return [*shapes, (512, 10), (10,)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    shapes = resnet18_shapes()
    n = sum(math.prod(s) for s in shapes)
    rng = np.random.default_rng(0)
    params = [tf.Variable(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    # three alternating directions: the angles vary, so the default 0.01 degree threshold
    # is not met and the timed epoch ends stay outside an averaging window
    base = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    directions = [
        [tf.constant(1e-3 * (b + noise * rng.standard_normal(b.shape, dtype=np.float32))) for b in base]
        for noise in (0.3, 0.6, 0.9)
    ]
    epochs = [0]

    @tf.function
    def move(direction: list[tf.Tensor]) -> None:  # stands in for an epoch of in-place optimizer updates
        for p, d in zip(params, direction):
            p.assign_add(d)

    def train() -> None:
        epochs[0] += 1
        move(directions[epochs[0] % 3])

    autodrop = AutoDrop(params, lrs=0.1)
    averaging = AutoDrop(params, lrs=0.1, threshold=89.0, max_threshold=90.0, drop_delay=10**6)
    for _ in range(4):
        train()
        autodrop.end_epoch()
        averaging.end_epoch()
    assert averaging.controller.state.pending > 0, "the averaging run must be inside a window"

    buffers = autodrop.buffers
    own = buffers.snapshots[buffers.active] + buffers.steps[buffers.active]  # per variable: its chunk buffers
    streamed = params + [chunk for chunks in own for chunk in chunks]

    @tf.function
    def stream() -> tf.Tensor:
        return tf.add_n([tf.cast(tf.reduce_sum(v), tf.float64) for v in streamed])

    stream()
    stream_bytes = n * (4 + 4 + 8)
    bound_bytes = n * (4 + 4 + 8 + 8 + 4)

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    # interleaved, so that other processes on the machine slow both sides of each ratio alike
    rows = []
    for _ in range(args.repeats):
        train()
        plain = timed(autodrop.end_epoch)
        bound_plain = timed(lambda: float(stream())) * bound_bytes / stream_bytes
        train()
        window = timed(averaging.end_epoch)
        bound_window = timed(lambda: float(stream())) * bound_bytes / stream_bytes
        rows.append((plain, window, bound_plain, plain / bound_plain, window / bound_window))
    assert not any(d.average_weight is not None for d in autodrop.history), "timed epochs must not average"
    epoch_end_ms, averaging_ms, bound_ms, ratio, averaging_ratio = (statistics.median(c) for c in zip(*rows))
    bandwidth = bound_bytes / (bound_ms / 1e3)

    def first_update_after_epoch_end() -> float:
        autodrop.end_epoch()
        start = time.perf_counter()
        train()
        first = time.perf_counter() - start
        start = time.perf_counter()
        train()
        return (first - (time.perf_counter() - start)) * 1e3

    cow_ms = statistics.median(first_update_after_epoch_end() for _ in range(args.repeats))

    # precision: two nearly parallel steps, the case where the angle is ill-conditioned
    check = AutoDrop(params, lrs=0.1)
    before = [p.numpy().astype(np.float64) for p in params]
    move(directions[0])
    middle = [p.numpy().astype(np.float64) for p in params]
    check.end_epoch()
    for p, d in zip(params, directions[0]):
        p.assign_add(d + tf.constant(1e-5 * rng.standard_normal(d.shape, dtype=np.float32)))
    after = [p.numpy().astype(np.float64) for p in params]
    angle = check.end_epoch().angle
    s1 = np.concatenate([(b - a).ravel() for a, b in zip(before, middle)])
    s2 = np.concatenate([(b - a).ravel() for a, b in zip(middle, after)])
    exact = math.degrees(math.acos(math.fsum(s1 * s2) / math.sqrt(math.fsum(s1 * s1) * math.fsum(s2 * s2))))
    a32, b32 = tf.constant(s1.astype(np.float32)), tf.constant(s2.astype(np.float32))
    naive_cos = float(tf.tensordot(a32, b32, 1)) / math.sqrt(
        float(tf.tensordot(a32, a32, 1)) * float(tf.tensordot(b32, b32, 1))
    )
    naive = math.degrees(math.acos(min(1.0, naive_cos)))

    print(f"load average            {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes compete)")
    print(f"parameters              {n:,} float32 in {len(shapes)} tf.Variables (ResNet-18, CIFAR)")
    print(f"TF streaming read       {bandwidth / 1e9:.2f} GB/s (tf.reduce_sum over x, x̂ and s(t-1))")
    print(f"bound (28 B/param)      {bound_ms:.2f} ms (median of {args.repeats})")
    print(f"end_epoch               {epoch_end_ms:.2f} ms  -> ratio {ratio:.2f} (median of paired ratios; goal <= 1.5)")
    print(f"end_epoch, averaging    {averaging_ms:.2f} ms  -> ratio {averaging_ratio:.2f} (W updated too)")
    print(f"copy-on-write, 1st step {cow_ms:.2f} ms extra in the first optimizer update after an epoch end")
    print(f"angle                   {angle:.9f} deg; fsum {exact:.9f}; error {abs(angle - exact):.1e} deg")
    print(f"float32 tensordot angle {naive:.9f} deg; error {abs(naive - exact):.1e} deg (not used)")


if __name__ == "__main__":
    main()
