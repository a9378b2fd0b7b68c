"""nox sessions: one virtualenv per framework, shared by its tests, its conformance run and its snippets.

``nox`` runs lint, typecheck, docs, ``tests(F)`` for every framework F and ``oldest(F)``. A ``tests(F)``
session installs F once and runs, in that one virtualenv: F's test folders, the
conformance suite against F's registered adapters, and the code blocks of README.md and
docs/ that import F (``tests/docs``). ``oldest(F)`` installs the oldest jax and optax, or
tensorflow-cpu and numpy, that the extras allow and runs their tests and conformance runs.

Each session builds its virtualenv with pip (never uv: pip finds the local CPU build of
torch==2.13.0, uv would download a CUDA build). A missing Python is an error, not a skip.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "typecheck", "docs", "tests", "oldest"]
nox.options.error_on_missing_interpreters = True
nox.needs_version = ">=2024.3.2"

PYTHON = "3.11"
# The only CPU build of torch on this project's machines; any other version pulls CUDA wheels.
# The extras only ask for a floor, so this pin lives here and nowhere else.
TORCH = "torch==2.13.0"

# framework -> (extras to install, test folders, conformance adapters run in the same venv)
FRAMEWORKS: dict[str, tuple[str, list[str], list[str]]] = {
    "core": ("numpy,conformance", ["tests/core", "tests/numpy", "tests/conformance"], ["numpy"]),
    "nqm": ("nqm,numpy", ["tests/nqm", "tests/core/test_fused.py", "tests/benchmarks"], []),  # numba: kernels, probe
    # tests/faults: the fault suite (replay kills, bit flips, writers; torch injected failures), small counts.
    # tests/integrations (Hugging Face Trainer, Lightning callback, timm's convention) share the torch venv;
    # tests/keras runs autodrop_keras under each session's own Keras backend (torch, JAX, TensorFlow).
    "torch": (
        "torch,torch-fast,torch-test,conformance", ["tests/torch", "tests/faults", "tests/integrations", "tests/keras"],
        ["torch"],
    ),
    "jax": ("jax,jax-fast,jax-test,conformance", ["tests/jax", "tests/keras"], ["jax", "jax-float32"]),
    "tensorflow": ("tensorflow,tensorflow-fast,conformance", ["tests/tf", "tests/keras"], ["tensorflow"]),
    "demo": ("demo", ["tests/demo"], []),
}

# sessions whose venv has keras and a Keras backend -> that backend (autodrop_keras conformance runs there)
KERAS_BACKENDS: dict[str, str] = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}

# framework -> (extras, the oldest versions its extra allows, test folders, conformance adapters).
# All were found installable for Python 3.11 (`pip index versions jax`, `pip download --no-deps`).
# jax and tensorflow get separate virtualenvs: Keras 3 imports an installed jax, and an old jax
# then warns on import, which pytest turns into an error.
OLDEST: dict[str, tuple[str, list[str], list[str], list[str]]] = {
    "jax": ("jax,jax-test,conformance", ["jax==0.8.0", "jaxlib==0.8.0", "optax==0.2.3"], ["tests/jax"], ["jax"]),
    "tensorflow": (
        "tensorflow,conformance", ["tensorflow-cpu==2.16.1", "numpy==1.26.4"], ["tests/tf"], ["tensorflow"]
    ),
}
# Tests that check something the oldest versions do not have, each with the reason.
OLDEST_DESELECT: dict[str, dict[str, str]] = {
    "jax": {
        # jax.monitoring.unregister_event_duration_listener, used by the test to count compilations,
        # is newer than jax 0.8.0; the adapter itself does not use it.
        "tests/jax/test_api.py::test_one_host_transfer_per_epoch_and_no_recompilation_once_warm": "test helper",
        # XLA's float32 reductions before jaxlib 0.10.2 give a larger rounding error: 8.6e-4 degrees
        # at a 2.6-degree angle against 2.2e-5 (docs/jax.md, Precision); x64 mode is unaffected.
        "tests/jax/test_precision.py::test_float32_angle_error_at_11m_parameters_is_at_most_1e_4_degrees": "precision",
        # flax.nnx: with the flax 0.12.0 and optax 0.2.3 that pip pairs with jax 0.8.0, the in-place lr write
        # into nnx's optimizer state does not take effect (the next epoch's LRConflictError says so, nothing
        # is silent); nnx support is tested with flax 0.12.8 and optax 0.2.8 (docs/jax.md).
        "tests/jax/test_nnx.py::test_an_nnx_loop_decides_as_the_plain_optax_loop_and_keeps_the_optarray": "nnx",
        "tests/jax/test_nnx.py::test_orbax_restores_nnx_state_of_the_optimizer_after_autodrop_wrote_an_lr": "nnx",
        "tests/jax/test_precision.py::test_the_usage_examples_in_docs_jax_md_run": "nnx, in docs/jax.md",
    },
}

def _install(session: nox.Session, extras: str, *extra_packages: str) -> None:
    # torch is pinned so that pip takes the local CPU wheel, never a CUDA build.
    if "torch" in extras or "demo" in extras:
        session.install(TORCH)
    # hatchling lets the third-party example distribution build offline (tests/conformance).
    session.install("-e", f".[{extras}]", "pytest", "hypothesis", "hatchling", *extra_packages)


def _conformance(session: nox.Session, adapters: list[str], env: dict[str, str] | None = None) -> None:
    """The Hypothesis conformance suite against the given registered adapters.

    The suite's pytest plugin comes through autodrop's ``pytest11`` entry point (passing
    ``-p`` as well would register it twice). A requested adapter that does not load is a
    test error, so the session fails; the closing "autodrop conformance" section prints
    the share of cases that reached a drop and the measured rounding band per dtype.
    """
    flags = [f"--autodrop-adapter={name}" for name in adapters]
    session.run("pytest", "--pyargs", "autodrop_conformance", *flags, "-p", "no:cacheprovider", env=env)


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
    if framework == "jax":  # the adapter must work in both precision modes: a second run, same venv
        session.run("pytest", "tests/jax", env={"JAX_ENABLE_X64": "1"})
    if adapters:
        _conformance(session, adapters)
    if framework in KERAS_BACKENDS:  # autodrop_keras under this session's own Keras backend
        _conformance(session, ["keras"], env={"KERAS_BACKEND": KERAS_BACKENDS[framework]})


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
@nox.parametrize("framework", list(OLDEST), ids=list(OLDEST))
def oldest(session: nox.Session, framework: str) -> None:
    """One adapter's tests and conformance run against the oldest versions its extra allows.

    About 4 minutes for jax and 7 for tensorflow on 2 cores (measured piece by piece).
    torch is not covered: every torch other than 2.13.0 is a multi-GB CUDA build on this
    project's machines, so the torch floor (``torch>=2.6``) is untested.
    """
    extras, pins, folders, adapters = OLDEST[framework]
    _install(session, extras, *pins)
    session.run("python", "-m", "pip", "list", "--format=freeze")
    deselect = [f"--deselect={test}" for test in OLDEST_DESELECT.get(framework, {})]
    session.run("pytest", *folders, *deselect, *session.posargs)
    if not session.posargs:
        _conformance(session, adapters)
