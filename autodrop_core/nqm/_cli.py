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
from typing import Any

from autodrop_core._config import TRIGGERS
from autodrop_core.nqm._experiments import (
    FIGURE1_LRS,
    THEOREM1_SIGMAS,
    THEOREM1_TOLERANCE,
    figure1_runs,
    theorem1_rows,
)
from autodrop_core.nqm._figure3 import AutoDropRun, autodrop_run
from autodrop_core.nqm._model import PRESETS, NoisyQuadratic, preset

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
    th.add_argument("--seeds", type=int, help="independent runs per lr (default: zhang2019 32, figure1 8)")
    th.add_argument("--iters", type=int, help="iterations per run (default: zhang2019 9000, figure1 1500)")
    th.add_argument("--json", action="store_true", help="print JSON instead of a table")

    f1 = commands.add_parser(
        "figure1", help="loss and angle of SGD at constant lrs",
        description=f"Figure 1: loss and per-iteration angle of SGD at the constant lrs {lrs}.",
        epilog="example: autodrop nqm figure1 --iters 1000 --out out/figure1.png",
    )
    f1.add_argument(
        "--preset", choices=PRESETS, default="figure1", help=f"curvature/noise spectrum: {presets} (default figure1)"
    )
    f3 = commands.add_parser(
        "figure3", help="AutoDrop (the core's Controller) on the NQM",
        description="Figure 3: AutoDrop (the core's Controller) driving SGD's lr on the NQM.",
        epilog="example: autodrop nqm figure3 --preset figure1 --trigger paper --iters 1000 --json --out out/fig3.png",
    )
    f3.add_argument(
        "--preset", choices=[*PRESETS, "both"], default="both",
        help=f"curvature/noise spectrum: {presets}, or both (default both)",
    )
    f3.add_argument("--trigger", choices=[*TRIGGERS, "both"], default="both",
                    help="AutoDropConfig.trigger (default both)")
    for sub in (f1, f3):
        sub.add_argument("--iters", type=int, default=3000, help="SGD iterations (default 3000)")
        sub.add_argument("--seed", type=int, default=0, help="seed of the gradient noise (default 0)")
    f3.add_argument("--drop-delay", type=int, default=20, help="AutoDropConfig.drop_delay (default 20)")
    f3.add_argument("--max-threshold", type=float,
                    help="AutoDropConfig.max_threshold, paper trigger only (default 1.0)")
    f3.add_argument("--json", action="store_true", help="print the summary as JSON")

    th.add_argument("--n", type=int, help="coordinates (default 10000)")
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


# preset -> (n, seeds, iters) by default. The ratio of means has a standard error of about
# 9 deg / sqrt(seeds * iters) on zhang2019 (n_eff ~ 57: each iteration's dot product is
# noisy) and about 0.9 deg / sqrt(seeds * iters) on figure1 (n_eff ~ 5000), so these sizes
# put THEOREM1_SIGMAS (3) standard errors inside the 0.05-degree band on every row.
_THEOREM1_DEFAULTS = {"zhang2019": (10_000, 32, 9000), "figure1": (10_000, 8, 1500)}


def _theorem1(args: argparse.Namespace) -> int:
    names = list(PRESETS) if args.preset == "both" else [args.preset]
    rows = []
    for name in names:
        n, seeds, iters = _THEOREM1_DEFAULTS[name]
        model = preset(name, args.n or n)
        rows += theorem1_rows(model, args.lrs, args.seeds or seeds, args.iters or iters, progress=not args.quiet)
    if args.json:
        print(json.dumps({"tolerance": THEOREM1_TOLERANCE, "sigmas": THEOREM1_SIGMAS,
                          "rows": [r.to_dict() for r in rows]}, indent=2))
    else:
        print(f"Theorem 1 (eq. 6): stationary SGD angle. measured = ratio of means, "
              f"degrees(acos(sum dot / sqrt(sum |d(t)|^2 sum |d(t-1)|^2))) over all iterations of all seeds "
              f"(the quantity eq. 6 predicts); agrees = within {THEOREM1_TOLERANCE:g} deg; se = jackknife over seeds")
        print(f"{'preset':<18}{'seeds':>6}{'iters':>6}{'lr':>7}{'n_eff':>8}{'predicted':>11}{'measured':>10}"
              f"{'se':>7}{'diff':>8}{'agrees':>7}{'mean angle':>12}{'se':>7}{'acos(mean cos)':>16}")
        for r in rows:
            verdict = ("yes" if r.agrees else "NO") + ("" if r.resolved else "?")
            print(f"{r.preset:<18}{r.seeds:>6}{r.iters:>6}{r.lr:>7g}{r.n_eff:>8.1f}{r.predicted:>11.3f}"
                  f"{r.measured:>10.3f}{r.standard_error:>7.3f}{r.measured - r.predicted:>+8.3f}{verdict:>7}"
                  f"{r.mean_angle:>12.3f}{r.mean_angle_standard_error:>7.3f}{r.mean_cosine_angle:>16.3f}")
        if not all(r.resolved for r in rows):
            print(f"?: {THEOREM1_SIGMAS:g} standard errors exceed the band; more --seeds or --iters are needed "
                  "for the verdict to mean more than 'consistent with'")
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

    names = list(PRESETS) if args.preset == "both" else [args.preset]
    triggers = list(TRIGGERS) if args.trigger == "both" else [args.trigger]
    panels: list[tuple[NoisyQuadratic, list[AutoDropRun]]] = []
    for name in names:
        model = preset(name, args.n)
        runs = []
        for trigger in triggers:
            config: dict[str, Any] = {"trigger": trigger, "drop_delay": args.drop_delay}
            if args.max_threshold is not None and (trigger == "paper" or args.trigger == "calibrated"):
                config["max_threshold"] = args.max_threshold  # the calibrated trigger refuses it by name
            runs.append(autodrop_run(model, args.iters, args.seed, progress=not args.quiet, **config))
        panels.append((model, runs))
    plot_figure3(panels, args.out)
    if args.json:
        summaries = {model.name: {run.trigger: run.summary() for run in runs} for model, runs in panels}
        print(json.dumps(summaries, indent=2))
        return 0
    print(f"AutoDrop on the NQM, one iteration per AutoDrop epoch, seed {args.seed}, x(0) = 1, {args.iters} iters: "
          f"lr 0.06, floor 0.001, drop factor 0.5, drop_delay {args.drop_delay}; paper trigger with angle_window 20, "
          f"reset_on_drop, max_threshold {args.max_threshold or 1.0:g}; calibrated trigger with the core's defaults. "
          f"Wrote {args.out}")
    for model, runs in panels:
        for run in runs:
            _print_figure3_run(model, run)
    print()
    print(f"{'preset':<20}{'method':<22}{'final loss':>12}{'/ best const':>13}  lr drops at iterations")
    for model, runs in panels:
        finals = runs[0].baseline_final_losses()
        best = min(finals, key=finals.__getitem__)
        for run in runs:
            drops = ", ".join(str(it) for it, _ in run.drops) or "none"
            print(f"{model.name:<20}{'AutoDrop ' + run.trigger:<22}{run.final_loss():>12.4g}"
                  f"{run.final_loss() / finals[best]:>13.3f}  {drops}")
        print(f"{model.name:<20}{f'best constant {best:g}':<22}{finals[best]:>12.4g}{1.0:>13.3f}")
    return 0


def _print_figure3_run(model: NoisyQuadratic, run: AutoDropRun) -> None:
    summary = run.summary()
    theta = "theta" if run.trigger == "paper" else "sigma"
    print(f"\n{model.name}, trigger={run.trigger}")
    print(f"{'drop at':>8}{'new lr':>10}{'trigger':>9}{theta:>8}{'delta':>9}{'noise-free delta':>18}")
    for d in summary["drops"]:
        print(f"{d['iteration']:>8}{d['lr']:>10g}{d['trigger']:>9}{d['threshold']:>8.3g}{d['delta']:>9.4f}"
              f"{d['expected_delta']:>18.4f}")
    print(f"triggers: {summary['triggers']} ({summary['triggers_on_noise']} where the test failed on the noise-free "
          f"angles); exhausted drops at the floor: {summary['exhausted']}")
    print(f"final loss (mean of last {summary['final_loss_window']}): {summary['final_loss']:.4g}; "
          f"best constant lr {summary['best_constant_lr']:g}: {summary['best_constant_final_loss']:.4g} "
          f"(ratio {summary['ratio_to_best_constant']:.3f}); stationary loss at the last lr: "
          f"{summary['stationary_loss_at_last_lr']:.4g}")


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
