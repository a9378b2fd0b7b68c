"""Turn the benchmark's run records into statistics, markdown tables and figures.

Everything here is computed from the stored per-run records; nothing is typed in by
hand. Standard deviations are sample standard deviations over seeds (ddof = 1; 0 for
a single seed). This module must not train anything.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autodrop_demo._plot import plot_bench_curves, plot_bench_summary

__all__ = ["aggregate", "angle_noise", "autodrop_notes", "figures", "goal_table", "markdown_tables"]

#: The fixed schedules the calibrated trigger is held against on tasks that need drops.
FIXED_SCHEDULES = ("step", "cosine", "plateau")
#: The goal: calibrated AutoDrop within this relative margin of the reference (best fixed schedule or constant).
GOAL_MARGIN = 0.10
#: The paper's threshold, in degrees: how often one epoch's change of angle falls below it.
PAPER_THRESHOLD = 0.01

Group = dict[str, Any]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, float], Group]:
    """Group run records by (task, method, lr) and summarise each group.

    Returns:
        ``{(task, method, lr): group}`` where a group holds ``n`` (runs), ``diverged``
        (how many), ``final``, ``best`` and ``best_epoch`` as ``(mean, std)`` over the
        runs that did not diverge, ``drops`` (mean drops per run), ``first_drop`` (mean
        epoch of the first drop over the runs that dropped, NaN if none did) and
        ``curve`` (mean test error per epoch).
    """
    runs: dict[tuple[str, str, float], list[Mapping[str, Any]]] = {}
    for r in records:
        spec = r["spec"]
        runs.setdefault((spec["task"], spec["method"], spec["lr"]), []).append(r)
    groups = {}
    for key, rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        ok = [r for r in rs if not r["diverged"]]
        curves = [r["test_error"] for r in ok]
        firsts = [r["drops"][0] for r in ok if r["drops"]]
        groups[key] = {
            "n": len(rs),
            "diverged": len(rs) - len(ok),
            "final": _mean_std([r["final"] for r in ok]),
            "best": _mean_std([r["best"] for r in ok]),
            "best_epoch": _mean_std([r["best_epoch"] for r in ok]),
            "drops": statistics.fmean(len(r["drops"]) for r in ok) if ok else math.nan,
            "first_drop": statistics.fmean(firsts) if firsts else math.nan,
            "curve": [statistics.fmean(col) for col in zip(*curves)] if curves else [],
            "seconds": sum(r.get("seconds", 0.0) for r in ok),
        }
    return groups


def _pct(ms: tuple[float, float]) -> str:
    return "n/a" if math.isnan(ms[0]) else f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"


def _cell_final(g: Group) -> str:
    text = _pct(g["final"])
    return text + (f" ({g['diverged']}/{g['n']} diverged)" if g["diverged"] else "")


def _cell_best(g: Group) -> str:
    if math.isnan(g["best"][0]):
        return "n/a"
    return f"{100 * g['best'][0]:.2f} ± {100 * g['best'][1]:.2f} @ {g['best_epoch'][0]:.0f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown_tables(
    groups: Mapping[tuple[str, str, float], Group], tasks: Mapping[str, str], methods: Sequence[str]
) -> str:
    """The result tables of every task, as markdown.

    Args:
        groups: :func:`aggregate`'s output.
        tasks: task name -> a one-line description.
        methods: methods in column order.
    """
    out: list[str] = []
    for task, description in tasks.items():
        lrs = sorted({k[2] for k in groups if k[0] == task}, reverse=True)
        present = [m for m in methods if any((task, m, lr) in groups for lr in lrs)]
        if not lrs:
            continue
        seeds = max(groups[(task, m, lr)]["n"] for m in present for lr in lrs if (task, m, lr) in groups)
        out += [f"### {task}: {description}", ""]
        out += [f"Final test error [%] at the last epoch, mean ± std over {seeds} seed(s):", ""]
        out += _table(["initial lr", *present], (
            [f"{lr:g}", *(_cell_final(groups[(task, m, lr)]) if (task, m, lr) in groups else "-" for m in present)]
            for lr in lrs
        ))
        out += ["", "Best test error [%] during training, mean ± std, @ mean epoch at which it was reached:", ""]
        out += _table(["initial lr", *present], (
            [f"{lr:g}", *(_cell_best(groups[(task, m, lr)]) if (task, m, lr) in groups else "-" for m in present)]
            for lr in lrs
        ))
        out += ["", "Over all initial lrs: mean final error, mean epoch of the best error, lr drops per run "
                "and mean epoch of the first drop:", ""]
        rows = []
        for m in present:
            gs = [groups[(task, m, lr)] for lr in lrs if (task, m, lr) in groups]
            finals = [g["final"][0] for g in gs if not math.isnan(g["final"][0])]
            epochs = [g["best_epoch"][0] for g in gs if not math.isnan(g["best_epoch"][0])]
            drops = [g["drops"] for g in gs if not math.isnan(g["drops"])]
            firsts = [g["first_drop"] for g in gs if not math.isnan(g["first_drop"])]
            continuous = m == "cosine"  # lowers the lr a little every epoch: no discrete drops to count
            rows.append([
                m,
                f"{100 * statistics.fmean(finals):.2f}" if finals else "n/a",
                f"{statistics.fmean(epochs):.0f}" if epochs else "n/a",
                "continuous" if continuous else f"{statistics.fmean(drops):.1f}" if drops else "n/a",
                "-" if continuous else f"{statistics.fmean(firsts):.0f}" if firsts else "none",
            ])
        out += _table(["method", "final error [%]", "epoch of best", "drops per run", "first drop at"], rows)
        out.append("")
    return "\n".join(out)


def figures(
    groups: Mapping[tuple[str, str, float], Group], tasks: Mapping[str, str], methods: Sequence[str],
    folder: Path, relative_to: Path,
) -> list[str]:
    """Draw ``bench_curves_<task>.png`` and ``bench_summary.png``; return markdown image links."""
    links = []
    final: dict[str, dict[str, dict[float, tuple[float, float]]]] = {}
    best_epoch: dict[str, dict[str, tuple[float, float]]] = {}
    for task in tasks:
        curves: dict[float, dict[str, list[float]]] = {}
        final[task], best_epoch[task] = {}, {}
        for m in methods:
            epochs_of_best: list[float] = []
            for (t, method, lr), g in groups.items():
                if t != task or method != m or not g["curve"]:
                    continue
                curves.setdefault(lr, {})[m] = g["curve"]
                final[task].setdefault(m, {})[lr] = g["final"]
                epochs_of_best.append(g["best_epoch"][0])
            if epochs_of_best:
                best_epoch[task][m] = _mean_std(epochs_of_best)
        if curves:
            path = plot_bench_curves(curves, f"{task}: {tasks[task]}", folder / f"bench_curves_{task}.png")
            links.append(f"![{task}: test error against epoch]({os.path.relpath(path, relative_to)})")
    final = {t: v for t, v in final.items() if v}
    if final:
        path = plot_bench_summary(final, {t: best_epoch[t] for t in final}, folder / "bench_summary.png")
        links.insert(0, f"![final test error and epoch of the best test error]({os.path.relpath(path, relative_to)})")
    return links


def autodrop_notes(records: Sequence[Mapping[str, Any]], tasks: Iterable[str]) -> str:
    """For each AutoDrop variant and task: runs that triggered, that dropped, and that equal the constant lr.

    A run without a drop never touches the parameters or the lr, so it must reproduce the
    constant-lr run of the same seed and lr epoch by epoch; this counts how many do.
    """
    by_key = {(r["spec"]["task"], r["spec"]["method"], r["spec"]["lr"], r["spec"]["seed"]): r for r in records}
    lines = []
    for task in tasks:
        for method in sorted({k[1] for k in by_key if k[0] == task and k[1].startswith("autodrop")}):
            runs = [(k, r) for k, r in by_key.items() if k[0] == task and k[1] == method and not r["diverged"]]
            if not runs:
                continue
            triggered = sum(bool(r["triggers"]) for _, r in runs)
            no_drop = [(k, r) for k, r in runs if not r["drops"]]
            constants = [by_key.get((k[0], "constant", k[2], k[3])) for k, _ in no_drop]
            same = sum(1 for c, (_, r) in zip(constants, no_drop) if c and c.get("test_error") == r["test_error"])
            lines.append(
                f"- {task}, `{method}`: {triggered} of {len(runs)} runs triggered at least once, "
                f"{len(runs) - len(no_drop)} dropped at least once; of the {len(no_drop)} runs without a drop, "
                f"{same} reproduce the constant-lr run (same seed and lr) epoch by epoch."
            )
    return "\n".join(lines)


def _task_means(records: Sequence[Mapping[str, Any]], task: str) -> dict[str, float]:
    """Mean final test error of each method on ``task`` over every initial lr and seed (diverged runs excluded)."""
    finals: dict[str, list[float]] = {}
    for r in records:
        if r["spec"]["task"] == task and not r["diverged"]:
            finals.setdefault(r["spec"]["method"], []).append(r["final"])
    return {m: statistics.fmean(v) for m, v in finals.items() if v}


def angle_noise(records: Sequence[Mapping[str, Any]], task: str) -> tuple[float, float, float] | None:
    """The per-epoch angle noise of the constant-lr runs of ``task``.

    Returns ``(noise, share, cells)`` averaged over those runs: ``noise`` is the
    successive-difference standard deviation of the angle over the second half of the
    budget (where the angle has saturated), in degrees; ``share`` is the fraction of
    epochs whose change of angle is below the paper's 0.01 degrees; ``cells`` the runs.
    None when the task has no constant run with angles.
    """
    noises, shares = [], []
    for r in records:
        if r["spec"]["task"] != task or r["spec"]["method"] != "constant" or r["diverged"]:
            continue
        angles = r.get("angle") or []
        half = [a for a in angles[len(angles) // 2 :] if a is not None]
        deltas = [abs(b - a) for a, b in itertools.pairwise(angles) if a is not None and b is not None]
        if len(half) < 3 or not deltas:
            continue
        squared = [(b - a) ** 2 for a, b in itertools.pairwise(half)]
        noises.append(math.sqrt(statistics.fmean(squared) / 2))
        shares.append(sum(d < PAPER_THRESHOLD for d in deltas) / len(deltas))
    if not noises:
        return None
    return statistics.fmean(noises), statistics.fmean(shares), float(len(noises))


def goal_table(records: Sequence[Mapping[str, Any]], tasks: Mapping[str, bool]) -> str:
    """Per task: does it need drops (step beats constant by the margin), and does calibrated AutoDrop meet its goal?

    Args:
        records: every run record.
        tasks: task name -> whether the task is declared to need lr drops.
    """
    from autodrop_demo._bench_runs import NEEDS_DROPS_MARGIN

    rows = []
    for task, needs in tasks.items():
        means = _task_means(records, task)
        if not {"constant", "autodrop-calibrated"} <= set(means):
            continue
        constant = means["constant"]
        step_gain = (constant - means["step"]) / constant if "step" in means and constant > 0 else math.nan
        fixed = {m: means[m] for m in FIXED_SCHEDULES if m in means}
        best_fixed = min(fixed, key=fixed.__getitem__) if fixed else None
        reference_name = best_fixed if needs else "constant"
        reference = means[reference_name] if reference_name else math.nan
        calibrated = means["autodrop-calibrated"]
        ratio = calibrated / reference if reference > 0 else math.nan
        met = ratio <= 1 + GOAL_MARGIN
        noise = angle_noise(records, task)
        rows.append([
            task,
            ("needs drops" if needs else "do no harm")
            + (f"; step beats constant by {100 * step_gain:.0f}%" if not math.isnan(step_gain) else "")
            + ("" if not needs or step_gain >= NEEDS_DROPS_MARGIN
               else f" (< {100 * NEEDS_DROPS_MARGIN:.0f}%: CHECK FAILED)"),
            f"{100 * means['autodrop']:.2f}" if "autodrop" in means else "-",
            f"{100 * calibrated:.2f}",
            f"{100 * fixed[best_fixed]:.2f} ({best_fixed})" if best_fixed else "-",
            f"{100 * constant:.2f}",
            f"{ratio:.2f} vs {reference_name}: " + ("met" if met else "NOT met"),
            "-" if noise is None else f"{noise[0]:.2f}",
            "-" if noise is None else f"{100 * noise[1]:.2f}%",
        ])
    header = ["task", "kind", "paper [%]", "calibrated [%]", "best fixed [%]", "constant [%]",
              f"calibrated / reference (goal <= {1 + GOAL_MARGIN:.2f})", "angle noise [deg]",
              f"epochs with delta < {PAPER_THRESHOLD:g} deg"]
    return "\n".join(_table(header, rows))
