"""Judge an adapter's trace against the reference's, epoch by epoch, and explain failures.

The comparison follows the spec's "Conformance" section: identical booleans, epochs and
lrs, and angles, deltas, reductions and averaged parameters within bounds computed from
the two runs (``_bounds``). It stops at the first epoch whose reference delta lies
within that rounding band of theta (or where the runs may disagree on whether an angle
is defined), because from there on both runs may legitimately part; it reports that
stop and the band instead of hiding it. It must never loosen a bound to make a case pass.
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

__all__ = ["ConformanceError", "Verdict", "compare_resumed", "compare_to_reference"]

_FIELDS_EXACT = ("epoch", "threshold", "triggered", "average_weight", "apply_average", "dropped", "exhausted", "lrs")
#: Relative tolerance on the lrs the framework holds (a float32 hyper-parameter is allowed).
LR_STORAGE_TOLERANCE = 2.0**-23


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


def compare_to_reference(name: str, case: Case, ref: Trace, got: Trace, accumulation: str) -> Verdict:
    """Check ``got`` against ``ref``; raise :class:`ConformanceError` at the first disagreement.

    Args:
        name: the adapter's name (for the report and the replay snippet).
        case: the trajectory both traces ran.
        ref: the numpy reference's trace.
        got: the adapter's trace.
        accumulation: the adapter's declared accumulation dtype.
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
    for t, r in enumerate(ref.epochs, start=1):
        if got.nan_accepted is not None and got.nan_accepted[0] == t:
            raise report.fail(t, "NaN parameters were accepted; the reference rejects them",
                              f"decision on NaN parameters: {_fmt(got.nan_accepted[1])}")
        if t > len(got.epochs):
            raise report.fail(t, f"the adapter raised {got.error!r}; the reference did not")
        g = got.epochs[t - 1]
        if r.nan_error is not None:
            _check_nan(report, t, r, g)
        # Error bounds of this epoch's reductions, from the two runs' parameters.
        step = [x - h for x, h in zip(r.before, hat_ref)]
        err = step_errors(g.before, r.before, hat_got, hat_ref, dtypes)
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
        hw = angle_halfwidth(dot_r, sq_r, prev_sq, dot_err, sq_err, prev_sq_err, rd.angle)
        if hw is None:
            return Verdict(t, t, "definedness", band, drops)
        if rd.angle is None:
            window.clear()
        else:
            window.append(hw)
        mean_hw = sum(window) / case.config.angle_window if len(window) == case.config.angle_window else None
        delta_band = None if mean_hw is None or prev_mean_hw is None else mean_hw + prev_mean_hw
        for field, width in (("angle", hw), ("smoothed_angle", mean_hw), ("delta", delta_band)):
            a, b = getattr(rd, field), getattr(gd, field)
            if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > (width or 0.0)):
                raise report.fail(t, f"{field} differs beyond its rounding band ({width!r} degrees)")
        pending_before = rd.average_weight is not None and not rd.triggered
        if delta_band is not None and rd.delta is not None:
            band = max(band, delta_band)
            if not pending_before and abs(rd.delta - rd.threshold) <= delta_band:
                return Verdict(t, t, "delta within band of theta", band, drops)
        for field in _FIELDS_EXACT:
            if getattr(rd, field) != getattr(gd, field):
                raise report.fail(t, f"decision field {field!r} differs")
        if len(g.lrs) != len(rd.lrs) or any(
            abs(a - b) > LR_STORAGE_TOLERANCE * b for a, b in zip(g.lrs, rd.lrs)
        ):
            raise report.fail(t, "the lrs the framework holds differ from the decision's",
                              f"framework lrs: {g.lrs}")
        # Parameters: untouched unless an average is applied, then within tolerance.
        if rd.average_weight == 1.0:
            magnitude, discrepancy = zeros, zeros
        if rd.average_weight is not None:
            magnitude = [np.maximum(m, np.abs(x)) for m, x in zip(magnitude, r.before)]
            discrepancy = [np.maximum(d, np.abs(a - b)) for d, a, b in zip(discrepancy, g.before, r.before)]
        if not rd.apply_average:
            if not _same(g.after, g.before):
                raise report.fail(t, "the adapter changed the parameters at an epoch without averaging")
        else:
            tol = average_tolerance(r.after, magnitude, discrepancy, dtypes, case.config.drop_delay)
            for i, (a, b, tl) in enumerate(zip(g.after, r.after, tol)):
                if np.any(np.abs(a - b) > tl):
                    worst = float(np.max(np.abs(a - b) - tl))
                    raise report.fail(t, f"averaged parameters of tensor {i} differ beyond tolerance",
                                      f"exceeded by up to {worst:.3g}; adapter {a.tolist()} vs reference {b.tolist()}")
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


def _check_nan(report: _Report, t: int, ref: Epoch, got: Epoch) -> None:
    """The NaN detour: same error class and epoch as the reference, parameters and lrs untouched."""
    err, ref_err = got.nan_error, ref.nan_error
    if not isinstance(err, InvalidReductionError):
        raise report.fail(t, f"NaN parameters raised {err!r}; expected InvalidReductionError as the reference")
    assert isinstance(ref_err, InvalidReductionError)
    if err.epoch != ref_err.epoch:
        raise report.fail(t, f"NaN rejected for epoch {err.epoch}; the reference names epoch {ref_err.epoch}")
    if got.nan_after is None or not _same(got.nan_after, poison(got.before)):
        raise report.fail(t, "rejecting NaN parameters changed the parameters")
    if got.nan_lrs != got.lrs_before:
        raise report.fail(t, f"rejecting NaN changed the lrs from {got.lrs_before} to {got.nan_lrs}")


def compare_resumed(name: str, case: Case, plain: Trace, resumed: Trace) -> None:
    """Check that a run saved and restored after ``case.save_at`` epochs matches the uninterrupted one exactly."""
    report = _Report(name, case, plain, resumed)
    if resumed.restored_lrs is not None and resumed.restored_lrs[0] != resumed.restored_lrs[1]:
        before, after = resumed.restored_lrs
        raise report.fail(case.save_at, f"restoring changed the lrs from {before} to {after}")
    for t, (p, q) in enumerate(zip(plain.epochs, resumed.epochs), start=1):
        if p.decision != q.decision:
            raise report.fail(t, f"the run restored after epoch {case.save_at} decides differently "
                                 "(above: 'reference' is the uninterrupted run of the same adapter)")
        if not _same(p.after, q.after) or p.lrs != q.lrs:
            raise report.fail(t, f"the run restored after epoch {case.save_at} holds different parameters or lrs")
    if len(plain.epochs) != len(resumed.epochs):
        raise report.fail(min(len(plain.epochs), len(resumed.epochs)) + 1,
                          f"one run stopped early: uninterrupted {plain.error!r}, restored {resumed.error!r}")
