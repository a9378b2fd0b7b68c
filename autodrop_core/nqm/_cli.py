"""``autodrop nqm``: Theorem 1's table and the paper's Figures 1 and 3 from the command line.

Entry point :func:`main` (dispatched by ``autodrop_core._cli``). Results go to stdout
(a table, or JSON with ``--json``), progress bars to stderr. This module parses
arguments and formats output; it must not hold any simulation logic.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from autodrop_core.nqm._experiments import FIGURE1_LRS, THEOREM1_SIGMAS, figure1_runs, theorem1_rows
from autodrop_core.nqm._figure3 import autodrop_run
from autodrop_core.nqm._model import PRESETS, preset

__all__ = ["main"]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``autodrop nqm`` parser and its subcommand parsers by name."""
    parser = argparse.ArgumentParser(
        prog="autodrop nqm", description="Noisy quadratic model (numba): the paper's evidence."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    presets = ", ".join(PRESETS)
    lrs = " ".join(f"{lr:g}" for lr in FIGURE1_LRS)

    th = commands.add_parser(
        "theorem1", help="predicted (eq. 6) against measured saturation angles",
        description="Theorem 1 (eq. 6): the predicted stationary SGD angle against the measured one, per lr.",
        epilog="example: autodrop nqm theorem1 --preset figure1 --lrs 0.03 0.01 --seeds 4 --iters 500",
    )
    th.add_argument(
        "--preset", choices=[*PRESETS, "both"], default="both",
        help=f"curvature/noise spectrum: {presets}, or both (default both)",
    )
    th.add_argument(
        "--lrs", type=float, nargs="+", default=list(FIGURE1_LRS), metavar="LR",
        help=f"constant learning rates to check (default {lrs})",
    )
    th.add_argument("--seeds", type=int, help="independent runs per lr (default: zhang2019 64, figure1 8)")
    th.add_argument("--iters", type=int, help="iterations per run (default: zhang2019 4000, figure1 1000)")
    th.add_argument("--json", action="store_true", help="print JSON instead of a table")

    f1 = commands.add_parser(
        "figure1", help="loss and angle of SGD at constant lrs",
        description=f"Figure 1: loss and per-iteration angle of SGD at the constant lrs {lrs}.",
        epilog="example: autodrop nqm figure1 --iters 1000 --out out/figure1.png",
    )
    f3 = commands.add_parser(
        "figure3", help="AutoDrop (the core's Controller) on the NQM",
        description="Figure 3: AutoDrop (the core's Controller) driving SGD's lr on the NQM.",
        epilog="example: autodrop nqm figure3 --iters 1000 --json --out out/figure3.png",
    )
    for sub in (f1, f3):
        sub.add_argument(
            "--preset", choices=PRESETS, default="figure1",
            help=f"curvature/noise spectrum: {presets} (default figure1)",
        )
        sub.add_argument("--iters", type=int, default=3000, help="SGD iterations (default 3000)")
        sub.add_argument("--seed", type=int, default=0, help="seed of the gradient noise (default 0)")
    f3.add_argument("--drop-delay", type=int, default=20, help="AutoDropConfig.drop_delay (default 20)")
    f3.add_argument("--max-threshold", type=float, default=1.0, help="AutoDropConfig.max_threshold (default 1.0)")
    f3.add_argument("--json", action="store_true", help="print the summary as JSON")

    th.add_argument("--n", type=int, help="coordinates (default: zhang2019 1000, figure1 10000)")
    for sub in (f1, f3):
        sub.add_argument("--n", type=int, default=10_000, help="coordinates (default 10000)")
    for sub in (th, f1, f3):
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
    for sub in (f1, f3):
        sub.add_argument("--out", required=True, help="PNG file to write")
    return parser, {"theorem1": th, "figure1": f1, "figure3": f3}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser, subparsers = _parsers()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a typo'd flag: show the subcommand's usage, not the top-level one
        subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


# preset -> (n, seeds, iters) by default. zhang2019's step lives on its first few coordinates
# (n_eff ~ 1.4 for any n), so n = 1000 gives the same angles as 10^4 at a tenth of the cost,
# and its per-iteration angle is so noisy that it needs many more runs for a useful band.
_THEOREM1_DEFAULTS = {"zhang2019": (1000, 64, 4000), "figure1": (10_000, 8, 1000)}


def _theorem1(args: argparse.Namespace) -> int:
    names = list(PRESETS) if args.preset == "both" else [args.preset]
    rows = []
    for name in names:
        n, seeds, iters = _THEOREM1_DEFAULTS[name]
        model = preset(name, args.n or n)
        rows += theorem1_rows(model, args.lrs, args.seeds or seeds, args.iters or iters, progress=not args.quiet)
    if args.json:
        print(json.dumps({"sigmas": THEOREM1_SIGMAS, "rows": [r.to_dict() for r in rows]}, indent=2))
    else:
        print(f"Theorem 1 (eq. 6): stationary SGD angle, mean over all iterations of all seeds; "
              f"agreement band = {THEOREM1_SIGMAS:g} standard errors of that mean")
        print(f"{'preset':<18}{'seeds':>6}{'iters':>6}{'lr':>8}{'n_eff':>9}{'predicted':>11}{'measured':>10}{'+-band':>8}{'agrees':>8}"
              f"{'ratio-of-means':>16}{'acos(mean cos)':>16}")
        for r in rows:
            verdict = "yes" if r.agrees else "NO"
            print(f"{r.preset:<18}{r.seeds:>6}{r.iters:>6}{r.lr:>8g}{r.n_eff:>9.1f}{r.predicted:>11.3f}{r.measured:>10.3f}"
                  f"{r.tolerance:>8.3f}{verdict:>8}{r.ratio_of_means:>16.3f}{r.mean_cosine_angle:>16.3f}")
    return 0 if all(r.agrees for r in rows) else 1


def _figure1(args: argparse.Namespace) -> int:
    from autodrop_core.nqm._plots import plot_figure1

    model = preset(args.preset, args.n)
    traj = figure1_runs(model, FIGURE1_LRS, args.iters, args.seed, progress=not args.quiet)
    path = plot_figure1(model, traj, args.out)
    print(f"wrote {path}")
    return 0


def _figure3(args: argparse.Namespace) -> int:
    from autodrop_core.nqm._plots import plot_figure3

    model = preset(args.preset, args.n)
    run = autodrop_run(
        model, args.iters, args.seed, progress=not args.quiet,
        drop_delay=args.drop_delay, max_threshold=args.max_threshold,
    )
    plot_figure3(model, run, args.out)
    summary = run.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"AutoDrop on NQM {model.name}: lr 0.06, floor 0.001, drop factor 0.5, angle_window 20, "
          f"reset_on_drop, drop_delay {args.drop_delay}, max_threshold {args.max_threshold:g}; wrote {args.out}")
    print(f"{'drop at':>8}{'new lr':>10}{'trigger':>9}{'theta':>8}{'delta':>9}{'noise-free delta':>18}")
    for d in summary["drops"]:
        print(f"{d['iteration']:>8}{d['lr']:>10g}{d['trigger']:>9}{d['threshold']:>8.3g}{d['delta']:>9.4f}"
              f"{d['expected_delta']:>18.4f}")
    print(f"triggers: {summary['triggers']} ({summary['triggers_on_noise']} while the noise-free trend was >= theta); "
          f"exhausted drops at the floor: {summary['exhausted']}")
    print(f"final loss (mean of last {summary['final_loss_window']}): {summary['final_loss']:.4g}; "
          f"best constant lr {summary['best_constant_lr']:g}: {summary['best_constant_final_loss']:.4g} "
          f"(ratio {summary['ratio_to_best_constant']:.3f}); stationary loss at the last lr: "
          f"{summary['stationary_loss_at_last_lr']:.4g}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``autodrop nqm COMMAND ...``; returns the exit status (theorem1: 1 if a row disagrees)."""
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "theorem1":
            return _theorem1(args)
        if args.command == "figure1":
            return _figure1(args)
        return _figure3(args)
    except ValueError as err:
        print(f"autodrop nqm {args.command}: {err}", file=sys.stderr)
        return 2
