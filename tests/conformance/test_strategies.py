"""The strategies produce what the issue asks for, and the dtype rounding they rely on is right."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from autodrop_conformance import DTYPES, Case, cases, round_to
from autodrop_conformance._check import _reference_trace, case_features
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

ONCE = settings(max_examples=400, deadline=None, database=None, phases=[Phase.generate], derandomize=True,
                suppress_health_check=list(HealthCheck))


class _Wide:
    name, dtypes, accumulation, max_examples = "wide", DTYPES, "float64", None


class _Narrow:
    name, dtypes, accumulation, max_examples = "narrow", ("float32", "bfloat16"), "float32", None
    few_shapes, max_groups = True, 1


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_bfloat16_rounding_matches_ml_dtypes(values: list[float]) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    as32 = np.array(values, dtype=np.float32)
    expected = as32.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_array_equal(round_to("bfloat16", as32), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rounding_is_exact_on_representable_values(dtype: str) -> None:
    values = round_to(dtype, np.array([0.1, -3.3e-5, 7.0, 1e4, 0.0]))
    np.testing.assert_array_equal(round_to(dtype, values), values)


@pytest.mark.parametrize("driver", [_Wide(), _Narrow()], ids=["every dtype", "few shapes, one group"])
def test_at_least_half_of_the_cases_reach_a_due_drop(driver: Any) -> None:
    # a due drop: the average is applied, whether an lr went down or the drop was exhausted
    reached: list[bool] = []

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(cases(driver))
    def run(case: Case) -> None:
        reached.append(any(e.decision.apply_average for e in _reference_trace(case, False).epochs))

    run()
    assert sum(reached) / len(reached) >= 0.5, f"{sum(reached)} of {len(reached)} cases reached a drop"


def _every_array(case: Case) -> list[np.ndarray[Any, Any]]:
    return [*case.initial, *(s for epoch in case.steps for s in epoch)]


FEATURES: dict[str, Callable[[Case], bool]] = {
    "a 0-d tensor": lambda c: () in c.layout.shapes,
    "an empty tensor": lambda c: any(math.prod(s) == 0 for s in c.layout.shapes),
    "eight tensors": lambda c: len(c.layout.shapes) == 8,
    "three groups with their own floors": lambda c: c.config.num_groups == 3 and len(set(c.config.floors)) > 1,
    "float64 and bfloat16 together": lambda c: {"float64", "bfloat16"} <= set(c.layout.dtypes),
    "float16": lambda c: "float16" in c.layout.dtypes,
    "magnitudes near 1e30": lambda c: max(float(np.max(np.abs(a), initial=0.0)) for a in _every_array(c)) > 1e28,
    "magnitudes near 1e-30": lambda c: 0 < max(float(np.max(np.abs(a), initial=0.0)) for a in c.steps[0]) < 1e-27,
    "a zero step after the first epoch": lambda c: any(
        all(not np.any(s) for s in epoch) for epoch in c.steps[1:]
    ),
    "a reversed step": lambda c: any(
        any(np.any(a) for a in e) and all(np.array_equal(a, -b) for a, b in zip(e, p))
        for p, e in zip(c.steps, c.steps[1:])
    ),
    "angle window 3 with reset on drop": lambda c: c.config.angle_window == 3 and c.config.reset_on_drop,
    "drop_delay 6 over 25 epochs": lambda c: c.config.drop_delay == 6 and c.epochs >= 25,
    "a tensor of 2**18 + 1 elements": lambda c: (2**18 + 1,) in c.layout.shapes,
    "a tensor of 2**16 + 1 elements beside small ones": lambda c: (2**16 + 1,) in c.layout.shapes
    and len(c.layout.shapes) > 2,
    "a checkpoint after the second of three training steps": lambda c: c.save_step == 2 and c.substeps == 3,
    "a pinned group beside a free one": lambda c: c.config.num_groups > 1 and any(
        f >= lr for f, lr in zip(c.config.floors, c.config.lrs)) and any(
        f < lr for f, lr in zip(c.config.floors, c.config.lrs)),
    "a floor that binds at the first drop": lambda c: "floor binds" in case_features(c, _reference_trace(c, False)),
    "an exhausted epoch": lambda c: "exhausted epoch" in case_features(c, _reference_trace(c, False)),
    "a jittered rotation over 40 epochs or more": lambda c: c.motif == "jittered rotation" and c.epochs >= 40,
    "threshold 90 degrees": lambda c: c.config.threshold == 90.0,
}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_the_strategies_produce(feature: str) -> None:
    find(cases(_Wide()), FEATURES[feature], settings=ONCE)
