"""The two per-epoch reductions of AutoDrop, computed where the parameters live.

For every watched tensor the step s(t) = x(t) - x̂(t-1) is formed element by element
in the accumulation dtype (float64 where the device has it), then reduced against
s(t-1) and itself with one dot product each (on CPU with numba installed, one fused
pass per tensor does all three; see ``_fused_cpu.py``). The per-tensor partial sums stay on the
device; they are stacked into one two-element tensor, all-reduced across the ranks
that hold different shards of a sharded (DTensor / FSDP2) parameter, and only then
copied to the host, once. This module must not make any decision and must not modify
its inputs: the caller keeps the new steps only once the core has accepted the epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from autodrop_torch import _fused_cpu

__all__ = ["USE_FUSED_CPU", "accumulation_dtype", "local_tensor", "reduce_steps"]

#: Use the one-pass numba kernel for contiguous float32/float64 CPU tensors when numba is
#: installed (see ``_fused_cpu.py``). Tests switch it off to exercise the torch path.
USE_FUSED_CPU = True


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64, or float32 on devices that have no float64 (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _dtensor_type() -> type | None:
    # Look in sys.modules first: a process that never built a DTensor has none to find.
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None) if module is not None else None


def local_tensor(param: Tensor) -> Tensor:
    """The part of ``param`` this process holds: the local shard of a DTensor, else itself."""
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(param, dtensor):
        return param.to_local().detach()  # type: ignore[attr-defined, no-any-return]
    return param.detach()


def _shard_groups(param: Tensor) -> tuple[Any, ...]:
    """The process groups over which this parameter's partial sums must be added.

    A DTensor placement ``Shard`` on a mesh dimension splits the tensor across that
    dimension's ranks (their sums add up); ``Replicate`` means every rank holds the same
    values (adding would double count). Plain tensors are replicated (DDP) or local.
    """
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(param, dtensor):
        return ()
    groups = []
    for dim, placement in enumerate(param.placements):  # type: ignore[attr-defined]
        if placement.is_shard():
            groups.append(param.device_mesh.get_group(dim))  # type: ignore[attr-defined]
        elif not placement.is_replicate():
            raise ValueError(
                f"AutoDrop cannot reduce a DTensor parameter with placement {placement!r}: "
                "expected Shard or Replicate on every mesh dimension"
            )
    return tuple(groups)


def _step(x: Tensor, snapshot: Tensor, acc_dtype: torch.dtype) -> Tensor:
    """s(t) = x - x̂ in ``acc_dtype``, always contiguous (channels_last and transposed parameters too).

    Exact: the upcast is exact, the float64 subtraction rounds at most once.
    """
    step = x.to(dtype=acc_dtype, memory_format=torch.contiguous_format, copy=True)
    return step.sub_(snapshot)


def reduce_steps(
    params: Sequence[Tensor],
    snapshots: Sequence[Tensor],
    prev_steps: Sequence[Tensor],
    acc_dtype: torch.dtype,
    names: Sequence[str] | None = None,
) -> tuple[float, float, list[Tensor], list[Tensor | None]]:
    """dot = <s(t), s(t-1)> and sq_norm = ||s(t)||^2 over all ``params``, and the new steps.

    Args:
        params: the watched parameters (plain tensors or DTensors), as they are now.
        snapshots: x̂(t-1) of each, the local part, in any dtype, on the buffer device.
        prev_steps: s(t-1) of each, local, in ``acc_dtype``, on the buffer device.
        acc_dtype: the dtype the steps are formed and accumulated in.
        names: how to call each parameter in an error message.

    Returns:
        ``(dot, sq_norm, steps, copies)``: two Python floats (one device-to-host copy
        in all), s(t) of each parameter in ``acc_dtype``, and for each parameter either
        a fresh copy of its current value (made by the fused CPU pass, usable as the
        next snapshot) or None.
    """
    steps: list[Tensor] = []
    copies: list[Tensor | None] = []
    partials: dict[tuple[Any, ...], list[Tensor]] = {}
    with torch.no_grad():
        locals_ = [local_tensor(p).to(snap.device) for p, snap in zip(params, snapshots, strict=True)]
        fused = _fused_cpu.run_many(
            [
                (i, x, snapshots[i], prev_steps[i])
                for i, x in enumerate(locals_)
                if USE_FUSED_CPU and _fused_cpu.fits(x, snapshots[i], prev_steps[i]) and _fused_cpu.available()
            ]
        )
        for i, (param, x, snapshot, prev) in enumerate(zip(params, locals_, snapshots, prev_steps, strict=True)):
            try:
                if i in fused:
                    step, copy, dot, sq = fused[i].result()
                    pair = torch.tensor((dot, sq), dtype=acc_dtype)
                else:
                    step, copy = _step(x, snapshot, acc_dtype), None
                    flat = step.view(-1)  # contiguous whatever the parameter's layout
                    pair = torch.stack((torch.dot(flat, prev.reshape(-1)), torch.dot(flat, flat)))
            except torch.OutOfMemoryError:
                raise  # keep its type: callers catch it to retry with less memory
            except RuntimeError as err:
                name = names[i] if names is not None else f"parameter {i}"
                raise RuntimeError(
                    f"AutoDrop could not reduce the step of {name} (shape {tuple(x.shape)}, stride {x.stride()}, "
                    f"{x.dtype}, {x.device}): {err}"
                ) from err
            if partials:  # model parallel across devices: gather the partials on the first
                pair = pair.to(next(iter(partials.values()))[0].device)
            partials.setdefault(_shard_groups(param), []).append(pair)
            steps.append(step)
            copies.append(copy)
        if not partials:
            return 0.0, 0.0, steps, copies
        totals = []
        for groups, pairs in partials.items():
            total = torch.stack(pairs).sum(dim=0)
            for group in groups:
                torch.distributed.all_reduce(total, group=group)
            totals.append(total)
        combined = totals[0] if len(totals) == 1 else torch.stack(totals).sum(dim=0)
        dot, sq_norm = combined.tolist()  # the one device-to-host transfer of the epoch
    return float(dot), float(sq_norm), steps, copies
