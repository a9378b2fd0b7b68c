"""The benchmark's unit of work: one (task, method, initial lr, seed) run, and its cache.

A run is described by a :class:`RunSpec`, executed by :func:`run_one` (in a worker
process or in-process) and stored as one small JSON file, so that an interrupted
benchmark resumes where it stopped. This module must not aggregate or report: that is
``_bench_report.py``'s job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from autodrop_demo._data import Split, load_digits_augmented, load_digits_split, load_mnist1d
from autodrop_demo._models import Cnn1d, Cnn1dBn, Mlp, MlpBn
from autodrop_demo._schedules import schedule_factory
from autodrop_demo._train import TrainSettings, train

__all__ = ["NEEDS_DROPS_MARGIN", "TASKS", "VAL_FRACTION", "RunSpec", "Task", "init_worker", "load_cached", "run_one",
           "store"]

#: Share of each task's training data held out as the validation split (used by ReduceLROnPlateau only;
#: every method trains on the same remaining rows).
VAL_FRACTION = 0.1

@dataclass(frozen=True)
class Task:
    """One benchmark task: data, model and batch size.

    Attributes:
        description: one line for reports.
        batch_size: examples per SGD step.
        needs_drops: a task on which lr drops are expected to matter (the bench checks it:
            step must beat constant by at least :data:`NEEDS_DROPS_MARGIN`); the others are
            "do no harm" tasks.
        split: builds the data (with :data:`VAL_FRACTION` held out).
        model: builds the untrained network (called under the run's seed).
    """

    description: str
    batch_size: int
    needs_drops: bool
    split: Callable[[], Split]
    model: Callable[[], torch.nn.Module]


#: Relative margin by which the step schedule must beat the constant lr on a task that needs drops.
NEEDS_DROPS_MARGIN = 0.2

#: The benchmark's tasks, by name; the first three need lr drops, the last two are "do no harm" tasks.
TASKS: dict[str, Task] = {
    "mnist1d-mlp": Task(
        "MNIST-1D with 30,000 signals (24k train), MLP 40-256-256-10 with BatchNorm (79k parameters), batch 128",
        128, True, lambda: load_mnist1d(VAL_FRACTION, num_samples=30000, name="mnist1d-mlp"), lambda: MlpBn(40, 256),
    ),
    "mnist1d-cnn": Task(
        "MNIST-1D with 20,000 signals (16k train), 1-D CNN (2 conv layers of 16 channels, dense 320, BatchNorm; "
        "55k parameters), batch 128",
        128, True, lambda: load_mnist1d(VAL_FRACTION, num_samples=20000, name="mnist1d-cnn"),
        lambda: Cnn1dBn(40, channels=16, hidden=320),
    ),
    "digits-jitter": Task(
        "scikit-learn digits, 12 jittered copies per training image (15k train), MLP 64-256-256-10 with BatchNorm "
        "(86k parameters), batch 128",
        128, True, lambda: load_digits_augmented(VAL_FRACTION), lambda: MlpBn(64, 256),
    ),
    "mnist1d": Task(
        "MNIST-1D (4,000 train), 1-D CNN (3 conv layers of 16 channels, 2.5k parameters), batch 512",
        512, False, lambda: load_mnist1d(VAL_FRACTION), lambda: Cnn1d(channels=16),
    ),
    "digits": Task(
        "scikit-learn digits (1,257 train), MLP 64-128-128-10 (26k parameters), batch 128",
        128, False, lambda: load_digits_split(VAL_FRACTION), lambda: Mlp(hidden=128),
    ),
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
            object.__setattr__(self, "model", TASKS[self.task].description)

    @property
    def key(self) -> str:
        """A file-name-safe identifier."""
        return f"{self.task}-{self.method}-lr{self.lr:g}-seed{self.seed}-e{self.epochs}"


def init_worker() -> None:
    """Run in each worker process: one torch thread, since the workers share the cores."""
    torch.set_num_threads(1)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train one run and return its JSON-safe record.

    A run whose training loss becomes NaN or infinite is recorded as diverged (its
    errors are null) rather than aborting the benchmark.
    """
    task = TASKS[spec.task]
    settings = TrainSettings(epochs=spec.epochs, lr=spec.lr, batch_size=task.batch_size, seed=spec.seed)
    record: dict[str, Any] = {"spec": asdict(spec), "diverged": False}
    try:
        result = train(task.model, task.split(), schedule_factory(spec.method, spec.epochs), settings)
    except FloatingPointError as err:
        record.update(diverged=True, reason=str(err), final=None, best=None, best_epoch=None)
        return record
    rows = result.records
    errors = [r.test_error for r in rows]
    lrs = [r.lr for r in rows]
    best = min(range(len(errors)), key=errors.__getitem__)
    next_lrs = [*lrs[1:], None]
    drops = [r.epoch for r, nxt in zip(rows, next_lrs) if nxt is not None and nxt < r.lr]
    if spec.method.startswith("autodrop"):
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
        triggers=[r.epoch for r in rows if getattr(r.decision, "triggered", False)],
        angle=[getattr(r.decision, "angle", None) for r in rows],
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
