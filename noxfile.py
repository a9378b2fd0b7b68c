"""nox sessions: one per job; `tests` and `conformance` are parametrised by framework.

Each session builds its own virtualenv with pip (never uv: pip finds the local CPU
build of torch==2.13.0, uv would download a CUDA build).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "conformance"]
nox.needs_version = ">=2024.3.2"

PYTHON = "3.11"
TORCH = "torch==2.13.0"

# framework -> (extras to install, test folders)
FRAMEWORKS: dict[str, tuple[str, list[str]]] = {
    "core": ("numpy,conformance", ["tests/core", "tests/numpy"]),
    "conformance": ("numpy,conformance", ["tests/conformance"]),
    "nqm": ("nqm,numpy", ["tests/nqm"]),
    # tests/integrations (Hugging Face Trainer, Lightning callback, timm's convention) share the torch venv;
    # tests/keras runs autodrop_keras under each session's own Keras backend (torch, JAX, TensorFlow).
    "torch": ("torch,torch-fast,torch-test,conformance", ["tests/torch", "tests/integrations", "tests/keras"]),
    "jax": ("jax,jax-test,conformance", ["tests/jax", "tests/keras"]),
    "tensorflow": ("tensorflow,conformance", ["tests/tf", "tests/keras"]),
    "demo": ("demo", ["tests/demo"]),
}

# sessions whose venv has keras and a Keras backend -> that backend (autodrop_keras conformance runs there)
KERAS_BACKENDS: dict[str, str] = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}

# adapter entry-point name -> extras its conformance run needs
ADAPTERS: dict[str, str] = {
    "numpy": "numpy,conformance",
    "torch": "torch,conformance",
    "jax": "jax,conformance",
    "jax-float32": "jax,conformance",
    "tensorflow": "tensorflow,conformance",
}


def _install(session: nox.Session, extras: str) -> None:
    # torch is pinned so that pip takes the local CPU wheel, never a CUDA build.
    if "torch" in extras or "demo" in extras:
        session.install(TORCH)
    # hatchling lets the third-party example distribution build offline (tests/conformance).
    session.install("-e", f".[{extras}]", "pytest", "hypothesis", "hatchling")


@nox.session(python=PYTHON)
@nox.parametrize("framework", list(FRAMEWORKS), ids=list(FRAMEWORKS))
def tests(session: nox.Session, framework: str) -> None:
    """Unit and integration tests of one framework (``nox -s tests -k torch``)."""
    extras, folders = FRAMEWORKS[framework]
    _install(session, extras)
    session.run("pytest", *folders, *session.posargs)
    if framework in KERAS_BACKENDS:
        # the conformance suite against autodrop_keras under this session's own Keras backend
        session.run(
            "pytest", "--pyargs", "autodrop_conformance", "--autodrop-adapter=keras", "-p", "no:cacheprovider",
            env={"KERAS_BACKEND": KERAS_BACKENDS[framework]},
        )


@nox.session(python=PYTHON)
@nox.parametrize("adapter", list(ADAPTERS), ids=list(ADAPTERS))
def conformance(session: nox.Session, adapter: str) -> None:
    """The Hypothesis conformance suite against one registered adapter (``nox -s "conformance(torch)"``).

    The suite's pytest plugin comes through autodrop's ``pytest11`` entry point (passing
    ``-p`` as well would register it twice). A requested adapter that does not load is a
    test error, so the session fails; the closing "autodrop conformance" section prints
    the share of cases that reached a drop and the measured rounding band per dtype.
    """
    _install(session, ADAPTERS[adapter])
    session.run(
        "pytest", "--pyargs", "autodrop_conformance", f"--autodrop-adapter={adapter}", "-p", "no:cacheprovider",
        *session.posargs,
    )


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
