"""Cost of ``autodrop_tf.AutoDrop.end_epoch()`` against the machine's memory-bandwidth bound, on CPU.

A ResNet-18-shaped parameter set (CIFAR variant: 11,173,962 float32 parameters in 62
``tf.Variable``s). In issue 15's layout an epoch end outside an averaging window must
read x, x̂(t-1) and x̂(t-2) and write one fresh copy x(t): 16 bytes per float32
parameter; inside a window it also reads W and writes W' (float64): 32 bytes. The
bound is the shared probe's (``benchmarks/bandwidth.py``: a numba stream of three
float32 reads and one write, on the same number of threads), at the fastest of its runs
in the process (seven at the start, one after every timed call); ratio = end_epoch time /
bound (goal: at most 1.3). The paired ratio is the median of each call's time over the
bound at the probe right after it (the same load).

``AutoDrop`` owns a Keras SGD optimizer's lr, as in a training loop (its reads and
writes are part of every epoch end; the Keras callback owns a Keras variable's).

TensorFlow never copies x(t) at the epoch end: the new snapshot shares x's buffer, and
the first optimizer update after the epoch end copies it (copy-on-write). That copy is
reported on its own line; the ratio counts the 4-byte write as moved all the same.
Also per call: the system time and page faults (``bandwidth.KernelTime``), the kernel's
zeroing of fresh memory that an epoch end writes into, which the bound does not count.

Each thread count runs in its own process (TensorFlow fixes its thread pools at start);
in a process, epoch ends inside and outside a window alternate (the machine is shared
and noisy, so both sides see the same load), and the medians are reported. Also: the
angle error of the float64 reductions against ``math.fsum``, next to that of float32
tensordots.

Run: ``python benchmarks/bench_tf_step.py [--repeats 15] [--threads 1 2] [--adapter keras]``. Nothing is
asserted (speed goals live in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTSIDE_BYTES = 16  # per float32 parameter: read x, x̂(t-1), x̂(t-2), write x(t)
INSIDE_BYTES = 32  # + read W, write W' (float64)


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


def _with_optimizer(variables: list[Any], lrs: float, **settings: Any) -> Any:
    """``autodrop_tf.AutoDrop`` as a training loop holds it: owning a Keras optimizer's lr."""
    import keras
    from autodrop_tf import AutoDrop

    return AutoDrop(variables, keras.optimizers.SGD(learning_rate=lrs), **settings)


class _KerasAdapter:
    """``autodrop_keras.AutoDropCallback`` driven the way ``AutoDrop`` is: ``end_epoch()`` per epoch.

    It watches the variables directly (the entry its conformance driver uses: no model).
    """

    def __init__(self, variables: list[Any], lrs: float, **settings: Any) -> None:
        import keras
        from autodrop_keras import AutoDropCallback

        self.callback = AutoDropCallback(**settings)
        self.callback._watch(variables, keras.Variable(lrs, dtype="float32"))
        self.callback.on_epoch_begin(0)
        self.epoch = 0

    def end_epoch(self) -> Any:
        self.callback.on_epoch_end(self.epoch)
        self.epoch += 1
        return self.callback.last_decision

    @property
    def controller(self) -> Any:
        return self.callback.controller

    @property
    def history(self) -> Any:
        return self.callback.history


def worker(threads: int, repeats: int, adapter: str = "tensorflow") -> dict[str, Any]:
    """One process, ``threads`` TensorFlow threads: medians inside and outside a window, and the bound."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    sys.path.insert(0, str(HERE))
    from bandwidth import Interleaved, KernelTime

    shapes = resnet18_shapes()
    n = sum(math.prod(s) for s in shapes)
    rng = np.random.default_rng(0)
    if adapter == "keras":
        import keras

        params = [keras.Variable(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
        twins = [keras.Variable(p.numpy()) for p in params]
        make: Callable[..., Any] = _KerasAdapter
    else:
        params = [tf.Variable(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
        twins = [tf.Variable(p) for p in params]
        make = _with_optimizer
    # three alternating directions: the angles vary, so the default 0.01 degree threshold
    # is not met and the plain run's epoch ends stay outside an averaging window
    base = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    directions = [
        [tf.constant(1e-3 * (b + noise * rng.standard_normal(b.shape, dtype=np.float32))) for b in base]
        for noise in (0.3, 0.6, 0.9)
    ]
    epochs = [0]

    @tf.function
    def move(variables: list[tf.Variable], direction: list[tf.Tensor]) -> None:
        for p, d in zip(variables, direction):  # stands in for an epoch of in-place optimizer updates
            p.assign_add(d)

    def train(variables: list[Any]) -> None:
        epochs[0] += 1
        # a Keras variable's value is the tf.Variable underneath (TensorFlow backend)
        move([v.value for v in variables] if adapter == "keras" else variables, directions[epochs[0] % 3])

    plain = make(params, lrs=0.1)
    averaging = make(twins, lrs=0.1, threshold=89.0, max_threshold=90.0, drop_delay=10**6)
    for _ in range(4):
        train(params)
        plain.end_epoch()
        train(twins)
        averaging.end_epoch()
    assert averaging.controller.state.pending > 0, "the averaging run must be inside a window"

    def timed(fn: Callable[[], object], meter: KernelTime) -> float:
        with meter.measure():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
        return elapsed * 1e3

    outside, inside = [], []
    meters = {"outside": KernelTime(), "inside": KernelTime()}
    probes = Interleaved(threads)
    after_out, after_in = [], []  # the probe right after each call
    for _ in range(repeats):  # interleaved: both sides see the same load
        train(params)
        train(params)  # a second update: the copy-on-write of the first is not in the timed epoch end
        outside.append(timed(plain.end_epoch, meters["outside"]))
        after_out.append(probes.probe())
        train(twins)
        train(twins)
        inside.append(timed(averaging.end_epoch, meters["inside"]))
        after_in.append(probes.probe())
    assert not any(d.average_weight is not None for d in plain.history), "the plain run must not average"
    assert averaging.controller.state.pending > 0

    def first_update_after_epoch_end() -> float:
        plain.end_epoch()
        start = time.perf_counter()
        train(params)
        first = time.perf_counter() - start
        start = time.perf_counter()
        train(params)
        return (first - (time.perf_counter() - start)) * 1e3

    cow_ms = statistics.median(first_update_after_epoch_end() for _ in range(repeats))

    # precision: two nearly parallel steps, the case where the angle is ill-conditioned
    check = make(params, lrs=0.1)
    before = [p.numpy().astype(np.float64) for p in params]
    move([p.value for p in params] if adapter == "keras" else params, directions[0])
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
    out_ms, in_ms = statistics.median(outside), statistics.median(inside)
    bound_out, bound_in = probes.bound_ms(OUTSIDE_BYTES * n), probes.bound_ms(INSIDE_BYTES * n)
    return {
        "threads": threads, "params": n, "variables": len(shapes), "probe": probes.describe(),
        "paired_outside": probes.paired_ratio(outside, after_out, OUTSIDE_BYTES * n),
        "paired_inside": probes.paired_ratio(inside, after_in, INSIDE_BYTES * n),
        "outside_ms": out_ms, "inside_ms": in_ms, "bound_outside_ms": bound_out, "bound_inside_ms": bound_in,
        "ratio_outside": out_ms / bound_out, "ratio_inside": in_ms / bound_in, "cow_ms": cow_ms,
        "angle_error": abs(angle - exact), "float32_angle_error": abs(naive - exact), "repeats": repeats,
        "load": os.getloadavg()[0], "kernel": {k: m.summary() for k, m in meters.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--adapter", choices=["tensorflow", "keras"], default="tensorflow",
                        help="autodrop_tf.AutoDrop, or the Keras 3 callback (autodrop_keras) on the TensorFlow backend")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.threads[0], args.repeats, args.adapter)))
        return 0
    sys.path.insert(0, str(HERE))
    from bandwidth import KernelTime  # next to this file

    rows = []
    for threads in args.threads:
        done = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(threads), "--repeats",
                               str(args.repeats), "--adapter", args.adapter], capture_output=True, text=True,
                              check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    first = rows[0]
    print(f"adapter: {args.adapter}; parameters: {first['params']:,} float32 in {first['variables']} variables "
          "(ResNet-18, CIFAR); "
          f"medians of {first['repeats']} interleaved epoch ends per thread count")
    print(f"bytes moved per parameter: {OUTSIDE_BYTES} outside a window, {INSIDE_BYTES} inside")
    print("threads | outside ms | bound ms | ratio | inside ms | bound ms | ratio | copy-on-write ms | load")
    for r in rows:
        print(f"{r['threads']:>7} | {r['outside_ms']:10.2f} | {r['bound_outside_ms']:8.2f} | {r['ratio_outside']:5.2f} "
              f"| {r['inside_ms']:9.2f} | {r['bound_inside_ms']:8.2f} | {r['ratio_inside']:5.2f} "
              f"| {r['cow_ms']:16.2f} | {r['load']:.1f}")
    print("ratios paired with the probe right after each call (median; the same load): "
          + "; ".join(f"{r['threads']} thread(s) outside {r['paired_outside']:.2f}, inside {r['paired_inside']:.2f}"
                      for r in rows))
    for r in rows:
        print(f"{r['probe']}")
    for r in rows:
        shares = [f"{where}: {KernelTime.describe(k)}" for where, k in r["kernel"].items()]
        print(f"{r['threads']} thread(s), the operating system's share per call (page faults zero fresh memory; "
              "not in the bound): " + "; ".join(shares))
    print(f"angle error vs fsum: {first['angle_error']:.1e} deg (float64 reductions); "
          f"{first['float32_angle_error']:.1e} deg with float32 tensordots (not used)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
