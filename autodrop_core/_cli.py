"""The ``autodrop`` command: ``replay`` here, other subcommands loaded on demand.

``replay`` needs only the standard library. ``nqm`` (numba), ``demo`` and ``bench``
(torch) import their packages only when chosen, and name the extra to install when
they are missing. This module must not import a third-party package at import time.
"""

from __future__ import annotations

import argparse
import importlib
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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autodrop", description="AutoDrop: drop the learning rate when training saturates."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    replay = commands.add_parser(
        "replay", help="read {dot, sq_norm} JSON lines on stdin, write one JSON decision per line"
    )
    add_replay_arguments(replay)
    for name, (_, _, help_text) in _PLUGINS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


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
    args = _build_parser().parse_args(args_list)
    return run_replay(args, stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
