"""``autodrop replay``: the language-neutral way into the core, one JSON line per epoch.

Reads ``{"dot": ..., "sq_norm": ...}`` lines from standard input and writes one JSON
decision per line, flushed at once. With ``--state FILE`` the config and state are
loaded from FILE when it exists and written back atomically after every good line,
*before* that line's decision is printed: a decision on stdout always has its state
on disk. This module parses and prints; it holds no decision rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from autodrop_core._config import DEFAULTS, TRIGGERS, AutoDropConfig, ConfigError
from autodrop_core._controller import Controller
from autodrop_core._records import StateError
from autodrop_core._rules import InvalidReductionError

__all__ = ["add_replay_arguments", "run_replay"]

_FLAG_FIELDS = {
    "min_lr": "--min-lr",
    "drop_factor": "--drop-factor",
    "threshold": "--threshold",
    "max_threshold": "--max-threshold",
    "drop_delay": "--drop-delay",
    "angle_window": "--angle-window",
    "reset_on_drop": "--reset-on-drop",
    "trigger": "--trigger",
}
DEFAULT_LR = 0.1


class ReplayError(Exception):
    """A problem to report on stderr with exit status 2."""


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay flags, one per spec field; defaults are the spec's."""
    parser.add_argument(
        "--lr", type=float, action="append", metavar="LR",
        help=f"starting lr of a parameter group; repeat once per group (default: one group at {DEFAULT_LR})",
    )
    parser.add_argument(
        "--min-lr", type=float, action="append", metavar="LR",
        help=f"lr floor: once for all groups or once per group (default {DEFAULTS['min_lr']})",
    )
    parser.add_argument("--drop-factor", type=float, help=f"rho, 0 < rho < 1 (default {DEFAULTS['drop_factor']})")
    parser.add_argument("--threshold", type=float, help=f"theta0 in degrees (default {DEFAULTS['threshold']})")
    parser.add_argument("--max-threshold", type=float, help=f"cap on theta (default {DEFAULTS['max_threshold']})")
    parser.add_argument(
        "--drop-delay", type=int, help=f"n_d, vectors averaged per drop (default {DEFAULTS['drop_delay']})"
    )
    parser.add_argument("--angle-window", type=int, help=f"w, angles averaged (default {DEFAULTS['angle_window']})")
    parser.add_argument("--reset-on-drop", action="store_true", default=None, help="a drop clears the angle history")
    parser.add_argument(
        "--trigger", choices=TRIGGERS,
        help="'paper': fixed threshold on the change of angle; 'calibrated': a flatness test that sets its own "
        f"threshold from the angle's noise (default {DEFAULTS['trigger']})",
    )
    parser.add_argument(
        "--state", metavar="FILE",
        help="load config and state from FILE if it exists; write both back atomically after every line",
    )


def _flag(field: str) -> str:
    """The command-line flag of a config field (``lrs[1]`` -> ``--lr``)."""
    name = field.split("[")[0]
    return "--lr" if name == "lrs" else _FLAG_FIELDS.get(name, name)


def _given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set on the command line, unvalidated."""
    given: dict[str, Any] = {}
    if args.lr is not None:
        given["lrs"] = tuple(args.lr)
    for name in _FLAG_FIELDS:
        value = getattr(args, name)
        if value is not None:
            given[name] = value[0] if name == "min_lr" and len(value) == 1 else value
    return given


def _new_config(given: dict[str, Any]) -> AutoDropConfig:
    try:
        return AutoDropConfig(**{"lrs": (DEFAULT_LR,), **given})
    except ConfigError as err:
        raise ReplayError(f"{_flag(err.field)}: {err}") from err


def _load_controller(path: str, given: dict[str, Any]) -> Controller:
    try:
        with open(path, encoding="utf-8") as handle:
            controller = Controller.from_dict(json.load(handle))
    except (OSError, json.JSONDecodeError, StateError, ConfigError, KeyError, TypeError) as err:
        raise ReplayError(f"--state {path}: cannot load: {err}") from err
    # Flags may repeat the stored config; a flag that contradicts it is refused.
    stored = controller.config
    for name, value in given.items():
        try:
            wanted = getattr(dataclasses.replace(stored, **{name: value}), name)
        except ConfigError as err:
            raise ReplayError(f"{_flag(name)}: {err}") from err
        if wanted != getattr(stored, name):
            raise ReplayError(
                f"{_flag(name)}={value!r} contradicts the config stored in {path} "
                f"({name}={getattr(stored, name)!r}); drop the flag or start a new state file"
            )
    return controller


def _save_controller(path: str, controller: Controller) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".autodrop-state-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(controller.to_dict(), handle, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _parse_line(number: int, line: str) -> tuple[float, float]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ReplayError(
            f"line {number}: not JSON ({err.msg}): {line.strip()[:80]!r}; "
            'expected one JSON object per line, e.g. {"dot": 0.5, "sq_norm": 1.0}'
        ) from err
    if not isinstance(record, dict):
        raise ReplayError(f"line {number}: expected a JSON object with keys 'dot' and 'sq_norm', got {record!r}")
    values = []
    for key in ("dot", "sq_norm"):
        if key not in record:
            raise ReplayError(f"line {number}: missing key {key!r} in {record!r}")
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReplayError(f"line {number}: {key}={value!r} is not a number")
        values.append(float(value))
    return values[0], values[1]


def run_replay(args: argparse.Namespace, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int:
    """Run the replay loop; return the exit status (0, or 2 on a bad flag or line)."""
    try:
        given = _given_flags(args)
        if args.state and os.path.exists(args.state):
            controller = _load_controller(args.state, given)  # flags are checked against the stored config
        else:
            controller = Controller(_new_config(given))
    except ReplayError as err:
        print(f"autodrop replay: error: {err}", file=stderr)
        return 2

    for number, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        try:
            dot, sq_norm = _parse_line(number, line)
            decision = controller.observe(dot, sq_norm)
        except InvalidReductionError as err:
            print(f"autodrop replay: error: line {number}: {err.field}={err.value} rejected ({err})", file=stderr)
            return 2
        except ReplayError as err:
            print(f"autodrop replay: error: {err}", file=stderr)
            return 2
        if args.state:
            _save_controller(args.state, controller)
        stdout.write(json.dumps(decision.to_dict(), allow_nan=False) + "\n")
        stdout.flush()
    return 0


def main_replay(argv: Sequence[str] | None = None) -> int:
    """``autodrop replay`` on its own (used by tests and ``python -m``)."""
    parser = argparse.ArgumentParser(prog="autodrop replay")
    add_replay_arguments(parser)
    return run_replay(parser.parse_args(argv), sys.stdin, sys.stdout, sys.stderr)
