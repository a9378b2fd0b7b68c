"""What each adapter's epoch end spends outside the numba pass: the fixed cost that the bandwidth bound does not cover.

On CPU every adapter's epoch end runs one pass of the shared kernels
(``autodrop_core.fused.reduce_pass``), whose time the bytes it moves decide, and around
it the adapter's own work: checks of every tensor, the framework's reads of the buffers'
addresses, fresh outputs and their adoption, the core's decision, the new state. That
work costs about the same on one thread as on two, while the pass halves, so it decides
how far above the bound a two-thread epoch end lands.

Here each call's pass is timed inside the call (``reduce_pass`` is wrapped, in this
process only) and the call's time outside the pass is the difference, per call; the
medians of the call, the pass and the difference are printed for the ResNet-18 shapes
(11.17M float32 parameters in 62 tensors), outside and inside an averaging window.
Calls alternate between the two, and the shared probe (``benchmarks/bandwidth.py``)
runs after each call, so that every call starts with cold caches as in the step
benchmarks. The difference is much less sensitive to the load of a shared machine than
the ratios are: both parts of it come from the same call.

Run: ``python benchmarks/bench_outside_pass.py [--adapters torch jax tensorflow keras]
[--threads 1 2] [--repeats 15]``. Each adapter and thread count runs in its own process,
pinned to that many cores before the framework starts. Nothing is asserted about the
times; it stops with an error if a timed epoch end is not inside (or outside) a window
as its row says, or ran other than one numba pass.
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
ADAPTERS = ("torch", "jax", "tensorflow", "keras")


#: (train: untimed; end: one epoch end; pending: whether a drop is pending, i.e. the run is inside a window)
Run = tuple[Callable[[], None], Callable[[], None], Callable[[], bool]]


def _runs(adapter: str, threads: int) -> tuple[dict[str, Run], list[int]]:
    """``({"outside": run, "inside": run}, tensor sizes)``: a run that never opens a window, one that stays in one."""
    import numpy as np

    rng = np.random.default_rng(0)
    if adapter == "torch":
        import warnings

        import torch
        from autodrop_torch import AutoDrop, AutoDropUsageWarning
        from bench_torch_step import resnet18_shapes

        warnings.filterwarnings("ignore", category=AutoDropUsageWarning)
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(0)

        def make_torch(**settings: Any) -> Run:
            params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in resnet18_shapes()]
            scheduler = AutoDrop(torch.optim.SGD(params, lr=0.1), **settings)

            def train() -> None:
                with torch.no_grad():
                    for p in params:
                        p.add_(torch.randn(p.shape, generator=gen), alpha=1e-3)

            def in_window() -> bool:
                decision = scheduler.last_decision
                return decision is not None and decision.average_weight is not None

            return train, scheduler.step, in_window

        sizes = [math.prod(s) for s in resnet18_shapes()]
        quiet = make_torch(threshold=1e-12, max_threshold=1e-12)
        pending = make_torch(threshold=180.0, max_threshold=180.0, drop_delay=10**6)
    elif adapter == "jax":
        import autodrop_jax
        import jax
        import jax.numpy as jnp
        from bench_jax_step import resnet18_shapes

        shapes = resnet18_shapes()
        sizes = [math.prod(s) for s in shapes]
        step = jax.jit(lambda p, d: [x + u for x, u in zip(p, d, strict=True)])

        def make_jax(constant: bool, **settings: Any) -> Run:
            box: dict[str, Any] = {"params": [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]}
            box["state"] = autodrop_jax.init(box["params"], 0.1, drop_delay=1000, **settings)
            fixed = [jnp.asarray(1e-3 * rng.standard_normal(s), jnp.float32) for s in shapes]

            def train() -> None:
                direction = fixed if constant else [jnp.asarray(1e-3 * rng.standard_normal(s), jnp.float32)
                                                    for s in shapes]
                box["params"] = jax.block_until_ready(step(box["params"], direction))

            def end() -> None:
                box["params"], box["state"], _ = autodrop_jax.update(box["state"], box["params"])
                jax.block_until_ready((box["params"], jax.tree.leaves(box["state"].snapshot)))

            return train, end, lambda: box["state"].core_state.pending > 0

        quiet = make_jax(False, threshold=1e-12, max_threshold=1e-12)
        pending = make_jax(True, threshold=45.0, max_threshold=90.0)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import tensorflow as tf
        from bench_tf_step import _KerasAdapter, _with_optimizer, resnet18_shapes

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        shapes = resnet18_shapes()
        sizes = [math.prod(s) for s in shapes]

        @tf.function  # type: ignore[untyped-decorator]
        def move(variables: list[Any], direction: list[Any]) -> None:
            for p, d in zip(variables, direction, strict=True):
                p.assign_add(d)

        def make_tf(**settings: Any) -> Run:
            if adapter == "keras":
                import keras

                variables = [keras.Variable(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
                ends: Any = _KerasAdapter(variables, lrs=0.1, **settings)
                raw = [v.value for v in variables]  # the tf.Variable under each Keras variable
            else:  # owning a Keras optimizer's lr, as a training loop does
                raw = variables = [tf.Variable(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
                ends = _with_optimizer(variables, lrs=0.1, **settings)
            base = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
            directions = [[tf.constant(1e-3 * (b + z * rng.standard_normal(b.shape, dtype=np.float32)))
                           for b in base] for z in (0.3, 0.6, 0.9)]
            epoch = [0]

            def train() -> None:  # two updates: the first one's copy-on-write stays out of the epoch end
                for _ in range(2):
                    epoch[0] += 1
                    move(raw, directions[epoch[0] % 3])

            return train, ends.end_epoch, lambda: ends.controller.state.pending > 0

        quiet = make_tf()
        pending = make_tf(threshold=89.0, max_threshold=90.0, drop_delay=10**6)
    for _ in range(7):  # the window opens at epoch 3 and stays open (the quiet run never opens one); the
        # epoch ends after it warm the allocator up to the window's buffers
        for train, end, _ in (quiet, pending):
            train()
            end()
    return {"outside": quiet, "inside": pending}, sizes


def child(adapter: str, threads: int, repeats: int) -> None:
    pin_to_cores(threads)  # before the framework sizes its thread pools
    sys.path.insert(0, str(HERE))
    import bandwidth

    from autodrop_core import fused

    passes: list[float] = []
    original = fused.reduce_pass

    def timed_pass(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            passes.append(time.perf_counter() - start)

    fused.reduce_pass = timed_pass  # this process only: the adapters call it as fused.reduce_pass
    runs, sizes = _runs(adapter, threads)
    probes = bandwidth.Interleaved(threads)
    rows: dict[str, list[tuple[float, float]]] = {"outside": [], "inside": []}
    for _ in range(repeats):
        for where, (train, end, in_window) in runs.items():
            train()
            passes.clear()
            start = time.perf_counter()
            end()
            elapsed = time.perf_counter() - start
            if len(passes) != 1:
                raise SystemExit(f"{adapter}: {len(passes)} numba passes in one epoch end (expected 1): "
                                 "is numba installed and the model large enough for the pass?")
            if in_window() != (where == "inside"):
                raise SystemExit(f"{adapter}: the {where} run is {'in' if in_window() else 'out of'} a window")
            rows[where].append((elapsed, passes[0]))
            probes.probe()
    print(f"{adapter}, {threads} thread(s), {sum(sizes):,} float32 parameters in {len(sizes)} tensors, "
          f"medians of {repeats} ({probes.describe()})")
    for where, pairs in rows.items():
        call = 1e3 * statistics.median(c for c, _ in pairs)
        inner = 1e3 * statistics.median(p for _, p in pairs)
        rest = 1e3 * statistics.median(c - p for c, p in pairs)
        print(f"  {where:7s} a window: epoch end {call:6.2f} ms, numba pass {inner:6.2f} ms, "
              f"outside the pass {rest:5.2f} ms ({100 * rest / call:4.1f}%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", nargs="+", choices=ADAPTERS, default=list(ADAPTERS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child[0], int(args.child[1]), args.repeats)
        return 0
    run_children(__file__, args.adapters, args.threads, ["--repeats", str(args.repeats)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
