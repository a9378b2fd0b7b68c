"""The conformance drivers of the JAX adapter (entry point ``autodrop.adapters: jax``).

Parameters are a list of ``jax.Array`` leaves; ``autodrop_jax.update`` ends each epoch
and its ``decision.lrs`` are written into an ``optax.multi_transform`` of
``optax.inject_hyperparams(optax.sgd)`` states, one per AutoDrop group, from which the
suite reads the lrs back. Checkpoints save the pytree leaves of the AutoDrop and optax
states to bytes (``numpy.savez``) and rebuild them into a fresh state's tree structure,
which is what orbax does on disk (orbax is not in the ``jax`` extra). ``driver`` runs
with ``jax_enable_x64`` (float64 accumulation, all four dtypes); ``driver_float32``
runs without it (JAX's default: float32 accumulation, no float64 parameters). Every
call is wrapped in ``jax.enable_x64`` so the process-wide flag is never changed. It is
imported only by the conformance suite and must not decide anything itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from autodrop_conformance._reference import adapter_kwargs

import autodrop_jax
from autodrop_core import AutoDropConfig, Decision
from autodrop_jax._fused_cpu import MIN_NUMEL

__all__ = ["JaxDriver", "driver", "driver_float32"]

_DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}


class JaxRun:
    """Parameters, an optax optimizer state and the AutoDrop state, threaded functionally."""

    def __init__(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig, x64: bool) -> None:
        self.x64 = x64
        self.dtypes = layout.dtypes
        self.labels = [f"group{g}" for g in range(config.num_groups)]
        with jax.enable_x64(x64):
            self.params = self._arrays(values)
            self.config = config
            self.state = autodrop_jax.init(self.params, config.lrs, **adapter_kwargs(config))
            # Without hyperparam_dtype optax stores the lr in the parameters' dtype: a bfloat16
            # model would train with lrs rounded to 8 bits (found by this suite).
            injected = optax.inject_hyperparams(optax.sgd, hyperparam_dtype=jnp.float64 if x64 else jnp.float32)
            optimizer = optax.multi_transform(
                {label: injected(learning_rate=lr) for label, lr in zip(self.labels, config.lrs)},
                [self.labels[g] for g in layout.groups],
            )
            self.opt_state = optimizer.init(self.params)
        self._last: tuple[float, float] | None = None

    def _arrays(self, values: Sequence[np.ndarray[Any, Any]]) -> list[jax.Array]:
        pairs = zip(values, self.dtypes, strict=True)
        return [jnp.asarray(np.asarray(v, dtype=np.float64), dtype=_DTYPES[d]) for v, d in pairs]

    def set_params(self, values: Sequence[np.ndarray[Any, Any]]) -> None:
        with jax.enable_x64(self.x64):
            self.params = self._arrays(values)

    def get_params(self) -> list[np.ndarray[Any, Any]]:
        return [np.asarray(p).astype(np.float64) for p in self.params]

    def end_epoch(self) -> Decision:
        with jax.enable_x64(self.x64):
            reductions = autodrop_jax.step_reductions(self.state, self.params)
            self.params, self.state, decision = autodrop_jax.update(self.state, self.params)
            self.opt_state = autodrop_jax.set_learning_rates(self.opt_state, decision.lrs, groups=self.labels)
        self._last = reductions
        return decision

    @property
    def lrs(self) -> tuple[float, ...]:
        return autodrop_jax.learning_rates(self.opt_state, groups=self.labels)

    def save(self) -> bytes:
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves({"autodrop": self.state, "opt": self.opt_state})]
        buffer = io.BytesIO()
        np.savez(buffer, *leaves)
        return buffer.getvalue()

    def restore_from(self, blob: bytes) -> None:
        target = {"autodrop": self.state, "opt": self.opt_state}
        treedef = jax.tree.structure(target)
        dtypes = [np.asarray(leaf).dtype for leaf in jax.tree.leaves(target)]
        with np.load(io.BytesIO(blob)) as data:
            # savez keeps bfloat16 as raw 2-byte records: view them as the target's dtype again
            leaves = [data[f"arr_{i}"].view(dtype) for i, dtype in enumerate(dtypes)]
        with jax.enable_x64(self.x64):
            restored = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in leaves])
        self.state, self.opt_state = restored["autodrop"], restored["opt"]

    def reductions(self) -> tuple[float, float] | None:
        return self._last


class JaxDriver:
    """The JAX adapter's driver, with or without ``jax_enable_x64``."""

    few_shapes = True  # XLA compiles once per tree of shapes: keep their number small
    max_examples: int | None = 25
    #: the numba CPU epoch end (``_fused_cpu.py``) takes models with a leaf of at least this
    #: many elements; one large size (one more compiled shape) checks that path
    size_thresholds: tuple[int, ...] = (MIN_NUMEL,)

    def __init__(self, x64: bool) -> None:
        self.x64 = x64
        self.name = "jax" if x64 else "jax-float32"
        self.accumulation: Literal["float64", "float32"] = "float64" if x64 else "float32"
        all_dtypes: tuple[Literal["float64", "float32", "float16", "bfloat16"], ...] = (
            "float64", "float32", "float16", "bfloat16",
        )
        self.dtypes = all_dtypes if x64 else all_dtypes[1:]
        # inject_hyperparams holds the lr in hyperparam_dtype: float64 under x64, else float32
        self.lr_dtype: Literal["float64", "float32"] = "float64" if x64 else "float32"

    def start(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig) -> JaxRun:
        return JaxRun(values, layout, config, self.x64)

    def restore(
        self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig, saved: Any
    ) -> JaxRun:
        run = JaxRun(values, layout, config, self.x64)
        run.restore_from(saved)
        return run


#: The object the ``jax`` entry point names: float64 accumulation under ``jax.enable_x64``.
driver = JaxDriver(x64=True)
#: JAX's default precision (float32 accumulation); register it as e.g. ``jax-float32``.
driver_float32 = JaxDriver(x64=False)
