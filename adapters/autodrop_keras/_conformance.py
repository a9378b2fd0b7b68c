"""The conformance driver of autodrop_keras (entry point ``autodrop.adapters: keras``).

It runs under whichever Keras backend ``KERAS_BACKEND`` selects (nox runs it in the
torch, jax and tensorflow sessions): one ``keras.Variable`` per case tensor, a Keras SGD
optimizer whose learning-rate variable the callback owns, and checkpoints through the
callback's own ``state_dir`` files, as ``BackupAndRestore`` resumes use them. It is
imported only by the conformance suite and decides nothing itself.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
from autodrop_conformance._reference import adapter_kwargs

from autodrop_core import AutoDropConfig, Decision
from autodrop_keras._callback import AutoDropCallback, _numpy, _read, accumulation_dtype

__all__ = ["KerasDriver", "driver"]


def _tensor(value: Any, dtype: str) -> Any:
    """``value`` (the case's float64 numbers, already representable in ``dtype``) as a backend tensor."""
    wide = accumulation_dtype()  # float32 on JAX without x64, which has no float64 arrays
    return keras.ops.cast(keras.ops.convert_to_tensor(np.asarray(value, dtype=wide)), dtype)


class KerasRun:
    """Variables, an SGD optimizer and the callback driving them without a model."""

    def __init__(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig,
                 state_dir: Path | None = None) -> None:
        self.dtypes = list(layout.dtypes)
        self.variables = [keras.Variable(_tensor(v, d), dtype=d) for v, d in zip(values, self.dtypes, strict=True)]
        self.optimizer = keras.optimizers.SGD(learning_rate=config.lrs[0])
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="autodrop-keras-conformance-"))
        self.callback = AutoDropCallback(state_dir=self.state_dir, keep=1_000_000, **adapter_kwargs(config))
        self.callback._watch(self.variables, self.optimizer._learning_rate, start_lr=config.lrs[0])

    def set_params(self, values: Sequence[np.ndarray[Any, Any]]) -> None:
        for var, value, dtype in zip(self.variables, values, self.dtypes, strict=True):
            var.assign(_tensor(value, dtype))

    def get_params(self) -> list[np.ndarray[Any, Any]]:
        wide = accumulation_dtype()
        return [np.asarray(_numpy(keras.ops.cast(v.value, wide)), np.float64) for v in self.variables]

    def end_epoch(self) -> Decision:
        return self.callback._end_epoch()

    @property
    def lrs(self) -> tuple[float, ...]:
        return (_read(self.optimizer._learning_rate),)

    def save(self) -> str:
        assert self.callback.controller is not None
        epoch = self.callback.controller.state.epoch
        where = Path(tempfile.mkdtemp(prefix="autodrop-keras-conformance-"))
        self.callback._state_dir = where
        self.callback._save(epoch)
        self.callback._state_dir = self.state_dir
        return f"{where}::{epoch}"

    def reductions(self) -> tuple[float, float] | None:
        return self.callback.last_reductions


class KerasDriver:
    """autodrop_keras under the current backend: one lr group, its accumulation dtype."""

    dtypes: tuple[Literal["float64", "float32", "float16", "bfloat16"], ...] = (
        "float64", "float32", "float16", "bfloat16",
    )
    max_examples: int | None = 25
    max_groups = 1  # a Keras optimizer has one learning rate
    few_shapes = True
    lr_dtype: Literal["float32"] = "float32"  # a Keras optimizer holds its lr in a float32 variable

    def __init__(self) -> None:
        self.name = f"keras-{keras.backend.backend()}"
        self.accumulation: Literal["float64", "float32"] = (
            "float64" if accumulation_dtype() == "float64" else "float32"
        )
        if self.accumulation == "float32":
            self.dtypes = ("float32", "float16", "bfloat16")  # JAX without x64 has no float64 arrays

    def start(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig) -> KerasRun:
        run = KerasRun(values, layout, config)
        run.callback.on_epoch_begin(0)
        return run

    def restore(
        self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig, saved: Any
    ) -> KerasRun:
        where, epoch = str(saved).rsplit("::", 1)
        run = KerasRun(values, layout, config, state_dir=Path(where))
        run.callback._starting = False
        run.callback._resume(int(epoch))
        shutil.rmtree(where, ignore_errors=True)
        run.state_dir = Path(tempfile.mkdtemp(prefix="autodrop-keras-conformance-"))
        run.callback._state_dir = run.state_dir
        return run


#: The object the ``keras`` entry point names.
driver = KerasDriver()
