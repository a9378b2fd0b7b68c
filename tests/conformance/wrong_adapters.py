"""Deliberately wrong adapters that the conformance suite must catch (test material).

``LateDropDriver`` drops one epoch late (it averages one vector too many);
``FlatFloat32Driver`` reduces the steps as one flat float32 vector, the classic shortcut
that loses the float64 accumulation the spec asks for. Both otherwise behave like the
numpy reference, so only the named defect can make them fail.

``BuggyDriver(bug)`` is a small numpy adapter written apart from the reference, with a
one-rule variant of the core transition (``_transition``) and a toy optimizer whose
momentum buffers it exposes; ``BUGS`` names each single bug it can carry, one per rule
of the spec (``BuggyDriver(None)`` carries none and must pass). ``WRONG_DRIVERS`` is the
whole set the tests run the suite against. Nothing here may be used outside the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np
from autodrop_numpy._conformance import NumpyDriver, NumpyRun

from autodrop_core import (
    AutoDropConfig,
    AutoDropState,
    Controller,
    Decision,
    InvalidReductionError,
    advance,
    initial_state,
)
from autodrop_core._calibrated import MAX_HISTORY


class LateDropDriver(NumpyDriver):
    """The numpy adapter with drop_delay one larger than configured."""

    name = "late-drop"

    def start(self, values: Sequence[Any], layout: Any, config: AutoDropConfig) -> NumpyRun:
        return NumpyRun(values, layout.dtypes, replace(config, drop_delay=config.drop_delay + 1))

    def restore(self, values: Sequence[Any], layout: Any, config: AutoDropConfig, saved: Any) -> NumpyRun:
        return super().restore(values, layout, replace(config, drop_delay=config.drop_delay + 1), saved)


class FlatFloat32Run:
    """Like the reference, except that dot and sq_norm are taken over one flat float32 vector."""

    def __init__(self, values: Sequence[Any], config: AutoDropConfig, report: bool) -> None:
        self.arrays = [np.array(v, dtype=np.float64) for v in values]
        self.controller = Controller(config)
        self.snapshot = [a.copy() for a in self.arrays]
        self.prev = [np.zeros_like(a) for a in self.arrays]
        self.average: list[Any] | None = None
        self.report = report
        self.last: tuple[float, float] | None = None

    def set_params(self, values: Sequence[Any]) -> None:
        for a, v in zip(self.arrays, values):
            a[...] = v

    def get_params(self) -> list[Any]:
        return [a.copy() for a in self.arrays]

    def end_epoch(self) -> Decision:
        steps = [a - s for a, s in zip(self.arrays, self.snapshot)]
        flat = np.concatenate([s.ravel() for s in steps]).astype(np.float32)
        prev = np.concatenate([s.ravel() for s in self.prev]).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            dot, sq_norm = float(np.dot(flat, prev)), float(np.dot(flat, flat))
        decision, state = self.controller.preview(dot, sq_norm)
        if decision.average_weight is not None:
            if self.average is None or decision.average_weight == 1.0:
                self.average = [a.copy() for a in self.arrays]
            else:
                for w, a in zip(self.average, self.arrays):
                    w += decision.average_weight * (a - w)
        if decision.apply_average and self.average is not None:
            for a, w in zip(self.arrays, self.average):
                a[...] = w
            self.average = None
        self.snapshot = [a.copy() for a in self.arrays]
        self.prev = steps
        self.controller.commit(decision, state)
        self.last = (dot, sq_norm)
        return decision

    @property
    def lrs(self) -> tuple[float, ...]:
        return self.controller.lrs

    def save(self) -> Any:
        return (self.controller.to_dict(), [s.copy() for s in self.snapshot], [p.copy() for p in self.prev],
                None if self.average is None else [w.copy() for w in self.average])

    def load(self, saved: Any) -> None:
        core, snapshot, prev, average = saved
        self.controller = Controller.from_dict(core)
        self.snapshot, self.prev = [s.copy() for s in snapshot], [p.copy() for p in prev]
        self.average = None if average is None else [w.copy() for w in average]

    def reductions(self) -> tuple[float, float] | None:
        return self.last if self.report else None


class FlatFloat32Driver:
    """Drives :class:`FlatFloat32Run` over float64 parameters; ``report`` says whether it shows its reductions."""

    dtypes = ("float64",)
    accumulation = "float64"  # what it claims; what it does is float32
    max_examples = None

    def __init__(self, report: bool) -> None:
        self.report = report
        self.name = "flat-float32" + ("" if report else "-silent")

    def start(self, values: Sequence[Any], layout: Any, config: AutoDropConfig) -> FlatFloat32Run:
        return FlatFloat32Run(values, config, self.report)

    def restore(self, values: Sequence[Any], layout: Any, config: AutoDropConfig, saved: Any) -> FlatFloat32Run:
        run = FlatFloat32Run(values, config, self.report)
        run.load(saved)
        return run


class ForgetfulDriver(NumpyDriver):
    """Restoring ignores the saved state and starts afresh (a checkpoint that loses the core)."""

    name = "forgetful"

    def restore(self, values: Sequence[Any], layout: Any, config: AutoDropConfig, saved: Any) -> NumpyRun:
        return NumpyRun(values, layout.dtypes, config)


class _WrongErrorRun(NumpyRun):
    def end_epoch(self) -> Decision:
        if not all(np.all(np.isfinite(a)) for a in self.arrays):
            raise ValueError("parameters are not finite")
        return super().end_epoch()


class WrongErrorDriver(NumpyDriver):
    """Refuses NaN parameters, but with a plain ValueError that names no epoch."""

    name = "wrong-error"

    def start(self, values: Sequence[Any], layout: Any, config: AutoDropConfig) -> NumpyRun:
        return _WrongErrorRun(values, layout.dtypes, config)


# --- one bug per spec rule ------------------------------------------------------------

#: Each bug ``BuggyDriver`` can carry, and the spec rule it breaks.
BUGS: dict[str, str] = {
    "trigger-le": "the trigger fires at delta == theta (the spec: strictly below)",
    "no-latch": "a new saturation signal while a drop is pending restarts the average",
    "uniform-weight": "the running average weighs every vector 1/k instead of 2/(k+1)",
    "drop-early": "the drop comes after n_d - 1 vectors",
    "floor-ignored": "an lr may drop below its floor",
    "floor-raises-lr": "a floor above the lr raises it (the spec: never raised)",
    "theta-uncapped": "theta grows past max_threshold",
    "theta-frozen": "theta is not divided by rho at a drop",
    "reset-ignored": "reset_on_drop does not clear the angle history",
    "reset-keeps-mean": "reset_on_drop clears the history but keeps m(t) for the next delta",
    "partial-window": "the smoothed angle is the mean of fewer than w angles",
    "undefined-kept-in-window": "an undefined angle does not empty the history",
    "exhausted-never-said": "a due drop that lowers no lr is not flagged exhausted",
    "exhausted-freezes-theta": "an exhausted drop skips the theta update",
    "undefined-as-90": "a zero-length step gets angle 90 (the paper's epsilon) instead of undefined",
    "epsilon-in-denominator": "the paper's 1e-8 added to the angle's denominator",
    "snapshot-before-average": "x̂ is taken from x(t) before the average is written",
    "nan-adopts-snapshot": "rejecting NaN parameters still adopts them as x̂ (state not kept)",
    "nan-cleans-params": "rejecting NaN parameters replaces the NaN in the parameters by 0",
    "checkpoint-retakes-snapshot": "restoring takes x̂ from the parameters instead of the checkpoint",
    "checkpoint-loses-average": "the checkpoint does not hold the running average",
    "momentum-zeroed": "applying the average zeroes the optimizer's momentum",
    "tail-dropped": "reductions skip the elements past 65,536 of a tensor",
    "lr-float32": "the framework holds lrs rounded to float32, the driver declares float64",
    "lr-bfloat16": "the framework holds lrs rounded to bfloat16, the driver declares float32",
    "step-in-param-dtype": "steps of float16 tensors are formed in float16",
    "average-in-param-dtype": "the running average of float16 tensors is held in float16",
    "float16-sums-in-float32": "the reductions of float16 tensors are accumulated in float32",
}

_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
_TAIL = 65536


def _window_mean(angles: tuple[float, ...], window: int, partial: bool) -> float | None:
    if not angles or (len(angles) < window and not partial):
        return None
    total = 0.0
    for angle in angles:
        total += angle
    return total / (len(angles) if partial and len(angles) < window else window)


def _angle(dot: float, sq_norm: float, prev_sq_norm: float, bug: str | None) -> float | None:
    denom = math.sqrt(sq_norm) * math.sqrt(prev_sq_norm)
    if bug == "epsilon-in-denominator":
        denom += 1e-8
    if not (denom > 0 and math.isfinite(denom)):
        return 90.0 if bug == "undefined-as-90" and math.isfinite(denom) else None
    return math.degrees(math.acos(min(1.0, max(-1.0, dot / denom))))


def _transition(
    config: AutoDropConfig, state: AutoDropState, dot: float, sq_norm: float, bug: str | None
) -> tuple[Decision, AutoDropState]:
    """The spec's "one epoch, in order", written apart from the core, with one rule broken by ``bug``."""
    # The real transition validates the input and supplies every field this one does not
    # know (so the core may grow fields); only the paper's trigger is re-written here.
    template, template_state = advance(config, state, dot, sq_norm)
    paper = getattr(config, "trigger", "paper") == "paper"
    epoch = state.epoch + 1
    theta, pending = state.theta, state.pending
    if paper:
        angle = _angle(dot, sq_norm, state.prev_sq_norm, bug)
        if angle is None:
            angles: tuple[float, ...] = state.angles if bug == "undefined-kept-in-window" else ()
        else:
            angles = (*state.angles, angle)[-config.angle_window:]
        smoothed = _window_mean(angles, config.angle_window, bug == "partial-window")
        previous = state.prev_smoothed_angle
        delta = None if smoothed is None or previous is None else abs(smoothed - previous)
        fires = delta is not None and (delta <= theta if bug == "trigger-le" else delta < theta)
        triggered = fires and (pending == 0 or bug == "no-latch")
        if triggered and bug == "no-latch":
            pending = 0
    else:
        # The calibrated test itself is the core's; what follows it (latch, weights, drop,
        # floors) is written apart here too, so those bugs show under either trigger.
        angle, smoothed, delta, angles = template.angle, template.smoothed_angle, template.delta, ()
        triggered = template.triggered
    weight = None
    if triggered or pending > 0:
        pending += 1
        weight = 1.0 / pending if bug == "uniform-weight" else 2.0 / (pending + 1)
    due = config.drop_delay - 1 if bug == "drop-early" and config.drop_delay > 1 else config.drop_delay
    lrs = state.lrs
    apply_average = dropped = exhausted = False
    remembered = smoothed
    if pending == due:
        apply_average = True
        if bug == "floor-ignored":
            lrs = tuple(config.drop_factor * lr for lr in state.lrs)
        elif bug == "floor-raises-lr":
            lrs = tuple(max(f, config.drop_factor * lr) for lr, f in zip(state.lrs, config.floors))
        else:
            lrs = tuple(min(lr, max(f, config.drop_factor * lr)) for lr, f in zip(state.lrs, config.floors))
        dropped = any(new < old for new, old in zip(lrs, state.lrs))
        exhausted = not dropped and bug != "exhausted-never-said"
        if not paper:
            pass
        elif bug == "theta-uncapped":
            theta = theta / config.drop_factor
        elif bug == "theta-frozen" or (bug == "exhausted-freezes-theta" and not dropped):
            pass
        else:
            theta = min(config.max_threshold, theta / config.drop_factor)
        pending = 0
        if config.reset_on_drop and bug != "reset-ignored":
            angles = ()
            remembered = smoothed if bug == "reset-keeps-mean" else None
    if paper:
        recent = template_state.recent
    elif apply_average:
        recent = ()
    else:  # the core may have dropped (and forgotten) where this one did not
        recent = state.recent if angle is None else (*state.recent, angle)[-MAX_HISTORY:]
    decision = replace(template, epoch=epoch, angle=angle, smoothed_angle=smoothed, delta=delta,
                       threshold=state.theta if paper else template.threshold, triggered=triggered,
                       average_weight=weight, apply_average=apply_average, dropped=dropped, exhausted=exhausted,
                       lrs=lrs)
    return decision, replace(template_state, epoch=epoch, lrs=lrs, theta=theta, prev_sq_norm=sq_norm,
                             angles=angles, prev_smoothed_angle=remembered if paper else None, pending=pending,
                             recent=recent)


def _round_bfloat16(x: float) -> float:
    bits = int(np.array(x, dtype=np.float32).view(np.uint32))
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return float(np.array(bits, dtype=np.uint32).view(np.float32))


class BuggyRun:
    """numpy arrays, a toy momentum optimizer and AutoDrop written apart, with at most one bug."""

    def __init__(self, values: Sequence[Any], dtypes: Sequence[str], config: AutoDropConfig, bug: str | None) -> None:
        self.bug, self.config = bug, config
        self.arrays = [np.array(v, dtype=_DTYPES[d]) for v, d in zip(values, dtypes, strict=True)]
        self.state = initial_state(config)
        self.snapshot = [a.copy() for a in self.arrays]
        self.prev = [np.zeros(a.shape) for a in self.arrays]
        self.average: list[Any] | None = None
        self.momentum = [np.zeros(a.shape) for a in self.arrays]
        self.held = self._hold(config.lrs)
        self.last: tuple[float, float] | None = None

    def _hold(self, lrs: tuple[float, ...]) -> tuple[float, ...]:
        if self.bug == "lr-float32":
            return tuple(float(np.float32(lr)) for lr in lrs)
        if self.bug == "lr-bfloat16":
            return tuple(_round_bfloat16(lr) for lr in lrs)
        return lrs

    def set_params(self, values: Sequence[Any]) -> None:
        for a, v, m in zip(self.arrays, values, self.momentum, strict=True):
            a[...] = v
            m *= 0.9  # a training step of a momentum optimizer with a unit gradient
            m += 1.0

    def get_params(self) -> list[Any]:
        return [np.array(a, dtype=np.float64) for a in self.arrays]

    def optimizer_state(self) -> list[Any]:
        return [m.copy() for m in self.momentum]

    def _steps(self) -> list[Any]:
        if self.bug == "step-in-param-dtype":
            return [np.asarray(a - s, dtype=np.float64) for a, s in zip(self.arrays, self.snapshot)]
        return [a.astype(np.float64) - s.astype(np.float64) for a, s in zip(self.arrays, self.snapshot)]

    def end_epoch(self) -> Decision:
        steps = self._steps()
        dot = sq_norm = 0.0
        for s, p, a in zip(steps, self.prev, self.arrays):
            flat, prev = s.ravel(), p.ravel()
            if self.bug == "tail-dropped":
                flat, prev = flat[:_TAIL], prev[:_TAIL]
            if self.bug == "float16-sums-in-float32" and a.dtype == np.float16:
                flat32, prev32 = flat.astype(np.float32), prev.astype(np.float32)
                dot += float(np.dot(flat32, prev32))
                sq_norm += float(np.dot(flat32, flat32))
                continue
            dot += float(np.dot(flat, prev))
            sq_norm += float(np.dot(flat, flat))
        try:
            decision, state = _transition(self.config, self.state, dot, sq_norm, self.bug)
        except InvalidReductionError:
            if self.bug == "nan-adopts-snapshot":
                self.snapshot = [a.copy() for a in self.arrays]
            if self.bug == "nan-cleans-params":
                for a in self.arrays:
                    np.nan_to_num(a, copy=False, nan=0.0)
            raise
        if decision.average_weight is not None:
            low = self.bug == "average-in-param-dtype"
            if self.average is None or decision.average_weight == 1.0:
                self.average = [a.copy() if low else a.astype(np.float64) for a in self.arrays]
            else:
                for w, a in zip(self.average, self.arrays):
                    w += (decision.average_weight * (a.astype(w.dtype) - w)).astype(w.dtype)
        if self.bug == "snapshot-before-average":
            self.snapshot = [a.copy() for a in self.arrays]
        if decision.apply_average:
            assert self.average is not None
            for a, w in zip(self.arrays, self.average):
                a[...] = w.astype(a.dtype)
            self.average = None
            if self.bug == "momentum-zeroed":
                for m in self.momentum:
                    m[...] = 0.0
        if self.bug != "snapshot-before-average":
            self.snapshot = [a.copy() for a in self.arrays]
        self.prev, self.state, self.last = steps, state, (dot, sq_norm)
        self.held = self._hold(decision.lrs)
        return decision

    @property
    def lrs(self) -> tuple[float, ...]:
        return self.held

    def save(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "snapshot": [s.copy() for s in self.snapshot],
            "prev": [p.copy() for p in self.prev],
            "average": None if self.average is None or self.bug == "checkpoint-loses-average"
            else [w.copy() for w in self.average],
        }

    def load(self, saved: dict[str, Any]) -> None:
        self.state = saved["state"]
        self.held = self._hold(self.state.lrs)
        self.snapshot = ([a.copy() for a in self.arrays] if self.bug == "checkpoint-retakes-snapshot"
                         else [s.copy() for s in saved["snapshot"]])
        self.prev = [p.copy() for p in saved["prev"]]
        if saved["average"] is not None:
            self.average = [w.copy() for w in saved["average"]]
        elif self.state.pending > 0:  # a checkpoint without W: start it afresh from x now
            self.average = [a.astype(np.float64) for a in self.arrays]

    def reductions(self) -> tuple[float, float] | None:
        return self.last


class BuggyDriver:
    """Drives :class:`BuggyRun` carrying ``bug`` (None: no bug; it must conform)."""

    dtypes = ("float64", "float32", "float16")
    accumulation = "float64"
    max_examples = None
    size_thresholds = (_TAIL + 1,)

    def __init__(self, bug: str | None) -> None:
        if bug is not None and bug not in BUGS:
            raise ValueError(f"bug={bug!r} is not known: expected one of {sorted(BUGS)}")
        self.bug = bug
        self.name = bug or "written-apart"
        self.lr_dtype = "float32" if bug == "lr-bfloat16" else "float64"

    def start(self, values: Sequence[Any], layout: Any, config: AutoDropConfig) -> BuggyRun:
        return BuggyRun(values, layout.dtypes, config, self.bug)

    def restore(self, values: Sequence[Any], layout: Any, config: AutoDropConfig, saved: Any) -> BuggyRun:
        run = BuggyRun(values, layout.dtypes, config, self.bug)
        run.load(saved)
        return run


def _wrong_set() -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {bug: (lambda b=bug: BuggyDriver(b)) for bug in BUGS}
    out["late-drop"] = LateDropDriver
    out["flat-float32"] = lambda: FlatFloat32Driver(report=True)
    out["flat-float32-silent"] = lambda: FlatFloat32Driver(report=False)
    out["forgetful"] = ForgetfulDriver
    out["wrong-error"] = WrongErrorDriver
    return out


#: Every wrong adapter of the project's set, by name: each must fail the suite.
WRONG_DRIVERS: dict[str, Callable[[], Any]] = _wrong_set()

#: Field names of the configuration (the lead's ``trigger`` appears here once merged).
CONFIG_FIELDS = tuple(f.name for f in fields(AutoDropConfig))
