"""Speed of the NQM simulators at n = 10^4: numba kernel, numpy, jax lax.scan, and the noise alone.

Run from the repository root:

    .venv/bin/python benchmarks/bench_nqm.py [--json] [--iters 400] [--runs 8] [--repeats 5] [--cpu-time]

Every number is iterations per second (one iteration = one SGD step of one run over all n
coordinates), the best of ``--repeats`` timings after a warm-up call (so compilation is
excluded). Reported ratios:

* kernel / noise: the numba kernel on one thread against drawing the same n Gaussians
  per iteration alone with the fastest generator measured here (numba's own counter-based
  ziggurat, or numpy's SFC64/PCG64 ziggurat): the share of time left to the model itself.
* kernel / numpy on 2 threads: ``--runs`` independent runs in one parallel call against the
  numpy implementations of the same runs (vectorised over runs), on the same cores, by wall
  clock. With ``--cpu-time`` (for a machine that other jobs keep busy) the single-threaded
  timings use process CPU time, and the "ideal" line gives 2 x the kernel's per-core speed
  over numpy's: what 2 free cores would give if the kernel scales across runs.

This file measures; it must not assert speed goals (they are read off its output).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from autodrop_core.nqm import preset
from autodrop_core.nqm._kernels import advance_run, advance_runs
from autodrop_core.nqm._rng import fill_normals, run_key

N = 10_000
LR = 0.01


CPU = False  # set by --cpu-time: time single-threaded work by process CPU time instead of wall time


def best_time(fn: Callable[[], object], repeats: int, cpu: bool = False) -> float:
    """Fastest of ``repeats`` calls, after one warm-up call.

    With ``cpu`` the process CPU time is used, which a busy machine disturbs far less than
    wall time; it is only meaningful for single-threaded work (threads' times add up).
    """
    clock = time.process_time if cpu else time.perf_counter
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def numpy_sgd(a: np.ndarray, sd: np.ndarray, runs: int, iters: int, seed: int) -> Callable[[], object]:
    """Idiomatic numpy SGD with the fastest numpy generator (SFC64), vectorised over runs."""
    rng = np.random.Generator(np.random.SFC64(seed))
    x = np.ones((runs, a.size))
    prev = np.zeros_like(x)
    z = np.empty_like(x)
    dots, sqs = np.empty((iters, runs)), np.empty((iters, runs))

    def go() -> None:
        nonlocal x, prev
        for t in range(iters):
            rng.standard_normal(out=z)
            step = -LR * a * (x - sd * z)
            dots[t] = np.einsum("ij,ij->i", step, prev)
            sqs[t] = np.einsum("ij,ij->i", step, step)
            x = x + step
            prev = step

    return go


def reference_sgd(a: np.ndarray, var: np.ndarray, iters: int) -> Callable[[], object]:
    """The tests' plain numpy implementation (bit-compatible noise, hashed in numpy)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "nqm" / "_reference.py"
    spec = importlib.util.spec_from_file_location("nqm_numpy_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    key = int(run_key(0))
    return lambda: module.run(a, var, np.ones(a.size), LR, 0.0, 0.0, key, iters)


def jax_sgd(a: np.ndarray, sd: np.ndarray, runs: int, iters: int) -> Callable[[], object] | None:
    """The same SGD as a jitted ``lax.scan`` over iterations (float64, threefry noise), or None."""
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    a_j, sd_j = jnp.asarray(a), jnp.asarray(sd)

    @jax.jit
    def simulate(key: Any, x0: Any) -> Any:
        def body(carry: Any, t: Any) -> Any:
            x, prev = carry
            z = jax.random.normal(jax.random.fold_in(key, t), x.shape, dtype=jnp.float64)
            step = -LR * a_j * (x - sd_j * z)
            return (x + step, step), (jnp.sum(step * prev, axis=-1), jnp.sum(step * step, axis=-1))

        (x, _), out = jax.lax.scan(body, (x0, jnp.zeros_like(x0)), jnp.arange(iters))
        return x, out

    key, x0 = jax.random.PRNGKey(0), jnp.ones((runs, a.size))
    return lambda: jax.block_until_ready(simulate(key, x0))


def measure(iters: int, runs: int, repeats: int) -> dict[str, Any]:
    model = preset("figure1", N)
    a, var = model.curvature, model.variance
    sd = np.sqrt(var)
    threads_before = numba.get_num_threads()
    results: dict[str, Any] = {}

    numba.set_num_threads(1)
    x, ys, prev = np.ones(N), np.ones(N), np.zeros(N)
    out = [np.empty(iters) for _ in range(3)]
    key = run_key(0)
    kernel_1 = iters / best_time(lambda: advance_run(a, sd, x, ys, prev, LR, 0.0, 0.0, key, 0, *out), repeats, CPU)
    buf = np.empty(N)

    def numba_noise() -> None:
        for t in range(iters):
            fill_normals(key, np.uint64(t * N), buf)

    noise = {"numba counter ziggurat": iters / best_time(numba_noise, repeats, CPU)}
    for name in ("SFC64", "PCG64", "Philox"):
        gen = np.random.Generator(getattr(np.random, name)(0))
        draw = lambda g=gen: [g.standard_normal(out=buf) for _ in range(iters)]  # noqa: E731
        noise[f"numpy {name}"] = iters / best_time(draw, repeats, CPU)
    results["one_thread"] = {"numba kernel": kernel_1, **{f"noise only, {k}": v for k, v in noise.items()}}
    fastest = max(noise, key=noise.__getitem__)
    results["kernel_over_fastest_noise"] = {"ratio": kernel_1 / noise[fastest], "fastest": fastest}

    cores = min(2, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(cores)
    xs, yss, prevs = np.ones((runs, N)), np.ones((runs, N)), np.zeros((runs, N))
    outs = [np.empty((runs, iters)) for _ in range(3)]
    lrs, keys = np.full(runs, LR), np.array([run_key(s) for s in range(runs)], dtype=np.uint64)
    kernel_many = runs * iters / best_time(
        lambda: advance_runs(a, sd, xs, yss, prevs, lrs, 0.0, 0.0, keys, 0, *outs), repeats
    )
    numba.set_num_threads(threads_before)
    numpy_many = runs * iters / best_time(numpy_sgd(a, sd, runs, iters, 0), repeats)
    numpy_many_cpu = runs * iters / best_time(numpy_sgd(a, sd, runs, iters, 0), repeats, cpu=True) if CPU else 0.0
    ref_iters = max(10, iters // 10)
    reference = ref_iters / best_time(reference_sgd(a, var, ref_iters), max(1, repeats // 2))
    many = {
        f"numba kernel, {cores} threads": kernel_many,
        "numpy + SFC64 (vectorised over runs)": numpy_many,
        "numpy reference from tests (1 run)": reference,
    }
    jax_go = jax_sgd(a, sd, runs, iters)
    if jax_go is not None:
        many["jax lax.scan (vectorised over runs)"] = runs * iters / best_time(jax_go, repeats)
    results[f"{runs}_runs"] = many
    results["kernel_over_numpy_2_threads"] = {
        "vs numpy + SFC64 (wall clock)": kernel_many / numpy_many,
        "vs numpy reference (wall clock)": kernel_many / reference,
    }
    if CPU:
        results["kernel_over_numpy_2_threads"][f"ideal, {cores} x one-thread kernel (CPU time)"] = (
            cores * kernel_1 / numpy_many_cpu
        )
    results["setup"] = {
        "n": N, "iters": iters, "runs": runs, "repeats": repeats, "cpu_count": os.cpu_count(), "cpu_time": CPU,
        "load_average": os.getloadavg(), "numba": numba.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cpu-time", action="store_true", help="time single-threaded work by CPU time (busy machines)")
    args = parser.parse_args(argv)
    global CPU
    CPU = args.cpu_time
    results = measure(args.iters, args.runs, args.repeats)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"NQM at n = {N}, iterations per second (best of {args.repeats}); setup: {results['setup']}")
    for section in ("one_thread", f"{args.runs}_runs"):
        print(f"\n[{section}]")
        for name, value in results[section].items():
            print(f"  {name:<42}{value:>12.1f} it/s")
    ratio = results["kernel_over_fastest_noise"]
    print(f"\nkernel / noise alone ({ratio['fastest']}), one thread: {ratio['ratio']:.2f}  (aim >= 0.8)")
    for name, value in results["kernel_over_numpy_2_threads"].items():
        print(f"kernel on 2 threads {name}: {value:.1f}x  (aim >= 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
