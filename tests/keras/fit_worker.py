"""One ``model.fit`` with autodrop_keras under the backend named by KERAS_BACKEND; prints a JSON report.

Run by ``test_backends.py`` in a subprocess (Keras picks its backend at import). The
report holds the callback's decisions and those of the numpy reference adapter fed
with the weights fit produced, the BatchNorm statistics against a float64 oracle of
their weighted average, and the outcome of a run with ReduceLROnPlateau beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import keras
import numpy as np
from autodrop_keras import AutoDropCallback
from autodrop_numpy import NumpyAutoDrop

from autodrop_core import LRConflictError

SETTINGS = {"drop_delay": 3, "threshold": 2.0, "max_threshold": 20.0}
EPOCHS = 20


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype("float32")
    return x, (x @ np.linspace(-1, 1, 8, dtype="float32")[:, None]).astype("float32")


def make_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse")
    return model


class Recorder(keras.callbacks.Callback):
    """The weights at each epoch end, before AutoDrop acts (put it first)."""

    def __init__(self) -> None:
        super().__init__()
        self.xs: list[list[np.ndarray]] = []
        self.stats: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.xs.append([np.array(keras.ops.convert_to_numpy(v.value)) for v in self.model.trainable_variables])
        self.stats.append([np.array(keras.ops.convert_to_numpy(v.value)) for v in self.model.non_trainable_weights])


class _Interrupt(keras.callbacks.Callback):
    """Stops the run at the end of epoch ``at`` (0-based), after the callbacks before it saved."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt(f"stopped after epoch {epoch + 1}")


_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def _nbytes(tensors: list | None) -> int:
    return sum(int(np.prod(t.shape)) * _ITEMSIZE[keras.backend.standardize_dtype(t.dtype)] for t in tensors or [])


class MemoryProbe(keras.callbacks.Callback):
    """After AutoDrop's epoch end: the bytes its buffers hold per trainable parameter, and the window state."""

    def __init__(self, autodrop: AutoDropCallback) -> None:
        super().__init__()
        self.autodrop = autodrop
        self.epochs: list[dict[str, object]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        a = self.autodrop
        n = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        held = sum(_nbytes(getattr(a, name, None)) for name in ("_snapshot", "_base", "_head", "_explicit",
                                                                 "_prev_step", "_average"))
        decision = a.history[-1]
        self.epochs.append({"bytes_per_param": held / n, "pending": a.controller.state.pending > 0,
                            "applied": decision.apply_average and decision.average_weight != 1.0})


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.weights + model.optimizer.variables]


def resume_checks(root: str) -> dict[str, object]:
    """Full run vs. a run interrupted inside an averaging window and resumed two ways."""
    x, y = data()
    fit = {"batch_size": 16, "shuffle": False, "verbose": 0}
    full_model = make_model()
    full = AutoDropCallback(state_dir=f"{root}/full", **SETTINGS)
    full_model.fit(x, y, epochs=EPOCHS, callbacks=[full], **fit)
    inside = next(d.epoch for d in full.history if d.average_weight is not None and not d.apply_average)
    out: dict[str, object] = {"inside": inside}

    # BackupAndRestore: the interrupted run backs up after each epoch; the rerun resumes at `inside`
    first = AutoDropCallback(state_dir=f"{root}/bar", **SETTINGS)
    backup = keras.callbacks.BackupAndRestore(backup_dir=f"{root}/bar-backup")
    with contextlib.suppress(KeyboardInterrupt):
        make_model().fit(x, y, epochs=EPOCHS, callbacks=[first, backup, _Interrupt(inside - 1)], **fit)
    rerun_model = make_model()
    second = AutoDropCallback(state_dir=f"{root}/bar", **SETTINGS)
    backup = keras.callbacks.BackupAndRestore(backup_dir=f"{root}/bar-backup")
    rerun_model.fit(x, y, epochs=EPOCHS, callbacks=[second, backup], **fit)
    out["bar_decisions_equal"] = [d.to_dict() for d in first.history + second.history] == [
        d.to_dict() for d in full.history]
    out["bar_weights_equal"] = all(np.array_equal(a, b) for a, b in zip(_weights(rerun_model), _weights(full_model)))

    # ModelCheckpoint + load_model: resume from the .keras file of epoch `inside`
    first = AutoDropCallback(state_dir=f"{root}/ckpt", **SETTINGS)
    saver = keras.callbacks.ModelCheckpoint(f"{root}/ckpt/model-{{epoch}}.keras")
    with contextlib.suppress(KeyboardInterrupt):
        make_model().fit(x, y, epochs=EPOCHS, callbacks=[first, saver, _Interrupt(inside - 1)], **fit)
    loaded = keras.models.load_model(f"{root}/ckpt/model-{inside}.keras")
    second = AutoDropCallback(state_dir=f"{root}/ckpt", **SETTINGS)
    loaded.fit(x, y, epochs=EPOCHS, initial_epoch=inside, callbacks=[second], **fit)
    out["ckpt_decisions_equal"] = [d.to_dict() for d in first.history + second.history] == [
        d.to_dict() for d in full.history]
    out["ckpt_weights_equal"] = all(np.array_equal(a, b) for a, b in zip(_weights(loaded), _weights(full_model)))
    return out


absorbed: list[bool] = []  #: per epoch end of the numba pass: whether it also formed W'


def _choose_path() -> list[bool]:
    """``AUTODROP_KERAS_PATH=numba``: the numba pass for these small variables too; ``ops``: never.

    Returns a list that records, per epoch end, whether the numba pass ran.
    """
    from autodrop_keras import _fused_cpu

    ran: list[bool] = []
    absorbed.clear()
    path = os.environ.get("AUTODROP_KERAS_PATH", "ops")
    _fused_cpu.USE_FUSED_CPU = path == "numba"
    _fused_cpu.MIN_NUMEL = 0
    real = _fused_cpu.reduce_buffers

    def counted(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        ran.append(result is not None)
        absorbed.append(result is not None and result.averages is not None)
        return result

    _fused_cpu.reduce_buffers = counted  # type: ignore[assignment]
    return ran


def main() -> None:
    ran = _choose_path()
    x, y = data()
    model = make_model()
    start = [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.trainable_variables]
    recorder, autodrop, after = Recorder(), AutoDropCallback(**SETTINGS), Recorder()
    probe = MemoryProbe(autodrop)
    fit = model.fit(
        x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[recorder, autodrop, after, probe]
    )

    params = [a.copy() for a in start]
    reference = NumpyAutoDrop(params, float(np.float32(0.05)), **SETTINGS)  # the lr as Keras stores it
    ref, stats_errors, w = [], [], None
    for t in range(EPOCHS):
        for p, v in zip(params, recorder.xs[t]):
            p[...] = v
        d = reference.end_epoch()
        ref.append(d.to_dict())
        c = d.average_weight
        s = [a.astype(np.float64) for a in recorder.stats[t]]
        if c is not None:
            w = s if (w is None or c == 1.0) else [wi + c * (si - wi) for wi, si in zip(w, s)]
        if d.apply_average:  # BatchNorm statistics replaced by their weighted average, as the weights are
            stats_errors.append(max(
                float(np.max(np.abs(got.astype(np.float64) - want) / (np.abs(want) + 1e-6)))
                for got, want in zip(after.stats[t], w)
            ))
            w = None
    fused_epochs = sum(ran[:EPOCHS - 1])  # the first run's epoch ends with a previous step
    fused_absorbs = sum(absorbed[:EPOCHS - 1])
    plateau_model = make_model()
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)
    try:
        plateau_model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0,
                          callbacks=[plateau, AutoDropCallback(**SETTINGS)])
        conflict = "no error"
    except LRConflictError as err:
        conflict = str(err)

    print(json.dumps({
        "backend": keras.backend.backend(),
        "decisions": [d.to_dict() for d in autodrop.history],
        "reference": ref,
        "logged_lr_0": fit.history.get("autodrop/lr_0"),
        "logged_angles": len(fit.history.get("autodrop/angle", [])),
        "conflict": conflict,
        "stats_errors": stats_errors,
        "resume": resume_checks(sys.argv[1]),
        "memory": probe.epochs,
        "acc": autodrop._acc,
        "env": os.environ.get("KERAS_BACKEND"),
        "fused_epochs": fused_epochs,
        "fused_absorbs": fused_absorbs,
        "window_epochs": sum(d.average_weight is not None and d.average_weight < 1.0 for d in autodrop.history),
    }))


if __name__ == "__main__":
    sys.exit(main())
