"""Judge an adapter's trace against the reference's, epoch by epoch, and explain failures.

The comparison follows the spec's "Conformance" section: identical booleans, epochs and
lrs, and angles, deltas, reductions and averaged parameters within bounds computed from
the two runs (``_bounds``). It stops at the first epoch whose reference delta lies
within that rounding band of theta (or where the runs may disagree on whether an angle
is defined), because from there on both runs may legitimately part, unless the
adapter reported every reduction so far bit for bit as the reference did (the core then
saw the same numbers, so nothing may differ); it reports that
stop and the band instead of hiding it; what does not depend on the decision sequence
(exceptions, the NaN detour and its retry, untouched parameters, held lrs, optimizer
state) is still judged after the stop. It must never loosen a bound to make a case pass.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from autodrop_conformance._bounds import angle_halfwidth, average_tolerance, reduction_errors, step_errors
from autodrop_conformance._case import Case
from autodrop_conformance._protocol import Array
from autodrop_conformance._replay import Epoch, Trace, poison
from autodrop_core import Decision, InvalidReductionError

__all__ = ["ConformanceError", "Verdict", "compare_resumed", "compare_to_reference", "describe_differences",
           "expected_lrs"]

_FIELDS_EXACT = ("epoch", "threshold", "triggered", "average_weight", "apply_average", "dropped", "exhausted", "lrs")
#: Elements listed per tensor when parameters differ (the worst ones).
_SHOWN = 4


class ConformanceError(AssertionError):
    """An adapter disagrees with the reference (or with itself across a checkpoint)."""


@dataclass
class Verdict:
    """The outcome of one comparison that passed, for statistics.

    Attributes:
        epochs: epochs compared.
        stopped_at: the epoch where the comparison stopped early, else None.
        stop_reason: why it stopped (``"delta within band of theta"`` or ``"definedness"``).
        band: the largest rounding band of delta met (degrees), 0.0 if none was defined.
        drops: drops in the reference trace up to where the comparison went.
    """

    epochs: int
    stopped_at: int | None
    stop_reason: str | None
    band: float
    drops: int


def _same(a: list[Array], b: list[Array]) -> bool:
    return all(x.shape == y.shape and np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b, strict=True))


def _fmt(decision: Decision | None) -> str:
    return "none" if decision is None else repr(decision.to_dict())


def expected_lrs(decided: tuple[float, ...], lr_dtype: str) -> tuple[float, ...]:
    """The lrs a framework must hold for a decision: exactly its lrs, or their float32 roundings."""
    if lr_dtype == "float32":
        return tuple(float(np.float32(lr)) for lr in decided)
    return tuple(decided)


def _held_lrs_differ(held: tuple[float, ...], decided: tuple[float, ...], lr_dtype: str) -> str | None:
    want = expected_lrs(decided, lr_dtype)
    if len(held) == len(want) and all(a == b for a, b in zip(held, want)):
        return None
    rule = "exactly" if lr_dtype == "float64" else "as float32 roundings (the driver's lr_dtype), exactly"
    return f"framework lrs {list(held)}; expected {rule} {list(want)}"


def describe_differences(
    a: list[Array], b: list[Array], name_a: str, name_b: str, tol: list[Array] | None = None
) -> str:
    """Which tensors differ (or exceed ``tol``), with their worst elements' values."""
    out = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.shape != y.shape:
            out.append(f"tensor {i}: shape {x.shape} vs {y.shape}")
            continue
        with np.errstate(invalid="ignore"):
            gap = np.abs(x - y)
        gap = np.where(np.isnan(x) & np.isnan(y), 0.0, np.where(np.isnan(gap), np.inf, gap))
        limit = None if tol is None else tol[i]
        excess = gap if limit is None else gap - limit
        bad = np.flatnonzero(excess.ravel() > 0)
        if bad.size == 0:
            continue
        worst = bad[np.argsort(-excess.ravel()[bad], kind="stable")][:_SHOWN]
        parts = []
        for k in worst:
            index = np.unravel_index(int(k), x.shape) if x.ndim else ()
            at = ", ".join(str(int(j)) for j in index)
            item = f"[{at}] {name_a} {float(x.ravel()[k])!r} vs {name_b} {float(y.ravel()[k])!r}"
            if limit is not None:
                item += f" (|diff| {gap.ravel()[k]:.3g} > tolerance {limit.ravel()[k]:.3g})"
            parts.append(item)
        out.append(f"tensor {i} ({bad.size} of {x.size} elements differ): " + "; ".join(parts))
    return "\n    ".join(out) if out else "no element differs"


def _same_state(a: list[Array] | None, b: list[Array] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and _same(a, b)


class _Report:
    def __init__(self, name: str, case: Case, ref: Trace, got: Trace) -> None:
        self.name, self.case, self.ref, self.got = name, case, ref, got

    def fail(self, epoch: int, what: str, extra: str = "") -> ConformanceError:
        i = epoch - 1
        r = self.ref.epochs[i] if 0 <= i < len(self.ref.epochs) else None
        g = self.got.epochs[i] if 0 <= i < len(self.got.epochs) else None
        cfg = self.case.config
        lines = [
            f"adapter {self.name!r} does not conform at epoch {epoch}: {what}",
            f"  reference decision: {_fmt(r.decision if r else None)}",
            f"  adapter decision:   {_fmt(g.decision if g else None)}",
            f"  reference reductions (dot, sq_norm): {r.reductions if r else None}",
            f"  adapter reductions (dot, sq_norm):   {g.reductions if g else None}",
        ]
        if extra:
            lines.append("  " + extra)
        lines += [
            f"  case: motif={self.case.motif!r}, {self.case.epochs} epochs, shapes={self.case.layout.shapes}, "
            f"dtypes={self.case.layout.dtypes}, groups={self.case.layout.groups}",
            f"        config={cfg.to_dict()}",
            "Replay this case with:",
            self.case.to_source(f'load_driver("{self.name}")'),
        ]
        return ConformanceError("\n".join(lines))


def compare_to_reference(
    name: str, case: Case, ref: Trace, got: Trace, accumulation: str, lr_dtype: str = "float64"
) -> Verdict:
    """Check ``got`` against ``ref``; raise :class:`ConformanceError` at the first disagreement.

    Args:
        name: the adapter's name (for the report and the replay snippet).
        case: the trajectory both traces ran.
        ref: the numpy reference's trace.
        got: the adapter's trace.
        accumulation: the adapter's declared accumulation dtype.
        lr_dtype: the driver's declared lr storage (``"float64"``: held lrs equal the
            decision's exactly; ``"float32"``: they equal its float32 roundings exactly).
    """
    report = _Report(name, case, ref, got)
    dtypes = case.layout.dtypes
    if ref.error is not None:
        raise RuntimeError(f"the reference itself failed at epoch {ref.error_epoch}: {ref.error!r}") from ref.error
    if not _same(got.start, ref.start):
        raise report.fail(0, "the parameters read back after construction differ from those handed in")
    zeros = [np.zeros(a.shape) for a in ref.start]
    hat_got, hat_ref, prev_step, prev_err = got.start, ref.start, zeros, zeros
    prev_sq = 0.0
    prev_sq_err = 0.0
    window: deque[float] = deque(maxlen=case.config.angle_window)
    prev_mean_hw: float | None = None
    magnitude = discrepancy = zeros
    band, drops = 0.0, 0
    exact = True
    for t, r in enumerate(ref.epochs, start=1):
        if got.nan_accepted is not None and got.nan_accepted[0] == t:
            raise report.fail(t, "NaN parameters were accepted; the reference rejects them",
                              f"decision on NaN parameters: {_fmt(got.nan_accepted[1])}")
        if t > len(got.epochs):
            raise _adapter_error(report, t, got)
        g = got.epochs[t - 1]
        if r.nan_error is not None:
            _check_nan(report, t, r, g)
        _check_own(report, t, g, lr_dtype)
        # Error bounds of this epoch's reductions, from the two runs' parameters.
        step = [x - h for x, h in zip(r.before, hat_ref)]
        err = step_errors(g.before, r.before, hat_got, hat_ref, accumulation)
        dot_err, sq_err = reduction_errors(step, prev_step, err, prev_err, accumulation)
        assert r.reductions is not None
        dot_r, sq_r = r.reductions
        if g.reductions is not None:
            dot_g, sq_g = g.reductions
            if not (abs(dot_g - dot_r) <= dot_err and abs(sq_g - sq_r) <= sq_err):
                raise report.fail(t, "reductions outside the rounding bound",
                                  f"allowed |error|: dot <= {dot_err:.3g}, sq_norm <= {sq_err:.3g}; "
                                  f"found {abs(dot_g - dot_r):.3g}, {abs(sq_g - sq_r):.3g}")
        rd, gd = r.decision, g.decision
        # Reductions reported bit for bit like the reference's so far: the core then sees
        # exactly what it sees in the reference, so nothing may differ and nothing may part.
        exact = exact and g.reductions is not None and tuple(g.reductions) == tuple(r.reductions)
        hw = angle_halfwidth(dot_r, sq_r, prev_sq, dot_err, sq_err, prev_sq_err, rd.angle)
        if hw is None and not exact:
            _judge_rest(report, t, lr_dtype)
            return Verdict(t, t, "definedness", band, drops)
        if rd.angle is None:
            window.clear()
        else:
            window.append(hw or 0.0)
        mean_hw = sum(window) / case.config.angle_window if len(window) == case.config.angle_window else None
        delta_band = None if mean_hw is None or prev_mean_hw is None else mean_hw + prev_mean_hw
        for field, width in (("angle", hw), ("smoothed_angle", mean_hw), ("delta", delta_band)):
            width = 0.0 if exact else width
            a, b = getattr(rd, field), getattr(gd, field)
            if (a is None) != (b is None):
                raise report.fail(t, f"{field} is {_defined(a)} in the reference but {_defined(b)} in the adapter")
            if a is not None and b is not None and abs(a - b) > (width or 0.0):
                raise report.fail(t, f"{field} differs beyond its rounding band: |{b!r} - {a!r}| = {abs(a - b):.3g} "
                                     f"> {width or 0.0:.3g} degrees")
        pending_before = rd.average_weight is not None and not rd.triggered
        if delta_band is not None and rd.delta is not None:
            band = max(band, delta_band)
            if not exact and not pending_before and abs(rd.delta - rd.threshold) <= delta_band:
                _judge_rest(report, t, lr_dtype)
                return Verdict(t, t, "delta within band of theta", band, drops)
        for field in _FIELDS_EXACT:
            if getattr(rd, field) != getattr(gd, field):
                raise report.fail(t, f"decision field {field!r} differs: reference {getattr(rd, field)!r}, "
                                     f"adapter {getattr(gd, field)!r}")
        # Parameters: untouched unless an average is applied, then within tolerance.
        if rd.average_weight == 1.0:
            magnitude, discrepancy = zeros, zeros
        if rd.average_weight is not None:
            magnitude = [np.maximum(m, np.abs(x)) for m, x in zip(magnitude, r.before)]
            discrepancy = [np.maximum(d, np.abs(a - b)) for d, a, b in zip(discrepancy, g.before, r.before)]
        if rd.apply_average:
            tol = average_tolerance(r.after, magnitude, discrepancy, dtypes, case.config.drop_delay, accumulation)
            for a, b, tl in zip(g.after, r.after, tol):
                if np.any(~(np.abs(a - b) <= tl)):
                    raise report.fail(t, "averaged parameters differ beyond tolerance",
                                      describe_differences(g.after, r.after, "adapter", "reference", tol))
        drops += int(rd.dropped)
        if rd.apply_average and case.config.reset_on_drop:
            window.clear()
            mean_hw = None
        prev_mean_hw = mean_hw
        hat_got, hat_ref, prev_step, prev_err = g.after, r.after, step, err
        prev_sq, prev_sq_err = sq_r, sq_err
    if len(got.epochs) > len(ref.epochs) or got.error is not None:
        raise report.fail(len(ref.epochs) + 1, f"the adapter ran differently after the last epoch: {got.error!r}")
    return Verdict(len(ref.epochs), None, None, band, drops)


def _defined(value: float | None) -> str:
    return "undefined (None)" if value is None else f"{value!r} degrees"


def _adapter_error(report: _Report, t: int, got: Trace) -> ConformanceError:
    if got.retry_error:
        return report.fail(t, f"the clean retry of epoch {t}, after the NaN parameters were rejected, raised "
                              f"{got.error!r}; the reference continued")
    return report.fail(t, f"the adapter raised {got.error!r}; the reference did not")


def _check_own(report: _Report, t: int, g: Epoch, lr_dtype: str) -> None:
    """What an epoch must satisfy whatever the decisions: untouched parameters, held lrs, optimizer state."""
    if not g.decision.apply_average and not _same(g.after, g.before):
        raise report.fail(t, "the adapter changed the parameters at an epoch without averaging",
                          describe_differences(g.after, g.before, "after", "before"))
    held = _held_lrs_differ(g.lrs, g.decision.lrs, lr_dtype)
    if held is not None:
        raise report.fail(t, "the lrs the framework holds differ from the decision's", held)
    if not _same_state(g.opt_before, g.opt_after):
        assert g.opt_before is not None and g.opt_after is not None
        detail = ("it changed its number of buffers" if len(g.opt_before) != len(g.opt_after)
                  else describe_differences(g.opt_after, g.opt_before, "after", "before"))
        raise report.fail(t, f"the optimizer state changed across end_epoch() (apply_average="
                             f"{g.decision.apply_average}); the spec keeps it as it is", detail)


def _judge_rest(report: _Report, stop: int, lr_dtype: str) -> None:
    """After an early stop: judge what does not depend on the two runs' decisions agreeing."""
    ref, got = report.ref, report.got
    for t in range(stop + 1, len(ref.epochs) + 1):
        if got.nan_accepted is not None and got.nan_accepted[0] == t:
            raise report.fail(t, "NaN parameters were accepted; the reference rejects them (judged after the "
                                 f"comparison stopped at epoch {stop})",
                              f"decision on NaN parameters: {_fmt(got.nan_accepted[1])}")
        if t > len(got.epochs):
            raise _adapter_error(report, t, got)
        r, g = ref.epochs[t - 1], got.epochs[t - 1]
        if r.nan_error is not None:
            _check_nan(report, t, r, g)
        _check_own(report, t, g, lr_dtype)
    if len(got.epochs) > len(ref.epochs) or got.error is not None:
        raise report.fail(len(ref.epochs) + 1, f"the adapter ran differently after the last epoch: {got.error!r}")


def _check_nan(report: _Report, t: int, ref: Epoch, got: Epoch) -> None:
    """The NaN detour: same error class and epoch as the reference, parameters and lrs untouched."""
    err, ref_err = got.nan_error, ref.nan_error
    if not isinstance(err, InvalidReductionError):
        raise report.fail(t, f"NaN parameters raised {err!r}; expected InvalidReductionError as the reference")
    assert isinstance(ref_err, InvalidReductionError)
    if err.epoch != ref_err.epoch:
        raise report.fail(t, f"NaN rejected for epoch {err.epoch}; the reference names epoch {ref_err.epoch}")
    if got.nan_after is None or not _same(got.nan_after, poison(got.before)):
        detail = "" if got.nan_after is None else describe_differences(
            got.nan_after, poison(got.before), "after", "handed in")
        raise report.fail(t, "rejecting NaN parameters changed the parameters", detail)
    if got.nan_lrs != got.lrs_before:
        raise report.fail(t, f"rejecting NaN changed the lrs from {got.lrs_before} to {got.nan_lrs}")


def compare_resumed(name: str, case: Case, plain: Trace, resumed: Trace) -> None:
    """Check that a run saved and restored after ``case.save_at`` epochs matches the uninterrupted one exactly."""
    report = _Report(name, case, plain, resumed)
    where = (f"after epoch {case.save_at}" if not case.save_step
             else f"after training step {case.save_step} of {case.substeps} in epoch {case.save_at + 1}")
    if resumed.restored_lrs is not None and resumed.restored_lrs[0] != resumed.restored_lrs[1]:
        before, after = resumed.restored_lrs
        raise report.fail(case.save_at, f"restoring {where} changed the lrs from {before} to {after}")
    for t, (p, q) in enumerate(zip(plain.epochs, resumed.epochs), start=1):
        if p.decision != q.decision:
            fields = [f for f in p.decision.to_dict() if getattr(p.decision, f) != getattr(q.decision, f)]
            raise report.fail(t, f"the run saved and restored {where} decides differently in {fields} "
                                 "(above: 'reference' is the uninterrupted run of the same adapter)")
        if p.reductions != q.reductions:
            raise report.fail(t, f"the run saved and restored {where} reports different reductions: "
                                 f"uninterrupted {p.reductions}, restored {q.reductions}")
        if p.lrs != q.lrs:
            raise report.fail(t, f"the run saved and restored {where} holds different lrs: "
                                 f"uninterrupted {list(p.lrs)}, restored {list(q.lrs)}")
        if not _same(p.after, q.after):
            raise report.fail(t, f"the run saved and restored {where} holds different parameters",
                              describe_differences(q.after, p.after, "restored", "uninterrupted"))
    if len(plain.epochs) != len(resumed.epochs):
        raise report.fail(min(len(plain.epochs), len(resumed.epochs)) + 1,
                          f"one run stopped early: uninterrupted {plain.error!r}, restored {resumed.error!r}")
