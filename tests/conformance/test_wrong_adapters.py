"""Deliberately wrong adapters are caught, with a report that says where and replays the case.

The project's set (``wrong_adapters.WRONG_DRIVERS``, one bug per spec rule) is run through
the suite's own strategies, each with a bounded number of examples; the number each
takes to be caught is printed in the "wrong adapters" section at the end of the run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import autodrop_conformance
import numpy as np
import pytest
from autodrop_conformance import (
    Case,
    ConformanceError,
    Layout,
    cases,
    check_against_reference,
    check_checkpoint,
    check_nan_step,
)
from autodrop_conformance._check import STATS
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import NoSuchExample

from autodrop_core import AutoDropConfig


def _load(name: str) -> ModuleType:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_conformance_tests_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wrong = _load("wrong_adapters")

SEARCH = settings(
    max_examples=300, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def quarter_turns(epochs: int = 8, drop_delay: int = 2, dtype: str = "float64", scale: float = 1.0) -> Case:
    """A case that saturates at once: steps e1, e2, -e1, -e2, ... have angle 90 degrees exactly."""
    u, v = np.array([1.0, 0.0, 0.5, 0.0]) * scale, np.array([0.0, 2.0, 0.0, -1.0]) * scale
    steps = tuple((s,) for s in [(u, v, -u, -v)[t % 4] for t in range(epochs)])
    return Case(
        config=AutoDropConfig(lrs=(0.1,), drop_delay=drop_delay),
        layout=Layout(shapes=((4,),), dtypes=(dtype,), groups=(0,)),
        initial=(np.array([0.25, -0.5, 1.0, 0.0]) * scale,),
        steps=steps,
    )


def test_a_late_drop_is_reported_at_the_epoch_of_the_reference_drop() -> None:
    with pytest.raises(ConformanceError) as caught:
        check_against_reference(wrong.LateDropDriver(), quarter_turns())
    report = str(caught.value)
    # trigger at epoch 3 (first delta), two vectors averaged: the reference drops at epoch 4
    assert "does not conform at epoch 4: decision field 'apply_average' differs" in report
    assert "'dropped': True" in report and "'dropped': False" in report
    assert "reference reductions (dot, sq_norm)" in report
    assert "Replay this case with:" in report


def test_the_replay_snippet_rebuilds_the_case_and_fails_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    case = quarter_turns(epochs=6, drop_delay=3)
    with pytest.raises(ConformanceError) as caught:
        check_against_reference(wrong.LateDropDriver(), case)
    snippet = str(caught.value).split("Replay this case with:\n", 1)[1]
    assert 'load_driver("late-drop")' in snippet
    monkeypatch.setattr(autodrop_conformance, "load_driver", lambda name: wrong.LateDropDriver())
    namespace: dict[str, Any] = {}
    with pytest.raises(ConformanceError) as again:
        exec(compile(snippet, "<replay>", "exec"), namespace)
    assert namespace["case"] == case
    assert str(again.value).splitlines()[0] == str(caught.value).splitlines()[0]


def test_a_flat_float32_dot_is_caught_by_its_reductions() -> None:
    with pytest.raises(ConformanceError, match="reductions outside the rounding bound"):
        check_against_reference(wrong.FlatFloat32Driver(report=True), quarter_turns(scale=1.0 + 2.0**-30))


def test_a_flat_float32_dot_is_caught_by_its_angles_even_when_it_hides_its_reductions() -> None:
    base = quarter_turns()
    u, v = np.array([1.0, 0.0, 0.5, 0.0]), np.array([0.0, 2.0, 0.0, -1.0])
    turning = tuple((np.cos(0.9 * t) * u + np.sin(0.9 * t) * v,) for t in range(8))  # about 51.6 degrees a turn
    case = Case(base.config, base.layout, base.initial, turning)
    with pytest.raises(ConformanceError, match="angle differs beyond its rounding band"):
        check_against_reference(wrong.FlatFloat32Driver(report=False), case)


@pytest.mark.parametrize(
    "driver",
    [wrong.LateDropDriver(), wrong.FlatFloat32Driver(report=True), wrong.FlatFloat32Driver(report=False)],
    ids=lambda d: d.name,
)
def test_the_suite_strategies_find_each_wrong_adapter(driver: Any) -> None:
    def fails(case: Case) -> bool:
        try:
            check_against_reference(driver, case)
        except ConformanceError:
            return True
        return False

    found = find(cases(driver), fails, settings=SEARCH)
    with pytest.raises(ConformanceError, match="does not conform at epoch"):
        check_against_reference(driver, found)


def test_the_reference_driver_itself_passes_the_cases_that_catch_them() -> None:
    numpy_driver = autodrop_conformance.load_driver("numpy")
    check_against_reference(numpy_driver, quarter_turns())
    check_against_reference(numpy_driver, quarter_turns(scale=1.0 + 2.0**-30))


def test_a_checkpoint_that_loses_the_core_state_is_caught() -> None:
    case = quarter_turns(epochs=8, drop_delay=3)
    case = Case(case.config, case.layout, case.initial, case.steps, save_at=3)
    with pytest.raises(ConformanceError, match="restored after epoch 3 decides differently"):
        check_checkpoint(wrong.ForgetfulDriver(), case)
    check_checkpoint(autodrop_conformance.load_driver("numpy"), case)


def test_a_nan_refused_with_the_wrong_error_is_caught() -> None:
    case = quarter_turns()
    case = Case(case.config, case.layout, case.initial, case.steps, nan_at=4)
    with pytest.raises(ConformanceError, match="epoch 4: NaN parameters raised ValueError"):
        check_nan_step(wrong.WrongErrorDriver(), case)
    check_nan_step(autodrop_conformance.load_driver("numpy"), case)


#: The most examples a wrong adapter may take to be caught (the suite's power, bounded for CI).
CATCH_WITHIN = 400
#: name -> (examples it took, first line of the report); read by this folder's conftest.
CATCHES: dict[str, tuple[int, str]] = {}


def _first_catch(driver: Any, limit: int) -> tuple[int, str] | None:
    """Examples of ``cases(driver)`` until one of the three checks fails, with its first report line."""
    seen: list[int] = [0]
    caught: list[str] = []

    def fails(case: Case) -> bool:
        seen[0] += 1
        for check in (check_against_reference, check_nan_step, check_checkpoint):
            try:
                check(driver, case)
            except ConformanceError as err:
                caught.append(str(err).splitlines()[0])
                return True
        return False

    budget = settings(max_examples=limit, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
    try:
        find(cases(driver), fails, settings=budget)
    except NoSuchExample:
        return None
    return seen[0], caught[0]


def test_the_adapter_written_apart_without_a_bug_conforms() -> None:
    driver = wrong.BuggyDriver(None)
    before = STATS.examples.get(driver.name, 0)
    assert _first_catch(driver, 120) is None
    assert STATS.examples[driver.name] - before >= 120


@pytest.mark.parametrize("name", sorted(wrong.WRONG_DRIVERS))
def test_the_suite_catches_every_wrong_adapter_of_the_set(name: str) -> None:
    found = _first_catch(wrong.WRONG_DRIVERS[name](), CATCH_WITHIN)
    assert found is not None, f"the suite did not catch {name!r} within {CATCH_WITHIN} examples"
    CATCHES[name] = found


def _with(case: Case, **changes: Any) -> Case:
    fields = {"config": case.config, "layout": case.layout, "initial": case.initial, "steps": case.steps,
              "save_at": case.save_at, "nan_at": case.nan_at, "save_step": case.save_step,
              "substeps": case.substeps}
    fields.update(changes)
    return Case(**fields)


def test_a_checkpoint_that_retakes_the_snapshot_is_caught_only_inside_an_epoch() -> None:
    driver = wrong.BuggyDriver("checkpoint-retakes-snapshot")
    at_boundary = _with(quarter_turns(), save_at=3, substeps=3)
    check_checkpoint(driver, at_boundary)  # x̂ equals the parameters there: the bug is invisible
    inside = _with(at_boundary, save_step=2)
    with pytest.raises(ConformanceError, match="after training step 2 of 3 in epoch 4") as caught:
        check_checkpoint(driver, inside)
    assert "restored" in str(caught.value) and "uninterrupted" in str(caught.value)
    check_checkpoint(autodrop_conformance.load_driver("numpy"), inside)
    if importlib.util.find_spec("torch") is not None:  # the core session has no torch; its own run draws such cases
        check_checkpoint(autodrop_conformance.load_driver("torch"), inside)


def test_a_checkpoint_report_names_the_parameters_that_differ_with_their_values() -> None:
    case = _with(quarter_turns(drop_delay=3), save_at=3, save_step=1, substeps=2)
    with pytest.raises(ConformanceError) as caught:
        check_checkpoint(wrong.BuggyDriver("checkpoint-loses-average"), case)
    report = str(caught.value)
    assert "holds different parameters" in report and "tensor 0 (" in report and " vs uninterrupted " in report


def test_lrs_held_in_float32_pass_only_when_the_driver_declares_them() -> None:
    case = quarter_turns()
    with pytest.raises(ConformanceError, match="the lrs the framework holds differ") as caught:
        check_against_reference(wrong.BuggyDriver("lr-float32"), case)
    assert "0.10000000149011612" in str(caught.value)
    declared = wrong.BuggyDriver("lr-float32")
    declared.lr_dtype = "float32"
    check_against_reference(declared, case)
    with pytest.raises(ConformanceError, match="as float32 roundings"):
        check_against_reference(wrong.BuggyDriver("lr-bfloat16"), case)


def test_an_optimizer_state_zeroed_by_the_average_is_caught_at_that_epoch() -> None:
    with pytest.raises(ConformanceError, match=r"epoch 4: the optimizer state changed across end_epoch\(\) "
                                               r"\(apply_average=True\)"):
        check_against_reference(wrong.BuggyDriver("momentum-zeroed"), quarter_turns())
    check_against_reference(wrong.BuggyDriver(None), quarter_turns())


def test_a_tail_dropped_past_65536_elements_is_caught_on_a_large_tensor() -> None:
    n = 2**16 + 1
    u = np.repeat([1.0, 0.0, 0.5], [30000, 30000, n - 60000])
    v = np.repeat([0.0, 2.0, -1.0], [30000, 30000, n - 60000])
    steps = tuple((s,) for s in [(u, v, -u, -v)[t % 4] for t in range(6)])
    case = Case(AutoDropConfig(lrs=(0.1,), drop_delay=2), Layout(((n,),), ("float64",), (0,)), (np.zeros(n),), steps)
    with pytest.raises(ConformanceError, match="reductions outside the rounding bound"):
        check_against_reference(wrong.BuggyDriver("tail-dropped"), case)
    check_against_reference(wrong.BuggyDriver(None), case)
    assert "np.repeat(" in case.to_source() and len(case.to_source()) < 5000


def test_a_nan_retry_that_raises_is_reported_as_the_retry() -> None:
    case = _with(quarter_turns(), nan_at=3)
    with pytest.raises(ConformanceError, match="the clean retry of epoch 3, after the NaN parameters were rejected"):
        check_nan_step(wrong.BuggyDriver("nan-adopts-snapshot"), case)


def test_a_definedness_mismatch_prints_both_values() -> None:
    case = _with(quarter_turns(), steps=((np.zeros(4),), *quarter_turns().steps[1:]))
    with pytest.raises(ConformanceError) as caught:
        check_against_reference(wrong.BuggyDriver("undefined-as-90"), case)
    first = str(caught.value).splitlines()[0]
    assert "angle is undefined (None) in the reference but 90.0 degrees in the adapter" in first
    assert "None degrees" not in str(caught.value)


def test_an_averaging_failure_prints_the_tolerance() -> None:
    u, v = np.array([1.0, 0.0, 0.5, 0.0]), np.array([0.0, 2.0, 0.0, -1.0])
    steps = tuple(((u, v, -u, -v)[t % 4] * (1 + t / 3),) for t in range(10))  # growing quarter turns
    case = Case(AutoDropConfig(lrs=(0.1,), drop_delay=6, threshold=1.0), Layout(((4,),), ("float16",), (0,)),
                (np.array([1.0, -3.0, 7.0, 0.25]),), steps)
    with pytest.raises(ConformanceError, match="epoch 8: averaged parameters differ beyond tolerance") as caught:
        check_against_reference(wrong.BuggyDriver("average-in-param-dtype"), case)
    assert "> tolerance" in str(caught.value)
    check_against_reference(wrong.BuggyDriver(None), case)


class _SilentRaiseLate(wrong.BuggyRun):
    """No reductions shown (so the band applies), and an exception at epoch 6."""

    def reductions(self) -> tuple[float, float] | None:
        return None

    def end_epoch(self) -> Any:
        if self.state.epoch == 5:
            raise RuntimeError("lost the buffers")
        return super().end_epoch()


class _SilentRaiseLateDriver(wrong.BuggyDriver):
    def start(self, values: Any, layout: Any, config: AutoDropConfig) -> wrong.BuggyRun:
        return _SilentRaiseLate(values, layout.dtypes, config, None)


def test_an_exception_after_the_band_stop_is_still_caught() -> None:
    base = quarter_turns()
    # delta(3) is 0, theta 1e-13: within the band of theta, so the decision comparison stops at epoch 3
    case = _with(base, config=AutoDropConfig(lrs=(0.1,), threshold=1e-13, max_threshold=1e-13))
    verdict = check_against_reference(wrong.BuggyDriver(None), _with(case, steps=case.steps[:5]))
    assert verdict.stopped_at is None  # reductions bit for bit like the reference: no stop
    silent = check_against_reference(_SilentRaiseLateDriver(None), _with(case, steps=case.steps[:5]))
    assert (silent.stopped_at, silent.stop_reason) == (3, "delta within band of theta")
    with pytest.raises(ConformanceError, match="epoch 6: the adapter raised RuntimeError"):
        check_against_reference(_SilentRaiseLateDriver(None), case)
