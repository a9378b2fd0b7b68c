"""Check a built documentation site: every name in each package's ``__all__`` has an entry.

Run by ``nox -s docs`` after ``mkdocs build`` as ``python tests/docs/check_api_reference.py SITE``.
``__all__`` is read from the source with :mod:`ast` (no package is imported, so no
framework is needed), and each name must appear as a mkdocstrings anchor on its API page.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# API page (docs/api/<page>.md) -> (module, its __init__.py)
PAGES = {
    "core": ("autodrop_core", ROOT / "autodrop_core" / "__init__.py"),
    "numpy": ("autodrop_numpy", ROOT / "adapters" / "autodrop_numpy" / "__init__.py"),
    "torch": ("autodrop_torch", ROOT / "adapters" / "autodrop_torch" / "__init__.py"),
    "jax": ("autodrop_jax", ROOT / "adapters" / "autodrop_jax" / "__init__.py"),
    "tensorflow": ("autodrop_tf", ROOT / "adapters" / "autodrop_tf" / "__init__.py"),
    "keras": ("autodrop_keras", ROOT / "adapters" / "autodrop_keras" / "__init__.py"),
    "conformance": ("autodrop_conformance", ROOT / "conformance" / "autodrop_conformance" / "__init__.py"),
    "nqm": ("autodrop_core.nqm", ROOT / "autodrop_core" / "nqm" / "__init__.py"),
}


def public_names(init: Path) -> list[str]:
    """The literal ``__all__`` of a module, read without importing it."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]  # type: ignore[attr-defined]
    raise SystemExit(f"{init}: no literal __all__")


def main(site: Path) -> int:
    missing: list[str] = []
    for page, (module, init) in PAGES.items():
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        anchors = set(re.findall(r'id="([\w.]+)"', html))
        missing += [f"{module}.{name} (docs/api/{page}.md)" for name in public_names(init)
                    if f"{module}.{name}" not in anchors]
    if missing:
        print("public objects without an API entry:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    print(f"API reference: every name of {len(PAGES)} packages' __all__ is documented")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
