"""Two gloo processes on CPU: DDP (replicated) and FSDP2 (sharded) match one process.

Under DDP every rank reduces its own full copy of the parameters: no communication,
identical decisions. Under FSDP2 each rank holds a shard (a DTensor): the per-shard
partial sums are all-reduced, so every rank sees the full reductions; their order of
addition differs from one process, so angles agree to rounding (1e-9 degrees here)
while every decision, lr and final parameter is identical.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from torch_testkit import HERE, python, subprocess_env

WORKER = str(HERE / "dist_worker.py")
EXACT = ("epoch", "triggered", "average_weight", "apply_average", "dropped", "exhausted", "lrs", "threshold")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference: the same training in one process, without torch.distributed."""
    out = tmp_path_factory.mktemp("single") / "single.pt"
    subprocess.run([python(), WORKER, "--mode", "single", "--out", str(out)], env=subprocess_env(), check=True,
                   timeout=240)
    result: dict[str, Any] = torch.load(out, weights_only=True)
    return result


def _two_ranks(tmp_path: Path, mode: str) -> list[dict[str, Any]]:
    init = tmp_path / f"{mode}.store"
    procs = [
        subprocess.Popen([python(), WORKER, "--mode", mode, "--rank", str(r), "--world", "2", "--init", str(init),
                          "--out", str(tmp_path / f"{mode}{r}.pt")], env=subprocess_env())
        for r in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    return [torch.load(tmp_path / f"{mode}{r}.pt", weights_only=True) for r in range(2)]


def _same_decisions(got: list[dict[str, Any]], want: list[dict[str, Any]], angle_tol: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for key in EXACT:
            assert g[key] == w[key], (g["epoch"], key)
        for key in ("angle", "smoothed_angle", "delta"):
            if w[key] is None:
                assert g[key] is None
            else:
                assert abs(g[key] - w[key]) <= angle_tol, (g["epoch"], key, g[key], w[key])


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "angle_tol"), [("ddp", 0.0), ("fsdp", 1e-9)])
def test_two_gloo_ranks_reach_the_single_process_decisions_and_parameters(
    mode: str, angle_tol: float, single: dict[str, Any], tmp_path: Path
) -> None:
    assert sum(d["dropped"] for d in single["history"]) >= 2
    for rank in _two_ranks(tmp_path, mode):
        _same_decisions(rank["history"], single["history"], angle_tol)
        for p, q in zip(rank["params"], single["params"]):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
