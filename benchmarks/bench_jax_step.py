"""Benchmark of autodrop_jax's epoch-end call on a ResNet-18-shaped pytree, against the machine's bandwidth.

What it measures, in one run per thread count (1 and 2; each in its own process, pinned
to that many cores with ``sched_setaffinity`` before jax is imported, which is what sizes
XLA:CPU's intra-op thread pool and the partitioning of its loops):

* ``outside_ms``: milliseconds per ``autodrop_jax.update`` call on a state outside an
  averaging window (reduction program, the one host transfer, the core's decision);
* ``inside_ms``: the same on a state inside a window, whose epoch end also absorbs
  x(t) into the running average W (the absorbing program);
* ``bound_ms``: the time the bytes such an epoch end must move take at the machine's
  bandwidth, the fastest of the shared numba probe's runs in this process
  (``benchmarks/bandwidth.py``: seven at the start, one after every timed call), on the
  same number of threads: outside a window 16 B per float32 parameter (read x(t), x̂(t-1), x̂(t-2);
  write the new snapshot), inside one 32 B (also read W and write W', 8 B each);
* ``ratio`` = update time / bound (goal: at most 1.3); ``paired_ratio``: the median of
  each call's time over the bound at the probe right after it (the same load);
* the system time and page faults per call (``bandwidth.KernelTime``): the kernel zeroing
  fresh memory the outputs are written into, which the bound does not count.

The update is functional, so the same state is updated again and again with the same
next parameters; the calls outside and inside a window alternate, and each is the
median of ``--repeats`` calls. Without x64 the 1-thread process also reports
``angle_error_deg``: the largest |angle(float32 adapter) - angle(float64 numpy reference)|
over steps whose angles span 90 to about 2.5 degrees.

On CPU with numba installed the epoch end runs as numba passes (``autodrop_jax._fused_cpu``);
``--xla`` switches them off to time the XLA programs instead.

Usage: ``python benchmarks/bench_jax_step.py [--x64] [--xla] [--threads 1 2] [--repeats N] [--json]``.
It prints the exact numbers; nothing is asserted here (speed goals live in benchmarks,
not tests). This script must not download anything.
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Bytes per float32 parameter an epoch end must move (see the module docstring).
OUTSIDE_BYTES, INSIDE_BYTES = 16, 32


def resnet18_shapes(num_classes: int = 10) -> list[tuple[int, ...]]:
    """The 62 parameter arrays of a CIFAR-style ResNet-18 (11.17M parameters with 10 classes)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3), (64,), (64,)]
    channels_in = 64
    for stage, channels in enumerate((64, 128, 256, 512)):
        for block in range(2):
            shapes += [(channels, channels_in, 3, 3), (channels,), (channels,)]
            shapes += [(channels, channels, 3, 3), (channels,), (channels,)]
            if block == 0 and stage > 0:  # the projection shortcut of a downsampling block
                shapes += [(channels, channels_in, 1, 1), (channels,), (channels,)]
            channels_in = channels
    shapes += [(num_classes, 512), (num_classes,)]
    return shapes


def float32_angle_errors(seed: int = 0) -> list[tuple[float, float]]:
    """(reference angle, |float32 adapter angle - float64 reference angle|) for a range of angles.

    Steps are drawn so that consecutive steps have correlation 0, 0.5, 0.9, 0.99 and
    0.999 (angles of about 90, 60, 26, 8 and 2.6 degrees) over the ResNet-18 shapes.
    The reference is the numpy adapter's float64 reduction of the same float32 values.
    """
    import autodrop_jax
    import jax
    import jax.numpy as jnp
    import numpy as np
    from autodrop_numpy import reduce_steps

    from autodrop_core import step_angle

    rng = np.random.default_rng(seed)
    shapes = resnet18_shapes()
    x = [(0.05 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    with jax.enable_x64(False):
        state = autodrop_jax.init([jnp.asarray(a) for a in x], 0.1)
        snapshot = [a.copy() for a in x]
        prev = [np.zeros(a.shape) for a in x]
        direction = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        errors = []
        for corr in (0.0, 0.0, 0.5, 0.9, 0.99, 0.999):
            direction = [
                (corr * u + math.sqrt(1 - corr**2) * rng.standard_normal(u.shape)).astype(np.float32)
                for u in direction
            ]
            x = [(a + 1e-3 * u).astype(np.float32) for a, u in zip(x, direction, strict=True)]
            dot, sq_norm, steps = reduce_steps(x, snapshot, prev)
            prev_sq = sum(float(np.dot(p.ravel(), p.ravel())) for p in prev)
            want = step_angle(dot, sq_norm, prev_sq)
            _, state, decision = autodrop_jax.update(state, [jnp.asarray(a) for a in x])
            snapshot, prev = [a.copy() for a in x], steps
            if want is not None:
                assert decision.angle is not None
                errors.append((want, abs(decision.angle - want)))
    return errors


def benchmark(threads: int, repeats: int) -> dict[str, Any]:
    """Time update() outside and inside a window, interleaved, against the probe's bound, in this process."""
    import autodrop_jax
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(HERE))
    from bandwidth import Interleaved, KernelTime

    rng = np.random.default_rng(1)
    shapes = resnet18_shapes()
    n_params = sum(int(np.prod(s)) for s in shapes)
    direction = [jnp.asarray(rng.standard_normal(s) * 1e-3, jnp.float32) for s in shapes]
    move = jax.jit(lambda p, d: [x + u for x, u in zip(p, d, strict=True)])

    def run_until(settings: dict[str, float], want_window: bool) -> tuple[Any, list[Any]]:
        # Inside: constant steps (the angle is 0, so with threshold 45 the rule triggers); outside:
        # a fresh random direction each epoch and a tiny threshold, so that no window ever opens.
        params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
        state = autodrop_jax.init(params, 0.1, drop_delay=1000, **settings)

        def step() -> list[Any]:
            if want_window:
                return move(params, direction)
            return move(params, [jnp.asarray(rng.standard_normal(s) * 1e-3, jnp.float32) for s in shapes])

        for _ in range(12):
            params, state, _ = autodrop_jax.update(state, step())
            if state.epoch >= 3 and (state.core_state.pending >= 2) == want_window:
                break
        assert (state.core_state.pending >= 2) == want_window
        return state, step()

    outside, outside_next = run_until({"threshold": 1e-12, "max_threshold": 1e-12}, False)
    inside, inside_next = run_until({"threshold": 45.0, "max_threshold": 90.0}, True)

    def once(state: Any, nxt: list[Any], window: bool) -> float:
        start = time.perf_counter()
        out, new_state, decision = autodrop_jax.update(state, nxt)
        jax.block_until_ready((out, jax.tree.leaves(new_state.snapshot), jax.tree.leaves(new_state.average)))
        elapsed = time.perf_counter() - start
        assert (decision.average_weight is not None and not decision.apply_average) == window
        return elapsed

    for _ in range(3):  # compile and warm up both
        once(outside, outside_next, False)
        once(inside, inside_next, True)
    times: dict[str, list[float]] = {"outside": [], "inside": []}
    meters = {"outside": KernelTime(), "inside": KernelTime()}
    probes = Interleaved(threads)
    after: dict[str, list[float]] = {"outside": [], "inside": []}  # the probe right after each call
    for _ in range(repeats):
        with meters["outside"].measure():
            times["outside"].append(once(outside, outside_next, False))
        after["outside"].append(probes.probe())
        with meters["inside"].measure():
            times["inside"].append(once(inside, inside_next, True))
        after["inside"].append(probes.probe())
    outside_ms = 1e3 * statistics.median(times["outside"])
    inside_ms = 1e3 * statistics.median(times["inside"])
    bound_out = probes.bound_ms(OUTSIDE_BYTES * n_params)
    bound_in = probes.bound_ms(INSIDE_BYTES * n_params)
    paired = {where: probes.paired_ratio([1e3 * t for t in times[where]], after[where],
                                         (OUTSIDE_BYTES if where == "outside" else INSIDE_BYTES) * n_params)
              for where in times}
    return {
        "threads": threads,
        "cores": sorted(os.sched_getaffinity(0)),
        "device": str(jax.devices()[0]),
        "x64": bool(jax.config.jax_enable_x64),
        "arrays": len(shapes),
        "params": n_params,
        "probe": probes.describe(),
        "outside_ms": round(outside_ms, 3),
        "outside_bound_ms": round(bound_out, 3),
        "outside_ratio": round(outside_ms / bound_out, 3),
        "outside_paired_ratio": round(paired["outside"], 3),
        "inside_paired_ratio": round(paired["inside"], 3),
        "inside_ms": round(inside_ms, 3),
        "inside_bound_ms": round(bound_in, 3),
        "inside_ratio": round(inside_ms / bound_in, 3),
        "outside_ms_quartiles": [round(1e3 * q, 3) for q in statistics.quantiles(times["outside"], n=4)],
        "inside_ms_quartiles": [round(1e3 * q, 3) for q in statistics.quantiles(times["inside"], n=4)],
        "kernel": {k: m.summary() for k, m in meters.items()},
    }


def _child(threads: int, x64: bool, repeats: int, xla: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from _children import pin_to_cores  # (imports only the standard library)

    pin_to_cores(threads)  # before jax (XLA sizes its thread pool from it) and numba
    import jax
    from autodrop_jax import _fused_cpu

    jax.config.update("jax_enable_x64", x64)
    _fused_cpu.USE_FUSED_CPU = not xla
    result = benchmark(threads, repeats)
    result["path"] = "xla" if xla or not _fused_cpu.fused.available() else "numba"
    if not x64 and threads == 1:
        errors = float32_angle_errors()
        result["angle_errors_deg"] = [[round(a, 4), e] for a, e in errors]
        result["angle_error_deg"] = max(e for _, e in errors)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x64", action="store_true", help="run with jax_enable_x64 (float64 accumulation)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts, one process each")
    parser.add_argument("--repeats", type=int, default=21, help="calls timed per measurement (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per thread count only")
    parser.add_argument("--xla", action="store_true", help="time the XLA programs, not the numba CPU passes")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.x64, args.repeats, args.xla)))
        return 0
    sys.path.insert(0, str(HERE))
    from bandwidth import KernelTime  # next to this file

    results = []
    for threads in args.threads:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(threads), "--repeats", str(args.repeats)]
        cmd += (["--x64"] if args.x64 else []) + (["--xla"] if args.xla else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stdout, out.stderr, file=sys.stderr)
            return out.returncode
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        for result in results:
            print(json.dumps(result))
        return 0
    for r in results:
        print(r["probe"])
        print(f"  {r['threads']} thread(s), x64={r['x64']}, {r['params']:,} params in {r['arrays']} arrays, "
              f"{r['device']}, {r['path']} path")
        for where in ("outside", "inside"):
            print(f"  {where:>7} a window: update {r[where + '_ms']:8.2f} ms (quartiles {r[where + '_ms_quartiles']}), "
                  f"bound {r[where + '_bound_ms']:7.2f} ms, ratio {r[where + '_ratio']:.2f} "
                  f"(paired with the probe after each call: {r[where + '_paired_ratio']:.2f})")
            print(f"           of which {KernelTime.describe(r['kernel'][where])}")
        if "angle_error_deg" in r:
            print(f"  float32 angle error vs the float64 reference: at most {r['angle_error_deg']:.3g} deg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
