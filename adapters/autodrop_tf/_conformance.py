"""The conformance driver of the TensorFlow adapter (entry point ``autodrop.adapters: tensorflow``).

Parameters are ``tf.Variable`` objects of the case's dtypes; :class:`autodrop_tf.AutoDrop`
sets the lr of a Keras SGD optimizer (with momentum: each training step applies a fixed
gradient before the case's values are written, and the suite watches the momentum
buffers across every epoch end; it manages one parameter group, so the driver
asks the suite for one group only). Checkpoints go through ``tf.train.Checkpoint``
written to a temporary directory and read back into a fresh adapter, then
``apply_lr()`` puts the restored lr into the new optimizer, as the adapter documents.
It is imported only by the conformance suite and must not decide anything itself.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf
from autodrop_conformance._reference import adapter_kwargs

from autodrop_core import AutoDropConfig, Decision
from autodrop_tf._adapter import AutoDrop
from autodrop_tf._fused_cpu import MIN_NUMEL
from autodrop_tf._ops import CHUNK

__all__ = ["TensorFlowDriver", "driver"]

_DTYPES = {"float64": tf.float64, "float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}


class TensorFlowRun:
    """Variables, a Keras SGD optimizer and the AutoDrop module over them."""

    def __init__(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig) -> None:
        self.dtypes = [_DTYPES[d] for d in layout.dtypes]
        self.variables = [
            tf.Variable(tf.cast(tf.constant(np.asarray(v, dtype=np.float64)), d)) for v, d in zip(values, self.dtypes)
        ]
        # momentum, so that the optimizer holds state the suite can watch across an average
        self.optimizer = keras.optimizers.SGD(learning_rate=config.lrs[0], momentum=0.9)
        self.autodrop = AutoDrop(self.variables, self.optimizer, lrs=config.lrs[0], **adapter_kwargs(config))

    def set_params(self, values: Sequence[np.ndarray[Any, Any]]) -> None:
        # a real training step with a fixed gradient (it fills the momentum buffers), whose
        # result the case's values then replace
        self.optimizer.apply_gradients([(tf.ones_like(var), var) for var in self.variables])
        for var, value, dtype in zip(self.variables, values, self.dtypes, strict=True):
            var.assign(tf.cast(tf.constant(np.asarray(value, dtype=np.float64)), dtype))

    def optimizer_state(self) -> list[np.ndarray[Any, Any]]:
        """The SGD momentum buffers (float64 copies); empty before the first training step."""
        return [np.asarray(tf.cast(m, tf.float64).numpy()) for m in getattr(self.optimizer, "momentums", [])]

    def get_params(self) -> list[np.ndarray[Any, Any]]:
        return [np.asarray(tf.cast(v, tf.float64).numpy()) for v in self.variables]

    def end_epoch(self) -> Decision:
        return self.autodrop.end_epoch()

    @property
    def lrs(self) -> tuple[float, ...]:
        return (float(np.asarray(self.optimizer.learning_rate)),)

    def save(self) -> str:
        where = Path(tempfile.mkdtemp(prefix="autodrop-tf-conformance-"))
        return str(tf.train.Checkpoint(autodrop=self.autodrop).write(str(where / "ckpt")))

    def restore_from(self, path: str) -> None:
        tf.train.Checkpoint(autodrop=self.autodrop).read(path).assert_consumed()
        shutil.rmtree(Path(path).parent, ignore_errors=True)
        self.autodrop.apply_lr()

    def reductions(self) -> tuple[float, float] | None:
        return self.autodrop.last_reductions


class TensorFlowDriver:
    """The TensorFlow adapter's driver: all four dtypes, float64 accumulation, one lr group."""

    name = "tensorflow"
    dtypes: tuple[Literal["float64", "float32", "float16", "bfloat16"], ...] = (
        "float64", "float32", "float16", "bfloat16",
    )
    accumulation: Literal["float64"] = "float64"
    max_examples: int | None = 25
    max_groups = 1  # AutoDrop(variables, optimizer) sets a single learning rate
    few_shapes = True  # tf.function traces once per set of shapes
    #: a variable this large sends the reduction through the numba pass (when numba is installed);
    #: reductions and running averages work in chunks of CHUNK elements: one element more takes two
    size_thresholds: tuple[int, ...] = (MIN_NUMEL, CHUNK + 1)
    #: Keras keeps the learning rate in a float32 variable: it must hold float32(decision lr) exactly
    lr_dtype: Literal["float32"] = "float32"

    def start(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig) -> TensorFlowRun:
        return TensorFlowRun(values, layout, config)

    def restore(
        self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig, saved: Any
    ) -> TensorFlowRun:
        run = TensorFlowRun(values, layout, config)
        run.restore_from(saved)
        return run


#: The object the ``tensorflow`` entry point names.
driver = TensorFlowDriver()
