"""Where one adapter's epoch end spends its time: the named functions it calls, timed inside each call.

Builds the ResNet-18-shaped run of ``bench_outside_pass.py`` for one adapter (outside or
inside an averaging window), wraps each function named on the command line
(``module:attribute`` or ``module:Class.method``) in a timer, and after every epoch end
streams the shared bandwidth probe through the caches, as the step benchmarks do (cold
caches, as after an epoch of training). It prints the median epoch end and, per wrapped
function, the median over calls of its summed time in one epoch end. Nested functions
are each timed in full (a caller's time includes its callees'). Run it with the
allocator tunables of docs/memory.md, e.g.::

    python benchmarks/bench_sections.py tensorflow outside 2 \
        autodrop_tf._ops:EpochOps._reduce_fused autodrop_core.fused:reduce_pass

Nothing is asserted; the wrapping adds about a microsecond per call.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _wrap(spec: str, sums: dict[str, float]) -> None:
    """Replace ``module:attr.path`` by a timer around it that adds its time to ``sums[spec]``."""
    module_name, _, path = spec.partition(":")
    if not path:
        raise SystemExit(f"{spec!r}: expected module:attribute, e.g. autodrop_core.fused:reduce_pass")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    real = getattr(owner, name)

    @functools.wraps(real)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            sums[spec] = sums.get(spec, 0.0) + time.perf_counter() - start

    setattr(owner, name, timed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", choices=("torch", "jax", "tensorflow", "keras"))
    parser.add_argument("where", choices=("outside", "inside"), help="outside or inside an averaging window")
    parser.add_argument("threads", type=int)
    parser.add_argument("functions", nargs="*", help="module:attribute to time, e.g. autodrop_core.fused:reduce_pass")
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _children import pin_to_cores

    pin_to_cores(args.threads)  # before the framework sizes its thread pools
    import bandwidth
    import bench_outside_pass

    runs, _ = bench_outside_pass._runs(args.adapter, args.threads)
    train, end, _ = runs[args.where]
    probes = bandwidth.Interleaved(args.threads)
    sums: dict[str, float] = {}
    for spec in args.functions:
        _wrap(spec, sums)
    calls: list[float] = []
    parts: dict[str, list[float]] = {spec: [] for spec in args.functions}
    for _ in range(args.repeats):
        train()
        sums.clear()
        start = time.perf_counter()
        end()
        calls.append(time.perf_counter() - start)
        for spec in args.functions:
            parts[spec].append(sums.get(spec, 0.0))
        probes.probe()
    print(f"{args.adapter}, {args.where} a window, {args.threads} thread(s), medians of {args.repeats} "
          f"({probes.describe()}): epoch end {1e3 * statistics.median(calls):.3f} ms")
    for spec, times in parts.items():
        print(f"  {spec:60s} {1e3 * statistics.median(times):7.3f} ms")


if __name__ == "__main__":
    main()
