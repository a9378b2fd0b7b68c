"""States saved by the adapter before issue 15 (explicit float64 s(t-1), two halves) still resume exactly.

The fixtures in ``data/`` were written by ``data/make_old_layout.py`` run with the
adapter of commit e06a85e: a ``tf.train.Checkpoint`` and a ``state_dict`` inside an
averaging window and right after an applied average, and every later decision and
variable of that old run. Today's adapter restores them and must continue bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from autodrop_tf import AutoDrop

DATA = Path(__file__).parent / "data"


def _maker() -> Any:
    spec = importlib.util.spec_from_file_location("autodrop_tf_old_layout_maker", DATA / "make_old_layout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _state_dict(name: str) -> dict[str, Any]:
    with np.load(DATA / f"{name}.npz") as data:
        state: dict[str, Any] = {"core": json.loads(bytes(data["core"]).decode())}
        for key in ("snapshot", "prev_step", "average", "extra_average"):
            arrays = [data[f"{key}_{i}"] for i in range(8) if f"{key}_{i}" in data.files]
            state[key] = arrays or None
    return state


@pytest.mark.parametrize("how", ["tf.train.Checkpoint", "state_dict"])
@pytest.mark.parametrize("name", ["window", "after_apply"])
def test_an_old_layout_state_restores_and_continues_exactly_like_the_old_adapter(name: str, how: str) -> None:
    maker = _maker()
    record = json.loads((DATA / "old_layout.json").read_text())
    saved = record["saved"][name]
    at = record["epochs"][saved - 1]
    variables, stats = maker.make(at["variables"], at["stats"])
    autodrop = AutoDrop(variables, lrs=0.5, extra_variables=[stats], **maker.SETTINGS)
    if how == "state_dict":
        autodrop.load_state_dict(_state_dict(name))
    else:
        tf.train.Checkpoint(autodrop=autodrop).read(str(DATA / f"{name}_ckpt")).expect_partial()
        autodrop.apply_lr()
    assert autodrop.epoch == saved
    assert autodrop.buffers.layout.explicit, "an old state serves its explicit step to the next epoch end"
    for t in range(saved, maker.EPOCHS):
        maker.train(variables, stats, autodrop.lr, t)
        decision = autodrop.end_epoch()
        want = record["epochs"][t]
        assert decision.to_dict() == want["decision"], f"epoch {t + 1}"
        for var, expected in zip(variables, want["variables"]):
            np.testing.assert_array_equal(var.numpy().astype(np.float64), np.asarray(expected), f"epoch {t + 1}")
        np.testing.assert_array_equal(stats.numpy().astype(np.float64), np.asarray(want["stats"]))
        assert not autodrop.buffers.layout.explicit
    assert any(e["decision"]["apply_average"] for e in record["epochs"][saved:])
