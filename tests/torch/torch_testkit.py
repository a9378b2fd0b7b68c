"""Helpers shared by the torch adapter tests and their subprocess workers.

Small deterministic models and data, one training epoch, and a numpy oracle fed with
exactly the parameters a torch loop saw. Nothing here calls the scheduler under test
on its own behalf.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def subprocess_env() -> dict[str, str]:
    """Environment for a worker process: one thread, this folder and the adapters importable."""
    env = dict(os.environ)
    paths = [str(HERE), str(ROOT / "adapters"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def python() -> str:
    return sys.executable


def mlp(seed: int = 0, batchnorm: bool = False) -> torch.nn.Sequential:
    """A small MLP; with ``batchnorm`` it also has running statistics and a counter."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Linear(8, 16)]
    if batchnorm:
        layers.append(torch.nn.BatchNorm1d(16))
    layers += [torch.nn.Tanh(), torch.nn.Linear(16, 1)]
    return torch.nn.Sequential(*layers)


def data(seed: int = 1, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy linear regression problem, the same in every process."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    w = torch.randn(8, 1, generator=gen)
    y = x @ w + 0.3 * torch.randn(n, 1, generator=gen)
    return x, y


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch: int = 32) -> None:
    """One pass over the data in fixed order."""
    model.train()
    for i in range(0, len(x), batch):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[i : i + batch]), y[i : i + batch])
        loss.backward()
        opt.step()


def params_numpy(params: Any) -> list[np.ndarray]:
    """Copies of the tensors as numpy arrays in their own dtype (float32 stays float32)."""
    return [p.detach().cpu().numpy().copy() for p in params]


#: Settings that make drops happen within a few epochs of a small problem.
EAGER: dict[str, Any] = {"threshold": 5.0, "max_threshold": 60.0, "drop_delay": 3, "min_lr": 1e-5}


def trained(epochs: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """An MLP, its SGD optimizer and an eager AutoDrop (``EAGER``) after ``epochs`` epochs of training."""
    from autodrop_torch import AutoDrop

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, **EAGER)
    x, y = data()
    for _ in range(epochs):
        train_epoch(model, opt, x, y)
        sched.step()
    return model, opt, sched
