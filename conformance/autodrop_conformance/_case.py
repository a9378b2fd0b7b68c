"""One conformance case as plain data, and the Python source that rebuilds it.

A case is a configuration, a parameter layout, the starting values and one step per
epoch (float64; the suite adds each step to the parameters as the adapter left them and
rounds to the tensor's dtype), plus the epochs at which the checkpoint and NaN checks
strike. It must stay printable as a self-contained snippet: failure reports embed it
(large tensors, built from a few blocks of equal values, print as ``np.repeat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from autodrop_conformance._protocol import Array, Layout, round_to
from autodrop_core import AutoDropConfig

__all__ = ["Case"]


#: Arrays with more elements than this print as runs of equal values.
_LONG = 64


def _array_source(a: Array) -> str:
    if a.size > _LONG:
        flat = a.ravel()
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
        counts = np.diff(np.append(starts, flat.size))
        return (f"np.repeat(np.array({flat[starts].tolist()!r}), {counts.tolist()!r})"
                f".reshape({a.shape!r})")
    if a.size == 0 or a.ndim == 0:
        return f"np.array({a.tolist()!r}).reshape({a.shape!r})"
    return f"np.array({a.tolist()!r})"


def _config_source(config: AutoDropConfig) -> str:
    parts = []
    for f in fields(config):
        value = getattr(config, f.name)
        parts.append(f"{f.name}={value!r}")
    return "AutoDropConfig(" + ", ".join(parts) + ")"


@dataclass(frozen=True, eq=False)
class Case:
    """Everything needed to replay one trajectory against one adapter.

    Attributes:
        config: the AutoDrop configuration (its ``lrs`` give the parameter groups).
        layout: shapes, dtypes and groups of the parameters.
        initial: x̂(0) per tensor, float64 values exactly representable in its dtype.
        steps: per epoch, one float64 step per tensor.
        save_at: the checkpoint check saves and restores after this many epochs.
        save_step: 0 saves just after epoch ``save_at`` ended; j in 1 .. ``substeps`` - 1
            saves inside epoch ``save_at + 1``, after the j-th of its training steps, when
            the parameters have moved part of the way and x̂ no longer equals them.
        substeps: training steps per epoch in the checkpoint check: the parameters pass
            through ``substeps - 1`` intermediate positions (fractions of the epoch's step,
            rounded to each dtype) before reaching x(t).
        nan_at: the NaN check poisons the parameters at this epoch (1-based).
        motif: a short name of how the steps were built (for reports only).
    """

    config: AutoDropConfig
    layout: Layout
    initial: tuple[Array, ...]
    steps: tuple[tuple[Array, ...], ...]
    save_at: int = 0
    nan_at: int = 1
    save_step: int = 0
    substeps: int = 1
    motif: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.substeps < 1 or not 0 <= self.save_step < self.substeps:
            raise ValueError(f"save_step={self.save_step!r} is invalid: expected 0 <= save_step < substeps "
                             f"(substeps={self.substeps!r})")
        if self.save_step and self.save_at >= self.epochs:
            raise ValueError(f"save_step={self.save_step!r} saves inside epoch {self.save_at + 1}, "
                             f"but the case has {self.epochs} epochs: use save_at < {self.epochs}")

    def __repr__(self) -> str:
        # Short on purpose: a failure report prints the full case once, as its replay snippet.
        return (f"Case(motif={self.motif!r}, {self.epochs} epochs, shapes={self.layout.shapes}, "
                f"dtypes={self.layout.dtypes}, save_at={self.save_at}, save_step={self.save_step}, "
                f"nan_at={self.nan_at}; its replay snippet is in the failure report)")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis's pretty printer (which would spell out every array) defers to this
        printer.text(repr(self))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Case):
            return NotImplemented
        arrays = [*self.initial, *(s for epoch in self.steps for s in epoch)]
        others = [*other.initial, *(s for epoch in other.steps for s in epoch)]
        return (
            (self.config, self.layout, self.save_at, self.nan_at, self.save_step, self.substeps, len(self.steps))
            == (other.config, other.layout, other.save_at, other.nan_at, other.save_step, other.substeps,
                len(other.steps))
            and len(arrays) == len(others)
            and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(arrays, others))
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def epochs(self) -> int:
        """The number of epochs in the trajectory."""
        return len(self.steps)

    def advance(self, params: Sequence[Array], epoch: int) -> list[Array]:
        """x(t): the step of ``epoch`` (1-based) added to ``params``, rounded to each dtype."""
        step = self.steps[epoch - 1]
        with np.errstate(over="ignore", invalid="ignore"):
            return [round_to(d, p + s) for p, s, d in zip(params, step, self.layout.dtypes, strict=True)]

    def partway(self, params: Sequence[Array], epoch: int, j: int) -> list[Array]:
        """The parameters after training step ``j`` of ``substeps`` in ``epoch``.

        ``f = j / substeps`` of the epoch's step plus a detour ``f (1 - f)`` times the step
        with its elements rotated by one, rounded to each dtype: off the straight line, so
        that a step measured from an intermediate position points elsewhere.
        """
        if j >= self.substeps:
            return self.advance(params, epoch)
        step = self.steps[epoch - 1]
        f = j / self.substeps
        out = []
        with np.errstate(over="ignore", invalid="ignore"):
            for p, s, d in zip(params, step, self.layout.dtypes, strict=True):
                detour = np.roll(s.ravel(), 1).reshape(s.shape)
                out.append(round_to(d, p + f * s + f * (1.0 - f) * detour))
        return out

    def to_source(self, driver_expr: str = 'load_driver("NAME")') -> str:
        """A Python snippet that rebuilds this case and checks it against a driver."""
        initial = ", ".join(_array_source(a) for a in self.initial)
        steps = ",\n        ".join("(" + ", ".join(_array_source(s) for s in epoch) + ",)" for epoch in self.steps)
        return (
            "import numpy as np\n"
            "from autodrop_core import AutoDropConfig\n"
            "from autodrop_conformance import Case, Layout, check_case, load_driver\n\n"
            "case = Case(\n"
            f"    config={_config_source(self.config)},\n"
            f"    layout=Layout(shapes={self.layout.shapes!r}, dtypes={self.layout.dtypes!r},\n"
            f"        groups={self.layout.groups!r}),\n"
            f"    initial=({initial},),\n"
            f"    steps=(\n        {steps},\n    ),\n"
            f"    save_at={self.save_at!r}, nan_at={self.nan_at!r}, save_step={self.save_step!r}, "
            f"substeps={self.substeps!r},\n"
            ")\n"
            f"check_case({driver_expr}, case)\n"
        )
