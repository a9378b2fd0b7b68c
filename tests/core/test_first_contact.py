"""What a new user meets first: the version, help texts, messages for typos and missing extras.

Every check runs the real entry points (``main`` in process, or a subprocess where the
import machinery itself is under test), so a message that regresses fails here.
"""

from __future__ import annotations

import importlib.metadata
import io
import subprocess
import sys

import pytest

from autodrop_core import AutoDropConfig, ConfigError
from autodrop_core._cli import main


def run_cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    except SystemExit as exit_:  # argparse exits for --help, --version and usage errors
        code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli("--version")
    assert code == 0
    assert capsys.readouterr().out.strip() == f"autodrop {importlib.metadata.version('autodrop')}"


def test_replay_help_has_a_description_and_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli("replay", "--help")
    text = capsys.readouterr().out
    assert code == 0
    assert "one JSON object per line" in text
    assert "example:" in text and "| autodrop replay --lr 0.1 --drop-delay 2" in text


def test_a_typoed_replay_flag_prints_replays_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli("replay", "--treshold", "1")
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert err.startswith("usage: autodrop replay"), err
    assert "autodrop replay: error: unrecognized arguments: --treshold 1" in err


def test_a_csv_line_is_answered_with_the_expected_format() -> None:
    code, out, err = run_cli("replay", stdin="0.5,1.0\n")
    assert code == 2 and out == ""
    assert "line 1: not JSON" in err and "'0.5,1.0'" in err
    assert 'expected one JSON object per line, e.g. {"dot": 0.5, "sq_norm": 1.0}' in err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lrs": (0.1,), "min_lr": "1e-4"}, "min_lr='1e-4' is invalid: expected a finite number >= 0"),
        ({"lrs": "0.1"}, "lrs='0.1' is invalid: expected a non-empty sequence of finite numbers > 0"),
        ({"lrs": (0.1,), "drop_factor": "0.5"}, "drop_factor='0.5' is invalid: expected a finite number"),
        ({"lrs": ("0.1",)}, "lrs[0]='0.1' is invalid"),
    ],
)
def test_a_string_setting_is_refused_whole_and_called_a_string(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AutoDropConfig(**config)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert str(caught.value).endswith("(got a string; pass the number itself)")


# adapter -> (framework module to hide, extra that provides it)
ADAPTERS = {
    "autodrop_numpy": ("numpy", "numpy"),
    "autodrop_torch": ("torch", "torch"),
    "autodrop_jax": ("jax", "jax"),
    "autodrop_tf": ("tensorflow", "tensorflow"),
}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_importing_an_adapter_without_its_framework_names_the_extra(adapter: str) -> None:
    framework, extra = ADAPTERS[adapter]
    # None in sys.modules makes `import <framework>` fail as if it were not installed.
    code = f"import sys; sys.modules[{framework!r}] = None; import {adapter}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"ModuleNotFoundError: {adapter} needs {framework!r}, which is not installed; "
        f'install it with: pip install "autodrop[{extra}]"'
    ), result.stderr


def test_a_missing_module_the_extra_does_not_provide_is_not_blamed_on_the_extra() -> None:
    from autodrop_core._extras import missing_framework

    err = ModuleNotFoundError("No module named 'flax'", name="flax")
    assert missing_framework(err, "autodrop_jax", "jax", ("jax", "optax")) is None
    err = ModuleNotFoundError("No module named 'jax._src'", name="jax._src")
    found = missing_framework(err, "autodrop_jax", "jax", ("jax", "optax"))
    assert found is not None and found.name == "jax._src"
