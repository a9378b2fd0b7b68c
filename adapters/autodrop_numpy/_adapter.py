"""The numpy reference adapter: snapshots, float64 reductions, averaging, checkpoints.

Parameters are numpy arrays owned by the caller; averaging writes into them in place
(``array[...] = ...``), the way an optimizer's tensors are updated. The adapter keeps
x̂(t-1) and x̂(t-2) (copies in the parameter's own dtype; s(t-1) is formed from them in
float64 when it is needed, with the same single rounding as when it was stored) and,
while a drop is pending, the running average W (float64). Only for the epoch after an
applied average, where x̂(t) is W and not x(t), it also keeps x(t). It must not change
any of that, nor the caller's arrays, when the core rejects an epoch.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from autodrop_core import (
    DEFAULT_HISTORY_SIZE,
    AutoDropConfig,
    Controller,
    Decision,
    DecisionHistory,
    InvalidReductionError,
)

__all__ = ["NumpyAutoDrop", "reduce_steps"]

Array = npt.NDArray[Any]


def reduce_steps(
    params: Sequence[Array], snapshot: Sequence[Array], prev_step: Sequence[Array]
) -> tuple[float, float, list[Array]]:
    """The spec's two reductions, and the new step s(t) in float64.

    Each step is formed element by element in float64 before any reduction; each
    tensor's partial sums are float64 and are added tensor by tensor in order.

    Returns:
        ``(dot, sq_norm, steps)`` with dot = <s(t), s(t-1)> and sq_norm = ||s(t)||^2.
    """
    dot = 0.0
    sq_norm = 0.0
    steps: list[Array] = []
    for x, x_hat, s_prev in zip(params, snapshot, prev_step, strict=True):
        step = np.asarray(x, dtype=np.float64) - np.asarray(x_hat, dtype=np.float64)
        flat = step.ravel()
        dot += float(np.dot(flat, s_prev.ravel()))
        sq_norm += float(np.dot(flat, flat))
        steps.append(step)
    return dot, sq_norm, steps


def _float64_copy(x: Array) -> Array:
    """A float64 copy of ``x`` (the temporary of the running average)."""
    return np.array(x, dtype=np.float64, copy=True)


def _check_params(params: Sequence[Array]) -> list[Array]:
    checked = []
    for i, p in enumerate(params):
        if not isinstance(p, np.ndarray) or not np.issubdtype(p.dtype, np.floating):
            kind = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
            raise TypeError(f"params[{i}] must be a numpy array of a float dtype, got {kind}")
        checked.append(p)
    return checked


class NumpyAutoDrop:
    """AutoDrop over numpy arrays that the caller trains in place.

    Args:
        params: the trainable arrays (any float dtype, any shape, 0-d and empty
            included). Held by reference; an applied average is written into them.
        lrs: starting lr of each parameter group (one float means one group).
        **config: the spec's keyword settings (``min_lr``, ``drop_factor``,
            ``threshold``, ``max_threshold``, ``drop_delay``, ``angle_window``,
            ``reset_on_drop``, ``trigger``).
        history_size: how many of the latest decisions :attr:`history` keeps (default
            100); None keeps every one.

    Call :meth:`end_epoch` after each epoch's training; read :attr:`lrs` before the
    next.
    """

    def __init__(
        self,
        params: Sequence[Array],
        lrs: Sequence[float] | float,
        *,
        history_size: int | None = DEFAULT_HISTORY_SIZE,
        **config: Any,
    ) -> None:
        # One number is one group; a string or any other non-sequence goes to the core
        # unchanged, which refuses it whole (tuple('0.1') would be read character by character).
        lr_tuple: Any = lrs
        if isinstance(lrs, numbers.Real):
            lr_tuple = (lrs,)
        elif isinstance(lrs, Iterable) and not isinstance(lrs, (str, bytes)):
            lr_tuple = tuple(lrs)
        self.params = _check_params(params)
        self.controller = Controller(AutoDropConfig(lrs=lr_tuple, **config))
        self.history = DecisionHistory(limit=history_size)
        self._snapshot = [p.copy() for p in self.params]
        # s(t-1) = head - base in float64 (head None: the snapshot; base None: nothing is
        # subtracted; both None: s = 0, as before the first epoch).
        self._head: list[Array | None] = [None] * len(self.params)
        self._base: list[Array | None] = [None] * len(self.params)
        self._average: list[Array] | None = None

    def _prev_steps(self) -> list[Array]:
        """s(t-1) of each parameter in float64, formed from what is kept (a new array each)."""
        steps = []
        for snapshot, head, base in zip(self._snapshot, self._head, self._base, strict=True):
            if head is None and base is None:
                steps.append(np.zeros(snapshot.shape, np.float64))
                continue
            top = np.asarray(snapshot if head is None else head, dtype=np.float64)
            steps.append(top - np.asarray(base, dtype=np.float64) if base is not None else np.array(top))
        return steps

    @property
    def lrs(self) -> tuple[float, ...]:
        """The lr of each parameter group for the coming epoch."""
        return self.controller.lrs

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last epoch, None before the first."""
        return self.controller.last_decision

    def end_epoch(self) -> Decision:
        """Reduce, ask the core, then average and snapshot as the decision says.

        Raises:
            InvalidReductionError: the parameters hold NaN or infinity; nothing changed.
        """
        dot, sq_norm, _ = reduce_steps(self.params, self._snapshot, self._prev_steps())
        try:
            decision, state = self.controller.preview(dot, sq_norm)
        except InvalidReductionError as err:
            bad = next((i for i, p in enumerate(self.params) if not np.all(np.isfinite(p))), None)
            if bad is None:
                raise
            raise InvalidReductionError(
                err.epoch, err.field, err.value, "finite parameters", f"params[{bad}] holds NaN or infinity"
            ) from err

        # All new arrays first; then the writes into the caller's arrays; then the commit.
        # A failure (a MemoryError on a float64 temporary) before the commit changes nothing.
        average = self._average
        if decision.average_weight is not None:
            weight = decision.average_weight
            if average is None or weight == 1.0:
                average = [_float64_copy(p) for p in self.params]
            else:
                average = [avg + weight * (_float64_copy(p) - avg) for avg, p in zip(average, self.params, strict=True)]
        written: list[Array] = []
        if decision.apply_average:
            assert average is not None
            written = [avg.astype(p.dtype) for p, avg in zip(self.params, average, strict=True)]
            average = None
        copies = [p.copy() for p in self.params]  # x(t): the next snapshot, or the next head after an average
        snapshot = written or copies  # written arrays are copied into p, never shared
        for p, value in zip(self.params, written, strict=False):
            p[...] = value  # same shape and dtype: cannot fail half way
        self._average = average
        self._head = list(copies) if written else [None] * len(self.params)
        self._base = list(self._snapshot)
        self._snapshot = snapshot
        self.controller.commit(decision, state)
        self.history.append(decision)
        return decision

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: the core checkpoint and the buffers (copies).

        ``prev_step`` is s(t-1) in float64, formed from the two snapshots the adapter keeps.
        """
        return {
            "core": self.controller.to_dict(),
            "snapshot": [s.copy() for s in self._snapshot],
            "prev_step": self._prev_steps(),
            "average": None if self._average is None else [a.copy() for a in self._average],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; shapes must match the parameters."""
        controller = Controller.from_dict(state["core"])
        buffers: dict[str, list[Array] | None] = {}
        for key in ("snapshot", "prev_step", "average"):
            arrays = state[key]
            if arrays is None:
                if key != "average":
                    raise ValueError(f"{key} is missing: expected {len(self.params)} arrays")
                buffers[key] = None
                continue
            if len(arrays) != len(self.params):
                raise ValueError(f"{key} holds {len(arrays)} arrays, expected {len(self.params)}")
            for i, (a, p) in enumerate(zip(arrays, self.params)):
                if np.shape(a) != p.shape:
                    raise ValueError(f"{key}[{i}] has shape {np.shape(a)}, expected {p.shape}")
            buffers[key] = [np.array(a, copy=True) for a in arrays]
        self.controller = controller
        snapshot, prev_step = buffers["snapshot"], buffers["prev_step"]
        assert snapshot is not None and prev_step is not None
        self._snapshot, self._average = snapshot, buffers["average"]
        self._head = [np.asarray(s, dtype=np.float64) for s in prev_step]  # s(t-1) itself, nothing subtracted
        self._base = [None] * len(self.params)
