"""A bounded record of an adapter's decisions: the last ``limit`` of them, or all.

Every adapter keeps ``history``, the core's :class:`~autodrop_core.Decision` of each
observed epoch. On a long run an unbounded list (and every checkpoint that carries it)
grows by about 200 bytes per epoch, so :class:`DecisionHistory` keeps only the newest
``limit`` decisions (:data:`DEFAULT_HISTORY_SIZE` unless the user asks otherwise) and
drops the oldest on append; ``limit=None`` keeps the full record, by explicit opt-in.
It is a ``list`` (indexing, slicing, ``len``, iteration as before) that knows how many
decisions it has dropped. It decides nothing and never feeds back into the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, SupportsIndex

__all__ = ["DEFAULT_HISTORY_SIZE", "DecisionHistory", "check_history_size"]

#: Decisions kept by default: enough to see the angle settle before a drop and the
#: decisions around it, about 20 kB in a checkpoint.
DEFAULT_HISTORY_SIZE = 100


def check_history_size(limit: object) -> int | None:
    """``limit`` if it is None or an int >= 1; else a ValueError naming it and the valid range."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        shown = repr(limit) if len(repr(limit)) <= 80 else repr(limit)[:77] + "..."
        raise ValueError(
            f"history_size must be an integer >= 1, or None to keep every decision; got {shown}"
        )
    return limit


class DecisionHistory(list[Any]):
    """The newest ``limit`` decisions in order, oldest first (``limit=None``: all of them).

    Attributes:
        limit: how many decisions are kept (None: no limit).
        dropped: how many older decisions were discarded so far (0 with ``limit=None``).
    """

    def __init__(
        self, items: Iterable[Any] = (), *, limit: int | None = DEFAULT_HISTORY_SIZE, dropped: int = 0
    ) -> None:
        self.limit = check_history_size(limit)
        if isinstance(dropped, bool) or not isinstance(dropped, int) or dropped < 0:
            raise ValueError(f"dropped must be an integer >= 0, got {dropped!r}")
        super().__init__(items)
        self.dropped = dropped
        self._trim()

    def _trim(self) -> None:
        if self.limit is not None and len(self) > self.limit:
            extra = len(self) - self.limit
            del self[:extra]
            self.dropped += extra

    def append(self, item: Any) -> None:
        super().append(item)
        self._trim()

    def extend(self, items: Iterable[Any]) -> None:
        super().extend(items)
        self._trim()

    def insert(self, index: SupportsIndex, item: Any) -> None:
        super().insert(index, item)
        self._trim()

    def __iadd__(self, items: Iterable[Any]) -> DecisionHistory:  # type: ignore[misc]
        self.extend(items)
        return self

    def copy(self) -> DecisionHistory:
        return DecisionHistory(self, limit=self.limit, dropped=self.dropped)

    def __repr__(self) -> str:
        return f"DecisionHistory({list.__repr__(self)}, limit={self.limit}, dropped={self.dropped})"
