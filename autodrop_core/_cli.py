"""The ``autodrop`` command: ``replay`` here, other subcommands loaded on demand.

``replay`` needs only the standard library. ``nqm`` (numba), ``demo`` and ``bench``
(torch) import their packages only when chosen, and name the extra to install when
they are missing. This module must not import a third-party package at import time.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from typing import IO

from autodrop_core._replay import add_replay_arguments, run_replay

__all__ = ["main"]

# subcommand -> (module with `main(argv) -> int`, extra that provides it, one-line help)
_PLUGINS: dict[str, tuple[str, str, str]] = {
    "nqm": ("autodrop_core.nqm._cli", "nqm", "noisy quadratic model: figures and Theorem 1 (numba)"),
    "demo": ("autodrop_demo._demo", "demo", "train a small CNN on MNIST-1D and plot AutoDrop's decisions"),
    "bench": ("autodrop_demo._bench", "demo", "compare AutoDrop with common lr schedules on two tasks"),
}


_REPLAY_DESCRIPTION = """\
Replay AutoDrop over per-epoch reductions: read one JSON object per line on stdin,
{"dot": <s(t).s(t-1)>, "sq_norm": <|s(t)|^2>}, and write one JSON decision per line
(flushed at once). Without flags the config is the spec's defaults with one group at lr 0.1.
"""

_REPLAY_EPILOG = """\
example:
  printf '%s\\n' '{"dot": 0.0, "sq_norm": 4.0}' '{"dot": 1.0, "sq_norm": 1.0}' \\
    | autodrop replay --lr 0.1 --drop-delay 2

A trainer can call `autodrop replay --state s.json` once per epoch with one line.
A bad line or flag exits with status 2 and a message on stderr.
"""


def _version() -> str:
    """The installed distribution's version (``0+unknown`` when run from a bare source tree)."""
    try:
        return importlib.metadata.version("autodrop")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and its ``replay`` subparser."""
    parser = argparse.ArgumentParser(
        prog="autodrop", description="AutoDrop: drop the learning rate when training saturates."
    )
    parser.add_argument("--version", action="version", version=f"autodrop {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    replay = commands.add_parser(
        "replay",
        help="read {dot, sq_norm} JSON lines on stdin, write one JSON decision per line",
        description=_REPLAY_DESCRIPTION,
        epilog=_REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_replay_arguments(replay)
    for name, (_, _, help_text) in _PLUGINS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser, replay


def _load_plugin(name: str) -> Callable[[list[str]], int]:
    module_name, extra, _ = _PLUGINS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise SystemExit(
            f"autodrop {name}: needs {err.name!r}, which is not installed; "
            f"install it with: pip install 'autodrop[{extra}]'"
        ) from err
    entry: Callable[[list[str]], int] = module.main
    return entry


def main(
    argv: Sequence[str] | None = None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Entry point of the ``autodrop`` console script and ``python -m autodrop_core``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in _PLUGINS:
        return _load_plugin(args_list[0])(args_list[1:])
    parser, replay = _build_parser()
    args, unknown = parser.parse_known_args(args_list)
    if unknown:  # a typo'd replay flag: show replay's usage, not the top-level one
        replay.error(f"unrecognized arguments: {' '.join(unknown)}")
    return run_replay(args, stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
