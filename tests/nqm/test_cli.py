"""``autodrop nqm``: theorem1 (table and JSON), figure1 and figure3 (PNG files), and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autodrop_core.nqm._cli import main

pytest.importorskip("matplotlib")
TINY = ["--n", "60", "--quiet"]


def test_theorem1_json_lists_predicted_and_measured_angles(capsys) -> None:
    status = main(["theorem1", "--json", "--preset", "figure1", "--seeds", "4", "--iters", "150", *TINY])
    data = json.loads(capsys.readouterr().out)
    assert status == (0 if all(r["agrees"] for r in data["rows"]) else 1)
    assert [r["lr"] for r in data["rows"]] == [0.06, 0.03, 0.01, 0.001]
    assert data["tolerance"] == 0.05
    keys = {"predicted", "measured", "ratio_of_means", "mean_angle", "mean_cosine_angle", "n_eff", "standard_error"}
    assert keys | {"tolerance", "agrees", "resolved"} <= set(data["rows"][0])
    for row in data["rows"]:
        assert row["agrees"] == (abs(row["ratio_of_means"] - row["predicted"]) <= 0.05)


def test_theorem1_table_has_one_line_per_preset_and_lr(capsys) -> None:
    main(["theorem1", "--lrs", "0.05", "0.01", "--seeds", "3", "--iters", "80", *TINY])
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith(("zhang2019", "figure1")) for line in lines) == 4


@pytest.mark.parametrize("figure", ["figure1", "figure3"])
def test_figures_are_written_as_small_pngs(tmp_path, capsys, figure) -> None:
    out = tmp_path / f"{figure}.png"
    assert main([figure, "--out", str(out), "--iters", "300", *TINY]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000
    if figure == "figure3":
        out = capsys.readouterr().out
        for name in ("zhang2019(n=60)", "figure1(n=60)"):
            for method in ("AutoDrop paper", "AutoDrop calibrated", "best constant"):
                assert any(line.startswith(name) and method in line for line in out.splitlines()), (name, method)


def test_figure3_json_has_both_triggers_on_both_presets(tmp_path, capsys) -> None:
    assert main(["figure3", "--json", "--out", str(tmp_path / "f.png"), "--iters", "200", *TINY]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"zhang2019(n=60)", "figure1(n=60)"}
    for runs in data.values():
        assert set(runs) == {"paper", "calibrated"}
        assert all(runs[t]["trigger"] == t and "final_loss" in runs[t] for t in runs)


def test_figure3_calibrated_trigger_refuses_a_paper_setting_by_name(tmp_path, capsys) -> None:
    args = ["figure3", "--trigger", "calibrated", "--max-threshold", "0.5", "--out", str(tmp_path / "f.png"), *TINY]
    assert main(args) == 2
    assert "max_threshold" in capsys.readouterr().err


def test_bad_value_exits_2_with_a_message_naming_it(capsys) -> None:
    assert main(["theorem1", "--lrs", "5", *TINY]) == 2
    assert "lr=5.0 is invalid" in capsys.readouterr().err


def test_importing_the_core_does_not_import_the_nqm_package_or_numpy() -> None:
    code = "import sys, autodrop_core; print(any(m in sys.modules for m in ('autodrop_core.nqm', 'numpy', 'numba')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
