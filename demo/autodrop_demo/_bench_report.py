"""Turn the benchmark's run records into statistics, markdown tables and figures.

Everything here is computed from the stored per-run records; nothing is typed in by
hand. Standard deviations are sample standard deviations over seeds (ddof = 1; 0 for
a single seed). This module must not train anything.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autodrop_demo._plot import plot_bench_curves, plot_bench_summary

__all__ = ["aggregate", "autodrop_notes", "figures", "markdown_tables"]

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
