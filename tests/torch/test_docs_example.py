"""The usage example of docs/torch.md runs as written and drops at least once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "torch.md"


def test_the_usage_example_in_the_docs_runs_and_drops_the_learning_rate(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "lr -> [0.005" in printed
    assert len(namespace["angles"]) == 30  # type: ignore[arg-type]
