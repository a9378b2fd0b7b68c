"""How much a warm last-level cache flatters a repeated epoch end: JAX ``update()`` with and without the probe first.

The step benchmarks time the same epoch end again and again. This machine's L3 (260 MiB)
can hold much of a ResNet-18's buffers (45 MB per float32 copy), so a call straight
after another may find part of its input in cache, which an epoch end after a real
epoch of training would not. Here, in one process, calls alternate: one straight after
a previous call ("warm"), one after the shared bandwidth probe has streamed 512 MiB
("cold", as in the step benchmarks since they probe after every call). It prints both
medians and their ratio. Nothing is asserted.

Run: ``python benchmarks/bench_cold_cache.py [--threads 1 2] [--repeats 21]`` (each thread
count in its own process: XLA sizes its thread pool from the cores it may use).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(threads: int, repeats: int) -> str:
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(cores[:threads]))  # before jax and numba
    sys.path.insert(0, str(HERE))
    import autodrop_jax
    import bandwidth
    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench_jax_step import OUTSIDE_BYTES, resnet18_shapes

    rng = np.random.default_rng(1)
    shapes = resnet18_shapes()
    n = sum(int(np.prod(s)) for s in shapes)
    move = jax.jit(lambda p, d: [x + u for x, u in zip(p, d, strict=True)])
    params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    state = autodrop_jax.init(params, 0.1, drop_delay=1000, threshold=1e-12, max_threshold=1e-12)

    def step() -> list[jax.Array]:
        return move(params, [jnp.asarray(rng.standard_normal(s) * 1e-3, jnp.float32) for s in shapes])

    for _ in range(5):
        params, state, _ = autodrop_jax.update(state, step())
    nxt = step()

    def once() -> float:
        start = time.perf_counter()
        out, new_state, _ = autodrop_jax.update(state, nxt)
        jax.block_until_ready((out, jax.tree.leaves(new_state.snapshot)))
        return (time.perf_counter() - start) * 1e3

    bandwidth.probe_gbs(threads)  # compile the probe and touch its arrays
    warm, cold = [], []
    for _ in range(repeats):
        once()
        warm.append(once())
        bandwidth.probe_gbs(threads)
        cold.append(once())
    w, c = statistics.median(warm), statistics.median(cold)
    return (f"{threads} thread(s), outside a window: warm {w:.2f} ms, cold {c:.2f} ms, cold / warm {c / w:.3f} "
            f"(bound {bandwidth.bound_ms(OUTSIDE_BYTES * n, threads):.2f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(child(args.child, args.repeats))
        return 0
    for threads in args.threads:
        done = subprocess.run([sys.executable, __file__, "--child", str(threads), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        print(done.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
