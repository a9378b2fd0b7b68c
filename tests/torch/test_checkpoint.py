"""state_dict()/load_state_dict(): exact resume, also across a killed process."""

from __future__ import annotations

import io
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from autodrop_torch import AutoDrop
from torch_testkit import EAGER, HERE, data, mlp, python, subprocess_env, train_epoch

WORKER = str(HERE / "resume_worker.py")
EPOCHS = 16


def _run(directory: Path, *extra: str) -> None:
    subprocess.run([python(), WORKER, "--dir", str(directory), "--epochs", str(EPOCHS), *extra],
                   env=subprocess_env(), check=True, timeout=240)


def _killed_mid_epoch(directory: Path, after: int) -> None:
    cmd = [python(), WORKER, "--dir", str(directory), "--epochs", str(EPOCHS), "--pause-after", str(after)]
    with subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert line.strip() == "PAUSED" and proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("uninterrupted")
    _run(directory)
    result: dict[str, Any] = torch.load(directory / "result.pt", weights_only=True)
    return result


def _kill_points(history: list[dict[str, Any]]) -> dict[str, int]:
    mid = next(d["epoch"] for d in history if d["average_weight"] is not None and not d["apply_average"])
    drop = next(d["epoch"] for d in history if d["apply_average"])
    return {"before_any_trigger": 2, "mid_averaging_window": mid, "at_a_drop": drop}


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before_any_trigger", "mid_averaging_window", "at_a_drop"])
def test_a_run_killed_mid_epoch_and_resumed_in_a_new_process_reproduces_the_uninterrupted_run(
    where: str, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    assert sum(d["dropped"] for d in uninterrupted["history"]) >= 2
    after = _kill_points(uninterrupted["history"])[where]
    _killed_mid_epoch(tmp_path, after)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == after
    _run(tmp_path, "--resume")
    resumed = torch.load(tmp_path / "result.pt", weights_only=True)
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["lrs"] == uninterrupted["lrs"]
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    for key, value in uninterrupted["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)


def test_state_dict_round_trips_through_torch_save_with_weights_only_in_the_middle_of_a_window() -> None:
    x, y = data()
    model = mlp(batchnorm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, **EAGER)
    while sched.history == [] or sched.history[-1].average_weight is None or sched.history[-1].apply_average:
        train_epoch(model, opt, x, y)
        sched.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["sched"]["average"] is not None and saved["sched"]["buffer_average"] is not None

    twin = mlp(batchnorm=True)
    twin.load_state_dict(saved["model"])
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    twin_sched = AutoDrop(twin_opt, model=twin, **EAGER)
    twin_opt.load_state_dict(saved["opt"])
    twin_sched.load_state_dict(saved["sched"])
    assert twin_sched.last_decision == sched.last_decision and twin_sched.history == sched.history
    for _ in range(12):
        for m, o, s in ((model, opt, sched), (twin, twin_opt, twin_sched)):
            train_epoch(m, o, x, y)
            s.step()
        assert twin_sched.last_decision == sched.last_decision
        assert twin_sched.get_last_lr() == sched.get_last_lr()
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_saved_tensors_are_copies_unaffected_by_later_training() -> None:
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = AutoDrop(opt)
    train_epoch(model, opt, x, y)
    sched.step()
    saved = sched.state_dict()
    frozen = [t.clone() for t in saved["snapshots"]]
    train_epoch(model, opt, x, y)
    sched.step()
    for a, b in zip(saved["snapshots"], frozen):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_checkpoint_that_does_not_fit_is_refused_and_changes_nothing() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = AutoDrop(opt)
    good = sched.state_dict()
    with pytest.raises(ValueError, match="format=None"):
        sched.load_state_dict({"last_epoch": 3})
    bad = dict(good, snapshots=[torch.zeros(2), *good["snapshots"][1:]])
    with pytest.raises(ValueError, match=r"snapshots\[0\] has shape \(2,\), expected \(16, 8\)"):
        sched.load_state_dict(bad)
    other = mlp()
    two_groups = torch.optim.SGD([{"params": other[0].parameters()}, {"params": other[2].parameters()}], lr=0.1)
    with pytest.raises(ValueError, match="1 parameter groups, the optimizer has 2"):
        AutoDrop(two_groups).load_state_dict(good)
    after = sched.state_dict()
    assert after["core"] == good["core"] and after["watched"] == good["watched"]


def test_a_state_dict_written_before_the_calibrated_trigger_still_loads() -> None:
    # The first release stored core state format 1 (no "recent") and decisions without "rise".
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, **EAGER)
    for _ in range(5):
        train_epoch(model, opt, x, y)
        sched.step()
    old = sched.state_dict()
    del old["core"]["config"]["trigger"]
    del old["core"]["state"]["recent"]
    old["core"]["state"]["version"] = 1
    for decision in [old["last_decision"], *old["history"]]:
        del decision["rise"]
    twin_opt = torch.optim.SGD(mlp().parameters(), lr=0.05, momentum=0.9)
    twin = AutoDrop(twin_opt, **EAGER)
    twin.load_state_dict(old)
    assert twin.history == sched.history and twin.last_decision == sched.last_decision
    assert twin._controller.state == sched._controller.state
