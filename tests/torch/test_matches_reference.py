"""A real training loop checked epoch by epoch against an independent computation.

The independent computation is the float64 numpy reference adapter (the conformance
oracle), fed with exactly the parameters the torch loop saw at each epoch's end. The
model's BatchNorm statistics are checked against a plain numpy running average driven
by the core's weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from autodrop_numpy import NumpyAutoDrop
from autodrop_torch import AutoDrop
from torch_testkit import EAGER, data, mlp, params_numpy, train_epoch


def test_lrs_drops_and_averaged_parameters_match_the_numpy_reference_every_epoch(reduction_path: str) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, **EAGER)
    oracle = NumpyAutoDrop(params_numpy(model.parameters()), [0.05], **EAGER)
    x, y = data()
    drops = 0
    for _ in range(30):
        train_epoch(model, opt, x, y)
        for ref, p in zip(oracle.params, model.parameters()):
            ref[...] = p.detach().numpy()
        expected = oracle.end_epoch()
        sched.step()
        got = sched.last_decision
        assert got is not None
        assert (got.epoch, got.triggered, got.dropped, got.apply_average, got.lrs) == (
            expected.epoch, expected.triggered, expected.dropped, expected.apply_average, expected.lrs
        )
        assert got.average_weight == expected.average_weight
        if expected.angle is None:
            assert got.angle is None
        else:
            assert expected.angle is not None and got.angle is not None
            assert abs(got.angle - expected.angle) <= 1e-9
        assert sched.get_last_lr() == list(expected.lrs) == [g["lr"] for g in opt.param_groups]
        for ref, p in zip(oracle.params, model.parameters()):
            np.testing.assert_array_equal(p.detach().numpy(), ref)
        drops += got.dropped
    assert drops >= 2, "the loop must exercise at least two averaged drops"
    assert [d.epoch for d in sched.history] == list(range(1, 31))


def test_batchnorm_float_buffers_are_averaged_with_the_core_weights_and_counters_keep_their_last_value(
    reduction_path: str,
) -> None:
    model = mlp(batchnorm=True)
    bn = model[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, **EAGER)
    x, y = data()
    average: list[np.ndarray] | None = None
    applied = 0
    for _ in range(25):
        train_epoch(model, opt, x, y)
        seen = [bn.running_mean.numpy().astype(np.float64), bn.running_var.numpy().astype(np.float64)]
        counter = int(bn.num_batches_tracked)
        sched.step()
        decision = sched.last_decision
        assert decision is not None
        if decision.average_weight is not None:
            c = decision.average_weight
            average = [s.copy() for s in seen] if average is None or c == 1.0 else [
                a + c * (s - a) for a, s in zip(average, seen)
            ]
        if decision.apply_average:
            assert average is not None
            np.testing.assert_array_equal(bn.running_mean.numpy(), average[0].astype(np.float32))
            np.testing.assert_array_equal(bn.running_var.numpy(), average[1].astype(np.float32))
            average = None
            applied += 1
        else:
            np.testing.assert_array_equal(bn.running_mean.numpy(), seen[0].astype(np.float32))
        assert int(bn.num_batches_tracked) == counter
    assert applied >= 2


def test_averaging_writes_in_place_so_the_optimizer_keeps_its_references_and_state() -> None:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = AutoDrop(opt, threshold=5.0, max_threshold=60.0, drop_delay=2)
    x, y = data()
    pointers = [p.data_ptr() for p in model.parameters()]
    for _ in range(20):
        train_epoch(model, opt, x, y)
        moments = {id(p): (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone()) for p in opt.state}
        before = params_numpy(model.parameters())
        sched.step()
        if sched.last_decision is not None and sched.last_decision.apply_average:
            break
    else:
        pytest.fail("no average was applied in 20 epochs")
    after = params_numpy(model.parameters())
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "the average must change the parameters"
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters()))
    for p in model.parameters():
        torch.testing.assert_close(opt.state[p]["exp_avg"], moments[id(p)][0], rtol=0, atol=0)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], moments[id(p)][1], rtol=0, atol=0)


def test_the_calibrated_trigger_makes_the_numpy_references_decisions(reduction_path: str) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    settings = {"trigger": "calibrated", "drop_delay": 3, "drop_factor": 0.5}
    sched = AutoDrop(opt, **settings)
    oracle = NumpyAutoDrop(params_numpy(model.parameters()), [0.05], **settings)
    x, y = data()
    order = torch.Generator().manual_seed(0)
    for _ in range(90):
        perm = torch.randperm(len(x), generator=order)  # shuffled batches: SGD noise, so the angle saturates
        train_epoch(model, opt, x[perm], y[perm])
        for ref, p in zip(oracle.params, model.parameters()):
            ref[...] = p.detach().numpy()
        expected = oracle.end_epoch()
        sched.step()
        got = sched.last_decision
        assert got is not None
        assert (got.triggered, got.apply_average, got.lrs) == (expected.triggered, expected.apply_average, expected.lrs)
        for field in ("delta", "threshold", "rise"):
            mine, theirs = getattr(got, field), getattr(expected, field)
            assert (mine is None) == (theirs is None), field
            if mine is not None:
                assert abs(mine - theirs) <= 1e-9, field
        for ref, p in zip(oracle.params, model.parameters()):
            np.testing.assert_array_equal(p.detach().numpy(), ref)
    assert sum(d.dropped for d in sched.history) >= 1, "the loop must reach a calibrated drop"
