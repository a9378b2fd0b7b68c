"""`autodrop bench --quick`: the path CI runs, its report, its cache and its baselines."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from autodrop_demo._bench import main
from autodrop_demo._bench_runs import RunSpec, load_cached, store


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def _record(out, task, method):
    record = load_cached(out / "runs", RunSpec(task, method, 0.1, 0, 12))
    assert record is not None, f"no record for {task}/{method}"
    return record


def test_quick_bench_writes_tables_for_both_tasks_and_every_method(quick):
    report = (quick / "bench.md").read_text()
    for task in ("mnist1d", "digits"):
        assert f"### {task}:" in report
        assert (quick / f"bench_curves_{task}.png").read_bytes().startswith(b"\x89PNG")
    assert "| initial lr | autodrop | autodrop-demo | step | plateau | cosine | constant |" in report
    assert "Command: `autodrop bench --quick" in report
    assert len(list((quick / "runs").glob("*.json"))) == 12
    assert (quick / "bench_summary.png").exists()
    # 12 epochs < drop delay: no AutoDrop run can drop, so each equals its constant-lr twin
    assert "digits, `autodrop`: " in report
    assert "of the 1 runs without a drop, 1 reproduce the constant-lr run" in report


def test_the_step_schedule_drops_by_0_2_at_half_and_three_quarters_of_the_budget(quick):
    record = _record(quick, "digits", "step")
    assert record["drops"] == [6, 9]
    assert record["lr"][5] == pytest.approx(0.1) and record["lr"][6] == pytest.approx(0.02)
    assert record["lr"][9] == pytest.approx(0.004)


def test_cosine_anneals_and_constant_stays(quick):
    cosine, constant = _record(quick, "mnist1d", "cosine"), _record(quick, "mnist1d", "constant")
    assert all(b < a for a, b in zip(cosine["lr"], cosine["lr"][1:]))
    assert set(constant["lr"]) == {0.1}


def test_autodrop_without_a_drop_trains_exactly_like_a_constant_lr(quick):
    # drop_delay = 20 > 12 epochs: AutoDrop may trigger but cannot drop, so it must not
    # touch the parameters: its run is bit-identical to the constant-lr run.
    for task in ("mnist1d", "digits"):
        constant = _record(quick, task, "constant")
        for method in ("autodrop", "autodrop-demo"):
            autodrop = _record(quick, task, method)
            assert autodrop["drops"] == []
            assert autodrop["test_error"] == constant["test_error"]
            assert autodrop["train_loss"] == constant["train_loss"]


def test_a_second_run_reuses_the_stored_records(quick, capsys):
    main(["--quick", "--out", str(quick), "--no-progress", "--workers", "1"])
    assert "(0 trained now)" in capsys.readouterr().out


def test_summary_json_holds_one_entry_per_setting(quick):
    summary = json.loads((quick / "summary.json").read_text())
    assert len(summary) == 12
    assert summary["digits/step/0.1"]["n"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--lrs", "0.1,-1"], "learning rates must be finite and > 0"),
        (["--methods", "adam"], "unknown value(s) ['adam']"),
    ],
)
def test_bad_options_are_rejected_naming_the_value(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert message in (err + str(exc.value.code))
    assert not (tmp_path / "runs").exists()


def test_a_stored_run_is_reused_only_for_the_same_model_and_settings(tmp_path):
    spec = RunSpec("digits", "step", 0.1, 0, 12)
    store(tmp_path, spec, {"spec": asdict(spec), "diverged": False})
    assert load_cached(tmp_path, spec) is not None
    other_model = RunSpec("digits", "step", 0.1, 0, 12, model="another network")
    assert other_model.key == spec.key and load_cached(tmp_path, other_model) is None
