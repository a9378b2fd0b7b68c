"""Failures injected at every stage of the torch epoch end; each retry must be exact, bit for bit.

A twin run goes uninterrupted and counts how often each stage is entered per epoch. The
faulted run, at every epoch, first fails at the k-th entry of each stage (reduction,
absorbing into the average, writing the average into the parameters, taking the
snapshot, writing an lr), checks that the failed step changed nothing at all, then steps
cleanly. At the end both runs must be identical: parameters, optimizer state,
decisions and scheduler checkpoints.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
autodrop_torch = pytest.importorskip("autodrop_torch")

from autodrop_torch import AutoDrop, _buffers, _fused_cpu, _reduce, _scheduler  # noqa: E402

EPOCHS = int(os.environ.get("AUTODROP_FAULT_EPOCHS", 14))
EAGER: dict[str, Any] = {"threshold": 5.0, "max_threshold": 60.0, "drop_delay": 3, "min_lr": 1e-5}

#: stage -> (module, attribute) of the function the stage goes through
STAGES: dict[str, tuple[Any, str]] = {
    "reduction (torch path)": (_reduce, "_torch_step"),
    "reduction (numba path)": (_fused_cpu, "_launch"),
    "average: absorb x(t)": (_buffers, "_blend"),
    "average: first copy": (_buffers, "_as_acc"),
    "average: write into parameters": (_buffers, "_write_into"),
    "snapshot": (_buffers, "_snapshot_of"),
    "lr write": (_scheduler, "_set_group_lr"),
}


class Injected(Exception):
    """The failure the tests inject (standing for an out-of-memory, a device error...)."""


class Seams:
    """Wraps every stage: counts calls, or raises at the k-th call of one stage."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        self.fail: tuple[str, int] | None = None
        for stage, (module, attr) in STAGES.items():
            monkeypatch.setattr(module, attr, self._wrap(stage, getattr(module, attr)))

    def _wrap(self, stage: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[stage] += 1
            if self.fail == (stage, self.calls[stage]):
                raise Injected(f"injected failure at call {self.calls[stage]} of {stage}")
            return real(*args, **kwargs)

        return wrapper

    def counting(self) -> Iterator[None]:
        self.calls.clear()
        self.fail = None
        yield


def build(seed: int) -> tuple[Any, Any, Any, tuple[Any, Any]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1))
    opt = torch.optim.SGD([
        {"params": list(model[0].parameters()) + list(model[1].parameters())},
        {"params": model[3].parameters(), "lr": 0.02},
    ], lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, **EAGER)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen) + 0.3 * torch.randn(128, 1, generator=gen)
    return model, opt, sched, (x, y)


def train_epoch(model: Any, opt: Any, batch: tuple[Any, Any]) -> None:
    x, y = batch
    model.train()
    for i in range(0, len(x), 32):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()


def everything(model: Any, opt: Any, sched: Any) -> list[Any]:
    """Every tensor and number the run holds, as copies, for exact comparison."""
    state = sched.state_dict()
    flat: list[Any] = [t.detach().clone() for t in model.state_dict().values()]
    flat += [g["lr"] for g in opt.param_groups]
    for per_param in opt.state_dict()["state"].values():
        flat += [v.clone() if isinstance(v, torch.Tensor) else v for v in per_param.values()]
    for key, value in state.items():
        if isinstance(value, list) and value and all(v is None or isinstance(v, torch.Tensor) for v in value):
            flat += [None if v is None else v.clone() for v in value]
        else:
            flat.append((key, value))
    flat.append(tuple(sched.get_last_lr()))
    return flat


def same(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype
                    and x.shape == y.shape and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("path", ["torch", "numba"])
def test_a_failure_at_any_stage_of_the_epoch_end_changes_nothing_and_the_retry_is_exact(
    path: str, monkeypatch: pytest.MonkeyPatch, counts: Counter[str]
) -> None:
    if path == "numba" and not _fused_cpu.available():
        pytest.skip("numba not installed")
    torch.set_num_threads(1)
    monkeypatch.setattr(_reduce, "USE_FUSED_CPU", path == "numba")
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0 if path == "numba" else 1 << 62)
    seams = Seams(monkeypatch)
    twin_model, twin_opt, twin_sched, data = build(0)
    model, opt, sched, _ = build(0)
    injected = 0
    for _ in range(EPOCHS):
        train_epoch(twin_model, twin_opt, data)
        train_epoch(model, opt, data)
        seams.calls.clear()
        seams.fail = None
        twin_sched.step()
        per_stage = dict(seams.calls)
        before = everything(model, opt, sched)
        for stage, n in per_stage.items():
            for k in range(1, n + 1):
                seams.calls.clear()
                seams.fail = (stage, k)
                with pytest.raises(Injected):
                    sched.step()
                assert same(everything(model, opt, sched), before), f"failure at call {k} of {stage} changed state"
                injected += 1
                counts[f"torch ({path}): faults injected at {stage}"] += 1
        seams.fail = None
        sched.step()  # the retry
        assert sched.last_decision == twin_sched.last_decision
        assert same(everything(model, opt, sched), everything(twin_model, twin_opt, twin_sched))
    history = twin_sched.history
    assert any(d.apply_average for d in history) and any(d.dropped for d in history)
    counts[f"torch ({path}): faults injected"] += injected
    counts[f"torch ({path}): epochs retried to a bit-for-bit match"] += EPOCHS
    assert injected > EPOCHS


def _worker(directory: Any) -> list[str]:
    return [sys.executable, str(Path(__file__).with_name("torch_kill_worker.py")), "--dir", str(directory),
            "--epochs", "16"]


def _env() -> dict[str, str]:
    adapters = str(Path(__file__).resolve().parents[2] / "adapters")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (adapters, os.environ.get("PYTHONPATH", "")) if p)}


def test_sigkill_loop_over_a_checkpointed_torch_run_resumes_bit_for_bit(tmp_path: Any, counts: Counter[str]) -> None:
    kills = int(os.environ.get("AUTODROP_FAULT_TORCH_KILLS", 4))
    rng = random.Random(int(os.environ.get("AUTODROP_FAULT_SEED", 0)) + 2)
    whole = tmp_path / "whole"
    whole.mkdir()
    with subprocess.Popen(_worker(whole), env=_env(), stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY 0"
        began = time.monotonic()
        assert proc.wait(timeout=300) == 0
        span = time.monotonic() - began  # the training part of a run: kills land inside it
    want = torch.load(whole / "result.pt", weights_only=True)
    assert any(d["apply_average"] for d in want["history"])
    done = session = 0
    while done < kills:  # one session = one training run to the end, killed as often as it takes
        session += 1
        killed = tmp_path / f"killed{session}"
        killed.mkdir()
        while not (killed / "result.pt").exists():
            with subprocess.Popen(_worker(killed), env=_env(), stdout=subprocess.PIPE, text=True) as proc:
                assert proc.stdout is not None
                ready, start = proc.stdout.readline().split()
                assert ready == "READY"
                if done < kills:  # somewhere in what is left of the run
                    time.sleep(rng.uniform(0.0, 0.9 * span * (16 - int(start)) / 16))
                    proc.send_signal(signal.SIGKILL)
                code = proc.wait(timeout=300)
            if code == -signal.SIGKILL:
                done += 1
                counts["torch: SIGKILLs of a checkpointed training run"] += 1
            else:
                assert code == 0
        got = torch.load(killed / "result.pt", weights_only=True)
        assert got["history"] == want["history"] and got["lrs"] == want["lrs"]
        for key, value in want["model"].items():
            assert torch.equal(got["model"][key], value), key
        counts["torch: killed training runs resumed bit for bit"] += 1
