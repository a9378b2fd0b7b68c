"""DecisionHistory: the newest ``limit`` decisions, oldest first, and a count of the dropped ones."""

from __future__ import annotations

import pytest

from autodrop_core import DEFAULT_HISTORY_SIZE, DecisionHistory


def test_it_keeps_the_newest_limit_entries_in_order_and_counts_the_rest() -> None:
    history = DecisionHistory(limit=3)
    for n in range(7):
        history.append(n)
    assert history == [4, 5, 6] and history.dropped == 4
    history.extend([7, 8])
    history += [9]
    assert history == [7, 8, 9] and history.dropped == 7
    assert history[-1] == 9 and history[:2] == [7, 8]


def test_none_keeps_every_entry_and_the_default_is_documented() -> None:
    history = DecisionHistory(limit=None)
    history.extend(range(5000))
    assert len(history) == 5000 and history.dropped == 0
    assert DecisionHistory().limit == DEFAULT_HISTORY_SIZE == 100


def test_built_from_too_many_entries_it_keeps_the_newest() -> None:
    history = DecisionHistory(range(10), limit=4, dropped=2)
    assert history == [6, 7, 8, 9] and history.dropped == 8
    assert history.copy() == history and history.copy().dropped == 8


@pytest.mark.parametrize("limit", [0, -3, 1.5, True, "10"])
def test_a_bad_limit_is_refused_naming_the_value_and_the_range(limit: object) -> None:
    with pytest.raises(ValueError, match=r"history_size must be an integer >= 1, or None .*got"):
        DecisionHistory(limit=limit)  # type: ignore[arg-type]
