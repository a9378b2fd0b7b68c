"""The numba path's outputs: few shared allocations, and a record of them that a changed tensor cannot fool.

The copies and running averages one pass writes are views into a few blocks, entered in
``_fused_cpu._OWN`` with their address, shape, dtype and version counter; the next pass
reads the scheduler's state from that record instead of asking torch. A tensor modified
in place since (its version counter moved), or one that is not a recorded output, must
be checked by torch again, so that the pass never reads a stale address.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")

from autodrop_torch import AutoDrop, _fused_cpu, _reduce  # noqa: E402

SHAPES = [(3, 5), (64, 64), (1,), (300_000,), (2_200_000,), (7, 11, 13)]  # one of them larger than a block


def _scheduler(seed: int = 0) -> tuple[list[torch.nn.Parameter], AutoDrop]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in SHAPES]
    opt = torch.optim.SGD(params, lr=0.1)
    return params, AutoDrop(opt, threshold=5.0, max_threshold=60.0, drop_delay=2)


def _epoch(params: list[torch.nn.Parameter], sched: AutoDrop, t: int) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen), alpha=0.01)
    sched.optimizer.step()
    sched.step()


@pytest.fixture(autouse=True)
def _small_tensors_take_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reduce, "USE_FUSED_CPU", True)
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0)


def test_the_copies_of_one_pass_share_a_few_aligned_blocks_and_are_recorded() -> None:
    params, sched = _scheduler()
    for t in range(3):
        _epoch(params, sched, t)
    snapshots = sched._tracked.snapshots
    at = [s.data_ptr() for s in snapshots]
    # the first three are small: one block, each rounded up to whole 64-byte lines (15 floats: 64 bytes)
    assert (at[1] - at[0], at[2] - at[1]) == (64, 64 * 64 * 4)
    for s, p in zip(snapshots, params, strict=True):
        assert s.is_contiguous() and s.shape == p.shape and s.dtype == p.dtype
        assert s.data_ptr() % 64 == 0
        assert _fused_cpu._address(s, s.shape, s.dtype) == s.data_ptr()
        assert s in _fused_cpu._OWN
        assert torch.equal(s, p.detach())


def test_a_recorded_tensor_whose_storage_was_replaced_is_read_at_its_new_address() -> None:
    params, sched = _scheduler()
    for t in range(2):
        _epoch(params, sched, t)
    snapshot = sched._tracked.snapshots[1]
    recorded = _fused_cpu._OWN.facts(snapshot)[0]
    snapshot.set_(torch.full_like(snapshot, 0.5))  # in place: the version counter moves
    assert snapshot.data_ptr() != recorded
    assert _fused_cpu._address(snapshot, snapshot.shape, snapshot.dtype) == snapshot.data_ptr()


def test_the_record_refuses_another_shape_or_dtype() -> None:
    params, sched = _scheduler()
    _epoch(params, sched, 0)
    _epoch(params, sched, 1)
    snapshot = sched._tracked.snapshots[1]
    assert _fused_cpu._address(snapshot, torch.Size((4096,)), snapshot.dtype) is None
    assert _fused_cpu._address(snapshot, snapshot.shape, torch.float64) is None


def test_a_state_changed_in_place_gives_the_reductions_of_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    for fused in (True, False):
        monkeypatch.setattr(_reduce, "USE_FUSED_CPU", fused)
        params, sched = _scheduler()
        for t in range(3):
            _epoch(params, sched, t)
        with torch.no_grad():  # what a user could do to a tensor of state_dict(): same address, new values
            sched.state_dict()["snapshots"][3].mul_(0.5)
            sched.state_dict()["step_bases"][4].set_(torch.zeros(SHAPES[4]))  # and a new storage
        _epoch(params, sched, 3)
        runs.append(sched.last_reductions)
    assert runs[0] == pytest.approx(runs[1], rel=1e-12)


def test_a_snapshot_the_kernels_cannot_read_is_planned_for_the_torch_path() -> None:
    x = torch.randn(8, 8)
    ok = torch.randn(8, 8)
    assert _fused_cpu.plan(x, ok, ok, ok, None) is not None
    assert _fused_cpu.plan(x, ok.t(), ok, ok, None) is None  # not contiguous
    assert _fused_cpu.plan(x, ok, ok, ok.double(), None) is None  # another dtype
    assert _fused_cpu.plan(x, ok, ok, ok, torch.zeros(8, 8, dtype=torch.float32)) is None  # W must be float64
    assert _fused_cpu.plan(x, ok, ok, ok, torch.zeros(8, 8, dtype=torch.float64))[4] != 0  # type: ignore[index]
    assert _fused_cpu.plan(x.half(), ok.half(), ok.half(), ok.half(), None) is None  # the kernels take f32/f64
