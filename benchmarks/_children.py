"""Child processes of the benchmarks that run one framework and thread count each.

A framework sizes its thread pools when it starts, from the cores the process may run
on, so a benchmark that compares thread counts runs each in a fresh process pinned to
that many cores first. This module does only that: it imports nothing but the standard
library (numpy's BLAS, too, sizes a pool at import), so that it can be imported before
the pinning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["pin_to_cores", "run_children"]


def pin_to_cores(threads: int) -> None:
    """Pin this process to its first ``threads`` cores; call it before any framework (or numpy) is imported.

    Raises:
        SystemExit: fewer cores are available than ``threads``.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < threads:
        raise SystemExit(f"--threads {threads}: only {len(cores)} core(s) available")
    os.sched_setaffinity(0, set(cores[:threads]))


def run_children(script: str, kinds: Sequence[str], threads: Sequence[int], extra: Sequence[str] = ()) -> None:
    """``python script --child KIND THREADS *extra`` for every kind and thread count, in order; a failure stops."""
    for kind in kinds:
        for count in threads:
            subprocess.run([sys.executable, script, "--child", kind, str(count), *extra], check=True)
