"""The core's logging helper and lr-ownership check, which every adapter's hook calls."""

from __future__ import annotations

import json
import math

import pytest

from autodrop_core import AutoDropConfig, Controller, LRConflictError, check_lrs_unchanged, log_scalars


def _decisions(n: int) -> list[tuple[object, int]]:
    c = Controller(AutoDropConfig(lrs=(0.1, 0.02), threshold=5.0, max_threshold=60.0, drop_delay=2))
    out = []
    for t in range(n):
        # the same direction each epoch: the angle is 0 from epoch 2 on, so the trigger fires at once
        out.append((c.observe(dot=0.0 if t == 0 else 1.0, sq_norm=1.0), c.state.pending))
    return out


def test_log_scalars_are_finite_floats_with_undefined_values_left_out() -> None:
    first, pending = _decisions(1)[0]
    log = log_scalars(first, pending=pending)  # type: ignore[arg-type]
    assert set(log) == {
        "autodrop/epoch", "autodrop/threshold", "autodrop/triggered", "autodrop/apply_average", "autodrop/dropped",
        "autodrop/exhausted", "autodrop/pending", "autodrop/lr_0", "autodrop/lr_1",
    }
    assert all(type(v) is float and math.isfinite(v) for v in log.values())
    json.dumps(log)  # a logger can serialise it as is


def test_log_scalars_follow_the_decision_through_a_drop() -> None:
    logs = [log_scalars(d, pending=p) for d, p in _decisions(4)]  # type: ignore[arg-type]
    assert [lg.get("autodrop/triggered") for lg in logs] == [0.0, 0.0, 1.0, 0.0]
    assert [lg["autodrop/pending"] for lg in logs] == [0.0, 0.0, 1.0, 0.0]
    assert logs[3]["autodrop/dropped"] == 1.0 and logs[3]["autodrop/lr_1"] == pytest.approx(0.002)
    assert logs[2]["autodrop/average_weight"] == 1.0 and "autodrop/average_weight" not in logs[1]
    assert logs[2]["autodrop/angle"] == 0.0 and "autodrop/delta" in logs[2]
    assert "pending" not in "".join(log_scalars(_decisions(1)[0][0]))  # type: ignore[arg-type]
    assert set(log_scalars(_decisions(1)[0][0], prefix="ad.")) >= {"ad.epoch", "ad.lr_0"}  # type: ignore[arg-type]


def test_the_ownership_check_names_the_first_changed_group_both_lrs_and_the_fix() -> None:
    check_lrs_unchanged([0.1, 0.01], [0.1, 0.01])
    check_lrs_unchanged([0.1], [0.1, 0.5])  # a group added since the last write is not compared
    with pytest.raises(LRConflictError, match=r"^lr\[1\] is 0\.05, but AutoDrop wrote 0\.01 there .* Do this\.$") as e:
        check_lrs_unchanged([0.1, 0.01, 0.3], [0.1, 0.05, 0.2], where="lr[{group}]", fix="Do this.")
    assert (e.value.group, e.value.written, e.value.found) == (1, 0.01, 0.05)
    assert isinstance(e.value, RuntimeError)
