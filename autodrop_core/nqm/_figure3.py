"""Figure 3: plain SGD on the NQM with its lr driven by the AutoDrop core, and the baselines.

Each iteration is one AutoDrop epoch: the run's two step reductions go to
:class:`autodrop_core.Controller` (preview, apply, commit), and the decision is applied the
way the numpy reference adapter applies it (running average W, parameters replaced by W,
new lr). Nothing here re-implements a decision rule; plotting lives in ``_plots.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from autodrop_core import AutoDropConfig, Controller
from autodrop_core.nqm._model import NoisyQuadratic
from autodrop_core.nqm._oracles import expected_dynamics, stationary_second_moment
from autodrop_core.nqm._simulate import NQMRun, _progress_bar, simulate, step_angles, window_means

__all__ = ["AutoDropRun", "autodrop_run", "figure3_lrs"]

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
        threshold: theta in force at each iteration, (T,).
        expected_delta: the same delta computed from the closed-form expected angle under
            the run's own lr schedule, (T,): the trend without the noise. Exact for
            ``drop_delay=1``; with averaging it ignores the jumps to the averages.
        expected_smoothed: the closed-form expected angle's window mean behind ``expected_delta``.
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
    floor_stationary_loss: float = float("nan")
    tail: int = 100

    def noise_triggers(self) -> list[int]:
        """Triggers at which the noise-free trend of the smoothed angle was still >= theta.

        There the saturation signal came from the noise of the angle, not from saturation.
        """
        assert self.expected_delta is not None and self.threshold is not None
        return [t for t in self.triggers if not self.expected_delta[t - 1] < self.threshold[t - 1]]

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
                    "threshold": float(self.threshold[trigger - 1]),
                    "delta": float(self.delta[trigger - 1]),
                    "expected_delta": float(self.expected_delta[trigger - 1]),
                }
            )
        return {
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
        **config: :class:`AutoDropConfig` fields; defaults are the paper's Figure 3 (lr 0.06,
            floor 0.001, drop factor 0.5) with ``angle_window=20`` and ``reset_on_drop=True``.
    """
    settings: dict[str, Any] = {"lrs": (0.06,), "min_lr": 0.001, "drop_factor": 0.5, "angle_window": 20}
    settings["reset_on_drop"] = True
    settings.update(config)
    controller = Controller(AutoDropConfig(**settings))
    run = NQMRun(model, controller.lrs[0], seed, start=start)
    loss = np.empty(iters + 1)
    loss[0] = float(model.loss(run.x))
    lrs, smoothed = np.empty(iters), np.full(iters, np.nan)
    dots, sqs = np.empty(iters), np.empty(iters)
    deltas, thetas = np.full(iters, np.nan), np.empty(iters)
    average: FloatArray | None = None
    result = AutoDropRun(loss, lrs, np.empty(0), smoothed)
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
        run.lr = decision.lrs[0]
        controller.commit(decision, state)
        loss[t + 1] = float(model.loss(run.x)) if decision.apply_average else float(step_loss[0])
        if decision.smoothed_angle is not None:
            smoothed[t] = decision.smoothed_angle
        if decision.delta is not None:
            deltas[t] = decision.delta
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
    expected = window_means(expected_dynamics(model, lrs, iters, start).ratio_angle(), cfg.angle_window)
    result.expected_smoothed = expected
    result.floor_stationary_loss = float(0.5 * model.curvature @ stationary_second_moment(model, float(lrs[-1])))
    result.expected_delta = np.abs(np.diff(expected, prepend=np.nan))
    result.baseline_lrs = figure3_lrs(cfg.lrs[0], cfg.floors[0], cfg.drop_factor)
    base = simulate(model, result.baseline_lrs, [seed], iters, start=start, progress=progress)
    result.baseline_loss = base.loss[:, 0, :]
    return result


def _bar(total: int, enabled: bool) -> Any:
    return _progress_bar(total, enabled, "autodrop on nqm")
