"""Memory benchmark of autodrop_jax: bytes per parameter the AutoDrop state holds, and the epoch end's peak.

:func:`measure_jax` runs an 8M-parameter model (four 2048 x 1024 leaves) through
``autodrop_jax.update`` in a fresh CPU process and reports, per parameter (the keys of
``benchmarks/bench_memory.py``):

* ``model_bytes_per_param``: the model itself (the parameter dtype's size);
* ``rest_bytes_per_param``: the state at rest outside an averaging window;
* ``window_bytes_per_param``: the state at rest inside a window (W held);
* ``after_apply_bytes_per_param``: the state at rest in the epoch after an applied average;
* ``peak_outside_bytes_per_param``: the most held at once during one ``update`` outside a
  window: the state at rest before the call plus the growth of the resident set during it;
* ``peak_epoch_end_bytes_per_param``: the same for an ``update`` inside a window (absorbing,
  not applying);

and, per phase (start, normal, absorb_first, absorb, apply, after_apply), ``growth_by_phase``
(the growth alone: allocations above the resting process) and ``peak_by_phase`` (state
before + growth).

Bytes at rest are the unique device buffers among the state pytree's ``jax.Array`` leaves
(``nbytes`` per addressable shard; host placeholders and the small host-side core record
hold no device memory). The growth is ``VmHWM`` from /proc/self/status after writing ``5``
to /proc/self/clear_refs (which resets it to the current RSS), minus the RSS before the
call. The child process runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc maps
every large buffer freshly and unmaps it when freed: otherwise memory freed by an earlier
call is reused without touching the high-water mark, and the growth reads too low.

It only uses ``autodrop_jax.init`` / ``update`` / ``core_state``, so the same script measures
an older version of the adapter put first on ``PYTHONPATH``. Nothing is asserted here.

Usage: ``python benchmarks/memory_jax.py [--x64] [--json]`` prints float32 and bfloat16.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from peak_rss import peak_during  # next to this file: on sys.path when run or imported from benchmarks/

SHAPES = [(2048, 1024)] * 4  # 8,388,608 parameters
KEYS = (
    "model_bytes_per_param",
    "rest_bytes_per_param",
    "window_bytes_per_param",
    "after_apply_bytes_per_param",
    "peak_outside_bytes_per_param",
    "peak_epoch_end_bytes_per_param",
)


def measure_jax(dtype: str, x64: bool = False) -> dict[str, Any]:
    """Bytes per parameter of the JAX adapter for ``dtype`` ("float32" or "bfloat16"), in a fresh process."""
    env = dict(os.environ)
    env.update({"JAX_PLATFORMS": "cpu", "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"})
    args = [sys.executable, str(Path(__file__).resolve()), "--child", dtype] + (["--x64"] if x64 else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory_jax child failed:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _device_bytes(tree: Any) -> int:
    import jax

    seen: dict[tuple[str, int], int] = {}
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            for shard in leaf.addressable_shards:
                seen[(str(shard.device), shard.data.unsafe_buffer_pointer())] = shard.data.nbytes
    return sum(seen.values())


def _child(dtype: str, x64: bool) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_x64", x64)
    import autodrop_jax
    import jax.numpy as jnp
    import numpy as np

    n = sum(int(np.prod(s)) for s in SHAPES)
    rng = np.random.default_rng(0)
    direction = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 1e-2, dtype) for s in SHAPES]
    advance = jax.jit(lambda p, d: [x + u for x, u in zip(p, d, strict=True)])

    def epoch_end(state: Any, params: list[Any]) -> tuple[list[Any], Any, Any, float]:
        moved = advance(params, direction)
        jax.block_until_ready(moved)
        del params
        gc.collect()

        def call() -> Any:
            result = autodrop_jax.update(state, moved)
            jax.block_until_ready((result[0], jax.tree.leaves(result[1])))
            return result

        grown, (out, new_state, decision) = peak_during(call)
        return out, new_state, decision, grown / n

    rest, window, after = [], [], []
    growths: dict[str, float] = {}
    peaks: dict[str, float] = {}
    for schedule in ("plain", "window"):
        # "plain": no window ever (tiny threshold); "window": constant steps (angle about 0) trigger and drop.
        settings = ({"threshold": 1e-12, "max_threshold": 1e-12} if schedule == "plain"
                    else {"threshold": 45.0, "max_threshold": 90.0})
        params = [jnp.zeros(s, dtype) for s in SHAPES]
        state = autodrop_jax.init(params, 0.1, drop_delay=3, **settings)
        after_apply = False
        for epoch in range(1, 9):
            held_before = _device_bytes(state) / n
            params, state, decision, growth = epoch_end(state, params)
            held = _device_bytes(state) / n
            if decision.apply_average:
                phase = "apply"
                after.append(held)
            elif decision.average_weight is not None:
                phase = "absorb_first" if decision.average_weight == 1.0 else "absorb"
                window.append(held)
            else:
                phase = "normal" if epoch > 2 else "start"
                if epoch > 1 and not after_apply:
                    rest.append(held)
            if after_apply:
                phase = "after_apply"
            after_apply = decision.apply_average
            growths[phase] = max(growths.get(phase, 0.0), growth)
            peaks[phase] = max(peaks.get(phase, 0.0), held_before + growth)
        del state, params
        gc.collect()
    return {
        "dtype": dtype,
        "x64": x64,
        "params": float(n),
        "layout": "2" if hasattr(autodrop_jax, "from_checkpoint") else "1",
        "adapter": autodrop_jax.__file__,
        "model_bytes_per_param": float(jnp.dtype(dtype).itemsize),
        "rest_bytes_per_param": max(rest),
        "window_bytes_per_param": max(window),
        "after_apply_bytes_per_param": max(after),
        "peak_outside_bytes_per_param": peaks["normal"],
        "peak_epoch_end_bytes_per_param": max(peaks["absorb"], peaks["absorb_first"]),
        "peak_apply_bytes_per_param": peaks["apply"],
        "growth_by_phase": {k: round(v, 2) for k, v in sorted(growths.items())},
        "peak_by_phase": {k: round(v, 2) for k, v in sorted(peaks.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x64", action="store_true", help="jax_enable_x64 (float64 accumulation)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per dtype")
    parser.add_argument("--child", choices=["float32", "bfloat16"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.x64)))
        return 0
    results = [measure_jax(dtype, args.x64) for dtype in ("float32", "bfloat16")]
    if args.json:
        for result in results:
            print(json.dumps(result))
        return 0
    print(f"autodrop_jax layout {results[0]['layout']} ({results[0]['adapter']}), x64={args.x64}, "
          f"{int(results[0]['params']):,} parameters; bytes per parameter")
    print(f"{'dtype':>9} " + " ".join(f"{k.removesuffix('_bytes_per_param'):>14}" for k in KEYS))
    for r in results:
        print(f"{r['dtype']:>9} " + " ".join(f"{r[k]:>14.2f}" for k in KEYS))
    for r in results:
        print(f"{r['dtype']:>9} peak by phase (state before + growth): {r['peak_by_phase']}")
        print(f"{r['dtype']:>9} growth by phase (above the resting process): {r['growth_by_phase']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
