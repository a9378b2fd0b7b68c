"""Bytes per parameter that AutoDrop holds in TensorFlow (``autodrop_tf``) and Keras 3 (``autodrop_keras``), on CPU.

An ~8M-parameter model (four large variables and two vectors: 7,873,536 parameters)
in float32 or bfloat16. For each adapter it reports, per parameter:

* ``model_bytes_per_param``: the parameter itself (4 or 2);
* ``rest_bytes_per_param``: what the adapter holds between epoch ends outside an
  averaging window (its buffers' element bytes: every buffer is a distinct allocation
  once training has updated the parameters, which the snapshot shares until then);
* ``window_bytes_per_param``: the same inside an averaging window;
* ``after_apply_bytes_per_param``: the same in the one epoch after an applied average;
* ``peak_outside_bytes_per_param``, ``peak_epoch_end_bytes_per_param`` (inside a window),
  ``peak_apply_bytes_per_param``: the most held at once during one epoch end of that kind
  (the largest over the walk): the buffers held before it plus the transient rise of the
  process' resident memory, from ``VmHWM`` in ``/proc/self/status`` after ``echo 5 >
  /proc/self/clear_refs`` (which resets it to the current RSS), minus the RSS before the
  call (taken after ``malloc_trim``); the rise alone is ``rise_<kind>_bytes_per_param``.

Each measurement runs in its own process (so the high-water mark and the allocator
start clean), with one TensorFlow thread. Nothing is asserted.

Run: ``python benchmarks/memory_tf.py`` (a table for both dtypes and both adapters), or
``from memory_tf import measure_tf, measure_keras`` with benchmarks/ on ``sys.path``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

from peak_rss import (  # next to this file: on sys.path when run or imported from benchmarks/
    peak_during,
    warm_up_fused_kernels,
)

SHAPES = [(2048, 2048), (2048, 1536), (1024, 512), (4096,), (1536,), (2,)]
KEYS = ("params", "model_bytes_per_param", "rest_bytes_per_param", "window_bytes_per_param",
        "after_apply_bytes_per_param", "peak_outside_bytes_per_param", "peak_epoch_end_bytes_per_param",
        "peak_apply_bytes_per_param")
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def _peak(call: Any) -> tuple[int, Any]:
    """Bytes the resident set rose above its level before ``call`` at its highest during it, and its result.

    Freed heap memory is handed back to the system first (glibc ``malloc_trim``), so that the
    level before the call is what is live, and memory the call allocates shows as a rise.
    """
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return peak_during(call)


def _run(framework: str, dtype: str) -> dict[str, float]:
    """In this process: build the model, walk through the three kinds of epoch ends, measure."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    n = sum(math.prod(s) for s in SHAPES)
    rng = np.random.default_rng(0)
    tf_dtype = tf.as_dtype(dtype)
    directions = [tf.cast(tf.constant(rng.standard_normal(s, dtype=np.float32)), tf_dtype) for s in SHAPES]
    # a trigger at the first measurable angle (threshold 89 degrees), then a 3-epoch window, applied
    settings: dict[str, Any] = {"threshold": 89.0, "max_threshold": 90.0, "drop_delay": 3}

    if framework == "tf":
        from autodrop_tf import AutoDrop

        params = [tf.Variable(tf.cast(tf.constant(rng.standard_normal(s, dtype=np.float32)), tf_dtype))
                  for s in SHAPES]
        autodrop = AutoDrop(params, lrs=0.1, **settings)

        def held() -> int:  # every float buffer of the module (old and new layouts alike)
            return sum(int(tf.size(v)) * v.dtype.size for v in autodrop.variables if v.dtype.is_floating)

        def end_epoch() -> Any:
            return autodrop.end_epoch()

        def pending() -> bool:
            return autodrop.controller.state.pending > 0

        def train() -> None:
            for p, d in zip(params, directions):
                p.assign_add(tf.constant(1e-3, tf_dtype) * d)
    else:
        import keras
        from autodrop_keras import AutoDropCallback

        params = [keras.Variable(tf.cast(tf.constant(rng.standard_normal(s, dtype=np.float32)), tf_dtype),
                                 dtype=dtype) for s in SHAPES]
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
        optimizer.build(params)
        callback = AutoDropCallback(**settings)
        callback._watch(params, optimizer._learning_rate)
        epoch = [0]

        def held() -> int:  # the callback's tensors (old layout: _prev_step; new: _base, _head, _explicit)
            total = 0
            for name in ("_snapshot", "_base", "_head", "_explicit", "_prev_step", "_average", "_extra_average"):
                for t in getattr(callback, name, None) or []:
                    total += int(np.prod(t.shape)) * _ITEMSIZE[keras.backend.standardize_dtype(t.dtype)]
            return total

        def end_epoch() -> Any:
            callback.on_epoch_end(epoch[0])
            epoch[0] += 1
            callback.on_epoch_begin(epoch[0])
            return callback.history[-1]

        def pending() -> bool:
            assert callback.controller is not None
            return callback.controller.state.pending > 0

        def train() -> None:
            for p, d in zip(params, directions):
                p.assign(p.value + tf.constant(1e-3, tf_dtype) * d)

        callback.on_epoch_begin(0)

    warm_up_fused_kernels()
    out: dict[str, float] = {"model_bytes_per_param": float(tf_dtype.size)}
    peaks: dict[str, int] = {}
    held_peaks: dict[str, int] = {}
    for _ in range(16):  # two windows, two applied averages, the epochs between
        train()  # the optimizer's update: copies x away from the snapshot that shared its buffer
        held_before = held()
        rise, decision = _peak(end_epoch)
        if decision.apply_average and decision.average_weight != 1.0:
            kind = "after_apply"
        elif pending():
            kind = "window"
        elif decision.epoch >= 2:
            kind = "rest"
        else:
            continue  # the first epoch end: no x̂(t-2) yet
        before = held_before
        peaks[kind] = max(peaks.get(kind, 0), rise)
        held_peaks[kind] = max(held_peaks.get(kind, 0), before + rise)
        out.setdefault(f"{kind}_bytes_per_param", held() / n)
    out["params"] = float(n)
    # As bench_memory.py reads them: the most held at once (buffers before + the rise) per kind.
    out["peak_outside_bytes_per_param"] = held_peaks["rest"] / n
    out["peak_epoch_end_bytes_per_param"] = held_peaks["window"] / n
    out["peak_apply_bytes_per_param"] = held_peaks["after_apply"] / n
    for kind, rise in peaks.items():
        out[f"rise_{kind}_bytes_per_param"] = rise / n
    return out


def _measure(framework: str, dtype: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--one", framework, dtype], capture_output=True, text=True,
                          check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"memory_tf.py --one {framework} {dtype} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(lines[-1][len("RESULT "):])
    return result


def measure_tf(dtype: str) -> dict[str, float]:
    """Bytes per parameter for ``autodrop_tf.AutoDrop`` with ``dtype`` ("float32" or "bfloat16") variables."""
    return {k: v for k, v in _measure("tf", dtype).items() if k in KEYS}


def measure_keras(dtype: str) -> dict[str, float]:
    """Bytes per parameter for ``autodrop_keras.AutoDropCallback`` (the current Keras backend)."""
    return {k: v for k, v in _measure("keras", dtype).items() if k in KEYS}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print("RESULT " + json.dumps(_run(sys.argv[2], sys.argv[3])))
        return 0
    n = sum(math.prod(s) for s in SHAPES)
    print(f"{n:,} parameters in {len(SHAPES)} variables; bytes per parameter (peak: held before + the rise of RSS "
          "during one epoch end)")
    print("adapter          dtype    | model | rest | window | after apply | peak outside / window / apply")
    for framework, name in (("tf", "autodrop_tf"), ("keras", "autodrop_keras")):
        for dtype in ("float32", "bfloat16"):
            r = _measure(framework, dtype)
            print(f"{name:16s} {dtype:8s} | {r['model_bytes_per_param']:5.0f} | {r['rest_bytes_per_param']:4.1f} | "
                  f"{r['window_bytes_per_param']:6.1f} | {r['after_apply_bytes_per_param']:11.1f} | "
                  f"{r['peak_outside_bytes_per_param']:.1f} / {r['peak_epoch_end_bytes_per_param']:.1f} / "
                  f"{r['peak_apply_bytes_per_param']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
