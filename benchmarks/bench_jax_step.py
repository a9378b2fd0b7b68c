"""Benchmark of autodrop_jax's epoch-end call on a ResNet-18-shaped pytree, and its float32 precision.

What it measures, in one run:

* ``update_ms``: milliseconds per ``autodrop_jax.update`` call (reduction program, the
  one host transfer, the core's decision; thresholds are set so that no averaging
  happens, which is the common epoch), median over ``--repeats`` calls.
* ``bound_ms``: a plain jitted program moving the same bytes (read three parameter-sized
  trees, write two: ``a - b + c`` and a copy of ``a``), median over as many calls. It
  stands in for the memory-bandwidth bound of this device.
* ``ratio`` = update_ms / bound_ms (goal: at most 1.5).
* ``angle_error_deg``: without x64 only, the largest |angle(float32 adapter) -
  angle(float64 numpy reference)| over steps whose angles span 90 to about 2.5 degrees.

Usage: ``python benchmarks/bench_jax_step.py [--x64] [--repeats N] [--json]``. It prints the
exact numbers; nothing is asserted here (speed goals live in benchmarks, not tests).
This script must not download anything.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any


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


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def benchmark(repeats: int) -> dict[str, Any]:
    """Time update() against the same-bytes bound in the current x64 mode."""
    import autodrop_jax
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(1)
    shapes = resnet18_shapes()
    base = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    moved = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    third = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    # A tiny threshold keeps every epoch a plain, non-averaging one.
    state = autodrop_jax.init(base, 0.1, threshold=1e-12, max_threshold=1e-12)
    trees = [base, moved, third]  # cycling through three keeps angles (and so delta) varied
    holder = {"state": state, "epoch": 0}

    def one_update() -> None:
        holder["epoch"] += 1
        _, holder["state"], decision = autodrop_jax.update(holder["state"], trees[holder["epoch"] % 3])
        assert decision.average_weight is None

    acc = holder["state"].prev_step[0].dtype

    @jax.jit
    def same_bytes(a: list[jax.Array], b: list[jax.Array], c: list[jax.Array]) -> tuple[list, list]:
        return [x - y + z.astype(x.dtype) for x, y, z in zip(a, b, c, strict=True)], [jnp.copy(x) for x in a]

    prev = [jnp.zeros(s, acc) for s in shapes]

    def bound() -> None:
        out = same_bytes(moved, base, prev)
        jax.block_until_ready(out)

    for _ in range(3):  # compile and warm up both
        one_update()
        bound()
    update_ms = _median_ms(one_update, repeats)
    bound_ms = _median_ms(bound, repeats)
    update_ms_2 = _median_ms(one_update, repeats)  # interleave to expose drift on a shared machine
    n_params = sum(int(np.prod(s)) for s in shapes)
    return {
        "device": str(jax.devices()[0]),
        "x64": bool(jax.config.jax_enable_x64),
        "arrays": len(shapes),
        "params": n_params,
        "update_ms": round(min(update_ms, update_ms_2), 3),
        "update_ms_runs": [round(update_ms, 3), round(update_ms_2, 3)],
        "bound_ms": round(bound_ms, 3),
        "ratio": round(min(update_ms, update_ms_2) / bound_ms, 3),
        "bound_bytes": n_params * (4 + 4 + np.dtype(acc).itemsize + np.dtype(acc).itemsize + 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x64", action="store_true", help="run with jax_enable_x64 (float64 accumulation)")
    parser.add_argument("--repeats", type=int, default=20, help="calls timed per measurement (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", args.x64)
    result = benchmark(args.repeats)
    if not args.x64:
        errors = float32_angle_errors()
        result["angle_errors_deg"] = [[round(a, 4), e] for a, e in errors]
        result["angle_error_deg"] = max(e for _, e in errors)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
