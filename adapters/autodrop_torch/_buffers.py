"""The tensors AutoDrop keeps beside the parameters: two snapshots and, in a window, the average.

For every watched parameter :class:`TrackedTensors` holds x̂(t-1) (``snapshots``) and
the two tensors the previous step is formed from, s(t-1) = A - B, element by element
in the accumulation dtype: normally A is the snapshot itself (``heads[i]`` None) and B
is x̂(t-2) (``bases[i]``), both in the parameter's own dtype, so a float32 parameter
costs 8 bytes at rest and s(t-1) comes out with the same single rounding as when it was
stored. Two exceptions: before the first step ``bases[i]`` is None (s(0) = 0, one copy),
and for the one epoch after an applied average, where x̂(t) is the average and not x(t),
A is a copy of x(t) taken before the average was written (three copies for one epoch).
While a drop is pending it also holds the running average W (accumulation dtype), plus
W for the model's floating-point buffers when a model was given.

An epoch end is computed into new tensors first (:meth:`TrackedTensors.prepare`),
written into the parameters in place all or nothing (:meth:`~TrackedTensors.write`, so
the optimizer keeps its references and its state), then adopted
(:meth:`~TrackedTensors.commit`, which frees x̂(t-2) and the old W): a failure anywhere
before the commit leaves every tensor as it was. It makes no decision and never talks
to the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from autodrop_torch._reduce import local_tensor

__all__ = ["EpochEnd", "TrackedTensors"]


def _as_acc(tensor: Tensor, device: torch.device | None, acc_dtype: torch.dtype) -> Tensor:
    return local_tensor(tensor).to(device=device, dtype=acc_dtype, copy=True)


class TrackedTensors:
    """Snapshots, previous-step operands and running averages of the watched parameters and buffers.

    Args:
        acc_dtype: dtype the steps are formed in and the running average is kept in.
        device: where the copies live; None keeps each next to its parameter.
    """

    def __init__(self, acc_dtype: torch.dtype, device: torch.device | None) -> None:
        self.acc_dtype = acc_dtype
        self.device = device
        self.params: list[Tensor] = []
        self.snapshots: list[Tensor] = []
        self.heads: list[Tensor | None] = []
        self.bases: list[Tensor | None] = []
        self.average: list[Tensor | None] | None = None
        self.buffers: list[Tensor] = []
        self.buffer_average: list[Tensor] | None = None

    def _home(self, tensor: Tensor) -> torch.device:
        return self.device if self.device is not None else local_tensor(tensor).device

    def join(self, params: Sequence[Tensor]) -> None:
        """Start watching ``params``: snapshot them now, with a zero previous step."""
        with torch.no_grad():  # all copies first, then the lists grow: a failure adds nothing
            snapshots = [_snapshot_of(param, self._home(param)) for param in params]
        self.snapshots.extend(snapshots)
        self.heads.extend([None] * len(params))
        self.bases.extend([None] * len(params))
        self.params.extend(params)
        if self.average is not None:
            self.average.extend([None] * len(params))

    def set_buffers(self, buffers: Sequence[Tensor]) -> None:
        """The model buffers to average with the parameters (floating point only)."""
        self.buffers = list(buffers)
        self.buffer_average = None

    def prepare(
        self,
        weight: float | None,
        apply: bool,
        copies: Sequence[Tensor],
        absorbed: Sequence[Tensor | None] | None,
    ) -> EpochEnd:
        """Everything the epoch end will write, computed into new tensors; nothing here is modified.

        ``weight`` is the decision's average weight (None: W is left as it is), ``apply``
        its ``apply_average``; ``copies`` (x(t), contiguous, at home) and ``absorbed``
        (W' per parameter when the reduction already formed it, else None) come from the
        reduction. A failure in here (an out-of-memory on a float64 temporary, say)
        leaves every tensor as it was, so the epoch can be retried exactly.
        """
        with torch.no_grad():
            average, buffer_average = self.average, self.buffer_average
            if weight is not None:
                average, buffer_average = self._absorbed(weight, copies, absorbed)
            written: list[Tensor | None] = [None] * len(self.params)
            buffer_written: list[Tensor] = []
            if apply:
                assert average is not None and buffer_average is not None
                for i, (param, avg) in enumerate(zip(self.params, average, strict=True)):
                    if avg is not None:  # rounded once to the parameter's dtype, as copy_ would
                        written[i] = avg.to(dtype=local_tensor(param).dtype, copy=True)
                buffer_written = [avg.to(dtype=buf.dtype, copy=True) for buf, avg in zip(self.buffers, buffer_average)]
            snapshots: list[Tensor] = []
            heads: list[Tensor | None] = []
            for copy, value in zip(copies, written, strict=True):
                # The next step's previous step is s(t) = x(t) - x̂(t-1): the new head is x(t)
                # itself unless the average replaces x(t) as the next snapshot.
                snapshots.append(copy if value is None else value)
                heads.append(None if value is None else copy)
        return EpochEnd(
            average=None if apply else average,
            buffer_average=None if apply else buffer_average,
            written=written,
            buffer_written=buffer_written,
            snapshots=snapshots,
            heads=heads,
            bases=list(self.snapshots),
        )

    def _absorbed(
        self, weight: float, copies: Sequence[Tensor], absorbed: Sequence[Tensor | None] | None
    ) -> tuple[list[Tensor | None], list[Tensor]]:
        """W + weight * (x(t) - W) for parameters and buffers, as new tensors (weight 1.0: W = x(t))."""
        average: list[Tensor | None] = []
        for i, copy in enumerate(copies):
            done = None if absorbed is None else absorbed[i]
            current = None if self.average is None or weight == 1.0 else self.average[i]
            if done is not None:
                average.append(done)
            elif current is None:  # the window's first vector, or joined while the drop was pending
                average.append(_as_acc(copy, copy.device, self.acc_dtype))
            else:
                average.append(_blend(current, copy, weight))
        if self.buffer_average is None or weight == 1.0:
            buffer_average = [_as_acc(b, self._home(b), self.acc_dtype) for b in self.buffers]
        else:
            buffer_average = [_blend(avg, buf.detach(), weight) for avg, buf in zip(self.buffer_average, self.buffers)]
        return average, buffer_average

    def write(self, end: EpochEnd) -> None:
        """Write an applied average into the parameters and buffers in place, all or nothing.

        Each tensor is backed up just before it is overwritten; if a later write fails, the
        ones already written get their old values back before the error propagates.
        """
        targets = [
            (local_tensor(p), v) for p, v in zip(self.params, end.written, strict=True) if v is not None
        ] + list(zip(self.buffers, end.buffer_written, strict=True))
        done: list[tuple[Tensor, Tensor]] = []
        with torch.no_grad():
            try:
                for target, value in targets:
                    backup = target.clone()
                    _write_into(target, value)
                    done.append((target, backup))
            except BaseException:
                for target, backup in reversed(done):
                    target.copy_(backup)
                raise

    def commit(self, end: EpochEnd) -> None:
        """Adopt the prepared tensors (plain assignments: this cannot fail half way)."""
        self.average = end.average
        self.buffer_average = end.buffer_average
        self.snapshots = end.snapshots
        self.heads = end.heads
        self.bases = end.bases

    def held(self) -> list[Tensor]:
        """Every tensor held beside the parameters (for memory accounting), each once."""
        seen: dict[int, Tensor] = {}
        groups: list[Sequence[Tensor | None]] = [self.snapshots, self.heads, self.bases, self.average or [],
                                                 self.buffer_average or []]
        for group in groups:
            for t in group:
                if t is not None:
                    seen.setdefault(id(t), t)
        return list(seen.values())


@dataclass
class EpochEnd:
    """The tensors one epoch end produces, before they are adopted (see :meth:`TrackedTensors.prepare`)."""

    average: list[Tensor | None] | None
    buffer_average: list[Tensor] | None
    written: list[Tensor | None]
    buffer_written: list[Tensor]
    snapshots: list[Tensor]
    heads: list[Tensor | None]
    bases: list[Tensor | None]


def _snapshot_of(param: Tensor, home: torch.device) -> Tensor:
    """x̂: a contiguous copy of the parameter as it is now, in its own dtype."""
    return local_tensor(param).to(device=home, memory_format=torch.contiguous_format, copy=True)


def _write_into(target: Tensor, value: Tensor) -> None:
    """One in-place write of an average into a parameter or buffer (a seam for fault tests)."""
    target.copy_(value)


def _blend(average: Tensor, current: Tensor, weight: float) -> Tensor:
    """W + weight * (x - W) as a new tensor; ``average`` is not modified.

    Same rounding as the float64 reference: (x - W) in W's dtype, times c, added to W,
    one rounding each (no fused multiply-add).
    """
    current = current.to(average.device)
    delta = torch.sub(current, average)  # promotes to W's dtype: exact upcast of x, one rounding
    delta.mul_(weight)
    return delta.add_(average)  # W + c(x - W), in the new tensor
