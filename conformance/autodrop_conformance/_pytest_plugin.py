"""pytest glue: the ``--autodrop-adapter`` option, Hypothesis profiles, a closing summary.

Registered through the ``pytest11`` entry point of the autodrop distribution, so it is
loaded in every pytest run of an environment where autodrop is installed (do not also
pass ``-p autodrop_conformance._pytest_plugin``: pytest refuses a plugin registered
twice). It therefore imports nothing heavy at load time (no framework, no Hypothesis,
no numpy) and does nothing unless the option is given, a conformance test runs, or one
of its Hypothesis profiles is asked for. The ``autodrop_driver`` fixture lives on the
suite's class, so a subclassing third party does not depend on this plugin.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Hypothesis profiles this plugin registers (``--hypothesis-profile=autodrop-ci``).
PROFILES = {"autodrop-ci": 60, "autodrop-thorough": 1000}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autodrop", "AutoDrop conformance suite")
    group.addoption(
        "--autodrop-adapter",
        action="append",
        default=[],
        metavar="NAME",
        help="run the conformance suite against this registered adapter (repeatable; 'all' for every one)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register our profiles when asked for; else follow a single adapter's example hint."""
    profile = config.getoption("hypothesis_profile", default=None)
    if isinstance(profile, str) and profile in PROFILES:
        from hypothesis import settings

        for name, examples in PROFILES.items():
            settings.register_profile(name, max_examples=examples, deadline=None, print_blob=True)
        return
    names = _requested(config)
    if profile is None and len(names) == 1:
        from hypothesis import settings

        from autodrop_conformance._registry import AdapterLoadError, load_driver

        try:
            hint = load_driver(names[0]).max_examples
        except AdapterLoadError:
            return  # the tests themselves report it
        if hint is not None:
            # on top of the active profile (Hypothesis's own "ci" one on CI: derandomized)
            settings.register_profile(f"autodrop-{names[0]}", parent=settings.default, max_examples=hint, deadline=None)
            settings.load_profile(f"autodrop-{names[0]}")


def _requested(config: pytest.Config) -> list[str]:
    names: list[str] = list(config.getoption("autodrop_adapter") or [])
    if "all" in names:
        from autodrop_conformance._registry import adapter_names

        names = [n for n in names if n != "all"] + [n for n in adapter_names() if n not in names]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "autodrop_driver" not in metafunc.fixturenames:
        return
    if metafunc.cls is not None and getattr(metafunc.cls, "driver", None) is not None:
        return
    names = _requested(metafunc.config)
    if names:
        metafunc.parametrize("autodrop_driver", names, indirect=True, ids=names)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    import sys

    check = sys.modules.get("autodrop_conformance._check")
    if check is None or not check.STATS.examples:
        return
    terminalreporter.section("autodrop conformance")
    for line in check.STATS.lines():
        terminalreporter.write_line(line)
