"""State files that autodrop_keras wrote before issue 15 (explicit float64 s(t-1)) still resume exactly.

The fixture in ``data/old_state`` was written by ``old_state_worker.py make`` with the
adapter of commit e06a85e under the TensorFlow backend: a state file inside an
averaging window, one right after an applied average, and every later decision and
variable of that old run. Today's callback resumes from each, in a subprocess per
backend whose library is installed and which accumulates in float64 (TensorFlow,
torch), and must produce the same decisions and bit-identical variables.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("keras") is None:
    pytest.skip("keras is not installed", allow_module_level=True)

HERE = Path(__file__).resolve().parent
LIBRARY = {"tensorflow": "tensorflow", "torch": "torch"}


@pytest.mark.parametrize("backend", list(LIBRARY))
def test_old_state_files_resume_with_the_old_decisions_and_bit_identical_variables(
    backend: str, tmp_path: Path
) -> None:
    if importlib.util.find_spec(LIBRARY[backend]) is None:
        pytest.skip(f"{LIBRARY[backend]} is not installed in this environment")
    fixture = tmp_path / "old_state"
    shutil.copytree(HERE / "data" / "old_state", fixture)
    env = {**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(HERE / "old_state_worker.py"), "check", str(fixture)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    expected = {"decisions_equal": True, "variables_equal": True, "explicit_step_used": True,
                "explicit_step_dropped": True}
    resume = report["resume"]
    assert {k: resume[k] for k in ("window", "after_apply")} == {"window": expected, "after_apply": expected}
    # every state file today's callback wrote while continuing (new layout, also the epoch after an
    # applied average, which holds x(t-1)) resumes exactly as well
    assert resume["new_layout_resumes"] >= 20 and resume["new_layout_resumes_equal"]
