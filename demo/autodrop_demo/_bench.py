"""``autodrop bench``: AutoDrop against the lr schedules people use today, on two tasks.

Methods: AutoDrop with the paper's settings, a step schedule (x0.2 at 50% and 75% of
the budget), ReduceLROnPlateau on the validation loss (factor 0.2, torch's other
defaults), cosine annealing and a constant lr; every method trains the same model from
the same initialisation on the same batches. Runs are spread over worker processes
(one torch thread each) and cached as JSON under ``--out``; the report (markdown tables
and figures) is computed from those records only. ``--quick`` is the small version CI
runs. This module must not change any measured number.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from autodrop_demo._bench_report import aggregate, autodrop_notes, figures, goal_table, markdown_tables
from autodrop_demo._bench_runs import TASKS, VAL_FRACTION, RunSpec, init_worker, load_cached, run_one, store
from autodrop_demo._schedules import CALIBRATED_AUTODROP, METHODS, PAPER_AUTODROP

__all__ = ["main"]

#: 140 epochs is 7 times the default drop delay of 20, the paper's ratio (200 epochs, n_d = 20) rounded down.
FULL = {"epochs": 140, "seeds": 2, "lrs": (0.1, 0.05)}
QUICK = {"epochs": 12, "seeds": 1, "lrs": (0.1,)}


def _csv(kind: type, valid: tuple[Any, ...] | None = None):  # type: ignore[no-untyped-def]
    def parse(text: str) -> tuple[Any, ...]:
        try:
            values = tuple(kind(v) for v in text.split(",") if v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        bad = [v for v in values if valid is not None and v not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown value(s) {bad}; valid: {', '.join(map(str, valid or ()))}")
        if kind is float and any(not (0 < v < float("inf")) for v in values):
            raise argparse.ArgumentTypeError(f"learning rates must be finite and > 0, got {text!r}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``autodrop bench``."""
    p = argparse.ArgumentParser(
        prog="autodrop bench",
        description="Compare AutoDrop (paper and calibrated triggers) with step, plateau, cosine and constant lr "
        "schedules on three tasks that need lr drops and two small 'do no harm' tasks.",
    )
    p.add_argument("--quick", action="store_true",
                   help=f"small version: {QUICK['epochs']} epochs, 1 seed, lr 0.1 (unless given explicitly)")
    p.add_argument("--epochs", type=int, default=None, help=f"epoch budget (default {FULL['epochs']})")
    p.add_argument("--seeds", type=int, default=None, help=f"seeds 0..N-1 per setting (default {FULL['seeds']})")
    p.add_argument("--lrs", type=_csv(float), default=None,
                   help="initial lrs (default " + ",".join(map(str, FULL["lrs"])) + ")")
    p.add_argument("--tasks", type=_csv(str, tuple(TASKS)), default=tuple(TASKS),
                   help="comma-separated, from: " + ",".join(TASKS) + " (default: all)")
    p.add_argument("--methods", type=_csv(str, METHODS), default=METHODS,
                   help="comma-separated, from: " + ",".join(METHODS) + " (default: all)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2; 1 runs in-process)")
    p.add_argument("--out", type=Path, default=Path("autodrop-bench"),
                   help="folder for run records, the report and figures (default: %(default)s)")
    p.add_argument("--report", type=Path, default=None, help="markdown report path (default: OUT/bench.md)")
    p.add_argument("--figures", type=Path, default=None, help="folder for bench_*.png (default: OUT)")
    p.add_argument("--fresh", action="store_true", help="ignore run records already stored under OUT/runs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _check(args: argparse.Namespace) -> None:
    for name, low in (("epochs", 1), ("seeds", 1), ("workers", 1)):
        value = getattr(args, name)
        if value < low:
            raise SystemExit(f"autodrop bench: --{name} must be an integer >= {low}, got {value}")


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    # seed by seed, so that an interrupted benchmark holds whole seeds; the slow task first in each
    order = sorted(args.tasks, key=lambda t: not TASKS[t].needs_drops)
    return [RunSpec(task, method, lr, seed, args.epochs)
            for seed in range(args.seeds) for task in order for lr in args.lrs for method in args.methods]


def _run_all(specs: list[RunSpec], args: argparse.Namespace, folder: Path) -> tuple[list[dict[str, Any]], int]:
    records: dict[RunSpec, dict[str, Any]] = {}
    todo = []
    for spec in specs:
        cached = None if args.fresh else load_cached(folder, spec)
        if cached is None:
            todo.append(spec)
        else:
            records[spec] = cached
    bar = tqdm(total=len(todo), file=sys.stderr, unit="run", disable=args.no_progress, desc="autodrop bench")

    def done(spec: RunSpec, record: dict[str, Any]) -> None:
        store(folder, spec, record)
        records[spec] = record
        bar.set_postfix_str(spec.key)
        bar.update(1)

    try:
        if args.workers == 1 or len(todo) <= 1:
            threads = torch.get_num_threads()
            init_worker()
            try:
                for spec in todo:
                    done(spec, run_one(spec))
            finally:
                torch.set_num_threads(threads)
        else:
            context = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(args.workers, mp_context=context, initializer=init_worker) as pool:
                futures = {pool.submit(run_one, spec): spec for spec in todo}
                for future in cf.as_completed(futures):
                    done(futures[future], future.result())
    finally:
        bar.close()
    return [records[s] for s in specs], len(todo)


#: The first line of the generated section; what stands above it in an existing report is kept.
GENERATED_MARKER = (
    "<!-- this section is generated by `autodrop bench` from measured runs: do not edit its numbers by hand -->"
)


def _kept_introduction(path: Path) -> str:
    """The hand-written text above the generated section of an existing report ("" if none)."""
    try:
        old = path.read_text()
    except OSError:
        return ""
    head, marker, _ = old.partition(GENERATED_MARKER)
    return head if marker else ""


def _report(args: argparse.Namespace, records: list[dict[str, Any]], argv: list[str], seconds: float, ran: int) -> str:
    report_path = args.report or args.out / "bench.md"
    groups = aggregate(records)
    tasks = {t: TASKS[t].description for t in args.tasks}
    links = figures(groups, tasks, args.methods, args.figures or args.out, report_path.parent)
    autodrop = ", ".join(f"{k}={v:g}" for k, v in PAPER_AUTODROP.items())
    lrs = ", ".join(f"{lr:g}" for lr in args.lrs)
    lines = [
        GENERATED_MARKER,
        "",
        "## Results",
        "",
        f"Command: `autodrop bench {shlex.join(argv)}`",
        "",
        f"Measured on {datetime.date.today().isoformat()}: {ran} of {len(records)} runs trained in this "
        f"invocation, {seconds / 60:.1f} min wall time with {args.workers} worker process(es) on a machine with "
        f"{os.cpu_count()} logical CPU(s) ({platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}); {sum(r.get('seconds', 0.0) for r in records) / 60:.1f} min of training "
        "summed over all runs.",
        "",
        f"Budget {args.epochs} epochs; seeds 0..{args.seeds - 1}; initial lrs {lrs};"
        f" SGD momentum 0.9, weight decay 5e-4; {100 * VAL_FRACTION:.0f}% of the training data held out as the "
        f"validation split of ReduceLROnPlateau. `autodrop`: the paper's settings, {autodrop} "
        "(angle_window=1, reset_on_drop=False); `autodrop-calibrated`: "
        f"`AutoDrop(optimizer, model=model, {', '.join(f'{k}={v!r}' for k, v in CALIBRATED_AUTODROP.items())})` "
        "with every other setting at the library's default (drop_factor=0.1, min_lr=1e-4, drop_delay=20).",
        "",
        "### Summary: the calibrated trigger's goal",
        "",
        "Mean final test error over every initial lr and seed. The reference is the best of step, cosine and "
        "ReduceLROnPlateau on a task that needs drops, and the constant lr on a \"do no harm\" task; the goal is "
        "calibrated AutoDrop at most 10% (relative) above it. A task needs drops when the step schedule beats the "
        "constant lr by at least 20% (checked here). The angle noise is the successive-difference standard deviation "
        "of the angle over the second half of the constant-lr runs; the last column is the share of their epochs "
        "in which the angle changed by less than the paper's threshold.",
        "",
        goal_table(records, {t: TASKS[t].needs_drops for t in args.tasks}),
        "",
        markdown_tables(groups, tasks, args.methods),
        "How often AutoDrop acted:",
        "",
        autodrop_notes(records, tasks),
        "",
        *(line for link in links for line in (link, "")),
    ]
    text = "\n".join(lines).rstrip() + "\n"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(_kept_introduction(report_path) + text)
    (args.out / "summary.json").write_text(json.dumps(
        {f"{t}/{m}/{lr:g}": {k: v for k, v in g.items() if k != "curve"} for (t, m, lr), g in groups.items()},
        indent=1,
    ) + "\n")
    return str(report_path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``autodrop bench`` (``argv`` without the subcommand). Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.epochs = preset["epochs"] if args.epochs is None else args.epochs
    args.seeds = preset["seeds"] if args.seeds is None else args.seeds
    args.lrs = preset["lrs"] if args.lrs is None else args.lrs
    _check(args)
    started = time.perf_counter()
    specs = _specs(args)
    records, ran = _run_all(specs, args, args.out / "runs")
    seconds = time.perf_counter() - started
    report = _report(args, records, argv, seconds, ran)
    print(f"{len(records)} runs ({ran} trained now) in {seconds / 60:.1f} min; wrote {report}")
    return 0
