"""The paper's NQM experiments as plain data: Theorem 1's table and Figure 1's runs.

Each function runs the simulations and measures; Figure 3 (AutoDrop) lives in
``_figure3.py``, plotting in ``_plots.py`` and the command line in ``_cli.py``. Nothing
here draws or prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from autodrop_core.nqm._model import NoisyQuadratic, participation_ratio, preset
from autodrop_core.nqm._oracles import theorem1_angle
from autodrop_core.nqm._simulate import Trajectories, simulate

__all__ = ["FIGURE1_LRS", "THEOREM1_SIGMAS", "Theorem1Row", "figure1_runs", "theorem1_rows"]

#: The learning rates of the paper's Figure 1.
FIGURE1_LRS = (0.06, 0.03, 0.01, 0.001)
#: Half-width of the agreement band for Theorem 1, in standard errors of the measured mean.
THEOREM1_SIGMAS = 4.0


@dataclass(frozen=True)
class Theorem1Row:
    """Predicted against measured stationary angle at one lr (plain SGD, stationary start).

    Attributes:
        preset: the model's name.
        lr: the learning rate.
        n_eff: participation ratio of the step (coordinates that carry it).
        predicted: degrees(arccos(cos C*)) from eq. 6.
        measured: mean per-iteration angle, averaged over iterations and seeds.
        standard_error: standard error of ``measured`` (spread of the per-seed means).
        tolerance: THEOREM1_SIGMAS * standard_error.
        agrees: |measured - predicted| <= tolerance.
        ratio_of_means: degrees(arccos(sum dot / sqrt(sum ||d(t)||^2 sum ||d(t-1)||^2))), the
            estimator of eq. 6's ratio of expectations itself.
        mean_cosine_angle: degrees(arccos(mean per-iteration cosine)), what the paper's
            "lim E[cos]" reads as; it departs from ``predicted`` when n_eff is small.
    """

    preset: str
    lr: float
    n_eff: float
    predicted: float
    measured: float
    standard_error: float
    tolerance: float
    agrees: bool
    ratio_of_means: float
    mean_cosine_angle: float
    seeds: int
    iters: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


def theorem1_rows(
    model: NoisyQuadratic,
    lrs: Sequence[float] = FIGURE1_LRS,
    seeds: int = 16,
    iters: int = 2000,
    progress: bool = False,
) -> list[Theorem1Row]:
    """Measure the stationary angle of plain SGD at each lr and compare it with eq. 6.

    Runs start from SGD's stationary law, so every iteration counts (the angle at t = 1
    is undefined and skipped). Seeds are independent, so the spread of the per-seed
    means gives an honest standard error whatever the autocorrelation over iterations.
    """
    if seeds < 2:
        raise ValueError(f"seeds={seeds!r} is invalid: expected >= 2 (the standard error needs two)")
    traj = simulate(model, lrs, range(seeds), iters, start="stationary", progress=progress)
    angles = traj.angles()[..., 1:]
    cosines = np.cos(np.radians(angles))
    rows = []
    for i, lr in enumerate(traj.lrs):
        per_seed = angles[i].mean(axis=-1)
        measured = float(per_seed.mean())
        se = float(per_seed.std(ddof=1) / math.sqrt(seeds))
        dot = traj.dot[i, :, 1:].sum()
        sq_now, sq_before = traj.sq_norm[i, :, 1:].sum(), traj.sq_norm[i, :, :-1].sum()
        ratio = float(dot / (math.sqrt(sq_now) * math.sqrt(sq_before)))
        predicted = theorem1_angle(model, float(lr))
        rows.append(
            Theorem1Row(
                preset=model.name,
                lr=float(lr),
                n_eff=participation_ratio(model, float(lr)),
                predicted=predicted,
                measured=measured,
                standard_error=se,
                tolerance=THEOREM1_SIGMAS * se,
                agrees=abs(measured - predicted) <= THEOREM1_SIGMAS * se,
                ratio_of_means=math.degrees(math.acos(ratio)),
                mean_cosine_angle=math.degrees(math.acos(float(cosines[i].mean()))),
                seeds=seeds,
                iters=iters,
            )
        )
    return rows


def figure1_runs(
    model: NoisyQuadratic | None = None,
    lrs: Sequence[float] = FIGURE1_LRS,
    iters: int = 3000,
    seed: int = 0,
    start: float = 1.0,
    progress: bool = False,
) -> Trajectories:
    """Figure 1: plain SGD from x(0) = ``start`` at each lr (one seed, shared noise)."""
    return simulate(model or preset("figure1"), lrs, [seed], iters, start=start, progress=progress)
