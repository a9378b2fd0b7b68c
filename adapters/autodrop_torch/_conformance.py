"""The conformance driver of the torch adapter (entry point ``autodrop.adapters: torch``).

It builds ``torch.nn.Parameter`` tensors of the case's dtypes in one SGD parameter
group per AutoDrop group (with momentum, so that the optimizer holds state: each
training step sets a fixed gradient, steps, then writes the case's values over the
parameters, and the suite checks that AutoDrop never touches the momentum buffers),
wraps the optimizer in :class:`autodrop_torch.AutoDrop`, and
checkpoints through ``state_dict()`` -> ``torch.save`` -> bytes ->
``torch.load(weights_only=True)`` -> ``load_state_dict()``, as a training script would.
It is imported only by the conformance suite and must not decide anything itself.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from autodrop_core import AutoDropConfig, Decision
from autodrop_torch._fused_cpu import MIN_NUMEL
from autodrop_torch._scheduler import AutoDrop, AutoDropUsageWarning

__all__ = ["TorchDriver", "driver"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchRun:
    """Parameters, an SGD optimizer and the AutoDrop scheduler over them."""

    def __init__(
        self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig, device: str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.params = [
            torch.nn.Parameter(torch.from_numpy(np.array(v, dtype=np.float64)).to(self.device, _DTYPES[d]))
            for v, d in zip(values, layout.dtypes, strict=True)
        ]
        groups = [
            {"params": [p for p, g in zip(self.params, layout.groups) if g == n], "lr": lr}
            for n, lr in enumerate(config.lrs)
        ]
        self.optimizer = torch.optim.SGD(groups, momentum=0.9)
        self.scheduler = AutoDrop(
            self.optimizer,
            min_lr=config.floors,
            drop_factor=config.drop_factor,
            threshold=config.threshold,
            max_threshold=config.max_threshold,
            drop_delay=config.drop_delay,
            angle_window=config.angle_window,
            reset_on_drop=config.reset_on_drop,
            trigger=config.trigger,
        )

    def set_params(self, values: Sequence[np.ndarray[Any, Any]]) -> None:
        for p in self.params:
            p.grad = torch.ones_like(p)  # a fixed gradient: the momentum buffers fill up
        self.optimizer.step()  # a real step (it also marks the epoch as trained for torch) ...
        with torch.no_grad():  # ... whose result the case's values then replace
            for p, v in zip(self.params, values, strict=True):
                p.copy_(torch.from_numpy(np.array(v, dtype=np.float64)))

    def optimizer_state(self) -> list[np.ndarray[Any, Any]]:
        """The SGD momentum buffers (float64 copies), in parameter order; empty before the first step."""
        out = []
        for p in self.params:
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out.append(buf.detach().to("cpu", torch.float64).numpy().copy())
        return out

    def get_params(self) -> list[np.ndarray[Any, Any]]:
        return [p.detach().to("cpu", torch.float64).numpy().copy() for p in self.params]

    def end_epoch(self) -> Decision:
        with warnings.catch_warnings():
            # each case's "epoch" is one full-batch optimizer step, which looks like per-batch stepping
            warnings.simplefilter("ignore", AutoDropUsageWarning)
            self.scheduler.step()
        decision = self.scheduler.last_decision
        assert decision is not None
        return decision

    @property
    def lrs(self) -> tuple[float, ...]:
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)

    def save(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.scheduler.state_dict(), buffer)
        return buffer.getvalue()

    def reductions(self) -> tuple[float, float] | None:
        return self.scheduler.last_reductions


class TorchDriver:
    """The torch adapter's driver: all four dtypes, float64 accumulation, on ``device``."""

    dtypes: tuple[Literal["float64", "float32", "float16", "bfloat16"], ...] = (
        "float64", "float32", "float16", "bfloat16",
    )
    accumulation: Literal["float64"] = "float64"
    max_examples: int | None = 60
    #: the fused CPU kernels (with numba) take tensors of at least this many elements
    size_thresholds: tuple[int, ...] = (MIN_NUMEL,)
    lr_dtype: Literal["float64"] = "float64"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.name = "torch" if device == "cpu" else f"torch-{device}"

    def start(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig) -> TorchRun:
        return TorchRun(values, layout, config, self.device)

    def restore(
        self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig, saved: Any
    ) -> TorchRun:
        run = TorchRun(values, layout, config, self.device)
        run.scheduler.load_state_dict(torch.load(io.BytesIO(saved), map_location=run.device, weights_only=True))
        return run


#: The object the ``torch`` entry point names (CPU).
driver = TorchDriver()
#: The same on the first CUDA device: run it by subclassing the suite on a GPU machine.
driver_cuda = TorchDriver("cuda")
