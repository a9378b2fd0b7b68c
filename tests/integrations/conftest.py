"""Shared setup of the integration tests: the torch test helpers on the path, one thread.

Each test here runs a real training tool (Hugging Face Trainer, Lightning, timm's
calling convention) and compares its AutoDrop decisions with a plain loop built from
``tests/torch/torch_testkit.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH_TESTS = HERE.parent / "torch"

for path in (HERE, TORCH_TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

torch.set_num_threads(1)
