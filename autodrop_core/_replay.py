"""``autodrop replay``: the language-neutral way into the core, one JSON line per epoch.

Reads ``{"dot": ..., "sq_norm": ...}`` lines (optionally with ``"epoch": N``) from
standard input as bytes, decoded as UTF-8 line by line, and writes one JSON decision
per line, flushed at once. With ``--state FILE`` the file is locked for the whole run,
the config, state and last decision are loaded from it when it exists, and it is
written back atomically after every new decision, *before* that decision is printed;
a line whose ``epoch`` is the stored one gets the stored decision again, so a trainer
that retries an epoch after a crash is answered exactly once (docs/replay.md). Every
problem is a message on stderr naming the line, with exit status 2, never a traceback.
This module parses and prints; it holds no decision rule.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from autodrop_core._config import DEFAULTS, TRIGGERS, AutoDropConfig, ConfigError
from autodrop_core._controller import Controller
from autodrop_core._rules import InvalidReductionError
from autodrop_core._statefile import StateFile, StateFileError, clip, short

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


def _check_flags(path: str, controller: Controller, given: dict[str, Any]) -> None:
    """Flags may repeat the stored config; a flag that contradicts it is refused."""
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


def _number(number: int, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReplayError(f"line {number}: {key}={short(value)} is not a number")
    try:
        return float(value)
    except OverflowError as err:
        raise ReplayError(f"line {number}: {key}={short(value)} is too large for a float") from err


def _parse_line(number: int, line: str) -> tuple[float, float, int | None]:
    """``(dot, sq_norm, epoch)`` of one input line; ``epoch`` is None when the line has none."""
    try:
        record = json.loads(line)
    except RecursionError as err:
        raise ReplayError(f"line {number}: JSON nested too deeply: {short(line.strip())}") from err
    except json.JSONDecodeError as err:
        raise ReplayError(
            f"line {number}: not JSON ({err.msg}): {short(line.strip())}; "
            'expected one JSON object per line, e.g. {"dot": 0.5, "sq_norm": 1.0}'
        ) from err
    except ValueError as err:  # an integer beyond sys.get_int_max_str_digits()
        raise ReplayError(f"line {number}: not readable JSON ({clip(str(err), 120)})") from err
    if not isinstance(record, dict):
        raise ReplayError(f"line {number}: expected a JSON object with keys 'dot' and 'sq_norm', got {short(record)}")
    values = []
    for key in ("dot", "sq_norm"):
        if key not in record:
            raise ReplayError(f"line {number}: missing key {key!r} in {short(record)}")
        values.append(_number(number, key, record[key]))
    epoch = record.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1):
        raise ReplayError(f"line {number}: epoch={short(epoch)} is invalid: expected an integer >= 1")
    return values[0], values[1], epoch


def _decode(number: int, raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ReplayError(
            f"line {number}: not UTF-8 (byte {raw[err.start]:#04x} at byte offset {err.start}); "
            "send JSON text encoded as UTF-8"
        ) from err


def _out_of_order(number: int, epoch: int, current: int, where: str) -> ReplayError:
    direction = "skips ahead of" if epoch > current + 1 else "goes back before"
    return ReplayError(
        f"line {number}: epoch={epoch} {direction} the state{where}, which is at epoch {current}: send epoch "
        f"{current + 1} for the next decision, or epoch {current} to get the last decision again"
    )


def _silence_broken(stream: IO[str]) -> None:
    """After a failed write to the real stdout, point fd 1 at /dev/null so the exit-time flush cannot fail."""
    if stream is sys.stdout or stream is sys.__stdout__:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


def run_replay(args: argparse.Namespace, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int:
    """Run the replay loop; return the exit status (0, or 2 on a bad flag, line, state file or output)."""
    state_file = StateFile(args.state) if args.state else None
    try:
        return _run(args, state_file, stdin, stdout, stderr)
    except (ReplayError, StateFileError) as err:
        print(f"autodrop replay: error: {err}", file=stderr)
        return 2
    finally:
        if state_file is not None:
            state_file.close()


def _run(args: argparse.Namespace, state_file: StateFile | None, stdin: IO[str], stdout: IO[str],
         stderr: IO[str]) -> int:
    given = _given_flags(args)
    last: dict[str, Any] | None = None
    if state_file is not None:
        state_file.open()  # before line 1: a missing or read-only directory is found now, not later
    if state_file is not None and state_file.exists():
        controller, last = state_file.load()
        _check_flags(args.state, controller, given)
    else:
        controller = Controller(_new_config(given))
    where = f" in {args.state}" if args.state else ""

    source: Iterable[bytes | str] = getattr(stdin, "buffer", stdin)  # bytes: decoded per line, never by locale
    for number, raw in enumerate(source, start=1):
        line = _decode(number, raw)
        if not line.strip():
            continue
        dot, sq_norm, epoch = _parse_line(number, line)
        current = controller.state.epoch
        if epoch is not None and epoch == current:
            if last is None:
                raise ReplayError(
                    f"line {number}: epoch={epoch} was already decided, but the state{where} holds no decision "
                    "to repeat (it was written by an older autodrop); send the next epoch instead"
                )
            out = last  # an idempotent retry: the same decision, nothing recomputed or written
        elif epoch is not None and epoch != current + 1:
            raise _out_of_order(number, epoch, current, where)
        else:
            try:
                decision = controller.observe(dot, sq_norm)
            except InvalidReductionError as err:
                raise ReplayError(f"line {number}: {err.field}={short(err.value)} rejected ({clip(str(err))})") \
                    from err
            out = decision.to_dict()
            if state_file is not None:
                try:
                    state_file.save(controller, out)
                except (OSError, ValueError) as err:
                    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
                    raise ReplayError(
                        f"line {number}: cannot write the state file {args.state} ({reason}); epoch "
                        f"{decision.epoch} was not decided and the file still holds epoch {current}"
                    ) from err
            last = out
        try:
            stdout.write(json.dumps(out, allow_nan=False) + "\n")
            stdout.flush()
        except OSError as err:
            _silence_broken(stdout)
            kept = (f"; the state{where} holds it: send this line again with \"epoch\": {out['epoch']} to get it"
                    if state_file is not None else "")
            raise ReplayError(
                f"line {number}: cannot write the decision of epoch {out['epoch']} to stdout "
                f"({err.strerror or type(err).__name__}){kept}"
            ) from err
    return 0


def main_replay(argv: Sequence[str] | None = None) -> int:
    """``autodrop replay`` on its own (used by tests and ``python -m``)."""
    parser = argparse.ArgumentParser(prog="autodrop replay")
    add_replay_arguments(parser)
    return run_replay(parser.parse_args(argv), sys.stdin, sys.stdout, sys.stderr)
