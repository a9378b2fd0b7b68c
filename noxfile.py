"""nox sessions: one virtualenv per framework, shared by its tests, its conformance run and its snippets.

``nox`` runs lint, typecheck, docs and ``tests(F)`` for every framework F. A ``tests(F)``
session installs F once and runs, in that one virtualenv: F's test folders, the
conformance suite against F's registered adapters, and the code blocks of README.md and
docs/ that import F (``tests/docs``). ``oldest`` (not in the default run) installs the
oldest jax, optax and tensorflow-cpu that the extras allow and runs their tests.

Each session builds its virtualenv with pip (never uv: pip finds the local CPU build of
torch==2.13.0, uv would download a CUDA build). A missing Python is an error, not a skip.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.error_on_missing_interpreters = True
nox.needs_version = ">=2024.3.2"

PYTHON = "3.11"
# The only CPU build of torch on this project's machines; any other version pulls CUDA wheels.
# The extras only ask for a floor, so this pin lives here and nowhere else.
TORCH = "torch==2.13.0"

# framework -> (extras to install, test folders, conformance adapters run in the same venv)
FRAMEWORKS: dict[str, tuple[str, list[str], list[str]]] = {
    "core": ("numpy,conformance", ["tests/core", "tests/numpy", "tests/conformance"], ["numpy"]),
    "nqm": ("nqm,numpy", ["tests/nqm"], []),
    "torch": ("torch,torch-fast,torch-test,conformance", ["tests/torch"], ["torch"]),
    "jax": ("jax,jax-test,conformance", ["tests/jax"], ["jax", "jax-float32"]),
    "tensorflow": ("tensorflow,conformance", ["tests/tf"], ["tensorflow"]),
    "demo": ("demo", ["tests/demo"], []),
}

# The oldest versions the extras' floors allow, all found installable for Python 3.11 in
# the package index (`pip index versions jax`); see CHANGELOG.md and README.md.
OLDEST = ["numpy==1.26.4", "jax==0.4.30", "jaxlib==0.4.30", "optax==0.2.3", "tensorflow-cpu==2.16.1"]


def _install(session: nox.Session, extras: str, *extra_packages: str) -> None:
    # torch is pinned so that pip takes the local CPU wheel, never a CUDA build.
    if "torch" in extras or "demo" in extras:
        session.install(TORCH)
    # hatchling lets the third-party example distribution build offline (tests/conformance).
    session.install("-e", f".[{extras}]", "pytest", "hypothesis", "hatchling", *extra_packages)


def _conformance(session: nox.Session, adapters: list[str]) -> None:
    """The Hypothesis conformance suite against the given registered adapters.

    The suite's pytest plugin comes through autodrop's ``pytest11`` entry point (passing
    ``-p`` as well would register it twice). A requested adapter that does not load is a
    test error, so the session fails; the closing "autodrop conformance" section prints
    the share of cases that reached a drop and the measured rounding band per dtype.
    """
    flags = [f"--autodrop-adapter={name}" for name in adapters]
    session.run("pytest", "--pyargs", "autodrop_conformance", *flags, "-p", "no:cacheprovider")


@nox.session(python=PYTHON)
@nox.parametrize("framework", list(FRAMEWORKS), ids=list(FRAMEWORKS))
def tests(session: nox.Session, framework: str) -> None:
    """One framework's tests, conformance run and doc snippets (``nox -s "tests(torch)"``).

    Arguments after ``--`` go to the framework's pytest run only, e.g.
    ``nox -s "tests(jax)" -- -k sharding``; they also skip the conformance run and the snippets.
    """
    extras, folders, adapters = FRAMEWORKS[framework]
    _install(session, extras)
    if session.posargs:
        session.run("pytest", *folders, *session.posargs)
        return
    session.run("pytest", *folders, "tests/docs", env={"AUTODROP_SNIPPETS": framework})
    if adapters:
        _conformance(session, adapters)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core and the conformance package."""
    session.install("mypy", "-e", ".[numpy,conformance]")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs + mkdocstrings) with warnings as errors.

    mkdocstrings reads the packages' source statically (griffe), so no framework is installed.
    """
    session.install("-r", "docs/requirements.txt")
    site = f"{session.create_tmp()}/site"
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("python", "tests/docs/check_api_reference.py", site)


@nox.session(python=PYTHON)
def oldest(session: nox.Session) -> None:
    """The JAX and TensorFlow adapters' tests against the oldest versions the extras allow.

    Not in the default run (it adds one more heavy install); run it with ``nox -s oldest``.
    torch is not covered: every torch other than 2.13.0 is a multi-GB CUDA build here, so the
    torch floor is untested.
    """
    _install(session, "jax,tensorflow,conformance", *OLDEST)
    session.run("pip", "list", "--format=freeze", silent=False)
    session.run("pytest", "tests/jax", "tests/tf", *session.posargs)
    if not session.posargs:
        _conformance(session, ["jax", "tensorflow"])
