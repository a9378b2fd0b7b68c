"""matplotlib renderings of Figures 1 and 3 (headless: the Agg canvas, written straight to a file).

The functions take the data that ``_experiments.py`` returns and draw it; they must not
simulate, and must not touch pyplot's global state (no ``plt.figure``, no ``plt.show``),
so that they are safe to call from tests and from other programs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autodrop_core.nqm._figure3 import AutoDropRun
from autodrop_core.nqm._model import NoisyQuadratic
from autodrop_core.nqm._oracles import expected_dynamics, theorem1_angle
from autodrop_core.nqm._simulate import Trajectories, window_means

__all__ = ["plot_figure1", "plot_figure3"]

_WINDOW = 20
_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple", "tab:brown", "tab:gray")


def _save(fig: Figure, out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=90)
    return path


def _style(ax: Axes, ylabel: str) -> None:
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_figure1(model: NoisyQuadratic, traj: Trajectories, out: str | Path, start: float = 1.0) -> Path:
    """Loss and 20-iteration mean angle of constant-lr SGD (seed 0), with the closed forms.

    Solid: one simulated run; dashed: the closed-form expected loss; dotted: Theorem 1's
    saturation angle at each lr.
    """
    fig = Figure(figsize=(10, 4))
    loss_ax, angle_ax = fig.subplots(1, 2)
    iters = traj.dot.shape[-1]
    steps = np.arange(iters + 1)
    angles = window_means(traj.angles(), _WINDOW)
    for i, lr in enumerate(traj.lrs):
        colour = _COLOURS[i % len(_COLOURS)]
        loss_ax.plot(steps, traj.loss[i, 0], color=colour, lw=1, label=f"lr {lr:g}")
        loss_ax.plot(steps, expected_dynamics(model, float(lr), iters, start).loss, color="k", lw=0.7, ls="--")
        angle_ax.plot(steps[1:], angles[i, 0], color=colour, lw=1, label=f"lr {lr:g}")
        angle_ax.axhline(theorem1_angle(model, float(lr)), color=colour, lw=0.8, ls=":")
    loss_ax.set_yscale("log")
    _style(loss_ax, "excess loss 1/2 sum a x^2  (dashed: closed form)")
    _style(angle_ax, f"angle between steps, mean of {_WINDOW} (deg)")
    angle_ax.set_ylim(0, 130)
    angle_ax.legend(loc="lower right", fontsize=8, title="dotted: Theorem 1", title_fontsize=8)
    loss_ax.legend(fontsize=8)
    fig.suptitle(f"NQM {model.name}, SGD at constant lr (paper's Figure 1)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


_TRIGGER_COLOURS = {"paper": "k", "calibrated": "tab:blue"}


def plot_figure3(panels: Sequence[tuple[NoisyQuadratic, Sequence[AutoDropRun]]], out: str | Path) -> Path:
    """One row per model: loss, smoothed angle and lr of each AutoDrop run, against constant lrs.

    The runs of one row share the model, the seed and the iterations (so the constant-lr
    baselines of the first run stand for all of them).
    """
    if not panels or any(not runs for _, runs in panels):
        raise ValueError("panels is empty or holds a model without runs: expected (model, [run, ...]) pairs")
    fig = Figure(figsize=(13, 3.6 * len(panels)))
    axes = fig.subplots(len(panels), 3, squeeze=False)
    for (model, runs), (loss_ax, angle_ax, lr_ax) in zip(panels, axes):
        _figure3_row(model, runs, loss_ax, angle_ax, lr_ax)
    fig.suptitle("AutoDrop on the NQM (paper's Figure 3), one iteration per AutoDrop epoch", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def _figure3_row(
    model: NoisyQuadratic, runs: Sequence[AutoDropRun], loss_ax: Axes, angle_ax: Axes, lr_ax: Axes
) -> None:
    first = runs[0]
    iters = first.lr.size
    steps = np.arange(iters + 1)
    assert first.baseline_loss is not None
    for i, lr in enumerate(first.baseline_lrs):
        loss_ax.plot(steps, first.baseline_loss[i], color=_COLOURS[i % len(_COLOURS)], lw=0.7, alpha=0.6,
                     label=f"constant {lr:g}")
    last = 0
    for run in runs:
        colour = _TRIGGER_COLOURS.get(run.trigger, "tab:purple")
        loss_ax.plot(steps, run.loss, color=colour, lw=1.3, label=f"AutoDrop {run.trigger}")
        what = f"m(t), window {_WINDOW}" if run.trigger == "paper" else "test-window mean"
        angle_ax.plot(steps[1:], run.smoothed, color=colour, lw=1, label=f"{run.trigger}: {what} (dashed: noise-free)")
        if run.expected_smoothed is not None:
            angle_ax.plot(steps[1:], run.expected_smoothed, color=colour, lw=0.8, ls="--", alpha=0.7)
        for it, _ in run.drops:
            for ax in (angle_ax, lr_ax):
                ax.axvline(it, color=colour, lw=0.6, alpha=0.5, ls=":")
        lr_ax.step(steps[1:], run.lr, where="post", color=colour, lw=1.2, label=f"AutoDrop {run.trigger}")
        last = max(last, run.drops[-1][0] if run.drops else iters)
    loss_ax.set_yscale("log")
    _style(loss_ax, "excess loss")
    loss_ax.legend(fontsize=6, ncol=2)
    _style(angle_ax, "smoothed angle (deg)")
    angle_ax.legend(fontsize=7)
    lr_ax.set_yscale("log")
    _style(lr_ax, "learning rate; dotted: drops")
    lr_ax.legend(fontsize=7)
    for ax in (angle_ax, lr_ax):
        ax.set_xlim(0, min(iters, max(4 * last, 200)))
    finals = ", ".join(f"AutoDrop {run.trigger} {run.final_loss():.3g}" for run in runs)
    finals_constant = first.baseline_final_losses()
    best = min(finals_constant, key=finals_constant.__getitem__)
    angle_ax.set_title(
        f"{model.name}: final loss (mean of last {first.tail}) {finals}, best constant ({best:g}) "
        f"{finals_constant[best]:.3g}",
        fontsize=9,
    )
