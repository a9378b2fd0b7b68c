"""`autodrop demo`: end to end, its printed decisions, and the global state it must leave alone."""

from __future__ import annotations

import io
import json
import random
import re
import sys

import numpy as np
import pytest
import torch
from autodrop_demo import Mlp, _data, load_digits_split
from autodrop_demo._demo import main
from autodrop_demo._schedules import PAPER_AUTODROP, schedule_factory
from autodrop_demo._train import TrainSettings, train

DROP_LINE = re.compile(r"^epoch\s+(\d+)\s+drop: lr (\S+) -> (\S+);", re.MULTILINE)
TRIGGER_LINE = re.compile(r"^epoch\s+(\d+)\s+trigger:", re.MULTILINE)

# A tiny run in which AutoDrop must fire: the paper trigger with a huge threshold triggers
# at the first defined delta (epoch 3) and a delay of 1 drops at once.
EAGER = ["--epochs", "6", "--trigger", "paper", "--threshold", "60", "--max-threshold", "90", "--drop-delay", "1",
         "--min-lr", "0.001"]


@pytest.fixture(scope="module")
def eager_run(tmp_path_factory):
    """One tiny demo run that drops, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        printed = io.StringIO()
        mp.setattr(sys, "stdout", printed)
        assert main([*EAGER, "--out", str(out)]) == 0
    return out, printed.getvalue(), json.loads((out / "summary.json").read_text())


def test_demo_writes_png_and_json_whose_drops_match_the_printed_ones(eager_run):
    out_dir, out, summary = eager_run
    png = (out_dir / "autodrop_demo.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    printed_drops = [(int(e), float(a), float(b)) for e, a, b in DROP_LINE.findall(out)]
    json_drops = [(d["epoch"], d["lr_before"], d["lr_after"]) for d in summary["drops"]]
    assert printed_drops, f"no drop printed:\n{out}"
    assert [e for e, _, _ in printed_drops] == [e for e, _, _ in json_drops]
    for (_, *printed), (_, *stored) in zip(printed_drops, json_drops):
        assert printed == pytest.approx(stored, rel=1e-5)  # printed with 6 significant digits
    assert [int(e) for e in TRIGGER_LINE.findall(out)] == summary["triggers"]
    assert summary["triggers"][0] == 3  # the earliest possible trigger (spec: t > 2)
    assert summary["epochs"]["epoch"] == list(range(1, 7))


def test_demo_json_tables_follow_the_decisions(eager_run):
    _, _, summary = eager_run
    table = summary["epochs"]
    assert table["angle"][0] is None  # s(0) = 0: the first angle is undefined
    drops = {d["epoch"] for d in summary["drops"]}
    for epoch, lr, dropped in zip(table["epoch"], table["lr"], table["dropped"]):
        assert dropped == (epoch in drops)
        if epoch > 1:
            previous = table["lr"][epoch - 2]
            assert (lr < previous) == (epoch - 1 in drops)
    assert min(table["lr"]) >= 0.001  # the floor holds
    assert 0.0 <= summary["final_test_error"] <= 1.0


def test_the_baselines_are_the_same_run_with_a_constant_lr_and_a_step_schedule(eager_run):
    _, out, summary = eager_run
    constant, step, table = summary["baselines"]["constant"], summary["baselines"]["step"], summary["epochs"]
    first_drop = summary["drops"][0]["epoch"]
    # identical until AutoDrop's first drop changes the lr (a delay of 1 averages x(t) alone)
    assert constant["train_loss"][:first_drop] == table["train_loss"][:first_drop]
    assert constant["train_loss"][first_drop:] != table["train_loss"][first_drop:]
    assert set(constant["lr"]) == {0.1}
    assert step["drops"] == [3, 4]  # x0.2 at 50% and 75% of the 6 epochs
    assert step["train_loss"][:3] == constant["train_loss"][:3]
    assert "constant lr test error: final" in out and "step schedule test error: final" in out


def test_demo_leaves_every_global_random_state_and_the_thread_count_unchanged(tmp_path):
    _data._mnist1d_arrays.cache_clear()  # make sure mnist1d reseeds numpy inside this test
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state(), torch.get_num_threads())
    main(["--epochs", "2", "--out", str(tmp_path), "--no-progress", "--threads", "1", "--no-baselines"])
    py, nps, ts, threads = before
    assert random.getstate() == py
    after = np.random.get_state()
    assert after[0] == nps[0] and np.array_equal(after[1], nps[1]) and after[2:] == nps[2:]
    assert torch.equal(torch.get_rng_state(), ts)
    assert torch.get_num_threads() == threads


def test_a_run_is_reproducible_from_its_seed_and_differs_across_seeds():
    split = load_digits_split()

    def errors(seed):
        result = train(Mlp, split, schedule_factory("autodrop", 4, PAPER_AUTODROP), TrainSettings(epochs=4, seed=seed))
        return [(r.train_loss, r.test_error, r.decision.angle) for r in result.records]

    assert errors(7) == errors(7)
    assert errors(7) != errors(8)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--epochs", "0", "expected an integer >= 1, got 0"),
        ("--lr", "-0.1", "expected a finite number > 0, got '-0.1'"),
        ("--lr", "nan", "expected a finite number > 0, got 'nan'"),
        ("--drop-delay", "x", "expected an integer >= 1, got 'x'"),
    ],
)
def test_demo_rejects_bad_options_naming_the_value_and_range(option, value, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([option, value, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_demo_rejects_autodrop_settings_out_of_range_before_training(tmp_path, capsys):
    assert main(["--drop-factor", "1.5", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "drop_factor" in err and "1.5" in err
    assert not (tmp_path / "summary.json").exists()


def test_the_calibrated_trigger_refuses_paper_only_settings_before_training(tmp_path, capsys):
    assert main(["--threshold", "1", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "threshold=1.0 is invalid" in err and "trigger='calibrated'" in err
    assert not (tmp_path / "summary.json").exists()
