"""Writes the old-layout fixtures in this folder; run once with the adapter of commit e06a85e.

The TensorFlow adapter before issue 15 kept two halves of snapshots and float64 steps
and saved an explicit s(t-1) (``prev_step``). This script ran that adapter through a
deterministic walk, saved its state at two points (inside an averaging window, and
right after an applied average) both as a ``tf.train.Checkpoint`` and as a
``state_dict`` (``.npz``), then kept going and recorded every later decision and the
variables' bytes. ``test_old_layout.py`` restores the fixtures into today's adapter
and checks that it continues exactly like the old one did.

Run: ``PYTHONPATH=<e06a85e checkout>/adapters:<e06a85e checkout> python tests/tf/data/make_old_layout.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from autodrop_tf import AutoDrop

HERE = Path(__file__).parent
SHAPES = [(6, 4), (7,), (), (3, 2, 2)]
DTYPES = ["float32", "float32", "float16", "bfloat16"]
SETTINGS: dict[str, Any] = {"drop_delay": 3, "threshold": 5.0, "max_threshold": 50.0}
EPOCHS = 30


def start() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s) for s in SHAPES], np.zeros(3)


def train(variables: list[tf.Variable], stats: tf.Variable, lr: float, t: int) -> None:
    """Epoch t's update: a drift along a fixed direction plus noise, scaled by the lr."""
    rng = np.random.default_rng(1000 + t)
    direction = np.random.default_rng(7)
    for var, shape in zip(variables, SHAPES):
        d = direction.standard_normal(shape) + 0.3 * rng.standard_normal(shape)
        var.assign_add(tf.cast(tf.constant(lr * d, tf.float64), var.dtype))
    stats.assign_add(tf.constant(rng.standard_normal(3), tf.float32))


def make(values: list[np.ndarray], stat_values: np.ndarray) -> tuple[list[tf.Variable], tf.Variable]:
    variables = [tf.Variable(tf.cast(tf.constant(np.asarray(v, np.float64)), d)) for v, d in zip(values, DTYPES)]
    return variables, tf.Variable(tf.constant(np.asarray(stat_values, np.float64), tf.float32))


def save_state(autodrop: AutoDrop, name: str) -> None:
    state = autodrop.state_dict()
    arrays: dict[str, np.ndarray] = {"core": np.frombuffer(json.dumps(state["core"]).encode(), np.uint8)}
    for key, value in state.items():
        if key != "core" and value is not None:
            for i, a in enumerate(value):
                arrays[f"{key}_{i}"] = np.asarray(a, np.float64)
    np.savez(HERE / f"{name}.npz", **arrays)
    tf.train.Checkpoint(autodrop=autodrop).write(str(HERE / f"{name}_ckpt"))


def main() -> int:
    values, stat_values = start()
    variables, stats = make(values, stat_values)
    autodrop = AutoDrop(variables, lrs=0.1, extra_variables=[stats], **SETTINGS)
    record: dict[str, Any] = {"saved": {}, "epochs": []}
    for t in range(EPOCHS):
        train(variables, stats, autodrop.lr, t)
        decision = autodrop.end_epoch()
        record["epochs"].append({
            "decision": decision.to_dict(),
            "variables": [v.numpy().astype(np.float64).tolist() for v in variables],
            "stats": stats.numpy().astype(np.float64).tolist(),
        })
        for name, hit in (("window", autodrop.controller.state.pending > 0),
                          ("after_apply", decision.apply_average)):
            if hit and name not in record["saved"]:
                record["saved"][name] = t + 1
                save_state(autodrop, name)
    assert set(record["saved"]) == {"window", "after_apply"}, record["saved"]
    (HERE / "old_layout.json").write_text(json.dumps(record))
    print("saved after epochs", record["saved"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
