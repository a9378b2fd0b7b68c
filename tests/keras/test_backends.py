"""autodrop_keras under each Keras 3 backend whose library is installed, in a subprocess per backend.

Each nox session that installs keras runs the backends it has (torch in the torch
session, JAX in the jax session, TensorFlow in the tensorflow session). A backend whose
library is missing is skipped; keras itself missing skips the module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Only looked up, not imported: importing keras here would load its default (TensorFlow) backend.
if importlib.util.find_spec("keras") is None:
    pytest.skip("keras is not installed", allow_module_level=True)

HERE = Path(__file__).resolve().parent
LIBRARY = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _run(backend: str, root: Path, path: str = "ops") -> dict[str, object]:
    env = {**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "AUTODROP_KERAS_PATH": path}
    done = subprocess.run(
        [sys.executable, str(HERE / "fit_worker.py"), str(root)], env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("path", ["ops", "numba"])  # keras.ops, or the numba pass over DLPack buffers
@pytest.mark.parametrize("backend", list(LIBRARY))
def test_fit_on_the_backend_decides_as_the_numpy_reference_averages_batchnorm_and_resumes_exactly(
    backend: str, path: str, tmp_path: Path
) -> None:
    if importlib.util.find_spec(LIBRARY[backend]) is None:
        pytest.skip(f"{LIBRARY[backend]} is not installed in this environment")
    if path == "numba" and importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed: no fused CPU pass")
    report = _run(backend, tmp_path, path)
    assert report["backend"] == backend
    # every epoch end with a previous step took the chosen path (none in the first epoch: s(t-1) = 0)
    assert report["fused_epochs"] == (19 if path == "numba" else 0)
    # W' formed in the same pass at every window epoch after the first, where the average is float64
    fused_absorbs = report["window_epochs"] if path == "numba" and report["acc"] == "float64" else 0
    assert report["fused_absorbs"] == fused_absorbs and (fused_absorbs > 0) == (path == "numba" and backend != "jax")
    decisions, reference = report["decisions"], report["reference"]
    assert isinstance(decisions, list) and isinstance(reference, list) and len(decisions) == len(reference) == 20
    assert any(d["dropped"] for d in decisions), "the run must drop at least once"
    # JAX without x64 accumulates in float32 (its averages too, whichever path sums the steps)
    tolerance = 1e-3 if backend == "jax" else 1e-9
    for got, want in zip(decisions, reference):
        assert (got["triggered"], got["apply_average"], got["dropped"], got["lrs"]) == (
            want["triggered"], want["apply_average"], want["dropped"], want["lrs"]
        ), f"epoch {want['epoch']}"
        assert (got["angle"] is None) == (want["angle"] is None)
        if want["angle"] is not None:
            assert got["angle"] == pytest.approx(want["angle"], abs=tolerance)
    errors = report["stats_errors"]
    assert isinstance(errors, list) and errors and max(errors) < 1e-5  # float32 statistics, float64 oracle
    assert report["logged_lr_0"] == [d["lrs"][0] for d in decisions]
    assert report["logged_angles"] == 19  # the first epoch's angle is undefined and left out
    assert "the optimizer's learning_rate is 0.025" in str(report["conflict"])
    assert "ReduceLROnPlateau" in str(report["conflict"])
    # interrupted inside an averaging window, resumed through BackupAndRestore and through
    # ModelCheckpoint + load_model: the same decisions and bit-identical weights and optimizer state
    # bytes held per float32 parameter (trainable; the BatchNorm statistics' average is not counted):
    # 2 copies (8 B) outside a window, + W (8 B in float64, 4 B in float32) inside, 3 copies only
    # in the epoch after an applied average
    memory = report["memory"]
    assert isinstance(memory, list) and len(memory) == 20
    acc = {"float64": 8, "float32": 4}[str(report["acc"])]
    for e in memory:
        if e["pending"]:
            assert e["bytes_per_param"] == 8 + acc, e
        elif e["applied"]:
            assert e["bytes_per_param"] == 12, e
        else:
            assert e["bytes_per_param"] == 8, e
    assert any(e["pending"] for e in memory) and any(e["applied"] for e in memory)
    resume = report["resume"]
    assert isinstance(resume, dict)
    assert resume == {"inside": resume["inside"], "bar_decisions_equal": True, "bar_weights_equal": True,
                      "ckpt_decisions_equal": True, "ckpt_weights_equal": True}
