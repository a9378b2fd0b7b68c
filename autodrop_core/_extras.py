"""Name the extra to install when an adapter's framework is missing.

The adapters import their framework at import time; without it Python's bare
``No module named 'jax'`` does not say that ``pip install "autodrop[jax]"`` is the fix.
This module only builds that message; it must not import any third-party package.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["missing_framework"]


def missing_framework(
    err: ModuleNotFoundError, package: str, extra: str, frameworks: Iterable[str]
) -> ModuleNotFoundError | None:
    """The error to raise instead of ``err`` when it is one of ``frameworks`` that is missing.

    Returns ``None`` when ``err`` is about some other module (then re-raise ``err`` itself):
    a missing module that the extra does not provide must not be blamed on the extra.
    """
    top = (err.name or "").split(".")[0]
    if top not in set(frameworks):
        return None
    return ModuleNotFoundError(
        f"{package} needs {top!r}, which is not installed; install it with: pip install \"autodrop[{extra}]\"",
        name=err.name,
    )
