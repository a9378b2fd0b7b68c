"""matplotlib renderings of Figures 1 and 3 (headless: the Agg canvas, written straight to a file).

The functions take the data that ``_experiments.py`` returns and draw it; they must not
simulate, and must not touch pyplot's global state (no ``plt.figure``, no ``plt.show``),
so that they are safe to call from tests and from other programs.
"""

from __future__ import annotations

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


def plot_figure3(model: NoisyQuadratic, run: AutoDropRun, out: str | Path) -> Path:
    """Loss, smoothed angle and lr of an AutoDrop run, against constant lrs (shared noise)."""
    fig = Figure(figsize=(12, 4))
    loss_ax, angle_ax, lr_ax = fig.subplots(1, 3)
    iters = run.lr.size
    steps = np.arange(iters + 1)
    assert run.baseline_loss is not None
    for i, lr in enumerate(run.baseline_lrs):
        loss_ax.plot(steps, run.baseline_loss[i], color=_COLOURS[i % len(_COLOURS)], lw=0.7, alpha=0.6,
                     label=f"constant {lr:g}")
    loss_ax.plot(steps, run.loss, color="k", lw=1.4, label="AutoDrop")
    loss_ax.set_yscale("log")
    _style(loss_ax, "excess loss")
    loss_ax.legend(fontsize=7, ncol=2)
    angle_ax.plot(steps[1:], run.smoothed, color="k", lw=1, label=f"AutoDrop m(t), window {_WINDOW}")
    if run.expected_smoothed is not None:
        angle_ax.plot(
            steps[1:], run.expected_smoothed, color="tab:blue", lw=0.8, ls="--", label="noise-free (closed form)"
        )
    for it, _ in run.drops:
        for ax in (angle_ax, lr_ax):
            ax.axvline(it, color="tab:red", lw=0.6, alpha=0.6)
    _style(angle_ax, "smoothed angle (deg); red: drops")
    angle_ax.legend(fontsize=8)
    lr_ax.step(steps[1:], run.lr, where="post", color="k")
    lr_ax.set_yscale("log")
    _style(lr_ax, "learning rate")
    last = run.drops[-1][0] if run.drops else iters
    for ax in (angle_ax, lr_ax):
        ax.set_xlim(0, min(iters, max(4 * last, 200)))
    fig.suptitle(
        f"AutoDrop on NQM {model.name} (paper's Figure 3): final loss {run.final_loss():.3g}, "
        f"best constant {min(run.baseline_final_losses().values()):.3g}",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, out)
