"""`autodrop bench --quick`: the path CI runs, its report, its cache and its baselines."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from autodrop_demo._bench import main
from autodrop_demo._bench_report import angle_noise, goal_table
from autodrop_demo._bench_runs import TASKS, RunSpec, load_cached, store
from autodrop_demo._schedules import METHODS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def _record(out, task, method):
    record = load_cached(out / "runs", RunSpec(task, method, 0.1, 0, 12))
    assert record is not None, f"no record for {task}/{method}"
    return record


def test_quick_bench_writes_tables_for_every_task_and_every_method(quick):
    report = (quick / "bench.md").read_text()
    for task in TASKS:
        assert f"### {task}:" in report
        assert (quick / f"bench_curves_{task}.png").read_bytes().startswith(b"\x89PNG")
    assert "| initial lr | autodrop | autodrop-calibrated | step | plateau | cosine | constant |" in report
    assert "Command: `autodrop bench --quick" in report
    assert "### Summary: the calibrated trigger's goal" in report
    assert len(list((quick / "runs").glob("*.json"))) == len(TASKS) * len(METHODS)
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
        for method in ("autodrop", "autodrop-calibrated"):
            autodrop = _record(quick, task, method)
            assert autodrop["drops"] == []
            assert autodrop["test_error"] == constant["test_error"]
            assert autodrop["train_loss"] == constant["train_loss"]


def test_a_second_run_reuses_the_stored_records(quick, capsys):
    main(["--quick", "--out", str(quick), "--no-progress", "--workers", "1"])
    assert "(0 trained now)" in capsys.readouterr().out


def test_summary_json_holds_one_entry_per_setting(quick):
    summary = json.loads((quick / "summary.json").read_text())
    assert len(summary) == len(TASKS) * len(METHODS)
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


def test_every_task_that_needs_drops_is_big_enough_for_the_question():
    for name, task in TASKS.items():
        split, model = task.split(), task.model()
        steps = -(-len(split.y_train) // task.batch_size)
        params = sum(p.numel() for p in model.parameters())
        if task.needs_drops:
            assert steps >= 100 and params >= 50_000, (name, steps, params)
            stated = {f"{params // 1000}k parameters", f"{round(params / 1000)}k parameters"}  # floor or rounded
            assert any(text in task.description for text in stated), (name, params)


def test_the_constant_runs_record_the_angle_the_paper_trigger_would_watch(quick):
    constant = _record(quick, "digits", "constant")
    assert constant["angle"][0] is None and all(a is not None for a in constant["angle"][1:])
    assert all(0.0 <= a <= 180.0 for a in constant["angle"][1:])


def _fake(task, method, final, angles=None, seed=0):
    return {"spec": {"task": task, "method": method, "lr": 0.1, "seed": seed}, "diverged": False, "final": final,
            "angle": angles}


def test_the_goal_table_checks_the_needs_drops_margin_and_the_goal():
    records = [
        _fake("a", "constant", 0.10, [None, 90.0, 91.0, 90.0, 91.0]), _fake("a", "step", 0.05),
        _fake("a", "cosine", 0.06), _fake("a", "plateau", 0.07), _fake("a", "autodrop-calibrated", 0.054),
        _fake("a", "autodrop", 0.09),
        _fake("b", "constant", 0.10), _fake("b", "step", 0.09), _fake("b", "autodrop-calibrated", 0.12),
    ]
    table = goal_table(records, {"a": True, "b": True}).splitlines()
    row_a, row_b = table[2], table[3]
    assert "step beats constant by 50%" in row_a and "1.08 vs step: met" in row_a
    assert "CHECK FAILED" in row_b and "NOT met" in row_b
    noise, share, runs = angle_noise(records, "a")
    assert noise == pytest.approx(1 / 2**0.5) and share == 0.0 and runs == 1


def test_a_report_keeps_its_hand_written_introduction_and_replaces_the_numbers(quick, tmp_path):
    report = tmp_path / "bench.md"
    report.write_text("# My intro\n\nwritten by hand\n\n" + _marker() + "\n\nold numbers 99.99\n")
    main(["--quick", "--out", str(quick), "--no-progress", "--workers", "1", "--report", str(report)])
    text = report.read_text()
    assert text.startswith("# My intro\n\nwritten by hand\n\n" + _marker())
    assert "old numbers" not in text and text.count(_marker()) == 1


def _marker():
    from autodrop_demo._bench import GENERATED_MARKER

    return GENERATED_MARKER
