"""`autodrop replay --state` under SIGKILL, bit flips, tampering and concurrent writers.

The trainer of these tests follows docs/replay.md: every line carries its epoch, and
after a crash it resends from the first epoch whose decision it has not read. Whatever
is killed when, the decisions it collects must be exactly those of one uninterrupted run.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from autodrop_core import AutoDropConfig, ConfigError, Controller, StateError
from autodrop_core._cli import main

COMMAND = [sys.executable, "-m", "autodrop_core", "replay"]
FLAGS = ["--drop-delay", "3", "--threshold", "2", "--max-threshold", "40", "--angle-window", "2"]
CONFIG = AutoDropConfig(lrs=(0.1,), drop_delay=3, threshold=2.0, max_threshold=40.0, angle_window=2)


def _size(name: str, default: int) -> int:
    return int(os.environ.get(f"AUTODROP_FAULT_{name}", default))


SEED = _size("SEED", 0)


def reductions(n: int) -> list[tuple[float, float]]:
    """Reductions whose angle settles, so the run triggers, averages and drops several times."""
    rng = random.Random(1234)
    return [(0.9 + 0.05 * rng.random(), 1.0) if t else (0.0, 1.0) for t in range(n)]


EPOCHS = 60
REDUCTIONS = reductions(EPOCHS)


def reference() -> list[dict[str, Any]]:
    controller = Controller(CONFIG)
    return [controller.observe(d, s).to_dict() for d, s in REDUCTIONS]


REFERENCE = reference()


def numbered(first: int) -> bytes:
    """The lines of epochs ``first``.. (1-based) as the protocol sends them."""
    return "".join(
        json.dumps({"epoch": t, "dot": d, "sq_norm": s}) + "\n" for t, (d, s) in enumerate(REDUCTIONS, 1) if t >= first
    ).encode()


def complete_lines(raw: bytes) -> list[dict[str, Any]]:
    """Decisions fully written before the kill (a torn last line counts as not received)."""
    text = raw.decode()
    keep = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    return [json.loads(x) for x in keep.splitlines()]


def _timed(state: Path, stdin: bytes) -> float:
    start = time.monotonic()
    result = subprocess.run([*COMMAND, *FLAGS, "--state", str(state)], input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - start


def test_sigkill_loop_loses_no_decision_and_duplicates_none(tmp_path: Path, counts: Counter[str]) -> None:
    kills = _size("KILLS", 20)
    rng = random.Random(SEED)
    startup = _timed(tmp_path / "calib0.json", b"")
    whole = _timed(tmp_path / "calib1.json", numbered(1))
    done = session = 0
    while done < kills:  # one session = one trainer run from epoch 1 to the end, killed many times
        session += 1
        state = tmp_path / f"s{session}.json"
        got: list[dict[str, Any]] = []
        while len(got) < EPOCHS and done < kills:
            process = subprocess.Popen([*COMMAND, *FLAGS, "--state", str(state)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert process.stdin and process.stdout and process.stderr
            process.stdin.write(numbered(len(got) + 1))
            process.stdin.close()
            time.sleep(rng.uniform(0.8 * startup, whole))  # mostly while it decides and writes
            process.send_signal(signal.SIGKILL)
            out = process.stdout.read()
            process.stdout.close()
            process.stderr.close()
            process.wait(timeout=60)
            received = complete_lines(out)
            on_disk = json.loads(state.read_text())["state"]["epoch"] if state.exists() else 0
            if on_disk > len(got) + len(received):
                counts["replay: decisions lost on stdout (state one ahead), answered again on retry"] += 1
            got += received
            assert got == REFERENCE[: len(got)]  # nothing decided twice, nothing out of order
            done += 1
            counts["replay: SIGKILLs"] += 1
        final = subprocess.run([*COMMAND, "--state", str(state)], input=numbered(len(got) + 1), capture_output=True,
                               timeout=60)
        assert final.returncode == 0, final.stderr
        got += complete_lines(final.stdout)
        assert [d["epoch"] for d in got] == list(range(1, EPOCHS + 1))
        assert got == REFERENCE
        counts["replay: killed sessions resumed exactly (all decisions once, equal to an uninterrupted run)"] += 1
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".autodrop-tmp-")]
        assert leftovers == []


def _good_state_file(tmp_path: Path, epochs: int = 12) -> Path:
    state = tmp_path / "good.json"
    lines = numbered(1).decode().splitlines()[:epochs]
    code, _, err = _cli(["--state", str(state), *FLAGS], "\n".join(lines) + "\n")
    assert code == 0, err
    return state


def _cli(argv: list[str], stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["replay", *argv], io.StringIO(stdin), out, err)
    return code, out.getvalue(), err.getvalue()


def _next_line(epoch: int) -> str:
    dot, sq = REDUCTIONS[epoch - 1]
    return json.dumps({"epoch": epoch, "dot": dot, "sq_norm": sq}) + "\n"


def _from_dict_outcome(raw: bytes) -> str:
    """What Controller.from_dict makes of the bytes (no checksum at this level)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "unreadable"
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k in ("format", "config", "state")}
    try:
        Controller.from_dict(data)
    except (StateError, ConfigError):
        return "refused"
    return "accepted"


def test_random_bit_flips_are_refused_or_harmless(tmp_path: Path, counts: Counter[str]) -> None:
    flips = _size("FLIPS", 200)
    rng = random.Random(SEED + 1)
    good = _good_state_file(tmp_path)
    pristine = good.read_bytes()
    want = REFERENCE[12]
    target = tmp_path / "flipped.json"
    outcomes: Counter[str] = Counter()
    for _ in range(flips):
        raw = bytearray(pristine)
        bit = rng.randrange(len(raw) * 8)
        raw[bit // 8] ^= 1 << (bit % 8)
        target.write_bytes(bytes(raw))
        code, out, err = _cli(["--state", str(target)], _next_line(13))  # an exception here fails the test
        if code == 2:
            assert out == "" and "Traceback" not in err and len(err) < 1000, err
            assert target.read_bytes() == bytes(raw)  # a refused file is left as it was
            outcomes["refused"] += 1
        else:
            assert code == 0, err
            outcomes["accepted-identical" if json.loads(out) == want else "WRONG"] += 1
        outcomes[f"from_dict {_from_dict_outcome(bytes(raw))}"] += 1
    assert outcomes["WRONG"] == 0
    outcomes["accepted with a different decision (must be 0)"] += outcomes.pop("WRONG", 0)
    for key, value in outcomes.items():
        counts[f"bit flips: {key}"] += value
    counts["bit flips: total"] += flips


def _huge_int_text() -> str:
    return "1" + "0" * 400


TAMPERED: dict[str, Any] = {
    "truncated-half": lambda raw: raw[: len(raw) // 2],
    "truncated-one-byte": lambda raw: raw[:-1],
    "empty": lambda raw: b"",
    "utf16": lambda raw: raw.decode().encode("utf-16"),
    "utf8-bom": lambda raw: b"\xef\xbb\xbf" + raw,
    "latin1-byte": lambda raw: raw.replace(b'"format"', b'"f\xe9rmat"'),
    "huge-int-theta": lambda raw: raw.replace(b'"theta": ', b'"theta": ' + _huge_int_text().encode() + b", \"x\": "),
    "5001-digit-epoch": lambda raw: raw.replace(b'"epoch": 12,', b'"epoch": ' + b"1" * 5001 + b","),
    "deep-nesting": lambda raw: raw.replace(b'"angles": [', b'"angles": ' + b"[" * 100_000),
    "nan": lambda raw: raw.replace(b'"prev_sq_norm": ', b'"prev_sq_norm": NaN, "y": '),
    "list": lambda raw: b"[" + raw + b"]",
    "no-checksum-key": lambda raw: raw.replace(b'"sha256"', b'"sha257"'),
}
#: Damage only the replay layer sees (the checkpoint part is intact, so from_dict accepts it).
CLI_ONLY = {"no-checksum-key"}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_state_files_exit_2_through_the_cli_and_from_dict(
    tmp_path: Path, case: str, counts: Counter[str]
) -> None:
    good = _good_state_file(tmp_path)
    raw = TAMPERED[case](good.read_bytes())
    assert raw != good.read_bytes()
    good.write_bytes(raw)
    code, out, err = _cli(["--state", str(good)], _next_line(13))
    assert code == 2 and out == "", err
    assert err.startswith("autodrop replay: error: --state") and len(err) < 1000, err
    assert good.read_bytes() == raw
    assert _from_dict_outcome(raw) in (("accepted",) if case in CLI_ONLY else ("unreadable", "refused"))
    counts["tampered state files refused"] += 1


def test_tampered_files_fail_the_same_way_in_a_subprocess(tmp_path: Path) -> None:
    good = _good_state_file(tmp_path)
    good.write_bytes(TAMPERED["deep-nesting"](good.read_bytes()))
    result = subprocess.run([*COMMAND, "--state", str(good)], input=_next_line(13).encode(), capture_output=True,
                            timeout=60)
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert b"nested too deeply" in result.stderr


def test_concurrent_writers_lose_no_update(tmp_path: Path, counts: Counter[str]) -> None:
    rounds, writers = _size("ROUNDS", 3), 5
    state = tmp_path / "s.json"
    seen: list[int] = []
    for _ in range(rounds):
        processes = [
            subprocess.Popen([*COMMAND, "--state", str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for _ in range(writers)
        ]
        for process in processes:
            assert process.stdin
            process.stdin.write(b'{"dot": 0.5, "sq_norm": 1.0}\n')
            process.stdin.close()
        for process in processes:
            assert process.stdout
            seen.append(json.loads(process.stdout.read())["epoch"])
            process.stdout.close()
            assert process.wait(timeout=60) == 0
        counts["concurrent writers"] += writers
    assert sorted(seen) == list(range(1, rounds * writers + 1))
    assert json.loads(state.read_text())["state"]["epoch"] == rounds * writers
    counts["concurrent updates lost"] += rounds * writers - len(set(seen))
