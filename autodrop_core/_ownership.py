"""The learning-rate ownership check every adapter runs at the start of an epoch's close.

An adapter writes each group's lr after every decision and remembers what it wrote;
before it closes the next epoch it hands the remembered and the current lrs to
:func:`check_lrs_unchanged`, which raises :class:`LRConflictError` naming the first
group that someone else changed. This module compares numbers only; it never reads or
writes an optimizer and must not apply any AutoDrop rule.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LRConflictError", "check_lrs_unchanged"]


class LRConflictError(RuntimeError):
    """Another scheduler, callback or line of code changed a learning rate AutoDrop owns.

    Attributes:
        group: index of the first parameter group whose lr changed.
        written: the lr AutoDrop wrote there after its last decision.
        found: the lr found there now.
    """

    def __init__(self, group: int, written: float, found: float, where: str, fix: str) -> None:
        self.group = group
        self.written = written
        self.found = found
        super().__init__(
            f"{where} is {found!r}, but AutoDrop wrote {written!r} there after its last decision: another "
            f"scheduler, callback or line of code changed a learning rate AutoDrop owns, so AutoDrop's drops "
            f"would not take effect (or its decisions would be made for an lr that is not in use). {fix}"
        )


def check_lrs_unchanged(
    written: Sequence[float], found: Sequence[float], *, where: str = "group {group}'s lr", fix: str = ""
) -> None:
    """Raise :class:`LRConflictError` for the first group whose lr is not the one written.

    ``where`` names the lr in the message and may hold ``{group}``; ``fix`` says what to
    do, in the words of the adapter's framework. Groups present in only one of the two
    sequences (added since the last write) are not compared.

    >>> check_lrs_unchanged([0.1, 0.01], [0.1, 0.01])
    >>> check_lrs_unchanged([0.1], [0.05], where="lr[{group}]")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    autodrop_core._ownership.LRConflictError: lr[0] is 0.05, but AutoDrop wrote 0.1 there ...
    """
    for group, (mine, theirs) in enumerate(zip(written, found)):
        if float(mine) != float(theirs):
            raise LRConflictError(group, float(mine), float(theirs), where.format(group=group), fix)
