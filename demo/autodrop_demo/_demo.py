"""``autodrop demo``: train a small 1-D CNN on MNIST-1D and show each AutoDrop decision.

The data is generated locally by ``mnist1d`` (no download). A progress bar runs on
stderr; every trigger and every drop is printed on stdout as it happens; at the end a
PNG (angle, lr, train loss and test error against epoch) and a JSON summary are written
to ``--out``. The command restores the global random states and torch's thread count
it found. It must not implement AutoDrop: it uses ``autodrop_torch.AutoDrop``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from autodrop_core import AutoDropConfig, ConfigError
from autodrop_demo._data import load_mnist1d
from autodrop_demo._models import Cnn1d
from autodrop_demo._plot import plot_demo
from autodrop_demo._schedules import DEMO_AUTODROP, PAPER_AUTODROP, schedule_factory
from autodrop_demo._train import EpochRecord, TrainSettings, train

__all__ = ["DEMO_AUTODROP", "main", "run_demo"]



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
        description="Train a small 1-D CNN on MNIST-1D with AutoDrop; plot and summarise its decisions.",
    )
    p.add_argument("--out", type=Path, default=Path("autodrop-demo"), help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=100, help="epochs to train (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and batch order (default: 0)")
    p.add_argument("--lr", type=_positive_float, default=0.2, help="initial learning rate (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="examples per step (default: %(default)s)")
    group = p.add_argument_group("AutoDrop settings (see docs/demo.md)")
    group.add_argument("--threshold", type=_positive_float, default=DEMO_AUTODROP["threshold"],
                       help="first threshold on the change of angle, degrees (default: %(default)s)")
    group.add_argument("--max-threshold", type=_positive_float, default=DEMO_AUTODROP["max_threshold"],
                       help="cap on the threshold, degrees (default: %(default)s)")
    group.add_argument("--drop-delay", type=_positive_int, default=DEMO_AUTODROP["drop_delay"],
                       help="parameter vectors averaged before a drop (default: %(default)s)")
    group.add_argument("--drop-factor", type=_positive_float, default=DEMO_AUTODROP["drop_factor"],
                       help="each drop multiplies the lr by this, in (0, 1) (default: %(default)s)")
    group.add_argument("--min-lr", type=float, default=DEMO_AUTODROP["min_lr"],
                       help="floor of the lr (default: %(default)s)")
    group.add_argument("--angle-window", type=_positive_int, default=DEMO_AUTODROP["angle_window"],
                       help="compare means of the last w angles (default: %(default)s)")
    p.add_argument("--paper-defaults", action="store_true",
                   help="use the paper's settings (threshold 0.01, max 1, delay 20, factor 0.2) instead")
    p.add_argument("--baseline", action="store_true",
                   help="also train the same model with a constant lr and overlay it (doubles the time)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: 1, fastest for this tiny model)")
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N' or 'auto' (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _autodrop_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.paper_defaults:
        return dict(PAPER_AUTODROP)
    return {
        "threshold": args.threshold,
        "max_threshold": args.max_threshold,
        "min_lr": args.min_lr,
        "drop_delay": args.drop_delay,
        "drop_factor": args.drop_factor,
        "angle_window": args.angle_window,
    }


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
    if d.triggered:
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


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Train, print the decisions, write ``autodrop_demo.png`` and ``summary.json``; return the summary."""
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    autodrop = _autodrop_settings(args)
    device = _device(args.device)
    split = load_mnist1d()
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
        result = train(lambda: Cnn1d(), split, schedule_factory("autodrop", args.epochs, autodrop), settings,
                       device=device, on_epoch=on_epoch)
    finally:
        bar.close()
    summary = _summary(args, settings, autodrop, result.records, result.seconds, device)
    if args.baseline:
        bar = tqdm(total=args.epochs, file=sys.stderr, unit="epoch", disable=args.no_progress, desc="constant lr")
        try:
            base = train(lambda: Cnn1d(), split, schedule_factory("constant", args.epochs), settings, device=device,
                         on_epoch=lambda record: bar.update(1))
        finally:
            bar.close()
        errors = [r.test_error for r in base.records]
        best = min(range(len(errors)), key=errors.__getitem__)
        summary["baseline"] = {
            "schedule": "constant lr", "train_loss": [r.train_loss for r in base.records], "test_error": errors,
            "final_test_error": errors[-1], "best_test_error": errors[best], "best_epoch": best + 1,
        }
    return summary


def _summary(
    args: argparse.Namespace, settings: TrainSettings, autodrop: dict[str, Any], records: Sequence[EpochRecord],
    seconds: float, device: torch.device,
) -> dict[str, Any]:
    decisions = [r.decision for r in records]
    errors = [r.test_error for r in records]
    best = min(range(len(errors)), key=errors.__getitem__)
    return {
        "title": f"AutoDrop on MNIST-1D (1-D CNN, SGD momentum 0.9, initial lr {settings.lr:g}, seed {settings.seed})",
        "command": "autodrop demo " + " ".join(args.argv),
        "task": "mnist1d",
        "model": "Cnn1d(channels=32)",
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
    for name, part in (("AutoDrop", summary), ("constant lr", summary.get("baseline"))):
        if part is not None:
            print(f"{name} test error: final {100 * part['final_test_error']:.2f}%, "
                  f"best {100 * part['best_test_error']:.2f}% at epoch {part['best_epoch']}")
    print(f"{time.perf_counter() - started:.0f} s in all")
    print(f"wrote {png_path} and {json_path}")
    return 0
