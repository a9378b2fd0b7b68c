"""The fault suite's shared counters and its closing summary line.

Every fault test adds what it did to one :class:`Counts` (a fixture) and pytest prints
the totals at the end of the run, so a CI log shows how many kills, bit flips and
injected failures the run went through. Sizes come from environment variables so CI
runs a small number and a local run can run many:

* ``AUTODROP_FAULT_KILLS`` (default 20): SIGKILLed ``replay --state`` runs;
* ``AUTODROP_FAULT_FLIPS`` (default 200): random bit flips of a state file;
* ``AUTODROP_FAULT_ROUNDS`` (default 3): rounds of concurrent ``replay --state`` writers;
* ``AUTODROP_FAULT_EPOCHS`` (default 14): epochs of the torch run with injected failures;
* ``AUTODROP_FAULT_SEED`` (default 0): seed of every random choice.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

_COUNTS: Counter[str] = Counter()


def size(name: str, default: int) -> int:
    """An ``AUTODROP_FAULT_*`` size from the environment."""
    return int(os.environ.get(f"AUTODROP_FAULT_{name}", default))


@pytest.fixture
def counts() -> Counter[str]:
    """The suite-wide counters (``counts["kills"] += 1``)."""
    return _COUNTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _COUNTS:
        return
    terminalreporter.section("autodrop fault suite")
    for key in sorted(_COUNTS):
        terminalreporter.write_line(f"{key}: {_COUNTS[key]}")
