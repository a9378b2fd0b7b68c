"""The driver protocol: the few calls an adapter offers so that the suite can test it.

A driver is a small module-level object, cheap to build, that the entry point
``autodrop.adapters`` names. It translates between the suite's plain numpy float64
arrays and the framework's own parameters, optimizer and checkpoint format. It must not
make any decision itself: everything it reports comes from the adapter under test.
This module holds only types and the dtype arithmetic the suite shares; it imports no
framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from autodrop_core import AutoDropConfig, Decision

__all__ = [
    "DEFAULT_SIZE_THRESHOLDS",
    "DTYPES",
    "UNIT_ROUNDOFF",
    "AdapterRun",
    "Array",
    "DType",
    "Driver",
    "Layout",
    "lr_dtype",
    "optimizer_state",
    "round_to",
    "size_thresholds",
]

Array = npt.NDArray[np.float64]
DType = Literal["float64", "float32", "float16", "bfloat16"]

#: Every parameter dtype the suite knows, widest first.
DTYPES: tuple[DType, ...] = ("float64", "float32", "float16", "bfloat16")

#: u = 2**-p, half the distance from 1 to the next number of each dtype.
UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}


@dataclass(frozen=True)
class Layout:
    """The trainable parameters of one case: one entry per tensor.

    Attributes:
        shapes: the shape of each tensor (``()`` is 0-d, a 0 in a shape means empty).
        dtypes: the dtype name of each tensor (see :data:`DTYPES`).
        groups: the parameter group (index into ``config.lrs``) of each tensor; every
            group holds at least one tensor.
    """

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[DType, ...]
    groups: tuple[int, ...]


@runtime_checkable
class AdapterRun(Protocol):
    """One live adapter instance over one set of parameters, as a driver exposes it."""

    def set_params(self, values: Sequence[Array]) -> None:
        """Overwrite the parameters in place with these float64 values.

        Each value is exactly representable in its tensor's dtype, so the conversion is
        exact. This stands for an epoch of training and must not touch the adapter.
        """

    def get_params(self) -> list[Array]:
        """The parameters as they are now, converted exactly to float64 numpy copies."""

    def end_epoch(self) -> Decision:
        """Run the adapter's epoch-end hook once and return the core's decision.

        Raises:
            autodrop_core.InvalidReductionError: the parameters hold NaN or infinity.
        """

    @property
    def lrs(self) -> tuple[float, ...]:
        """The lr of each group as the framework holds it now (the optimizer's, not the core's)."""

    def save(self) -> Any:
        """The adapter's state, saved through the framework's own checkpoint mechanism."""

    def reductions(self) -> tuple[float, float] | None:
        """``(dot, sq_norm)`` the adapter computed at its last epoch, or None if it cannot tell."""

    # Optional (not part of the runtime check): ``optimizer_state() -> list[Array] | None``,
    # the optimizer's own buffers (momentum, Adam moments) as float64 copies, in a fixed
    # order. The suite requires them to be bit-for-bit the same before and after every
    # ``end_epoch()``, an applied average included: the spec keeps optimizer state as it is.


@runtime_checkable
class Driver(Protocol):
    """What an ``autodrop.adapters`` entry point names.

    Attributes:
        name: the adapter's name in reports.
        dtypes: the parameter dtypes the adapter supports (a subset of :data:`DTYPES`).
        accumulation: the dtype its reductions are accumulated in (``float64`` where the
            platform has it; the tolerances follow from it).
        max_examples: a suggested number of Hypothesis examples for one test (the run's
            profile decides when None); frameworks that compile per shape ask for fewer.

    Optional attributes (read with ``getattr``, so older drivers keep working):
        few_shapes: True for at most 3 tensors from 3 shapes (frameworks that compile per shape).
        max_groups: the most parameter groups the adapter manages (default 3).
        size_thresholds: element counts at or above which the adapter switches code paths
            (chunking, fused kernels); the suite draws tensors of exactly these sizes
            (default :data:`DEFAULT_SIZE_THRESHOLDS`). An empty tuple draws none.
        lr_dtype: ``"float64"`` (default): the lrs the framework holds must equal the
            decision's exactly; ``"float32"``: the framework stores lrs in float32 (Keras,
            ``optax.inject_hyperparams``) and each must equal the float32 rounding of the
            decision's lr exactly.
    """

    name: str
    dtypes: tuple[DType, ...]
    accumulation: Literal["float64", "float32"]
    max_examples: int | None

    def start(self, values: Sequence[Array], layout: Layout, config: AutoDropConfig) -> AdapterRun:
        """A fresh adapter over new parameters holding ``values``, with its optimizer."""

    def restore(self, values: Sequence[Array], layout: Layout, config: AutoDropConfig, saved: Any) -> AdapterRun:
        """A new adapter over new parameters holding ``values``, resumed from ``save()``."""


#: Tensor sizes drawn when a driver declares no ``size_thresholds``: just past 2**16
#: (torch's fused CPU kernels) and 2**18 (TensorFlow's chunked buffers) elements.
DEFAULT_SIZE_THRESHOLDS: tuple[int, ...] = (2**16 + 1, 2**18 + 1)


def size_thresholds(driver: object) -> tuple[int, ...]:
    """The driver's declared ``size_thresholds``, else :data:`DEFAULT_SIZE_THRESHOLDS`."""
    declared = getattr(driver, "size_thresholds", None)
    if declared is None:
        return DEFAULT_SIZE_THRESHOLDS
    sizes = tuple(int(n) for n in declared)
    if any(n < 2 for n in sizes):
        raise ValueError(f"size_thresholds={declared!r} is invalid: expected element counts >= 2")
    return sizes


def lr_dtype(driver: object) -> Literal["float64", "float32"]:
    """The driver's declared ``lr_dtype`` (``"float64"`` when it declares none)."""
    declared = getattr(driver, "lr_dtype", "float64")
    if declared not in ("float64", "float32"):
        raise ValueError(f"lr_dtype={declared!r} is invalid: expected 'float64' or 'float32'")
    return "float32" if declared == "float32" else "float64"


def optimizer_state(run: object) -> list[Array] | None:
    """The run's ``optimizer_state()`` as float64 copies, or None when it offers none."""
    method = getattr(run, "optimizer_state", None)
    if method is None:
        return None
    state = method()
    return None if state is None else [np.array(a, dtype=np.float64) for a in state]


def round_to(dtype: str, values: npt.ArrayLike) -> Array:
    """Round float64 values to the nearest numbers of ``dtype``, returned as float64.

    bfloat16 is rounded through float32 (round to nearest even on the upper 16 bits),
    so no package beyond numpy is needed. Values beyond the dtype's range become inf.
    """
    as64: Array = np.asarray(values, dtype=np.float64)
    if dtype == "float64":
        same: Array = as64.copy()
        return same
    if dtype in ("float32", "float16"):
        with np.errstate(over="ignore"):
            narrow = as64.astype(np.float32 if dtype == "float32" else np.float16)
        return narrow.astype(np.float64)
    if dtype == "bfloat16":
        with np.errstate(over="ignore"):
            as32 = np.ascontiguousarray(as64.astype(np.float32))
        bits = as32.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        finite = np.isfinite(as32)
        out = np.where(finite, rounded, bits).astype(np.uint32).view(np.float32)
        return out.astype(np.float64)
    raise ValueError(f"dtype={dtype!r} is not known: expected one of {DTYPES}")
