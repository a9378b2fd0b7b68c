"""The examples in ``docs/tensorflow.md`` run as written (one after the other, as a reader would)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "tensorflow.md"


def test_the_documented_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the resume example writes its checkpoint under the working directory
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    lrs = namespace["history"].history["learning_rate"]
    assert lrs[-1] < lrs[0], "the fit example should show a drop"
    assert namespace["resumed"].autodrop.epoch == 16
    assert namespace["autodrop"].epoch == 10
    assert "nan" in capsys.readouterr().out
