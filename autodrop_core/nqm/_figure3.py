"""Figure 3: plain SGD on the NQM with its lr driven by the AutoDrop core, and the baselines.

Each iteration is one AutoDrop epoch: the run's two step reductions go to
:class:`autodrop_core.Controller` (preview, apply, commit), and the decision is applied the
way the numpy reference adapter applies it (running average W, parameters replaced by W,
new lr). Either trigger rule runs: ``trigger="paper"`` with the paper's NQM settings
(a 20-iteration angle window cleared at each drop) or ``trigger="calibrated"`` with the
core's defaults. Nothing here re-implements a decision rule (the noise-free diagnostic
calls the core's own flatness test on closed-form angles); plotting lives in ``_plots.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from autodrop_core import AutoDropConfig, Controller
from autodrop_core._calibrated import MAX_HISTORY, flatness_test
from autodrop_core.nqm._model import NoisyQuadratic
from autodrop_core.nqm._oracles import expected_dynamics, stationary_second_moment
from autodrop_core.nqm._simulate import NQMRun, _progress_bar, simulate, step_angles

__all__ = ["FIGURE3_SETTINGS", "PAPER_NQM_SETTINGS", "AutoDropRun", "autodrop_run", "figure3_lrs"]

#: The paper's Figure 3 schedule, shared by both triggers: lr 0.06, floor 0.001, drop factor 0.5.
FIGURE3_SETTINGS: dict[str, Any] = {"lrs": (0.06,), "min_lr": 0.001, "drop_factor": 0.5}
#: What the paper's NQM experiment adds for its own trigger (the calibrated trigger refuses them).
PAPER_NQM_SETTINGS: dict[str, Any] = {"angle_window": 20, "reset_on_drop": True}

FloatArray = npt.NDArray[np.float64]


def figure3_lrs(lr: float = 0.06, min_lr: float = 0.001, drop_factor: float = 0.5) -> list[float]:
    """The lrs an AutoDrop run can visit: lr, lr rho, lr rho^2, ... down to the floor (applied as the core does)."""
    values = [lr]
    while True:
        nxt = min(values[-1], max(min_lr, drop_factor * values[-1]))
        if nxt >= values[-1]:
            return values
        values.append(nxt)


@dataclass
class AutoDropRun:
    """One AutoDrop run on the NQM and the constant-lr runs it is judged against.

    Attributes:
        loss: excess loss after each iteration (after an applied average), (T + 1,).
        lr: lr used at each iteration, (T,).
        angle: per-iteration step angle (NaN where undefined), (T,).
        smoothed: the controller's smoothed angle m(t) (NaN where undefined), (T,).
        drops: (iteration, new lr) of every drop.
        triggers: iterations where the trigger fired.
        exhausted: iterations where a drop was due but the lr was already at its floor.
        baseline_lrs: the constant lrs compared with.
        baseline_loss: their excess loss, (len(baseline_lrs), T + 1).
        dot, sq_norm: the reductions fed to the controller at each iteration, (T,).
        delta: the controller's delta(t) (NaN where undefined), (T,).
        threshold: paper: theta in force at each iteration; calibrated: the measured noise
            sigma (NaN while the test has too few angles), (T,).
        expected_delta: the same delta computed from the closed-form expected angle under
            the run's own lr schedule, with the run's own window, resets and drops, (T,):
            the trend without the noise (paper: change of the window mean; calibrated: the
            fitted change over the same test window). Exact for ``drop_delay=1``; with
            averaging the closed form ignores the jumps to the averages.
        expected_smoothed: the closed-form counterpart of ``smoothed`` (paper: window mean;
            calibrated: the test window's mean).
        expected_fires: whether the trigger's test passes on the closed-form angles (with the
            run's own theta or sigma), (T,).
        trigger: the trigger rule, "paper" or "calibrated".
        floor_stationary_loss: plain SGD's stationary expected loss at the lowest lr reached.
        tail: iterations at the end over which the final loss is averaged.
    """

    loss: FloatArray
    lr: FloatArray
    angle: FloatArray
    smoothed: FloatArray
    drops: list[tuple[int, float]] = field(default_factory=list)
    triggers: list[int] = field(default_factory=list)
    exhausted: list[int] = field(default_factory=list)
    baseline_lrs: list[float] = field(default_factory=list)
    baseline_loss: FloatArray | None = None
    dot: FloatArray | None = None
    sq_norm: FloatArray | None = None
    delta: FloatArray | None = None
    threshold: FloatArray | None = None
    expected_delta: FloatArray | None = None
    expected_smoothed: FloatArray | None = None
    expected_fires: npt.NDArray[np.bool_] | None = None
    trigger: str = "paper"
    floor_stationary_loss: float = float("nan")
    tail: int = 100

    def noise_triggers(self) -> list[int]:
        """Triggers at which the trigger's test failed on the noise-free (closed-form) angles.

        There the saturation signal came from the noise of the angle, not from saturation
        (paper: the noise-free change was still >= theta; calibrated: the noise-free fitted
        change exceeded the measured sigma, or the noise-free window had fallen).
        """
        assert self.expected_fires is not None
        return [t for t in self.triggers if not self.expected_fires[t - 1]]

    def final_loss(self) -> float:
        """Mean excess loss over the last ``tail`` iterations."""
        return float(self.loss[-self.tail :].mean())

    def baseline_final_losses(self) -> dict[float, float]:
        """Mean excess loss over the last ``tail`` iterations of each constant lr."""
        assert self.baseline_loss is not None
        return {lr: float(row[-self.tail :].mean()) for lr, row in zip(self.baseline_lrs, self.baseline_loss)}

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary: drops, final losses and the best constant lr."""
        finals = self.baseline_final_losses()
        best = min(finals, key=finals.__getitem__)
        assert self.threshold is not None and self.expected_delta is not None and self.delta is not None
        drops = []
        for it, lr in self.drops:
            trigger = max(t for t in self.triggers if t <= it)
            drops.append(
                {
                    "iteration": it,
                    "lr": lr,
                    "trigger": trigger,
                    "threshold": float(self.threshold[trigger - 1]),  # paper: theta; calibrated: sigma
                    "delta": float(self.delta[trigger - 1]),
                    "expected_delta": float(self.expected_delta[trigger - 1]),
                }
            )
        return {
            "trigger": self.trigger,
            "iterations": int(self.lr.size),
            "drops": drops,
            "triggers": len(self.triggers),
            "triggers_on_noise": len(self.noise_triggers()),
            "exhausted": len(self.exhausted),
            "final_loss": self.final_loss(),
            "final_loss_window": self.tail,
            "constant_lr_final_loss": {str(lr): v for lr, v in finals.items()},
            "best_constant_lr": best,
            "best_constant_final_loss": finals[best],
            "ratio_to_best_constant": self.final_loss() / finals[best],
            "stationary_loss_at_last_lr": self.floor_stationary_loss,
        }


def autodrop_run(
    model: NoisyQuadratic,
    iters: int = 3000,
    seed: int = 0,
    start: float = 1.0,
    progress: bool = False,
    **config: Any,
) -> AutoDropRun:
    """Figure 3: plain SGD whose lr is driven by :class:`autodrop_core.Controller`, one iteration per epoch.

    Args:
        model: the NQM.
        iters: iterations.
        seed: the noise seed (the constant-lr baselines share it).
        start: x(0) for every coordinate.
        progress: show progress bars on stderr.
        **config: :class:`AutoDropConfig` fields. Defaults: the paper's Figure 3 schedule
            (lr 0.06, floor 0.001, drop factor 0.5); with ``trigger="paper"`` (the default)
            also ``angle_window=20`` and ``reset_on_drop=True``, with ``trigger="calibrated"``
            the core's defaults for everything else.
    """
    settings: dict[str, Any] = dict(FIGURE3_SETTINGS)
    if config.get("trigger", "paper") == "paper":
        settings.update(PAPER_NQM_SETTINGS)
    settings.update(config)
    controller = Controller(AutoDropConfig(**settings))
    run = NQMRun(model, controller.lrs[0], seed, start=start)
    loss = np.empty(iters + 1)
    loss[0] = float(model.loss(run.x))
    lrs, smoothed = np.empty(iters), np.full(iters, np.nan)
    dots, sqs = np.empty(iters), np.empty(iters)
    deltas, thetas = np.full(iters, np.nan), np.full(iters, np.nan)
    averaged_at = np.zeros(iters, dtype=bool)
    average: FloatArray | None = None
    result = AutoDropRun(loss, lrs, np.empty(0), smoothed, trigger=controller.config.trigger)
    bar = _bar(iters, progress)
    for t in range(iters):
        lrs[t] = run.lr
        step_loss, dot, sq_norm = run.step(1)
        dots[t], sqs[t] = dot[0], sq_norm[0]
        decision, state = controller.preview(float(dot[0]), float(sq_norm[0]))
        if decision.average_weight is not None:  # the numpy adapter's running average W
            if average is None or decision.average_weight == 1.0:
                average = run.x.copy()
            else:
                average += decision.average_weight * (run.x - average)
        if decision.apply_average:
            assert average is not None
            run.set_x(average)
            average = None
            averaged_at[t] = True
        run.lr = decision.lrs[0]
        controller.commit(decision, state)
        loss[t + 1] = float(model.loss(run.x)) if decision.apply_average else float(step_loss[0])
        if decision.smoothed_angle is not None:
            smoothed[t] = decision.smoothed_angle
        if decision.delta is not None:
            deltas[t] = decision.delta
        if decision.threshold is not None:
            thetas[t] = decision.threshold
        if decision.triggered:
            result.triggers.append(t + 1)
        if decision.dropped:
            result.drops.append((t + 1, decision.lrs[0]))
        if decision.exhausted:
            result.exhausted.append(t + 1)
        if t % 100 == 99:
            bar.update(100)
    bar.close()
    result.angle = step_angles(dots, sqs)
    result.delta, result.threshold = deltas, thetas
    result.dot, result.sq_norm = dots, sqs
    cfg = controller.config
    expected_angle = expected_dynamics(model, lrs, iters, start).ratio_angle()
    if cfg.trigger == "paper":
        _noise_free_paper(result, expected_angle, averaged_at, cfg.angle_window, cfg.reset_on_drop)
    else:
        _noise_free_calibrated(result, expected_angle, averaged_at)
    result.floor_stationary_loss = float(0.5 * model.curvature @ stationary_second_moment(model, float(lrs[-1])))
    result.baseline_lrs = figure3_lrs(cfg.lrs[0], cfg.floors[0], cfg.drop_factor)
    base = simulate(model, result.baseline_lrs, [seed], iters, start=start, progress=progress)
    result.baseline_loss = base.loss[:, 0, :]
    return result


def _noise_free_paper(
    result: AutoDropRun, expected_angle: FloatArray, averaged_at: npt.NDArray[np.bool_], window: int, reset: bool
) -> None:
    """The paper's test on the closed-form angles, with the run's own H: the same window, resets and theta."""
    iters = expected_angle.size
    smoothed, delta = np.full(iters, np.nan), np.full(iters, np.nan)
    assert result.threshold is not None
    defined = np.isfinite(result.angle) & np.isfinite(expected_angle)
    history: list[float] = []
    previous = math.nan
    for t in range(iters):
        if defined[t]:
            history.append(float(expected_angle[t]))
            del history[:-window]
        else:
            history.clear()
        current = _left_sum(history) / window if len(history) == window else math.nan
        smoothed[t] = current
        delta[t] = abs(current - previous)  # NaN unless both are defined
        previous = current
        if averaged_at[t] and reset:
            history.clear()
            previous = math.nan
    result.expected_smoothed, result.expected_delta = smoothed, delta
    with np.errstate(invalid="ignore"):
        result.expected_fires = np.isfinite(delta) & (delta < result.threshold)


def _left_sum(values: list[float]) -> float:
    total = 0.0
    for v in values:  # oldest to newest, as the core adds them
        total += v
    return total


def _noise_free_calibrated(result: AutoDropRun, expected_angle: FloatArray, averaged_at: npt.NDArray[np.bool_]) -> None:
    """The calibrated test on the closed-form angles of the same epochs as the run's own R.

    R holds the defined angles since the last applied average (at most MAX_HISTORY); the
    noise-free test uses the closed-form angle at those epochs and the run's measured sigma.
    """
    iters = expected_angle.size
    smoothed, delta = np.full(iters, np.nan), np.full(iters, np.nan)
    fires = np.zeros(iters, dtype=bool)
    assert result.threshold is not None
    defined = np.isfinite(result.angle) & np.isfinite(expected_angle)
    epochs: list[int] = []
    for t in range(iters):
        if defined[t]:
            epochs.append(t)
            del epochs[:-MAX_HISTORY]
        test = flatness_test(tuple(float(expected_angle[k]) for k in epochs))
        if test is not None:
            smoothed[t], delta[t] = test.window_mean, test.change
            fires[t] = bool(test.change <= result.threshold[t] and test.rise >= 0.0)
        if averaged_at[t]:
            epochs.clear()
    result.expected_smoothed, result.expected_delta, result.expected_fires = smoothed, delta, fires


def _bar(total: int, enabled: bool) -> Any:
    return _progress_bar(total, enabled, "autodrop on nqm")
