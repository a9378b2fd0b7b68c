"""Saving and restoring an :class:`~autodrop_torch.AutoDrop` scheduler exactly.

The checkpoint is a dict of plain Python values and tensors (so ``torch.save`` and
``torch.load(weights_only=True)`` handle it): the core's JSON-safe checkpoint, the
scheduler's counters, the watched parameters' positions in the optimizer, and copies of
x̂, s(t-1) and, mid-window, the running averages. Loading validates everything before
it changes anything, so a bad checkpoint leaves the scheduler as it was. This module
must not apply any AutoDrop rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from autodrop_core import Controller, Decision
from autodrop_torch._buffers import TrackedTensors
from autodrop_torch._reduce import local_tensor

if TYPE_CHECKING:
    from autodrop_torch._scheduler import AutoDrop

__all__ = ["FORMAT", "VERSION", "load", "save"]

FORMAT = "autodrop_torch.AutoDrop"
VERSION = 1


def _copies(tensors: Sequence[Tensor | None] | None) -> list[Tensor | None] | None:
    if tensors is None:
        return None
    return [None if t is None else t.detach().clone() for t in tensors]


def save(scheduler: AutoDrop) -> dict[str, Any]:
    """The scheduler's complete state; tensors are copies, safe to keep while training goes on."""
    tracked = scheduler._tracked
    last = scheduler.last_decision
    return {
        "format": FORMAT,
        "version": VERSION,
        "core": scheduler._controller.to_dict(),
        "last_decision": None if last is None else last.to_dict(),
        "history": [d.to_dict() for d in scheduler.history],
        "last_epoch": scheduler.last_epoch,
        "step_count": scheduler._step_count,
        "base_lrs": [float(lr) for lr in scheduler.base_lrs],
        "shared_floor": scheduler._shared_floor,
        "watched": [list(key) for key in scheduler._keys],
        "snapshots": _copies(tracked.snapshots),
        "prev_steps": _copies(tracked.prev_steps),
        "average": _copies(tracked.average),
        "buffer_average": _copies(tracked.buffer_average),
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


def load(scheduler: AutoDrop, state: Mapping[str, Any]) -> None:
    """Validate ``state`` against the scheduler's optimizer, then adopt it all at once."""
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"not an AutoDrop scheduler checkpoint: format={found!r}, expected {FORMAT!r}")
    if state.get("version") != VERSION:
        raise ValueError(f"AutoDrop checkpoint version={state.get('version')!r} is not readable: expected {VERSION}")
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
    tracked = TrackedTensors(scheduler._acc_dtype, scheduler._snapshot_device)
    snapshots = _fit("snapshots", state["snapshots"], params, None, tracked)
    prev_steps = _fit("prev_steps", state["prev_steps"], params, scheduler._acc_dtype, tracked)
    average = None
    if state["average"] is not None:
        average = _fit("average", state["average"], params, scheduler._acc_dtype, tracked)
    buffers = scheduler._tracked.buffers
    buffer_average = None
    if state["buffer_average"] is not None:
        buffer_average = _fit("buffer_average", state["buffer_average"], buffers, scheduler._acc_dtype, tracked)
    if (average is None) != (controller.state.pending == 0):
        raise ValueError(
            f"checkpoint average is {'missing' if average is None else 'present'} but the core has "
            f"pending={controller.state.pending}"
        )
    last = state["last_decision"]
    if last is not None:
        controller.commit(_decision(last), controller.state)
    history = [_decision(d) for d in state["history"]]

    tracked.params = params
    tracked.snapshots = [t for t in snapshots if t is not None]
    tracked.prev_steps = [t for t in prev_steps if t is not None]
    tracked.average = average
    tracked.buffers = buffers
    tracked.buffer_average = None if buffer_average is None else [t for t in buffer_average if t is not None]
    scheduler._controller = controller
    scheduler._tracked = tracked
    scheduler._keys = keys
    scheduler.history = history
    scheduler.last_epoch = int(state["last_epoch"])
    scheduler._step_count = int(state["step_count"])
    scheduler.base_lrs = list(state["base_lrs"])
    scheduler._shared_floor = state["shared_floor"]
    reductions = state["last_reductions"]
    scheduler.last_reductions = None if reductions is None else (float(reductions[0]), float(reductions[1]))
    scheduler._optimizer_steps.count = int(state.get("optimizer_steps", 0))
    scheduler._single_step_periods = int(state.get("single_step_periods", 0))
    scheduler._write_lrs()
