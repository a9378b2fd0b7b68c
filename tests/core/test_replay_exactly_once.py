"""`autodrop replay --state` exactly once: epoch retries, the lock, the checksum, failed writes, no tracebacks."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autodrop_core import AutoDropConfig, Controller
from autodrop_core._cli import main
from autodrop_core._statefile import checksum

COMMAND = [sys.executable, "-m", "autodrop_core", "replay"]
REDUCTIONS = [(0.0, 1.0), (0.5, 1.0), (0.25, 1.0), (0.25, 1.0), (0.25, 1.0), (0.25, 1.0)]
FLAGS = ("--drop-delay", "2")


def line(dot: float, sq_norm: float, epoch: int | None = None) -> str:
    record: dict[str, object] = {"dot": dot, "sq_norm": sq_norm}
    if epoch is not None:
        record["epoch"] = epoch
    return json.dumps(record) + "\n"


def run(*flags: str, stdin: str | bytes = b"", **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([*COMMAND, *flags], input=data, capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload,no-any-return]


def reference() -> list[dict[str, object]]:
    controller = Controller(AutoDropConfig(lrs=(0.1,), drop_delay=2))
    return [controller.observe(d, s).to_dict() for d, s in REDUCTIONS]


def decisions(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, object]]:
    return [json.loads(x) for x in result.stdout.decode().splitlines()]


def test_a_repeated_epoch_gets_the_same_decision_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    want = reference()
    numbered = "".join(line(d, s, i + 1) for i, (d, s) in enumerate(REDUCTIONS[:4]))
    first = run(*FLAGS, "--state", str(state), stdin=numbered)
    assert first.returncode == 0, first.stderr
    before = state.read_bytes()
    retry = run("--state", str(state), stdin=line(*REDUCTIONS[3], epoch=4))  # e.g. the trainer crashed before reading
    assert retry.returncode == 0, retry.stderr
    assert decisions(retry) == [want[3]]
    assert state.read_bytes() == before
    rest = run("--state", str(state), stdin=line(*REDUCTIONS[4], epoch=5) + line(*REDUCTIONS[5], epoch=6))
    assert decisions(first) + decisions(rest) == want


@pytest.mark.parametrize(("epoch", "word"), [(6, "skips ahead of"), (2, "goes back before")])
def test_an_epoch_out_of_order_is_refused_naming_both_epochs(tmp_path: Path, epoch: int, word: str) -> None:
    state = tmp_path / "s.json"
    assert run("--state", str(state), stdin="".join(line(d, s) for d, s in REDUCTIONS[:3])).returncode == 0
    before = state.read_bytes()
    result = run("--state", str(state), stdin=line(0.25, 1.0, epoch))
    assert result.returncode == 2 and result.stdout == b""
    message = result.stderr.decode()
    assert f"epoch={epoch} {word}" in message and "at epoch 3" in message and "send epoch 4" in message, message
    assert "Traceback" not in message
    assert state.read_bytes() == before


def test_epochs_are_checked_without_a_state_file_too() -> None:
    result = run(stdin=line(0.0, 1.0, 1) + line(0.5, 1.0, 1) + line(0.5, 1.0, 3))
    assert result.returncode == 2
    assert [d["epoch"] for d in decisions(result)] == [1, 1]
    assert "line 3: epoch=3 skips ahead" in result.stderr.decode()


@pytest.mark.parametrize("bad", ["0", "true", "1.5", '"2"'])
def test_a_bad_epoch_value_is_refused(bad: str) -> None:
    result = run(stdin='{"dot": 0.0, "sq_norm": 1.0, "epoch": ' + bad + "}\n")
    assert result.returncode == 2
    assert "line 1: epoch=" in result.stderr.decode() and "integer >= 1" in result.stderr.decode()


def test_state_file_carries_a_checksum_and_the_last_decision(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    assert run("--state", str(state), stdin=line(0.0, 1.0)).returncode == 0
    data = json.loads(state.read_text())
    assert list(data) == ["format", "config", "state", "last_decision", "sha256"]
    stored = data.pop("sha256")
    assert stored == checksum(data)
    assert data["last_decision"]["epoch"] == data["state"]["epoch"] == 1


def test_a_tampered_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    assert run("--state", str(state), stdin="".join(line(d, s) for d, s in REDUCTIONS[:3])).returncode == 0
    data = json.loads(state.read_text())
    data["state"]["theta"] = 0.5  # a valid value, so only the checksum can tell
    state.write_text(json.dumps(data))
    result = run("--state", str(state), stdin=line(0.25, 1.0))
    assert result.returncode == 2 and result.stdout == b""
    assert "checksum mismatch" in result.stderr.decode()


def test_an_old_state_file_without_checksum_still_loads(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    controller = Controller(AutoDropConfig(lrs=(0.1,), drop_delay=2))
    for dot, sq in REDUCTIONS[:3]:
        controller.observe(dot, sq)
    state.write_text(json.dumps(controller.to_dict()))  # the layout written before this change
    again = run("--state", str(state), stdin=line(0.25, 1.0, 3))
    assert again.returncode == 2 and "holds no decision to repeat" in again.stderr.decode()
    result = run("--state", str(state), stdin=line(*REDUCTIONS[3], epoch=4) + line(*REDUCTIONS[4]))
    assert result.returncode == 0, result.stderr
    assert decisions(result) == reference()[3:5]
    assert "sha256" in json.loads(state.read_text())  # rewritten in the new layout


def test_a_symlinked_state_path_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "real" / "s.json"
    target.parent.mkdir()
    link = tmp_path / "link.json"
    link.symlink_to(target)
    for d, s in REDUCTIONS[:2]:
        assert run("--state", str(link), stdin=line(d, s)).returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["state"]["epoch"] == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["s.json", "s.json.lock"]


def test_a_stale_temp_file_of_a_killed_writer_is_removed(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    assert run("--state", str(state), stdin=line(0.0, 1.0)).returncode == 0
    stale = tmp_path / ".autodrop-tmp-s.json-abc123.json"
    stale.write_text("{")
    unrelated = tmp_path / "notes.json"
    unrelated.write_text("{}")
    assert run("--state", str(state), stdin=line(0.5, 1.0)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "s.json", "s.json.lock"]


def test_a_second_writer_waits_for_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    assert run("--state", str(state), stdin=line(0.0, 1.0)).returncode == 0
    with open(str(state) + ".lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        process = subprocess.Popen([*COMMAND, "--state", str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdin
        process.stdin.write(line(0.5, 1.0, 2).encode())
        process.stdin.close()
        time.sleep(1.0)
        assert process.poll() is None  # still waiting
        assert json.loads(state.read_text())["state"]["epoch"] == 1
    assert process.stdout
    out = process.stdout.read()
    process.stdout.close()
    assert process.wait(timeout=60) == 0 and json.loads(out)["epoch"] == 2


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    writers = [
        subprocess.Popen([*COMMAND, "--state", str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    for writer in writers:  # every writer gets its line first: the one holding the lock waits for its input
        assert writer.stdin
        writer.stdin.write(line(0.5, 1.0).encode())
        writer.stdin.close()
    outputs = []
    for writer in writers:
        assert writer.stdout
        outputs.append(writer.stdout.read())
        writer.stdout.close()
        assert writer.wait(timeout=60) == 0
    assert sorted(json.loads(o)["epoch"] for o in outputs) == list(range(1, 7))
    assert json.loads(state.read_text())["state"]["epoch"] == 6


def test_a_full_stdout_exits_2_and_the_retry_gets_the_decision(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    want = reference()
    assert run(*FLAGS, "--state", str(state), stdin="".join(line(d, s) for d, s in REDUCTIONS[:3])).returncode == 0
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*COMMAND, "--state", str(state)], input=line(*REDUCTIONS[3], epoch=4).encode(),
            stdout=full, stderr=subprocess.PIPE, timeout=60,
        )
    message = result.stderr.decode()
    assert result.returncode == 2, message
    assert "cannot write the decision of epoch 4 to stdout" in message and '"epoch": 4' in message
    assert "Traceback" not in message and "Exception ignored" not in message
    retry = run("--state", str(state), stdin=line(*REDUCTIONS[3], epoch=4))
    assert decisions(retry) == [want[3]]


def test_a_closed_reader_exits_2_and_the_retry_gets_the_decision(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*COMMAND, "--state", str(state)], input=line(0.0, 1.0, 1).encode(), stdout=write_end,
            stderr=subprocess.PIPE, timeout=60,
        )
    finally:
        os.close(write_end)
    message = result.stderr.decode()
    assert result.returncode == 2, message
    assert "cannot write the decision of epoch 1 to stdout" in message and "Traceback" not in message
    assert decisions(run("--state", str(state), stdin=line(0.0, 1.0, 1))) == reference()[:1]


HUGE_INT = "1" + "0" * 400
DIGITS_5001 = "1" * 5001


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ('{"dot": ' + HUGE_INT + ', "sq_norm": 1.0}', "line 3: dot=1000"),
        ('{"dot": 1.0, "sq_norm": ' + DIGITS_5001 + "}", "line 3: not readable JSON"),
        ("[" * 100_000, "line 3: JSON nested too deeply"),
        ('{"dot": 1.0, "sq_norm": 1.0, "note": "\xff"}', "line 3: not UTF-8 (byte 0xff"),
    ],
    ids=["int-beyond-float", "5001-digits", "deep-nesting", "not-utf8"],
)
def test_inputs_that_used_to_crash_exit_2_naming_the_line(tmp_path: Path, bad: str, needle: str) -> None:
    state = tmp_path / "s.json"
    payload = (line(0.0, 1.0) + line(0.5, 1.0)).encode() + bad.encode("latin-1") + b"\n" + line(0.5, 1.0).encode()
    result = run("--state", str(state), stdin=payload, env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONUTF8": "0"})
    message = result.stderr.decode()
    assert result.returncode == 2, message
    assert needle in message and "Traceback" not in message, message
    assert len(message) < 600  # the record is never echoed whole
    assert [d["epoch"] for d in decisions(result)] == [1, 2]
    assert json.loads(state.read_text())["state"]["epoch"] == 2


def test_a_huge_bad_record_is_not_echoed() -> None:
    result = run(stdin='{"dot": 1.0, "pad": "' + "x" * 1_000_000 + '"}\n')
    assert result.returncode == 2
    assert "missing key 'sq_norm'" in result.stderr.decode() and len(result.stderr) < 600


@pytest.mark.parametrize("where", ["missing-dir", "dir-is-a-file"])
def test_an_unusable_state_directory_is_found_before_line_1(tmp_path: Path, where: str) -> None:
    parent = tmp_path / "nope"
    if where == "dir-is-a-file":
        parent.write_text("")
    result = run("--state", str(parent / "s.json"), stdin=line(0.0, 1.0))
    assert result.returncode == 2 and result.stdout == b""
    assert "does not exist" in result.stderr.decode() and "Traceback" not in result.stderr.decode()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_state_directory_is_found_before_line_1(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        result = run("--state", str(tmp_path / "s.json"), stdin=line(0.0, 1.0))
    finally:
        tmp_path.chmod(0o755)
    assert result.returncode == 2 and result.stdout == b""
    assert "cannot write in directory" in result.stderr.decode()


def _in_process(argv: list[str], stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["replay", *argv], io.StringIO(stdin), out, err)
    return code, out.getvalue(), err.getvalue()


def test_a_read_only_file_system_is_found_before_line_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def read_only(path: str, flags: int, *args: int) -> int:
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    code, out, err = _in_process(["--state", str(tmp_path / "s.json")], line(0.0, 1.0))
    assert code == 2 and out == ""
    assert "cannot write in directory" in err and "Read-only file system" in err


def test_a_full_disk_exits_2_and_keeps_the_state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "s.json"
    assert _in_process(["--state", str(state)], line(0.0, 1.0))[0] == 0
    before = state.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code, out, err = _in_process(["--state", str(state)], line(0.5, 1.0))
    assert code == 2 and out == ""
    assert "line 1: cannot write the state file" in err and "No space left on device" in err
    assert "still holds epoch 1" in err
    assert state.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.lock"]


def test_a_rewritten_state_file_keeps_its_permissions(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    assert run("--state", str(state), stdin=line(0.0, 1.0)).returncode == 0
    state.chmod(0o640)
    assert run("--state", str(state), stdin=line(0.5, 1.0)).returncode == 0
    assert state.stat().st_mode & 0o777 == 0o640
