"""Saving and restoring an :class:`~autodrop_torch.AutoDrop` scheduler exactly.

The checkpoint is a dict of plain Python values and tensors (so ``torch.save`` and
``torch.load(weights_only=True)`` handle it): the core's JSON-safe checkpoint, the
scheduler's counters, the last ``history_size`` decisions, the watched parameters'
positions in the optimizer, and the tensors AutoDrop keeps: x̂(t-1), the two operands of
s(t-1) and, mid-window, the running averages. These are the scheduler's own tensors, not
copies (AutoDrop never modifies one in place: every epoch end makes new ones), so saving
costs no memory. Version 1 checkpoints, which stored s(t-1) itself, still load and
resume exactly. Loading validates everything before it changes anything, so a bad
checkpoint leaves the scheduler as it was. This module must not apply any AutoDrop rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from autodrop_core import ConfigError, Controller, Decision, DecisionHistory, StateError
from autodrop_core._config import show
from autodrop_core._history import check_history_size
from autodrop_torch._buffers import TrackedTensors
from autodrop_torch._reduce import local_tensor

if TYPE_CHECKING:
    from autodrop_torch._scheduler import AutoDrop

__all__ = ["FORMAT", "VERSION", "load", "save"]

FORMAT = "autodrop_torch.AutoDrop"
#: 2: s(t-1) as two parameter-dtype operands (``step_heads``, ``step_bases``) and a
#: bounded history; 1: s(t-1) itself in the accumulation dtype (``prev_steps``).
VERSION = 2
_READABLE = (1, 2)


def _held(tensors: Sequence[Tensor | None] | None) -> list[Tensor | None] | None:
    """The list of the scheduler's tensors (the tensors themselves: they are never modified in place)."""
    return None if tensors is None else list(tensors)


def save(scheduler: AutoDrop) -> dict[str, Any]:
    """The scheduler's complete state; its tensors stay valid while training goes on (none is reused)."""
    tracked = scheduler._tracked
    last = scheduler.last_decision
    return {
        "format": FORMAT,
        "version": VERSION,
        "core": scheduler._controller.to_dict(),
        "last_decision": None if last is None else last.to_dict(),
        "history": [d.to_dict() for d in scheduler.history],
        "history_size": scheduler.history.limit,
        "history_dropped": scheduler.history.dropped,
        "last_epoch": scheduler.last_epoch,
        "step_count": scheduler._step_count,
        "base_lrs": [float(lr) for lr in scheduler.base_lrs],
        "shared_floor": scheduler._shared_floor,
        "watched": [list(key) for key in scheduler._keys],
        "snapshots": _held(tracked.snapshots),
        "step_heads": _held(tracked.heads),
        "step_bases": _held(tracked.bases),
        "average": _held(tracked.average),
        "buffer_average": _held(tracked.buffer_average),
        "last_reductions": None if scheduler.last_reductions is None else list(scheduler.last_reductions),
        # optimizer steps since the last step(), so that a run saved mid-epoch resumes its usage checks
        "optimizer_steps": scheduler._optimizer_steps.count,
        "single_step_periods": scheduler._single_step_periods,
    }


def _decision(data: Mapping[str, Any]) -> Decision:
    return Decision(**{**data, "lrs": tuple(data["lrs"])})


def _fit(
    name: str,
    saved: Sequence[Tensor | None],
    targets: Sequence[Tensor],
    dtype: torch.dtype | None,
    tracked: TrackedTensors,
) -> list[Tensor | None]:
    """Check that each saved tensor has its target's shape; place it on the target's home device."""
    if len(saved) != len(targets):
        raise ValueError(f"checkpoint {name} holds {len(saved)} tensors, expected {len(targets)}")
    fitted: list[Tensor | None] = []
    for i, (tensor, target) in enumerate(zip(saved, targets)):
        if tensor is None:
            fitted.append(None)
            continue
        local = local_tensor(target)
        if not isinstance(tensor, Tensor) or tuple(tensor.shape) != tuple(local.shape):
            found = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"checkpoint {name}[{i}] has shape {found}, expected {tuple(local.shape)}")
        home = tracked.device if tracked.device is not None else local.device
        fitted.append(tensor.to(device=home, dtype=dtype or local.dtype, copy=True))
    return fitted


_KEYS = (
    "format", "version", "core", "last_decision", "history", "last_epoch", "step_count", "base_lrs",
    "shared_floor", "watched", "snapshots", "average", "buffer_average", "last_reductions",
)
_STEP_KEYS = {1: ("prev_steps",), 2: ("step_heads", "step_bases")}


def _int(state: Mapping[str, Any], name: str) -> int:
    value = state[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"AutoDrop checkpoint {name}={show(value)} is invalid: expected an integer >= 0")
    return value


def _finite(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))


def _check_finite(name: str, tensors: Sequence[Tensor | None], labels: Sequence[str]) -> None:
    for i, tensor in enumerate(tensors):
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"AutoDrop checkpoint {name}[{i}] (of {labels[i]}) holds NaN or infinity: the checkpoint is "
                "damaged; load an earlier one"
            )


def load(scheduler: AutoDrop, state: Mapping[str, Any]) -> None:
    """Validate ``state`` against the scheduler's optimizer, then adopt it all at once.

    Every check runs before the first attribute changes, so a refused checkpoint leaves
    the scheduler exactly as it was.
    """
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"not an AutoDrop scheduler checkpoint: format={show(found)}, expected {FORMAT!r}")
    version = state.get("version")
    if version not in _READABLE or isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(
            f"AutoDrop checkpoint version={show(version)} is not readable: expected one of {list(_READABLE)}"
        )
    missing = [key for key in (*_KEYS, *_STEP_KEYS[version]) if key not in state]
    if missing:
        raise ValueError(f"AutoDrop checkpoint is missing {missing}")
    try:
        return _load(scheduler, state)
    except (KeyError, TypeError, IndexError, StateError, ConfigError) as err:
        raise ValueError(f"AutoDrop checkpoint is malformed: {type(err).__name__}: {err}") from err


def _load(scheduler: AutoDrop, state: Mapping[str, Any]) -> None:
    controller = Controller.from_dict(state["core"])
    groups = scheduler.optimizer.param_groups
    if controller.config.num_groups != len(groups):
        raise ValueError(
            f"checkpoint has {controller.config.num_groups} parameter groups, the optimizer has {len(groups)}"
        )
    keys = [(int(g), int(i)) for g, i in state["watched"]]
    for g, i in keys:
        if not (0 <= g < len(groups) and 0 <= i < len(groups[g]["params"])):
            raise ValueError(f"checkpoint watches param_groups[{g}]['params'][{i}], which the optimizer lacks")
    params = [groups[g]["params"][i] for g, i in keys]
    labels = [scheduler._name(key, param) for key, param in zip(keys, params, strict=True)]
    tracked = TrackedTensors(scheduler._acc_dtype, scheduler._snapshot_device)
    snapshots = _fit("snapshots", state["snapshots"], params, None, tracked)
    if any(t is None for t in snapshots):
        raise ValueError("checkpoint snapshots must hold a tensor for every watched parameter")
    _check_finite("snapshots", snapshots, labels)
    if state["version"] == 1:  # s(t-1) itself, in the accumulation dtype: it is the head, with no base
        heads = _fit("prev_steps", state["prev_steps"], params, scheduler._acc_dtype, tracked)
        if any(t is None for t in heads):
            raise ValueError("checkpoint prev_steps must hold a tensor for every watched parameter")
        _check_finite("prev_steps", heads, labels)
        bases: list[Tensor | None] = [None] * len(params)
    else:
        heads = _fit("step_heads", state["step_heads"], params, None, tracked)
        bases = _fit("step_bases", state["step_bases"], params, None, tracked)
        _check_finite("step_heads", heads, labels)
        _check_finite("step_bases", bases, labels)
        for i, (head, base) in enumerate(zip(heads, bases, strict=True)):
            if head is not None and base is None:
                raise ValueError(
                    f"AutoDrop checkpoint step_heads[{i}] (of {labels[i]}) is set but step_bases[{i}] is not: "
                    "the checkpoint is damaged; load an earlier one"
                )
    average = None
    if state["average"] is not None:
        average = _fit("average", state["average"], params, scheduler._acc_dtype, tracked)
        _check_finite("average", average, labels)
    buffers = scheduler._tracked.buffers
    buffer_average = None
    if state["buffer_average"] is not None:
        buffer_average = _fit("buffer_average", state["buffer_average"], buffers, scheduler._acc_dtype, tracked)
        _check_finite("buffer_average", buffer_average, [f"model buffer {n}" for n in range(len(buffers))])
    if (average is None) != (controller.state.pending == 0):
        raise ValueError(
            f"checkpoint average is {'missing' if average is None else 'present'} but the core has "
            f"pending={controller.state.pending}"
        )
    last = state["last_decision"]
    last_decision = None if last is None else _decision(last)
    if last_decision is not None and last_decision.epoch != controller.state.epoch:
        raise ValueError(
            f"checkpoint last_decision is of epoch {last_decision.epoch}, the core is at epoch {controller.state.epoch}"
        )
    check_history_size(state.get("history_size", scheduler.history.limit))  # refused when damaged
    dropped = state.get("history_dropped", 0)
    if isinstance(dropped, bool) or not isinstance(dropped, int) or dropped < 0:
        raise ValueError(f"AutoDrop checkpoint history_dropped={show(dropped)} is invalid: expected an integer >= 0")
    if not isinstance(state["history"], (list, tuple)):
        raise ValueError(f"AutoDrop checkpoint history={show(state['history'])} is invalid: expected a list")
    # The scheduler's own limit wins (a checkpoint from a run that kept more is trimmed).
    history = DecisionHistory(
        [_decision(d) for d in state["history"]], limit=scheduler.history.limit, dropped=dropped
    )
    last_epoch = _int(state, "last_epoch")
    step_count = _int(state, "step_count")
    base_lrs = state["base_lrs"]
    if not isinstance(base_lrs, (list, tuple)) or len(base_lrs) != len(groups) or not all(map(_finite, base_lrs)):
        raise ValueError(
            f"AutoDrop checkpoint base_lrs={show(base_lrs)} is invalid: expected {len(groups)} finite numbers"
        )
    shared_floor = state["shared_floor"]
    if shared_floor is not None and not _finite(shared_floor):
        raise ValueError(f"AutoDrop checkpoint shared_floor={show(shared_floor)} is invalid: expected null or a number")
    reductions = state["last_reductions"]
    if reductions is not None and not (
        isinstance(reductions, (list, tuple)) and len(reductions) == 2 and all(map(_finite, reductions))
    ):
        raise ValueError(
            f"AutoDrop checkpoint last_reductions={show(reductions)} is invalid: expected null or two finite numbers"
        )
    if last_decision is not None:
        controller.commit(last_decision, controller.state)

    # Adopt: nothing below can fail on bad input.
    tracked.params = params
    tracked.snapshots = [t for t in snapshots if t is not None]
    tracked.heads = heads
    tracked.bases = bases
    tracked.average = average
    tracked.buffers = buffers
    tracked.buffer_average = None if buffer_average is None else [t for t in buffer_average if t is not None]
    scheduler._controller = controller
    scheduler._tracked = tracked
    scheduler._keys = keys
    scheduler.history = history
    scheduler.last_epoch = last_epoch
    scheduler._step_count = step_count
    scheduler.base_lrs = [float(lr) for lr in base_lrs]
    scheduler._shared_floor = None if shared_floor is None else float(shared_floor)
    scheduler.last_reductions = None if reductions is None else (float(reductions[0]), float(reductions[1]))
    scheduler._optimizer_steps.count = int(state.get("optimizer_steps", 0))
    scheduler._single_step_periods = int(state.get("single_step_periods", 0))
    scheduler._write_lrs()
