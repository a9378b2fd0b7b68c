"""The figures of the demo and the benchmark, drawn with matplotlib's object API.

Figures are built from ``matplotlib.figure.Figure`` and saved through the Agg canvas,
so that drawing never selects a pyplot backend nor opens a window. This module only
draws what it is given: it must not train, compute statistics or read files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

__all__ = ["plot_bench_curves", "plot_bench_summary", "plot_demo"]

_COLORS = {
    "autodrop": "tab:red",
    "autodrop-calibrated": "tab:orange",
    "step": "tab:blue",
    "plateau": "tab:green",
    "cosine": "tab:purple",
    "constant": "tab:gray",
}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _nan_to_none(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def plot_demo(summary: Mapping[str, object], path: Path) -> Path:
    """The demo's four panels against epoch: angle, lr, train loss, test error.

    Triggers are marked on the angle panel; epochs whose parameters were averaged are
    shaded and every drop is a dashed vertical line through all panels (after the
    paper's Figure 6, with the angle added on top).

    Args:
        summary: the demo's JSON summary (its ``"epochs"`` table, ``"triggers"`` and
            ``"drops"`` lists).
        path: where to write the PNG.
    """
    table = summary["epochs"]
    assert isinstance(table, Mapping)
    epochs = list(table["epoch"])
    fig = Figure(figsize=(7.5, 9.0), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    angle = _nan_to_none(table["angle"])
    axes[0].plot(epochs, angle, color="tab:blue", lw=1.0, label="angle between successive epoch steps")
    triggers = [int(t) for t in summary["triggers"]]  # type: ignore[union-attr]
    if triggers:
        axes[0].plot(triggers, [angle[t - 1] for t in triggers], "v", color="tab:orange", ms=7, label="trigger")
    axes[0].set_ylabel("angle [deg]")
    handles = [
        *axes[0].get_legend_handles_labels()[0],
        Patch(color="tab:orange", alpha=0.25, label="epoch averaged into W"),
        Line2D([], [], color="tab:red", ls="--", lw=0.8, label="drop (parameters := W, lr x rho)"),
    ]
    axes[0].legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
    baselines = summary.get("baselines") or {}
    assert isinstance(baselines, Mapping)
    styles = {
        "constant": ("tab:gray", ":", "constant lr"),
        "step": ("tab:blue", "-.", "step schedule (x0.2 at 50%, 75%)"),
    }
    for name, run in baselines.items():
        if not isinstance(run, Mapping) or run.get("diverged"):
            continue
        color, style, label = styles.get(name, ("tab:purple", "--", name))
        axes[1].step(epochs, run["lr"], where="post", color=color, ls=style, lw=1.0, label=label)
        axes[2].plot(epochs, run["train_loss"], color=color, lw=1.0, ls=style, label=label)
        axes[3].plot(epochs, [100.0 * e for e in run["test_error"]], color=color, lw=1.0, ls=style, label=label)
    axes[1].step(epochs, table["lr"], where="post", color="tab:red", label="AutoDrop")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("learning rate")
    axes[2].plot(epochs, table["train_loss"], color="tab:green", label="AutoDrop")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("train loss")
    axes[3].plot(epochs, [100.0 * e for e in table["test_error"]], color="black", label="AutoDrop")
    if baselines:
        for ax in axes[1:]:
            ax.legend(fontsize=8)
    axes[3].set_yscale("log")
    axes[3].yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes[3].yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes[3].yaxis.set_minor_formatter(NullFormatter())
    axes[3].set_ylabel("test error [%] (log scale)")
    axes[3].set_xlabel("epoch")
    drops = [int(d["epoch"]) for d in summary["drops"]]  # type: ignore[union-attr,index]
    averaged = table["average_weight"]
    for ax in axes:
        for drop in drops:
            ax.axvline(drop, color="tab:red", ls="--", lw=0.8, alpha=0.7)
        for epoch, weight in zip(epochs, averaged):
            if weight is not None:  # this epoch's parameters went into the running average
                ax.axvspan(epoch - 0.5, epoch + 0.5, color="tab:orange", alpha=0.12, lw=0)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(str(summary.get("title", "AutoDrop")), fontsize=11)
    return _save(fig, path)


def plot_bench_curves(
    curves: Mapping[float, Mapping[str, Sequence[float]]], title: str, path: Path
) -> Path:
    """Mean test error against epoch, one panel per initial lr, one line per method.

    Args:
        curves: ``{lr: {method: mean test error per epoch}}``.
        title: the figure's title.
        path: where to write the PNG.
    """
    lrs = sorted(curves, reverse=True)
    cols = 2 if len(lrs) > 1 else 1
    rows = math.ceil(len(lrs) / cols)
    fig = Figure(figsize=(5.0 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, lr in zip(axes, lrs):
        for method, errors in curves[lr].items():
            ax.plot(range(1, len(errors) + 1), [100 * e for e in errors], lw=1.0, label=method,
                    color=_COLORS.get(method))
        finals = [100 * errs[-1] for errs in curves[lr].values()]
        ax.set_ylim(0.8 * min(finals), 2.5 * max(finals))
        ax.set_title(f"initial lr {lr:g}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error [%] (mean over seeds)")
        ax.grid(alpha=0.3)
    for ax in axes[len(lrs):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_bench_summary(
    final: Mapping[str, Mapping[str, Mapping[float, tuple[float, float]]]],
    best_epoch: Mapping[str, Mapping[str, tuple[float, float]]],
    path: Path,
) -> Path:
    """Per task: final test error against initial lr, and the epoch of the best test error.

    Args:
        final: ``{task: {method: {lr: (mean, std) of the final test error}}}``.
        best_epoch: ``{task: {method: (mean, std) epoch of the best test error}}``,
            over all lrs and seeds.
        path: where to write the PNG.
    """
    tasks = list(final)
    fig = Figure(figsize=(11.0, 3.8 * len(tasks)), layout="constrained")
    axes = fig.subplots(len(tasks), 2, squeeze=False)
    for row, task in zip(axes, tasks):
        for i, (method, by_lr) in enumerate(final[task].items()):
            lrs = sorted(by_lr)
            shifted = [lr * 1.025 ** (i - 2.5) for lr in lrs]  # side by side: equal results stay visible
            row[0].errorbar(shifted, [100 * by_lr[lr][0] for lr in lrs], yerr=[100 * by_lr[lr][1] for lr in lrs],
                            marker="os^vDx"[i % 6], capsize=3, label=method, color=_COLORS.get(method))
        row[0].set_xscale("log")
        ticks = sorted({lr for by_lr in final[task].values() for lr in by_lr})
        row[0].set_xticks(ticks, [f"{lr:g}" for lr in ticks])
        row[0].xaxis.set_minor_formatter(NullFormatter())
        row[0].set_xlabel("initial lr (methods shifted slightly apart)")
        row[0].set_ylabel("final test error [%]")
        row[0].set_title(f"{task}: final test error (mean ± std over seeds)", fontsize=10)
        row[0].grid(alpha=0.3)
        row[0].legend(fontsize=8)
        methods = list(best_epoch[task])
        means = [best_epoch[task][m][0] for m in methods]
        stds = [best_epoch[task][m][1] for m in methods]
        row[1].bar(methods, means, yerr=stds, capsize=3, color=[_COLORS.get(m, "tab:gray") for m in methods])
        row[1].tick_params(axis="x", labelrotation=20)
        row[1].set_ylabel("epoch of best test error")
        row[1].set_title(f"{task}: epoch of the best test error (mean, ± std over lrs)", fontsize=10)
        row[1].grid(alpha=0.3, axis="y")
    return _save(fig, path)
