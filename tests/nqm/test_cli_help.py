"""``autodrop nqm`` help texts: every flag says what it does and its default; typos get the right usage."""

from __future__ import annotations

import pytest

from autodrop_core.nqm._cli import main


@pytest.mark.parametrize("command", ["theorem1", "figure1", "figure3"])
def test_every_flag_has_help_and_the_defaults_are_shown(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "example: autodrop nqm " + command in text
    options = text.split("options:", 1)[1]
    for flag in ("--preset", "--iters", "--n"):
        assert "(default" in options.split(f" {flag} ", 1)[1][:120], flag
    if command == "theorem1":
        assert "(default 0.06 0.03 0.01 0.001)" in text and "(default both)" in text
    else:
        assert "(default 3000)" in text
        assert "seed of the gradient noise (default 0)" in text


def test_a_typoed_flag_prints_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["figure1", "--itres", "10", "--out", "x.png"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: autodrop nqm figure1"), err
    assert "unrecognized arguments: --itres 10" in err
