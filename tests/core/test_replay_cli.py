"""`autodrop replay` end to end through a subprocess: decisions, state files, bad lines, bad flags."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autodrop_core import AutoDropConfig, Controller

DECISION_FIELDS = [
    "epoch", "angle", "smoothed_angle", "delta", "threshold", "triggered",
    "average_weight", "apply_average", "dropped", "exhausted", "lrs", "rise",
]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reductions.jsonl"


def replay(*flags: str, stdin: str = "", module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "autodrop_core"] if module else _console_script()
    return subprocess.run([*command, "replay", *flags], input=stdin, capture_output=True, text=True, timeout=60)


def _console_script() -> list[str]:
    script = shutil.which("autodrop", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "autodrop_core"]


def lines(*pairs: tuple[float, float]) -> str:
    return "".join(json.dumps({"dot": d, "sq_norm": s}) + "\n" for d, s in pairs)


SATURATING = lines(*[(0.25, 1.0)] * 8)
FLAGS = ("--lr", "0.1", "--lr", "0.02", "--min-lr", "0.015", "--drop-delay", "3")


def expected(text: str, **config: object) -> list[dict[str, object]]:
    controller = Controller(AutoDropConfig(**config))  # type: ignore[arg-type]
    return [controller.observe(**json.loads(line)).to_dict() for line in text.splitlines()]


@pytest.mark.parametrize("module", [False, True], ids=["console-script", "python-m"])
def test_one_decision_per_line_with_the_specs_field_names(module: bool) -> None:
    result = replay(*FLAGS, stdin=SATURATING, module=module)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(d) for d in decisions] == [DECISION_FIELDS] * 8
    assert decisions == expected(SATURATING, lrs=(0.1, 0.02), min_lr=0.015, drop_delay=3)
    assert decisions[0]["angle"] is None and decisions[4]["dropped"] and decisions[4]["lrs"] == [0.015, 0.015]


def test_decisions_are_flushed_line_by_line() -> None:
    with subprocess.Popen(
        [*_console_script(), "replay"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdin and process.stdout
        process.stdin.write(lines((0.0, 1.0)))
        process.stdin.flush()
        first = process.stdout.readline()  # would block forever if the output were buffered
        process.stdin.close()
        process.wait(timeout=30)
    assert json.loads(first)["epoch"] == 1


def test_state_file_lets_a_trainer_call_once_per_epoch(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    outputs = []
    for line in SATURATING.splitlines():
        result = replay(*FLAGS, "--state", str(state), stdin=line + "\n")
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    assert outputs == expected(SATURATING, lrs=(0.1, 0.02), min_lr=0.015, drop_delay=3)
    # later calls need no flags: the state file holds the config
    assert replay("--state", str(state), stdin=lines((0.25, 1.0))).returncode == 0


def test_state_file_refuses_a_contradicting_flag(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    assert replay("--drop-delay", "3", "--state", str(state), stdin=SATURATING).returncode == 0
    before = state.read_text()
    result = replay("--drop-delay", "4", "--state", str(state), stdin=SATURATING)
    assert result.returncode == 2 and result.stdout == ""
    assert "--drop-delay=4 contradicts" in result.stderr and "drop_delay=3" in result.stderr
    assert state.read_text() == before


def test_state_file_accepts_a_flag_that_repeats_the_stored_config(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    assert replay("--threshold", "5", "--max-threshold", "50", "--state", str(state), stdin=SATURATING).returncode == 0
    result = replay("--threshold", "5", "--state", str(state), stdin=SATURATING)  # max_threshold comes from the file
    assert result.returncode == 0, result.stderr


def test_a_killed_process_loses_nothing(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    got = []
    with subprocess.Popen(
        [*_console_script(), "replay", *FLAGS, "--state", str(state)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as process:
        assert process.stdin and process.stdout
        for line in SATURATING.splitlines()[:4]:  # into the averaging window
            process.stdin.write(line + "\n")
            process.stdin.flush()
            got.append(json.loads(process.stdout.readline()))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    resumed = replay("--state", str(state), stdin="\n".join(SATURATING.splitlines()[4:]) + "\n")
    got += [json.loads(line) for line in resumed.stdout.splitlines()]
    assert got == expected(SATURATING, lrs=(0.1, 0.02), min_lr=0.015, drop_delay=3)


@pytest.mark.parametrize(
    ("bad_line", "needle"),
    [
        ("{not json", "line 3: not JSON"),
        ('{"dot": 1.0}', "line 3: missing key 'sq_norm'"),
        ('{"dot": NaN, "sq_norm": 1.0}', "line 3: dot=nan"),
        ('{"dot": 1.0, "sq_norm": Infinity}', "line 3: sq_norm=inf"),
        ('{"dot": 1.0, "sq_norm": -2.5}', "line 3: sq_norm=-2.5"),
        ('{"dot": "1", "sq_norm": 1.0}', "line 3: dot='1' is not a number"),
        ("[1, 2]", "line 3: expected a JSON object"),
    ],
)
def test_bad_line_exits_2_after_writing_every_earlier_decision(tmp_path: Path, bad_line: str, needle: str) -> None:
    state = tmp_path / "s.json"
    good = lines((0.0, 1.0), (0.5, 1.0))
    result = replay("--state", str(state), stdin=good + bad_line + "\n" + lines((0.5, 1.0)))
    assert result.returncode == 2
    assert needle in result.stderr, result.stderr
    assert [json.loads(x)["epoch"] for x in result.stdout.splitlines()] == [1, 2]
    assert json.loads(state.read_text())["state"]["epoch"] == 2


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--drop-factor", "1.5"), "--drop-factor: drop_factor=1.5 is invalid"),
        (("--lr", "-0.1"), "--lr: lrs[0]=-0.1 is invalid"),
        (("--drop-delay", "0"), "--drop-delay: drop_delay=0 is invalid"),
        (("--lr", "0.1", "--lr", "0.2", "--min-lr", "0.1", "--min-lr", "0.1", "--min-lr", "0.1"), "--min-lr"),
        (("--threshold", "nan"), "--threshold: threshold=nan is invalid"),
        (("--drop-delay", "two"), "invalid int value: 'two'"),
    ],
)
def test_bad_flag_exits_2_and_reads_nothing(flags: tuple[str, ...], needle: str) -> None:
    result = replay(*flags, stdin=SATURATING)
    assert result.returncode == 2
    assert needle in result.stderr, result.stderr
    assert result.stdout == ""


def test_shipped_example_replays_to_a_drop() -> None:
    flags = ("--lr", "0.1", "--threshold", "0.5", "--angle-window", "5", "--drop-delay", "5")
    result = replay(*flags, stdin=EXAMPLE.read_text())
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(d["dropped"] for d in decisions)


def test_missing_plugin_names_the_extra_to_install() -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    code = "import sys; sys.modules['autodrop_demo'] = None; from autodrop_core._cli import main; main(['demo'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "pip install 'autodrop[demo]'" in result.stderr
