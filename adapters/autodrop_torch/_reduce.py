"""The two per-epoch reductions of AutoDrop, computed where the parameters live.

For every watched tensor the step s(t) = x(t) - x̂(t-1) and the previous step
s(t-1) = A - B (two tensors in the parameter's dtype kept by ``_buffers.py``, usually
x̂(t-1) - x̂(t-2)) are formed element by element in the accumulation dtype (float64
where the device has it), chunk by chunk, and reduced with one dot product each; the
same pass takes a contiguous copy of x(t) (the candidate next snapshot) and, inside an
averaging window, the new running average. On CPU with numba installed one fused pass
per tensor does all of it (``_fused_cpu.py``). The per-tensor partial sums stay on the
device; they are stacked, all-reduced across the ranks that hold different shards of a
sharded (DTensor / FSDP2) parameter, and only then copied to the host, once. This
module must not make any decision and must not modify its inputs: the caller adopts
the new tensors only once the core has accepted the epoch.
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


def local_shape(param: Tensor) -> torch.Size:
    """The shape of :func:`local_tensor` (without its ``detach``)."""
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(param, dtensor):
        return param.to_local().shape  # type: ignore[attr-defined, no-any-return]
    return param.shape


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


#: Elements per chunk of the torch path, per device type: its float64 temporaries (the
#: step, the previous step) stay small whatever the size of a tensor. On CPU 2^15
#: elements (256 KiB per temporary) keep them in cache: 1.5x faster than 2^20 on
#: ResNet-18 shapes; on accelerators larger chunks keep kernel launches few (2^22:
#: 32 MiB per temporary).
CHUNK = {"cpu": 1 << 15}
DEFAULT_CHUNK = 1 << 22

def _torch_step(
    x: Tensor, snapshot: Tensor, head: Tensor | None, base: Tensor | None, acc_dtype: torch.dtype,
    home: torch.device, absorb: tuple[Tensor | None, float] | None,
) -> tuple[Tensor, Tensor | None, list[Tensor]]:
    """The torch path for one tensor: its copy, its new average (with ``absorb``), its partial pairs.

    s(t) = x - x̂ and s(t-1) = head - base (``head`` None: the snapshot; ``base`` None:
    nothing is subtracted, and both None: a zero step) are formed chunk by chunk in
    ``acc_dtype``; each is exact to one rounding, as the numpy reference's. Always
    contiguous, whatever the parameter's layout.
    """
    for what, other in (("snapshot", snapshot), ("step head", head), ("step base", base)):
        if other is not None and other.shape != x.shape:
            raise RuntimeError(f"its {what} has shape {tuple(other.shape)}")
    copy = x.to(device=home, memory_format=torch.contiguous_format, copy=True)
    flat, snap = copy.view(-1), snapshot.reshape(-1)
    head_flat = snap if head is None else head.reshape(-1)
    base_flat = None if base is None else base.reshape(-1)
    zero_step = head is None and base is None
    out = None
    if absorb is not None:
        out = torch.empty(flat.shape, dtype=acc_dtype, device=home)
    pairs = []
    chunk = CHUNK.get(home.type, DEFAULT_CHUNK)
    for a in range(0, max(flat.numel(), 1), chunk):
        b = min(a + chunk, flat.numel())
        step = flat[a:b].to(acc_dtype, copy=True).sub_(snap[a:b])
        if zero_step:
            prev = torch.zeros_like(step)
        elif base_flat is None:
            prev = head_flat[a:b].to(acc_dtype)
        else:
            prev = torch.sub(head_flat[a:b].to(acc_dtype), base_flat[a:b])
        pairs.append(torch.stack((torch.dot(step, prev), torch.dot(step, step))))
        if out is not None and absorb is not None:
            average, weight = absorb
            if average is None:  # the first vector of a window: W = x(t)
                out[a:b].copy_(flat[a:b])
            else:  # W + c (x - W): (x - W) in W's dtype, times c, plus W, one rounding each
                avg = average.reshape(-1)[a:b]
                torch.sub(flat[a:b], avg, out=out[a:b])
                out[a:b].mul_(weight).add_(avg)
    return copy, None if out is None else out.view(copy.shape), pairs


def _device_of(pair: Tensor | tuple[float, float]) -> torch.device:
    return pair.device if isinstance(pair, Tensor) else torch.device("cpu")


def _stacked(pairs: list[Tensor | tuple[float, float]], acc_dtype: torch.dtype) -> Tensor:
    """The (dot, sq) partials as one (n, 2) tensor in order: the fused pass's host floats in one call.

    The same values as stacking one tensor per pair, so the same sum.
    """
    if all(not isinstance(pair, Tensor) for pair in pairs):
        return torch.tensor(pairs, dtype=acc_dtype)
    device = next(pair.device for pair in pairs if isinstance(pair, Tensor))
    return torch.stack([pair if isinstance(pair, Tensor) else torch.tensor(pair, dtype=acc_dtype, device=device)
                        for pair in pairs])


def reduce_steps(
    params: Sequence[Tensor],
    snapshots: Sequence[Tensor],
    heads: Sequence[Tensor | None],
    bases: Sequence[Tensor | None],
    acc_dtype: torch.dtype,
    names: Sequence[str] | None = None,
    absorb: tuple[Sequence[Tensor | None], float] | None = None,
) -> tuple[float, float, list[Tensor], list[Tensor | None]]:
    """dot = <s(t), s(t-1)> and sq_norm = ||s(t)||^2 over all ``params``, the copies, the new averages.

    Args:
        params: the watched parameters (plain tensors or DTensors), as they are now.
        snapshots: x̂(t-1) of each, the local part, in the parameter's dtype, on the buffer device.
        heads, bases: what s(t-1) = head - base is formed from, per parameter (see
            ``_buffers.py``); a None head is the snapshot, a None base subtracts nothing.
        acc_dtype: the dtype the steps are formed and accumulated in.
        names: how to call each parameter in an error message.
        absorb: ``(averages, c)`` to also form each W' = W + c (x(t) - W) in the same
            pass (an average None enters as x(t)); None: no average is formed.

    Returns:
        ``(dot, sq_norm, copies, averages)``: two Python floats (one device-to-host copy
        in all), a fresh contiguous copy of each parameter's current value (the next
        snapshot) on the buffer device, and W' per parameter (all None without ``absorb``).
        Nothing passed in is modified.
    """
    copies: list[Tensor] = []
    averages: list[Tensor | None] = []
    partials: dict[tuple[Any, ...], list[Tensor | tuple[float, float]]] = {}
    with torch.no_grad():
        # Without DTensors a parameter is its own local tensor (no autograd under no_grad)
        dtensor = _dtensor_type()
        sharded = dtensor is not None and any(isinstance(p, dtensor) for p in params)
        locals_ = [local_tensor(p) for p in params] if sharded else list(params)
        absorbs: list[tuple[Tensor | None, float] | None] = (
            [None] * len(params) if absorb is None else [(avg, absorb[1]) for avg in absorb[0]]
        )
        jobs: list[_fused_cpu.Job] = []
        fused_weight = 0.0 if absorb is None else absorb[1]
        if USE_FUSED_CPU and _fused_cpu.available():
            for i, x in enumerate(locals_):
                base = bases[i]
                if base is None:  # a zero or explicit previous step (first epoch, old checkpoint): torch path
                    continue
                snapshot = snapshots[i]
                head = snapshot if heads[i] is None else heads[i]
                average = None if absorb is None else absorb[0][i]
                addresses = _fused_cpu.plan(x, snapshot, head, base, average)  # type: ignore[arg-type]
                if addresses is not None:
                    jobs.append((i, x, addresses, absorb is not None))
        if not any(job[1].numel() >= _fused_cpu.MIN_NUMEL for job in jobs):
            jobs = []  # only small tensors: the torch path, without loading numba
        fused = _fused_cpu.run_many(jobs, fused_weight)
        if fused and len(fused) == len(params) and not sharded:
            # Every tensor took the pass: the partials of the loop below, in the same order and
            # one group, so the same sum (two floats per tensor, one tensor, one transfer)
            results = [fused[i] for i in range(len(params))]
            total = _stacked([(r[2], r[3]) for r in results], acc_dtype).sum(dim=0)
            dot, sq_norm = total.tolist()
            return float(dot), float(sq_norm), [r[0] for r in results], [r[1] for r in results]
        for i, (param, x) in enumerate(zip(params, locals_, strict=True)):
            snapshot = snapshots[i]
            pairs: list[Tensor | tuple[float, float]]
            try:
                if i in fused:
                    copy, average, dot, sq = fused[i]
                    pairs = [(dot, sq)]  # host floats: made a tensor with the others of its group, below
                else:
                    copy, average, torch_pairs = _torch_step(
                        x, snapshot, heads[i], bases[i], acc_dtype, snapshot.device, absorbs[i]
                    )
                    pairs = list(torch_pairs)
            except torch.OutOfMemoryError:
                raise  # keep its type: callers catch it to retry with less memory
            except RuntimeError as err:
                name = names[i] if names is not None else f"parameter {i}"
                raise RuntimeError(
                    f"AutoDrop could not reduce the step of {name} (shape {tuple(x.shape)}, stride {x.stride()}, "
                    f"{x.dtype}, {x.device}): {err}"
                ) from err
            if partials:  # model parallel across devices: gather the partials on the first
                pairs = [pair.to(_device_of(next(iter(partials.values()))[0])) if isinstance(pair, Tensor) else pair
                         for pair in pairs]
            partials.setdefault(_shard_groups(param), []).extend(pairs)
            copies.append(copy)
            averages.append(average)
        if not partials:
            return 0.0, 0.0, copies, averages
        totals = []
        for groups, pairs in partials.items():
            total = _stacked(pairs, acc_dtype).sum(dim=0)
            for group in groups:
                torch.distributed.all_reduce(total, group=group)
            totals.append(total)
        combined = totals[0] if len(totals) == 1 else torch.stack(totals).sum(dim=0)
        dot, sq_norm = combined.tolist()  # the one device-to-host transfer of the epoch
    return float(dot), float(sq_norm), copies, averages
