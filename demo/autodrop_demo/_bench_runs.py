"""The benchmark's unit of work: one (task, method, initial lr, seed) run, and its cache.

A run is described by a :class:`RunSpec`, executed by :func:`run_one` (in a worker
process or in-process) and stored as one small JSON file, so that an interrupted
benchmark resumes where it stopped. This module must not aggregate or report: that is
``_bench_report.py``'s job.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from autodrop_demo._data import Split, load_digits_split, load_mnist1d
from autodrop_demo._models import Cnn1d, Mlp
from autodrop_demo._schedules import schedule_factory
from autodrop_demo._train import TrainSettings, train

__all__ = ["TASKS", "VAL_FRACTION", "RunSpec", "init_worker", "load_cached", "run_one", "store"]

#: Share of each task's training data held out as the validation split (used by ReduceLROnPlateau only;
#: every method trains on the same remaining rows).
VAL_FRACTION = 0.1

#: Task name -> (description, batch size). The models are built in :func:`_model`.
TASKS: dict[str, tuple[str, int]] = {
    "mnist1d": ("MNIST-1D, 1-D CNN (3 conv layers of 16 channels, 2.5k parameters), batch 512", 512),
    "digits": ("scikit-learn digits, MLP (64-128-128-10, 26k parameters), batch 128", 128),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the benchmark."""

    task: str
    method: str
    lr: float
    seed: int
    epochs: int
    model: str = ""  # filled in from TASKS: a stored run only counts for the same model and batch size

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASKS)}")
        if not self.model:
            object.__setattr__(self, "model", TASKS[self.task][0])

    @property
    def key(self) -> str:
        """A file-name-safe identifier."""
        return f"{self.task}-{self.method}-lr{self.lr:g}-seed{self.seed}-e{self.epochs}"


def _split(task: str) -> Split:
    if task == "mnist1d":
        return load_mnist1d(VAL_FRACTION)
    if task == "digits":
        return load_digits_split(VAL_FRACTION)
    raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")


def _model(task: str) -> torch.nn.Module:
    return Cnn1d(channels=16) if task == "mnist1d" else Mlp(hidden=128)


def init_worker() -> None:
    """Run in each worker process: one torch thread, since the workers share the cores."""
    torch.set_num_threads(1)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train one run and return its JSON-safe record.

    A run whose training loss becomes NaN or infinite is recorded as diverged (its
    errors are null) rather than aborting the benchmark.
    """
    settings = TrainSettings(epochs=spec.epochs, lr=spec.lr, batch_size=TASKS[spec.task][1], seed=spec.seed)
    record: dict[str, Any] = {"spec": asdict(spec), "diverged": False}
    try:
        result = train(lambda: _model(spec.task), _split(spec.task), schedule_factory(spec.method, spec.epochs),
                       settings)
    except FloatingPointError as err:
        record.update(diverged=True, reason=str(err), final=None, best=None, best_epoch=None)
        return record
    rows = result.records
    errors = [r.test_error for r in rows]
    lrs = [r.lr for r in rows]
    best = min(range(len(errors)), key=errors.__getitem__)
    next_lrs = [*lrs[1:], None]
    drops = [r.epoch for r, nxt in zip(rows, next_lrs) if nxt is not None and nxt < r.lr]
    if spec.method == "autodrop":
        drops = [r.epoch for r in rows if r.decision.dropped]
    record.update(
        final=errors[-1],
        best=errors[best],
        best_epoch=rows[best].epoch,
        test_error=errors,
        lr=lrs,
        train_loss=[r.train_loss for r in rows],
        val_loss=[None if math.isnan(r.val_loss) else r.val_loss for r in rows],
        drops=drops,
        triggers=[r.epoch for r in rows if r.decision is not None and r.decision.triggered],
        seconds=result.seconds,
    )
    return record


def load_cached(folder: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The stored record of ``spec`` in ``folder``, or None when absent or unreadable."""
    path = folder / f"{spec.key}.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("spec") == asdict(spec) else None


def store(folder: Path, spec: RunSpec, record: dict[str, Any]) -> None:
    """Write ``record`` as ``folder/<key>.json`` (atomically, via a temporary file)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{spec.key}.json.tmp"
    tmp.write_text(json.dumps(record, allow_nan=False))
    tmp.replace(folder / f"{spec.key}.json")
