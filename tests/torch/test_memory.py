"""What AutoDrop holds beside a torch model: two parameter-dtype copies at rest, 16 B in a window.

Counted from the storages of the tensors the scheduler keeps (each storage once), per
watched parameter element, for float32 and bfloat16 parameters, on both reduction paths;
and the version-1 checkpoint (s(t-1) stored in float64) still resumes exactly.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch
from autodrop_torch import AutoDrop, AutoDropUsageWarning, _fused_cpu, _reduce

from autodrop_core import DEFAULT_HISTORY_SIZE

DATA = Path(__file__).resolve().parent / "data"


def held_bytes(sched: AutoDrop) -> int:
    storages: dict[int, int] = {}
    for t in sched._tracked.held():
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def moved(params: list[torch.nn.Parameter], gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen).to(p.dtype) * 1e-2)


@pytest.mark.parametrize("path", ["torch", "numba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bytes_per_parameter_at_rest_in_a_window_and_after_an_applied_average(
    path: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "numba" and (dtype != torch.float32 or not _fused_cpu.available()):
        pytest.skip("the numba kernels take float32/float64 only")
    monkeypatch.setattr(_reduce, "USE_FUSED_CPU", path == "numba")
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 300, generator=gen).to(dtype)) for _ in range(3)]
    count = sum(p.numel() for p in params)
    size = torch.empty((), dtype=dtype).element_size()
    sched = AutoDrop(torch.optim.SGD(params, lr=0.1), threshold=180.0, max_threshold=180.0, drop_delay=4)
    assert held_bytes(sched) == size * count  # x̂(0) only: s(0) = 0 needs nothing
    per_param = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AutoDropUsageWarning)  # epochs moved by hand, not by the optimizer
        for _ in range(9):
            moved(params, gen)
            sched.step()
            decision = sched.last_decision
            assert decision is not None
            per_param.append((decision.epoch, decision.average_weight, decision.apply_average,
                              held_bytes(sched) / count))
    by_epoch = {epoch: (weight, apply, b) for epoch, weight, apply, b in per_param}
    assert by_epoch[1][2] == by_epoch[2][2] == 2 * size  # outside a window: x̂(t-1) and x̂(t-2)
    assert by_epoch[3][0] == 1.0 and by_epoch[3][2] == 2 * size + 8  # the window: plus W in float64
    assert by_epoch[5][2] == 2 * size + 8 <= 16
    assert by_epoch[6][1] and by_epoch[6][2] == 3 * size  # after the average: x̂(t), x(t), x̂(t-1)
    assert by_epoch[7][0] == 1.0 and by_epoch[7][2] == 2 * size + 8  # triggered again: back to two copies + W


def test_the_state_dict_holds_the_schedulers_own_tensors_and_no_copy() -> None:
    params = [torch.nn.Parameter(torch.randn(10, 10))]
    sched = AutoDrop(torch.optim.SGD(params, lr=0.1))
    state = sched.state_dict()
    assert state["snapshots"][0] is sched._tracked.snapshots[0]


def test_history_keeps_the_last_100_decisions_and_the_checkpoint_only_those() -> None:
    params = [torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = AutoDrop(opt)
    full = AutoDrop(torch.optim.SGD([torch.nn.Parameter(torch.randn(4))], lr=0.1), history_size=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AutoDropUsageWarning)
        sizes = []
        for epoch in range(1, 251):
            moved(params, torch.Generator().manual_seed(epoch))
            sched.step()
            full.step()
            if epoch in (100, 250):
                saved = io.BytesIO()
                torch.save(sched.state_dict(), saved)
                sizes.append(len(saved.getvalue()))
    assert len(sched.history) == DEFAULT_HISTORY_SIZE == 100 and sched.history.dropped == 150
    assert [d.epoch for d in sched.history] == list(range(151, 251))
    assert len(full.history) == 250 and full.history.dropped == 0
    assert sizes[1] <= sizes[0] * 1.02  # the checkpoint stopped growing (it grew by ~64 B per epoch)
    restored = AutoDrop(torch.optim.SGD([torch.nn.Parameter(params[0].detach().clone())], lr=0.1))
    restored.load_state_dict(sched.state_dict())
    assert list(restored.history) == list(sched.history) and restored.history.dropped == 150


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "100"])
def test_a_bad_history_size_is_refused_naming_it(size: object) -> None:
    with pytest.raises(ValueError, match=r"history_size must be an integer >= 1, or None"):
        AutoDrop(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1), history_size=size)  # type: ignore[arg-type]


def _discrete(decision: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in decision.items() if k not in ("angle", "smoothed_angle", "delta", "threshold")}


def test_a_version_1_checkpoint_resumes_exactly_as_the_version_that_wrote_it() -> None:
    saved = torch.load(DATA / "v1_checkpoint.pt", weights_only=True)
    assert saved["scheduler"]["version"] == 1 and "prev_steps" in saved["scheduler"]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.BatchNorm1d(32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, threshold=180.0, max_threshold=180.0, drop_delay=4)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    decisions = []
    for trained in saved["trained"]:  # epochs 5 to 13 of make_v1_checkpoint.py, as they were trained there
        opt.zero_grad()
        opt.step()  # no gradients: nothing moves, but AutoDrop sees that the optimizer stepped this epoch
        model.load_state_dict(trained)  # in place: the optimizer and AutoDrop keep their tensors
        sched.step()
        assert sched.last_decision is not None
        decisions.append(sched.last_decision.to_dict())
    # Every discrete field exactly; the angles to 1e-12: the float64 dot products of the torch
    # path may round their last bit differently on another CPU than the one that made the file.
    assert [_discrete(d) for d in decisions] == [_discrete(d) for d in saved["expected_decisions"]]
    for got, want in zip(decisions, saved["expected_decisions"], strict=True):
        for key in ("angle", "smoothed_angle", "delta", "threshold"):
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), (got["epoch"], key)
    for key, value in saved["expected_model"].items():
        assert torch.equal(model.state_dict()[key], value), key
