"""The tensors AutoDrop keeps beside the parameters: snapshot, last step, running average.

:class:`TrackedTensors` holds, for every watched parameter, x̂(t-1) (a copy in the
parameter's own dtype) and s(t-1) (in the accumulation dtype), and, only while a drop
is pending, the running average W (accumulation dtype), plus W for the model's
floating-point buffers when a model was given. It applies a decision to those tensors
and writes an average into the parameters in place, so the optimizer keeps its
references and its state. It makes no decision and never talks to the core.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from autodrop_torch import _fused_cpu, _reduce
from autodrop_torch._reduce import local_tensor

__all__ = ["TrackedTensors"]


def _as_acc(tensor: Tensor, device: torch.device | None, acc_dtype: torch.dtype) -> Tensor:
    return local_tensor(tensor).to(device=device, dtype=acc_dtype, copy=True)


class TrackedTensors:
    """Snapshots, steps and running averages of the watched parameters and model buffers.

    Args:
        acc_dtype: dtype of the steps and of the running average.
        device: where the copies live; None keeps each next to its parameter.
    """

    def __init__(self, acc_dtype: torch.dtype, device: torch.device | None) -> None:
        self.acc_dtype = acc_dtype
        self.device = device
        self.params: list[Tensor] = []
        self.snapshots: list[Tensor] = []
        self.prev_steps: list[Tensor] = []
        self.average: list[Tensor | None] | None = None
        self.buffers: list[Tensor] = []
        self.buffer_average: list[Tensor] | None = None
        self._applied = False  # an average was written into the parameters this epoch

    def _home(self, tensor: Tensor) -> torch.device:
        return self.device if self.device is not None else local_tensor(tensor).device

    def join(self, params: Sequence[Tensor]) -> None:
        """Start watching ``params``: snapshot them now, with a zero previous step."""
        with torch.no_grad():
            for param in params:
                local = local_tensor(param)
                self.snapshots.append(local.to(device=self._home(param), copy=True))
                self.prev_steps.append(torch.zeros(local.shape, dtype=self.acc_dtype, device=self._home(param)))
                self.params.append(param)
                if self.average is not None:
                    self.average.append(None)

    def set_buffers(self, buffers: Sequence[Tensor]) -> None:
        """The model buffers to average with the parameters (floating point only)."""
        self.buffers = list(buffers)
        self.buffer_average = None

    def absorb(self, weight: float) -> None:
        """W = W + weight * (x(t) - W) for parameters and buffers (weight 1.0: W = x(t))."""
        with torch.no_grad():
            if self.average is None or weight == 1.0:
                self.average = [_as_acc(p, self._home(p), self.acc_dtype) for p in self.params]
                self.buffer_average = [_as_acc(b, self._home(b), self.acc_dtype) for b in self.buffers]
                return
            for i, param in enumerate(self.params):
                current = self.average[i]
                if current is None:  # joined while the drop was pending: enters as itself
                    self.average[i] = _as_acc(param, self._home(param), self.acc_dtype)
                else:
                    _blend(current, local_tensor(param), weight)
            assert self.buffer_average is not None
            for avg, buf in zip(self.buffer_average, self.buffers, strict=True):
                _blend(avg, buf.detach(), weight)

    def apply_average(self) -> None:
        """Write W into the parameters and buffers in place, then free W."""
        assert self.average is not None and self.buffer_average is not None
        with torch.no_grad():
            for param, avg in zip(self.params, self.average, strict=True):
                if avg is not None:
                    local_tensor(param).copy_(avg)
            for buf, avg in zip(self.buffers, self.buffer_average, strict=True):
                buf.copy_(avg)
        self.average = None
        self.buffer_average = None
        self._applied = True

    def take_snapshot(self, steps: Sequence[Tensor], copies: Sequence[Tensor | None]) -> None:
        """x̂ = x as the parameters are now; s(t-1) = ``steps`` (the epoch just reduced).

        ``copies`` holds, where the reduction made one, a copy of each parameter taken
        before any average was applied: it becomes the snapshot as it is (no second copy)
        unless an average has just been written into the parameters.
        """
        with torch.no_grad():
            for i, (param, copy) in enumerate(zip(self.params, copies, strict=True)):
                if copy is not None and not self._applied:
                    self.snapshots[i] = copy
                else:
                    self.snapshots[i].copy_(local_tensor(param))
        self.prev_steps = list(steps)
        self._applied = False


def _blend(average: Tensor, current: Tensor, weight: float) -> None:
    # Same rounding as the float64 reference: (x - W) in W's dtype, times c, added to W,
    # one rounding each (no fused multiply-add).
    current = current.to(average.device)
    if _reduce.USE_FUSED_CPU and _fused_cpu.fits_blend(average, current) and _fused_cpu.available():
        _fused_cpu.fused_blend(average, current, weight)
        return
    delta = torch.sub(current, average)  # promotes to W's dtype: exact upcast of x, one rounding
    delta.mul_(weight)
    average.add_(delta)
