"""``autodrop demo``: AutoDrop beside a constant lr and a step schedule, on a task where drops matter.

The task is the benchmark's ``mnist1d-mlp`` (MNIST-1D with 30,000 signals generated
locally by ``mnist1d``, an MLP with BatchNorm; no download). AutoDrop trains in this
process, with a progress bar on stderr and every trigger and drop printed on stdout as
it happens; the constant-lr and step-schedule baselines train at the same time in two
worker processes, through the benchmark's own run function. At the end a PNG (angle,
lr, train loss and test error against epoch, baselines overlaid) and a JSON summary are
written to ``--out``. The command restores the global random states and torch's thread
count it found. It must not implement AutoDrop: it uses ``autodrop_torch.AutoDrop``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from autodrop_core import DEFAULTS, TRIGGERS, AutoDropConfig, ConfigError
from autodrop_demo._bench_runs import TASKS, RunSpec, init_worker, run_one
from autodrop_demo._plot import plot_demo
from autodrop_demo._schedules import PAPER_AUTODROP, schedule_factory
from autodrop_demo._train import EpochRecord, TrainSettings, train

__all__ = ["BASELINES", "DEMO_TASK", "main", "run_demo"]

#: The benchmark task the demo trains on, and the baselines it draws beside AutoDrop.
DEMO_TASK = "mnist1d-mlp"
BASELINES = ("constant", "step")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``autodrop demo``."""
    p = argparse.ArgumentParser(
        prog="autodrop demo",
        description="Train an MLP on MNIST-1D (30,000 signals) with AutoDrop, beside a constant lr and a step "
        "schedule; plot and summarise its decisions.",
    )
    p.add_argument("--out", type=Path, default=Path("autodrop-demo"), help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=100, help="epochs to train (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and batch order (default: 0)")
    p.add_argument("--lr", type=_positive_float, default=0.1, help="initial learning rate (default: %(default)s)")
    group = p.add_argument_group("AutoDrop settings (see docs/demo.md and docs/spec.md)")
    group.add_argument("--trigger", choices=TRIGGERS, default="calibrated",
                       help="'calibrated' (default here) or 'paper' (the paper's fixed threshold)")
    group.add_argument("--drop-delay", type=_positive_int, default=DEFAULTS["drop_delay"],
                       help="parameter vectors averaged before a drop (default: %(default)s)")
    group.add_argument("--drop-factor", type=_positive_float, default=DEFAULTS["drop_factor"],
                       help="each drop multiplies the lr by this, in (0, 1) (default: %(default)s)")
    group.add_argument("--min-lr", type=float, default=DEFAULTS["min_lr"],
                       help="floor of the lr (default: %(default)s)")
    group.add_argument("--threshold", type=_positive_float, default=None,
                       help=f"paper trigger only: first threshold, degrees (default {DEFAULTS['threshold']})")
    group.add_argument("--max-threshold", type=_positive_float, default=None,
                       help=f"paper trigger only: cap on the threshold (default {DEFAULTS['max_threshold']})")
    group.add_argument("--angle-window", type=_positive_int, default=None,
                       help="paper trigger only: compare means of the last w angles "
                       f"(default {DEFAULTS['angle_window']})")
    p.add_argument("--paper-defaults", action="store_true",
                   help="the paper's trigger and settings (threshold 0.01, max 1, delay 20, factor 0.2) instead")
    p.add_argument("--no-baselines", action="store_true",
                   help="train AutoDrop only (no constant-lr and step-schedule runs beside it)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads of the AutoDrop run (default: 1, fastest for this small model)")
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N' or 'auto' (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _autodrop_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.paper_defaults:
        return dict(PAPER_AUTODROP)
    settings: dict[str, Any] = {
        "trigger": args.trigger, "min_lr": args.min_lr, "drop_delay": args.drop_delay, "drop_factor": args.drop_factor,
    }
    for name in ("threshold", "max_threshold", "angle_window"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    return settings


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"autodrop demo: --device {name!r} asked for CUDA, which this torch build cannot use")
    return device


def _fmt(value: float | None, digits: int = 4) -> str:
    return "undefined" if value is None else f"{value:.{digits}g}"


def _announce(record: EpochRecord, settings: dict[str, Any]) -> list[str]:
    """The lines to print for an epoch's decision (empty when nothing happened)."""
    d = record.decision
    lines = []
    if d.triggered and d.rise is not None:
        lines.append(
            f"epoch {record.epoch:4d}  trigger: the angle has levelled off at {_fmt(d.smoothed_angle)} deg (fitted "
            f"change {_fmt(d.delta)} deg <= noise {_fmt(d.threshold)} deg, {_fmt(d.rise)} deg above its burn-in); "
            f"averaging {settings['drop_delay']} parameter vectors before dropping"
        )
    elif d.triggered:
        lines.append(
            f"epoch {record.epoch:4d}  trigger: the angle changed by {_fmt(d.delta)} deg < threshold "
            f"{_fmt(d.threshold)} deg (angle {_fmt(d.angle)} deg); averaging {settings['drop_delay']} parameter "
            "vectors before dropping"
        )
    if d.dropped:
        lines.append(
            f"epoch {record.epoch:4d}  drop: lr {record.lr:.6g} -> {d.lrs[0]:.6g}; parameters replaced by the average"
        )
    elif d.exhausted:
        lines.append(f"epoch {record.epoch:4d}  exhausted: a drop was due but every lr is at its floor {d.lrs[0]:.6g}")
    return lines


def _baseline(record: dict[str, Any]) -> dict[str, Any]:
    if record["diverged"]:
        return {"diverged": True, "reason": record["reason"]}
    return {k: record[k] for k in ("lr", "train_loss", "test_error", "drops", "final", "best", "best_epoch")}


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Train, print the decisions, write ``autodrop_demo.png`` and ``summary.json``; return the summary."""
    task = TASKS[DEMO_TASK]
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=task.batch_size, seed=args.seed)
    autodrop = _autodrop_settings(args)
    device = _device(args.device)
    split = task.split()  # generates (or loads) the data once, before the workers need it
    pool = None
    futures: dict[str, cf.Future[dict[str, Any]]] = {}
    if not args.no_baselines:
        context = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(len(BASELINES), mp_context=context, initializer=init_worker)
        futures = {m: pool.submit(run_one, RunSpec(DEMO_TASK, m, args.lr, args.seed, args.epochs)) for m in BASELINES}
    bar = tqdm(total=args.epochs, file=sys.stderr, unit="epoch", disable=args.no_progress, desc="autodrop demo")

    def on_epoch(record: EpochRecord) -> None:
        for line in _announce(record, autodrop):
            tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
        angle = record.decision.angle
        bar.set_postfix(loss=f"{record.train_loss:.3f}", err=f"{100 * record.test_error:.1f}%",
                        lr=f"{record.decision.lrs[0]:.3g}", angle="-" if angle is None else f"{angle:.1f}")
        bar.update(1)

    try:
        result = train(task.model, split, schedule_factory("autodrop", args.epochs, autodrop), settings,
                       device=device, on_epoch=on_epoch)
        summary = _summary(args, settings, autodrop, result.records, result.seconds, device)
        if futures:
            bar.set_description("waiting for the baselines")
            summary["baselines"] = {m: _baseline(f.result()) for m, f in futures.items()}
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return summary


def _summary(
    args: argparse.Namespace, settings: TrainSettings, autodrop: dict[str, Any], records: Sequence[EpochRecord],
    seconds: float, device: torch.device,
) -> dict[str, Any]:
    decisions = [r.decision for r in records]
    errors = [r.test_error for r in records]
    best = min(range(len(errors)), key=errors.__getitem__)
    return {
        "title": f"AutoDrop ({autodrop.get('trigger', 'paper')} trigger), MNIST-1D 30k, MLP with BatchNorm, "
        f"initial lr {settings.lr:g}, seed {settings.seed}",
        "command": "autodrop demo " + " ".join(args.argv),
        "task": DEMO_TASK,
        "model": TASKS[DEMO_TASK].description,
        "train": {"epochs": settings.epochs, "lr": settings.lr, "batch_size": settings.batch_size,
                  "momentum": settings.momentum, "weight_decay": settings.weight_decay, "seed": settings.seed,
                  "device": str(device), "threads": torch.get_num_threads()},
        "autodrop": autodrop,
        "epochs": {
            "epoch": [r.epoch for r in records],
            "lr": [r.lr for r in records],
            "train_loss": [r.train_loss for r in records],
            "test_loss": [r.test_loss for r in records],
            "test_error": errors,
            "angle": [d.angle for d in decisions],
            "smoothed_angle": [d.smoothed_angle for d in decisions],
            "delta": [d.delta for d in decisions],
            "threshold": [d.threshold for d in decisions],
            "rise": [d.rise for d in decisions],
            "average_weight": [d.average_weight for d in decisions],
            "triggered": [d.triggered for d in decisions],
            "dropped": [d.dropped for d in decisions],
        },
        "triggers": [r.epoch for r in records if r.decision.triggered],
        "drops": [{"epoch": r.epoch, "lr_before": r.lr, "lr_after": r.decision.lrs[0]}
                  for r in records if r.decision.dropped],
        "final_test_error": errors[-1],
        "best_test_error": errors[best],
        "best_epoch": records[best].epoch,
        "seconds": seconds,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``autodrop demo`` (``argv`` without the subcommand). Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:  # check the AutoDrop settings before building data or models
        AutoDropConfig(lrs=(args.lr,), **_autodrop_settings(args))
    except ConfigError as err:
        print(f"autodrop demo: {err}", file=sys.stderr)
        return 2
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads or 1)
    started = time.perf_counter()
    try:
        summary = run_demo(args)
    finally:
        torch.set_num_threads(threads_before)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "summary.json"
    json_path.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    png_path = plot_demo(summary, args.out / "autodrop_demo.png")
    drops = ", ".join(f"epoch {d['epoch']} ({d['lr_before']:g} -> {d['lr_after']:g})" for d in summary["drops"])
    print(f"drops: {drops or 'none'}")
    print(f"{'AutoDrop':>14} test error: final {100 * summary['final_test_error']:.2f}%, "
          f"best {100 * summary['best_test_error']:.2f}% at epoch {summary['best_epoch']}")
    for name, part in summary.get("baselines", {}).items():
        label = {"constant": "constant lr", "step": "step schedule"}.get(name, name)
        if part.get("diverged"):
            print(f"{label:>14}: diverged ({part['reason']})")
        else:
            print(f"{label:>14} test error: final {100 * part['final']:.2f}%, "
                  f"best {100 * part['best']:.2f}% at epoch {part['best_epoch']}")
    print(f"{time.perf_counter() - started:.0f} s in all")
    print(f"wrote {png_path} and {json_path}")
    return 0
