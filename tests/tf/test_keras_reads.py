"""The Keras 3 callback's reads and writes on the TensorFlow backend: one graph for the variables, no idle lr write.

In tests/tf because importing keras loads its default backend, TensorFlow, which the other
sessions lack (tests/keras runs each backend in a subprocess and checks the decisions).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from autodrop_keras import AutoDropCallback, _callback, _fused_cpu

from autodrop_core import LRConflictError


def test_the_variables_are_read_by_one_graph_kept_for_them_and_the_reads_are_copies_on_write() -> None:
    variables = [keras.Variable(np.arange(6, dtype="float32").reshape(2, 3)), keras.Variable(np.ones(4, "float32"))]
    memo: dict[str, Any] = {}
    reads = _fused_cpu.values(variables, memo)
    reader = memo["reader"]
    assert [r.numpy().tolist() for r in reads] == [v.numpy().tolist() for v in variables]
    variables[0].assign_add(np.full((2, 3), 10.0, "float32"))  # a training step writes the variable
    assert reads[0].numpy().tolist() == np.arange(6, dtype="float32").reshape(2, 3).tolist(), "the read is x(t)"
    again = _fused_cpu.values(variables, memo)
    assert memo["reader"] is reader and again[0].numpy()[0, 0] == 10.0
    other = [keras.Variable(np.zeros(3, "float32"))]
    assert _fused_cpu.values(other, memo)[0].numpy().tolist() == [0.0, 0.0, 0.0] and memo["reader"] is not reader
    # without a memo: one eager read per variable, the same values
    assert [r.numpy().tolist() for r in _fused_cpu.values(variables)] == [v.numpy().tolist() for v in variables]


def test_an_epoch_end_that_keeps_the_lr_does_not_write_it_and_a_drop_does(monkeypatch: pytest.MonkeyPatch) -> None:
    lr = keras.Variable(0.1, dtype="float32")
    written: list[float] = []
    real = _callback._assign

    def counted(variable: Any, value: Any) -> None:
        if variable is lr:
            written.append(value)
        real(variable, value)

    monkeypatch.setattr(_callback, "_assign", counted)
    v = keras.Variable(np.array([1.0, 2.0, 3.0], "float32"))
    callback = AutoDropCallback(drop_delay=1, threshold=45.0, max_threshold=90.0)
    callback._watch([v], lr)
    callback.on_epoch_begin(0)
    start, lrs = float(lr.numpy()), []
    for epoch, step in enumerate(([0.5, 0.5, 0.5], [0.5, 0.5, 0.6], [0.5, 0.5, 0.5], [0.5, 0.6, 0.5])):
        v.assign_add(np.array(step, "float32"))
        callback.on_epoch_end(epoch, {})
        assert callback.last_decision is not None
        lrs.append(callback.last_decision.lrs[0])
    drops = [b for a, b in zip([start, *lrs], lrs) if b != a]
    assert drops and written == drops, (lrs, written)
    assert float(lr.numpy()) == pytest.approx(lrs[-1])
    lr.assign(0.3)  # another writer is still caught
    v.assign_add(np.array([0.5, 0.5, 0.5], "float32"))
    with pytest.raises(LRConflictError, match=r"learning_rate is 0\.3"):
        callback.on_epoch_end(4, {})
