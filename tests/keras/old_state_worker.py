"""Old-layout state files of autodrop_keras: write them (with the old adapter) or resume from them.

``make DIR``, run once with autodrop_keras of commit e06a85e (which saved an explicit
float64 ``prev_step``), drives the callback through its model-free entry ``_watch``
over a deterministic walk with ``state_dir=DIR``, keeps the state files written inside
an averaging window and right after an applied average, and records every decision and
variable in ``DIR/record.json``. ``check DIR`` (run by ``test_old_state.py`` with
today's adapter, on a copy of the fixture) resumes from each kept file and prints, as
one JSON line, whether every later decision and variable equals the old run's.

Run: ``KERAS_BACKEND=tensorflow PYTHONPATH=<e06a85e checkout>/adapters:<e06a85e checkout>
python tests/keras/old_state_worker.py make tests/keras/data/old_state``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
from autodrop_keras import AutoDropCallback

SHAPES = [(5, 4), (6,), (2, 3)]
DTYPES = ["float32", "float32", "float16"]
SETTINGS: dict[str, Any] = {"drop_delay": 3, "threshold": 5.0, "max_threshold": 50.0}
EPOCHS = 24


def build(values: list[Any], lr: float, state_dir: Path) -> tuple[AutoDropCallback, list[Any], Any]:
    variables = [keras.Variable(np.asarray(v, np.float64).astype(d), dtype=d) for v, d in zip(values, DTYPES)]
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    optimizer.build(variables)
    callback = AutoDropCallback(state_dir=state_dir, keep=100, **SETTINGS)
    callback._watch(variables, optimizer._learning_rate)
    return callback, variables, optimizer


def train(variables: list[Any], lr: float, t: int) -> None:
    rng = np.random.default_rng(1000 + t)
    direction = np.random.default_rng(7)
    for var, shape in zip(variables, SHAPES):
        now = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(var.value, "float64")))
        step = lr * (direction.standard_normal(shape) + 0.3 * rng.standard_normal(shape))
        var.assign(keras.ops.cast(keras.ops.convert_to_tensor(now + step, dtype="float64"), var.dtype))


def values(variables: list[Any]) -> list[list[Any]]:
    return [np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(v.value, "float64"))).tolist() for v in variables]


def make(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    callback, variables, _ = build([rng.standard_normal(s) for s in SHAPES], 0.1, root)
    record: dict[str, Any] = {"saved": {}, "epochs": []}
    for t in range(EPOCHS):
        callback.on_epoch_begin(t)
        lr = float(keras.ops.convert_to_numpy(callback._lr.value))
        train(variables, lr, t)
        callback.on_epoch_end(t)
        decision = callback.history[-1]
        record["epochs"].append({"decision": decision.to_dict(), "variables": values(variables), "lr": lr})
        assert callback.controller is not None
        for name, hit in (("window", callback.controller.state.pending > 0), ("after_apply", decision.apply_average)):
            if hit and name not in record["saved"]:
                record["saved"][name] = t + 1
    keep = {f"autodrop-{n}.npz" for n in record["saved"].values()}
    for path in root.glob("autodrop-*.npz"):
        if path.name not in keep:
            path.unlink()
    (root / "record.json").write_text(json.dumps(record))


def _continue(record: dict[str, Any], source: Path, saved: int, work: Path) -> tuple[bool, bool, bool, bool]:
    """Resume from ``source`` (the state after ``saved`` epochs) in ``work`` and run to the end."""
    work.mkdir()
    shutil.copy(source, work)
    at = record["epochs"][saved - 1]
    callback, variables, _ = build(at["variables"], 0.5, work)
    decisions_equal = variables_equal = True
    explicit_first = None
    for t in range(saved, EPOCHS):
        callback.on_epoch_begin(t)
        if explicit_first is None:
            explicit_first = callback._explicit is not None
        lr = float(keras.ops.convert_to_numpy(callback._lr.value))
        train(variables, lr, t)
        callback.on_epoch_end(t)
        got, want = callback.history[-1].to_dict(), record["epochs"][t]["decision"]
        angle_close = (got["angle"] is None) == (want["angle"] is None) and (
            got["angle"] is None or abs(got["angle"] - want["angle"]) <= 1e-9)
        same_flags = all(got[k] == want[k] for k in ("triggered", "apply_average", "dropped", "lrs", "epoch"))
        decisions_equal &= bool(angle_close and same_flags)
        variables_equal &= values(variables) == record["epochs"][t]["variables"]
    return decisions_equal, variables_equal, bool(explicit_first), callback._explicit is None


def check(root: Path) -> dict[str, Any]:
    record = json.loads((root / "record.json").read_text())
    out: dict[str, Any] = {}
    for name, saved in record["saved"].items():
        work = root / f"resume-{name}"
        decisions, variables, used, dropped = _continue(record, root / f"autodrop-{saved}.npz", saved, work)
        out[name] = {"decisions_equal": decisions, "variables_equal": variables, "explicit_step_used": used,
                     "explicit_step_dropped": dropped}
    # the files today's callback wrote while continuing (the new layout), each resumed in turn
    first = min(record["saved"].values())
    again = [_continue(record, root / f"resume-{min(record['saved'], key=record['saved'].get)}" /
                       f"autodrop-{n}.npz", n, root / f"again-{n}")[:2] for n in range(first + 1, EPOCHS)]
    out["new_layout_resumes"] = len(again)
    out["new_layout_resumes_equal"] = all(d and v for d, v in again)
    return out


if __name__ == "__main__":
    mode, where = sys.argv[1], Path(sys.argv[2])
    if mode == "make":
        make(where)
    else:
        print(json.dumps({"backend": keras.backend.backend(), "resume": check(where)}))
