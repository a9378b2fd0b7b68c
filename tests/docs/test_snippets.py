"""Every ```python block of README.md and docs/*.md runs as written, each in a fresh interpreter.

A block is a complete program: it is written to a file in an empty temporary directory
and run there with this interpreter, so a missing import or an undefined name fails.
Markers, on the line right before a block (an HTML comment, invisible once rendered):

* ``<!-- snippet: skip (reason) -->``: the block is not run; the reason is required.
* ``<!-- snippet: continue -->``: the block continues the previous runnable one of the same page
  (the text says so too); both run together, as one program, in the order written.

A ```console block is a shell session: each ``$ `` line (with its ``\\`` continuations) is
run with bash, ``autodrop`` being this environment's console script, and its output must
be the lines that follow, exactly. ```bash blocks are commands to copy (installs, runs of
several minutes) and are not run here.

Each python block belongs to the framework it imports (demo, nqm, torch, jax, tensorflow, or
core for the standard library and numpy). Outside nox a block whose modules are not
installed is skipped, saying which ``nox`` session runs it. Under nox, each
``tests(F)`` session sets ``AUTODROP_SNIPPETS=F``: then only F's blocks are collected,
and a missing module is a failure, so no snippet can silently stop being run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- snippet: (?P<kind>skip|continue)(?: \((?P<reason>[^)]+)\))? -->$")
IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+(?:\s*,\s*[\w.]+)*))", re.M)

# (framework, modules that put a block in it), the first match wins.
FRAMEWORKS: list[tuple[str, tuple[str, ...]]] = [
    ("demo", ("autodrop_demo",)),
    ("nqm", ("autodrop_core.nqm",)),
    ("torch", ("torch", "autodrop_torch", "lightning")),
    ("jax", ("jax", "optax", "flax", "orbax", "autodrop_jax")),
    ("tensorflow", ("tensorflow", "keras", "autodrop_tf")),
]

# Modules a framework's blocks need beyond the ones they import (the packages import them).
NEEDS: dict[str, tuple[str, ...]] = {
    "demo": ("torch", "mnist1d", "sklearn", "matplotlib"),
    "nqm": ("numpy", "numba"),
    "torch": ("numpy",),
    "jax": ("jaxlib", "numpy"),
    "tensorflow": ("numpy",),
}


@dataclass
class Snippet:
    """One program: a block and the blocks that continue it."""

    page: Path
    line: int  # 1-based line of the opening fence of the first block
    code: str
    skip: str | None = None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def modules(self) -> set[str]:
        found: set[str] = set()
        for match in IMPORT.finditer(self.code):
            names = match.group(1) or match.group(2)
            found.update(name.strip() for name in names.split(","))
        return found

    def framework(self) -> str:
        modules = self.modules()
        for framework, owners in FRAMEWORKS:
            if any(m == owner or m.startswith(owner + ".") for m in modules for owner in owners):
                return framework
        return "core"

    def missing(self) -> list[str]:
        tops = sorted({m.split(".")[0] for m in self.modules()} | set(NEEDS.get(self.framework(), ())))
        return [m for m in tops if importlib.util.find_spec(m) is None]


def parse(page: Path) -> list[Snippet]:
    """The snippets of one page, in order; a marker that is misused is an error."""
    lines = page.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            if lines[i].startswith("```"):  # skip over other fenced blocks whole
                i += 1
                while i < len(lines) and not lines[i].startswith("```"):
                    i += 1
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{page.name}:{start + 1}: unclosed ```python block")
        i += 1
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        code = "\n".join(body) + "\n"
        if marker and marker["kind"] == "skip":
            if not marker["reason"]:
                raise ValueError(f"{page.name}:{start + 1}: 'snippet: skip' needs a reason in parentheses")
            snippets.append(Snippet(page, start + 1, code, skip=marker["reason"]))
        elif marker and marker["kind"] == "continue":
            runnable = [s for s in snippets if not s.skip]  # a skipped block in between is passed over
            if not runnable:
                raise ValueError(f"{page.name}:{start + 1}: 'snippet: continue' needs a runnable block before it")
            runnable[-1].code += f"\n# --- continued from {page.name}:{start + 1} ---\n" + code
        else:
            snippets.append(Snippet(page, start + 1, code))
    return snippets


SNIPPETS = [snippet for page in PAGES for snippet in parse(page)]
SESSION = os.environ.get("AUTODROP_SNIPPETS")
SELECTED = [s for s in SNIPPETS if SESSION is None or s.framework() == SESSION]


def test_every_page_has_been_parsed_and_markers_are_well_formed() -> None:
    # parse() already raised at import for a bad marker; this pins down that blocks are found.
    assert len(SNIPPETS) >= 10
    assert any(s.page.name == "README.md" for s in SNIPPETS)


def test_the_framework_of_a_block_is_the_one_it_imports() -> None:
    def framework(code: str) -> str:
        return Snippet(ROOT, 1, code).framework()

    assert framework("import numpy as np\nfrom autodrop_numpy import NumpyAutoDrop\n") == "core"
    assert framework("import torch\nfrom autodrop_demo import Cnn1d\n") == "demo"
    assert framework("import jax.numpy as jnp, optax\n") == "jax"
    assert framework("from autodrop_core.nqm import simulate\n") == "nqm"
    assert framework("import keras\n") == "tensorflow"


@pytest.mark.parametrize("snippet", SELECTED, ids=[s.name for s in SELECTED])
def test_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.skip:
        pytest.skip(f"marked in the page: {snippet.skip}")
    missing = snippet.missing()
    if missing:
        message = f"needs {', '.join(missing)}; run by nox -s \"tests({snippet.framework()})\""
        if SESSION is not None:
            pytest.fail(f"{snippet.name}: this session should run it but {message}")
        pytest.skip(message)
    program = tmp_path / "snippet.py"
    program.write_text(f"# {snippet.name}\n{snippet.code}", encoding="utf-8")
    # One thread per framework: CI has two cores, and these are tiny models.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(program)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"{snippet.name} failed (exit {result.returncode}).\n--- program ---\n{snippet.code}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    )


@dataclass
class Console:
    """One ``$ command`` of a ```console block and the output the page shows for it."""

    page: Path
    line: int
    command: str
    output: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def console_sessions(page: Path) -> list[Console]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Console] = []
    inside = False
    for number, text in enumerate(lines, start=1):
        if text.strip() == "```console":
            inside = True
        elif inside and text.strip() == "```":
            inside = False
        elif inside and text.startswith("$ "):
            found.append(Console(page, number, text[2:], ""))
        elif inside and found and found[-1].command.endswith("\\") and not found[-1].output:
            found[-1].command += "\n" + text
        elif inside and found:
            found[-1].output += text + "\n"
    return found


CONSOLES = [c for page in PAGES for c in console_sessions(page)] if SESSION in (None, "core") else []


def test_the_readme_shows_a_console_session() -> None:
    assert any(c.page.name == "README.md" for page in PAGES for c in console_sessions(page))


@pytest.mark.parametrize("console", CONSOLES, ids=[c.name for c in CONSOLES])
def test_console_session_prints_what_the_page_shows(console: Console, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    result = subprocess.run(
        ["bash", "-c", console.command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == console.output, f"{console.name}: the page shows other output than the command prints"
