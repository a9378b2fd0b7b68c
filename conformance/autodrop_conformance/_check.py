"""The three conformance checks as plain functions, and the statistics they gather.

Each check replays one case through the adapter (via its driver) and through the numpy
reference, then hands both traces to ``_compare``. The functions raise
:class:`ConformanceError` with a readable report; they never skip a disagreement. The
statistics (share of cases with a drop, early stops, rounding band, and the share of
each rare configuration the strategies aim for) are collected here and printed by the
pytest plugin, and reported per example with Hypothesis ``event()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autodrop_conformance._case import Case
from autodrop_conformance._compare import Verdict, compare_resumed, compare_to_reference
from autodrop_conformance._protocol import DTYPES, UNIT_ROUNDOFF, Array, Driver, lr_dtype
from autodrop_conformance._reference import ReferenceRun
from autodrop_conformance._replay import Trace, replay

__all__ = [
    "FEATURES",
    "STATS",
    "Stats",
    "case_features",
    "check_against_reference",
    "check_case",
    "check_checkpoint",
    "check_nan_step",
]

#: The rare configurations and outcomes whose share the closing summary reports.
FEATURES = (
    "large tensor",
    "exhausted epoch",
    "pinned group",
    "floor binds",
    "reset_on_drop with a drop",
    "angle window > 1",
    "calibrated trigger",
    "mid-epoch checkpoint",
)


def case_features(case: Case, ref: Trace) -> list[str]:
    """Which of :data:`FEATURES` this case (and the reference's run of it) shows."""
    cfg = case.config
    decisions = [e.decision for e in ref.epochs]
    found = []
    if max((math.prod(s) for s in case.layout.shapes), default=0) >= 2**16:
        found.append("large tensor")
    if any(d.exhausted for d in decisions):
        found.append("exhausted epoch")
    if any(f >= lr for f, lr in zip(cfg.floors, cfg.lrs)):
        found.append("pinned group")
    prev = cfg.lrs
    for d in decisions:
        if d.apply_average and any(
            cfg.drop_factor * old < floor < old and new == floor for old, new, floor in zip(prev, d.lrs, cfg.floors)
        ):
            found.append("floor binds")
            break
        prev = d.lrs
    if cfg.reset_on_drop and any(d.apply_average for d in decisions):
        found.append("reset_on_drop with a drop")
    if cfg.angle_window > 1:
        found.append("angle window > 1")
    if getattr(cfg, "trigger", "paper") == "calibrated":
        found.append("calibrated trigger")
    if case.save_step:
        found.append("mid-epoch checkpoint")
    return found


@dataclass
class Stats:
    """Counts over every passing reference comparison of this process, per adapter name.

    Bands and early stops are also kept per narrowest parameter dtype of the case, since
    the rounding band of a bfloat16 case is rightly wider than a float64 one.
    """

    examples: dict[str, int] = field(default_factory=dict)
    with_drop: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, dict[str, int]] = field(default_factory=dict)
    bands: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    features: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, name: str, verdict: Verdict, dtype: str, features: tuple[str, ...] | list[str] = ()) -> None:
        """Count one comparison of adapter ``name`` whose narrowest dtype is ``dtype``."""
        self.examples[name] = self.examples.get(name, 0) + 1
        counts = self.features.setdefault(name, {})
        for feature in features:
            counts[feature] = counts.get(feature, 0) + 1
        self.with_drop[name] = self.with_drop.get(name, 0) + int(verdict.drops > 0)
        stopped = self.stopped.setdefault(name, {})
        stopped[dtype] = stopped.get(dtype, 0) + int(verdict.stopped_at is not None)
        self.bands.setdefault(name, {}).setdefault(dtype, []).append(verdict.band)

    def lines(self) -> list[str]:
        """One summary line per adapter, then one per dtype."""
        out = []
        for name, n in sorted(self.examples.items()):
            stops = sum(self.stopped[name].values())
            out.append(
                f"{name}: {n} reference comparisons, {self.with_drop[name] / n:.0%} reached a drop, "
                f"{stops / n:.1%} stopped early near theta"
            )
            for dtype in DTYPES:
                bands = sorted(self.bands[name].get(dtype, []))
                if bands:
                    out.append(
                        f"    narrowest dtype {dtype}: {len(bands)} cases, rounding band of delta median "
                        f"{bands[len(bands) // 2]:.2g} deg, max {bands[-1]:.2g} deg; "
                        f"{self.stopped[name][dtype]} stopped early"
                    )
            counts = self.features.get(name, {})
            out.append("    rare configurations: " + ", ".join(
                f"{feature} {counts.get(feature, 0) / n:.0%}" for feature in FEATURES
            ))
        return out


#: The statistics of this process (printed at the end of a pytest run).
STATS = Stats()


def _decade(x: float) -> str:
    return "0" if x == 0 else f"1e{math.floor(math.log10(x))}"


def _event(label: str) -> None:
    try:
        from hypothesis import event
        from hypothesis.control import currently_in_test_context
    except ImportError:  # pragma: no cover - hypothesis is part of the extra
        return
    if currently_in_test_context():
        event(label)


def _starter(driver: Driver, case: Case) -> Any:
    return lambda values: driver.start(values, case.layout, case.config)


def _reference_trace(case: Case, with_nan: bool) -> Trace:
    def start(values: list[Array]) -> ReferenceRun:
        return ReferenceRun(values, case.layout, case.config)

    return replay(start, None, case, with_nan=with_nan)


def _record(name: str, verdict: Verdict, case: Case, ref: Trace) -> Verdict:
    narrowest = max(case.layout.dtypes, key=lambda d: UNIT_ROUNDOFF[d])
    features = case_features(case, ref)
    STATS.add(name, verdict, narrowest, features)
    for feature in features:
        _event(f"rare configuration: {feature}")
    _event(f"reached a drop: {verdict.drops > 0}")
    _event(f"rounding band of delta (deg): {_decade(verdict.band)}")
    if verdict.stopped_at is not None:
        _event(f"comparison stopped early: {verdict.stop_reason}")
    return verdict


def check_against_reference(driver: Driver, case: Case) -> Verdict:
    """Decisions, reductions, lrs and averaged parameters agree with the reference."""
    ref = _reference_trace(case, with_nan=False)
    got = replay(_starter(driver, case), None, case)
    verdict = compare_to_reference(driver.name, case, ref, got, driver.accumulation, lr_dtype(driver))
    return _record(driver.name, verdict, case, ref)


def check_nan_step(driver: Driver, case: Case) -> Verdict:
    """NaN parameters at ``case.nan_at`` are refused like the reference does, state intact."""
    ref = _reference_trace(case, with_nan=True)
    got = replay(_starter(driver, case), None, case, with_nan=True)
    return compare_to_reference(driver.name, case, ref, got, driver.accumulation, lr_dtype(driver))


def check_checkpoint(driver: Driver, case: Case) -> None:
    """Saving and restoring after ``case.save_at`` epochs (and ``case.save_step`` training steps
    into the next) reproduces the uninterrupted run exactly."""

    def restore(values: list[Array], saved: Any) -> Any:
        return driver.restore(values, case.layout, case.config, saved)

    plain = replay(_starter(driver, case), None, case, substeps=True)
    resumed = replay(_starter(driver, case), restore, case, substeps=True)
    compare_resumed(driver.name, case, plain, resumed)


def check_case(driver: Driver, case: Case) -> None:
    """All three checks on one case (what a failure report's snippet calls)."""
    check_against_reference(driver, case)
    check_nan_step(driver, case)
    check_checkpoint(driver, case)
