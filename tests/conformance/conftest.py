"""Prints how many examples the suite took to catch each wrong adapter (``test_wrong_adapters``)."""

from __future__ import annotations

import statistics
import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    module = next((m for name, m in sys.modules.items() if name.endswith("test_wrong_adapters")), None)
    catches = getattr(module, "CATCHES", None)
    if not catches:
        return
    terminalreporter.section("wrong adapters")
    set_size = len(module.wrong.WRONG_DRIVERS)
    counts = sorted(n for n, _ in catches.values())
    terminalreporter.write_line(
        f"caught {len(catches)} of {set_size} wrong adapters; examples to catch: median "
        f"{statistics.median(counts):g}, max {counts[-1]}"
    )
    for name, (n, line) in sorted(catches.items(), key=lambda item: item[1][0]):
        terminalreporter.write_line(f"  {name}: {n} examples: {line[:110]}")
