"""Drive one run (adapter or reference) through a case and record everything it does.

The trace holds, per epoch, the parameters handed in, the parameters read back, the
decision, the reductions the run reports and the lrs the framework holds, plus the
outcome of the NaN detour and of the checkpoint round trip when asked for, and the
optimizer state (when the run shows it) around each ``end_epoch()``. Recording is all it
does: judging the trace is ``_compare``'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autodrop_conformance._case import Case
from autodrop_conformance._protocol import AdapterRun, Array, optimizer_state
from autodrop_core import Decision

__all__ = ["Epoch", "Trace", "poison", "replay"]

Start = Callable[[list[Array]], AdapterRun]
Restore = Callable[[list[Array], Any], AdapterRun]


@dataclass
class Epoch:
    """What one run did at one epoch."""

    before: list[Array]
    after: list[Array]
    decision: Decision
    reductions: tuple[float, float] | None
    lrs: tuple[float, ...]
    nan_error: BaseException | None = None
    nan_after: list[Array] | None = None
    nan_lrs: tuple[float, ...] | None = None
    lrs_before: tuple[float, ...] | None = None
    opt_before: list[Array] | None = None
    opt_after: list[Array] | None = None


@dataclass
class Trace:
    """A whole run: its starting parameters, its epochs, and an error that cut it short."""

    start: list[Array]
    epochs: list[Epoch] = field(default_factory=list)
    error: BaseException | None = None
    error_epoch: int | None = None
    restored_lrs: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    nan_accepted: tuple[int, Decision, list[Array]] | None = None
    retry_error: bool = False


def poison(values: list[Array]) -> list[Array]:
    """A copy of ``values`` with the first element of the first nonempty tensor set to NaN."""
    out = [v.copy() for v in values]
    for v in out:
        if v.size:
            v.reshape(-1)[0] = np.nan
            break
    return out


def _swap(run: AdapterRun, restore: Restore, trace: Trace) -> AdapterRun:
    lrs = run.lrs
    saved = run.save()
    run = restore(run.get_params(), saved)
    trace.restored_lrs = (lrs, run.lrs)
    return run


def replay(
    start: Start, restore: Restore | None, case: Case, *, with_nan: bool = False, substeps: bool = False
) -> Trace:
    """Run ``case`` through a run built by ``start``.

    Args:
        start: builds the run over the case's initial values.
        restore: when given, the run is saved after ``case.save_at`` epochs (and
            ``case.save_step`` training steps) and replaced by
            ``restore(current parameters, saved state)``.
        case: the trajectory.
        with_nan: at epoch ``case.nan_at`` first hand in NaN-poisoned parameters, record
            how the run refuses them, then hand in the clean ones.
        substeps: hand in the ``case.substeps - 1`` intermediate positions of each epoch
            before x(t) (the optimizer steps of an epoch); forced on when saving mid-epoch.
    """
    run = start([a.copy() for a in case.initial])
    trace = Trace(start=run.get_params())
    params = trace.start
    parts = case.substeps if substeps else 1
    for t in range(1, case.epochs + 2):
        mid = restore is not None and t - 1 == case.save_at and case.save_step > 0
        if restore is not None and t - 1 == case.save_at and not mid:
            run = _swap(run, restore, trace)
        if t > case.epochs:
            break
        for j in range(1, parts):
            run.set_params(case.partway(params, t, j))
            if mid and j == case.save_step:
                assert restore is not None
                run = _swap(run, restore, trace)
        x = case.advance(params, t)
        run.set_params(x)
        record: dict[str, Any] = {"opt_before": optimizer_state(run)}
        if with_nan and t == case.nan_at:
            bad = poison(x)
            run.set_params(bad)
            record["lrs_before"] = run.lrs
            try:
                accepted = run.end_epoch()
            except Exception as err:  # judged by the comparison, whatever it is
                record["nan_error"] = err
            record["nan_after"] = run.get_params()
            record["nan_lrs"] = run.lrs
            if "nan_error" not in record:
                trace.nan_accepted = (t, accepted, record["nan_after"])
                return trace
            run.set_params(x)
            record["opt_before"] = optimizer_state(run)
        try:
            decision = run.end_epoch()
        except Exception as err:
            trace.error, trace.error_epoch = err, t
            trace.retry_error = "nan_error" in record
            return trace
        after = run.get_params()
        record["opt_after"] = optimizer_state(run)
        trace.epochs.append(Epoch(x, after, decision, run.reductions(), run.lrs, **record))
        params = after
    return trace

