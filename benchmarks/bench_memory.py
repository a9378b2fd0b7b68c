"""Memory AutoDrop holds per parameter, in torch, JAX, TensorFlow and Keras, float32 and bfloat16.

For each framework and dtype a fresh process (started with ``MALLOC_MMAP_THRESHOLD_=65536``
so that freed buffers leave the resident set at once, see ``peak_rss.py``) runs that
framework's ``measure_*`` function (``memory_torch.py``, ``memory_jax.py``,
``memory_tf.py``) on an ~8M-parameter model and reports, in bytes per parameter:

- ``rest``: what AutoDrop keeps between epochs outside an averaging window;
- ``window``: the same inside a window (with the running average);
- ``after avg``: after an applied average (the one epoch that keeps a third copy);
- ``peak out`` / ``peak win`` / ``peak apply``: the most held at once during one epoch end
  outside a window / inside one / the one that applies the average (the buffers held
  before it plus the growth of the resident memory during it: new buffers, temporaries,
  backups of the parameters);

next to the model's own bytes (parameters; with gradients and Adam's two moments the
training state is 4x that). Run: ``python benchmarks/bench_memory.py [--frameworks torch jax
tensorflow keras]``. Measures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: framework -> (module in benchmarks/, function)
MEASURES = {
    "torch": ("memory_torch", "measure_torch"),
    "jax": ("memory_jax", "measure_jax"),
    "tensorflow": ("memory_tf", "measure_tf"),
    "keras": ("memory_tf", "measure_keras"),
}
COLUMNS = [
    ("rest", "rest_bytes_per_param"),
    ("window", "window_bytes_per_param"),
    ("after avg", "after_apply_bytes_per_param"),
    ("peak out", "peak_outside_bytes_per_param"),
    ("peak win", "peak_epoch_end_bytes_per_param"),
    ("peak apply", "peak_apply_bytes_per_param"),
]


def _one(framework: str, dtype: str) -> dict[str, float] | str:
    module, function = MEASURES[framework]
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from {module} import {function}; "
        f"print('RESULT', json.dumps({function}({dtype!r})))"
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, float] = json.loads(line[len("RESULT "):])
            return result
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"not measured: {tail[:160]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", default=list(MEASURES), choices=list(MEASURES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    header = "| framework | dtype | params | model | " + " | ".join(name for name, _ in COLUMNS) + " |"
    print(header)
    print("|" + "---|" * (4 + len(COLUMNS)))
    for framework in args.frameworks:
        for dtype in args.dtypes:
            result = _one(framework, dtype)
            if isinstance(result, str):
                print(f"| {framework} | {dtype} | | | {result} |")
                continue
            cells = [f"{result[key]:.2f}" if key in result else "-" for _, key in COLUMNS]
            count = result.get("params", float("nan")) / 1e6
            print(f"| {framework} | {dtype} | {count:.1f}M | {result['model_bytes_per_param']:.0f} | "
                  + " | ".join(cells) + " |")
    print("bytes per parameter; model = the parameters' own bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
