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
import numpy.typing as npt

from autodrop_core.nqm._model import NoisyQuadratic, participation_ratio, preset
from autodrop_core.nqm._oracles import theorem1_angle
from autodrop_core.nqm._simulate import Trajectories, simulate

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "FIGURE1_LRS",
    "THEOREM1_SIGMAS",
    "THEOREM1_TOLERANCE",
    "Theorem1Row",
    "figure1_runs",
    "ratio_of_means_angle",
    "theorem1_rows",
]

#: The learning rates of the paper's Figure 1.
FIGURE1_LRS = (0.06, 0.03, 0.01, 0.001)
#: Agreement band for Theorem 1, in degrees: |ratio of means - eq. 6| must not exceed it.
THEOREM1_TOLERANCE = 0.05
#: A row resolves the band when THEOREM1_SIGMAS standard errors fit inside it (sampling
#: error alone then moves the estimate past the band with probability below 1e-4).
THEOREM1_SIGMAS = 3.0


@dataclass(frozen=True)
class Theorem1Row:
    """Predicted against measured stationary angle at one lr (plain SGD, stationary start).

    Attributes:
        preset: the model's name.
        lr: the learning rate.
        n_eff: participation ratio of the step (coordinates that carry it).
        predicted: degrees(arccos(cos C*)) from eq. 6.
        measured: the ratio of means, degrees(arccos(sum dot / sqrt(sum ||d(t)||^2 sum ||d(t-1)||^2)))
            over all iterations of all seeds: the estimator of eq. 6's ratio of expectations.
        standard_error: standard error of ``measured``, by the jackknife over seeds (the
            seeds are independent, so it holds whatever the correlation over iterations).
        tolerance: THEOREM1_TOLERANCE (degrees).
        agrees: |measured - predicted| <= tolerance.
        resolved: THEOREM1_SIGMAS * standard_error <= tolerance: the run is long enough for
            ``agrees`` to mean something (otherwise it only means "consistent with").
        mean_angle: mean per-iteration angle, averaged over iterations and seeds.
        mean_angle_standard_error: its standard error (spread of the per-seed means).
        mean_cosine_angle: degrees(arccos(mean per-iteration cosine)), what the paper's
            "lim E[cos]" reads as; it departs from ``predicted`` when n_eff is small.
        seeds, iters: independent runs and iterations per run.
    """

    preset: str
    lr: float
    n_eff: float
    predicted: float
    measured: float
    standard_error: float
    tolerance: float
    agrees: bool
    resolved: bool
    mean_angle: float
    mean_angle_standard_error: float
    mean_cosine_angle: float
    seeds: int
    iters: int

    @property
    def ratio_of_means(self) -> float:
        """The same as ``measured``."""
        return self.measured

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``measured`` is also given as ``ratio_of_means``)."""
        return {**asdict(self), "ratio_of_means": self.measured}


def ratio_of_means_angle(dot: FloatArray, sq_now: FloatArray, sq_before: FloatArray) -> float:
    """degrees(arccos(sum dot / sqrt(sum sq_now * sum sq_before))), sums over all elements."""
    ratio = float(np.sum(dot)) / (math.sqrt(float(np.sum(sq_now))) * math.sqrt(float(np.sum(sq_before))))
    return math.degrees(math.acos(min(1.0, max(-1.0, ratio))))


def _jackknife_ratio(dot: FloatArray, sq_now: FloatArray, sq_before: FloatArray) -> tuple[float, float]:
    """Ratio-of-means angle over seeds (axis 0, per-seed sums) and its leave-one-seed-out standard error."""
    seeds = dot.shape[0]
    estimate = ratio_of_means_angle(dot, sq_now, sq_before)
    d, q, p = dot.sum(), sq_now.sum(), sq_before.sum()
    leave_out = np.array(
        [ratio_of_means_angle(d - dot[k], q - sq_now[k], p - sq_before[k]) for k in range(seeds)]
    )
    se = math.sqrt((seeds - 1) / seeds * float(np.sum((leave_out - leave_out.mean()) ** 2)))
    return estimate, se


def theorem1_rows(
    model: NoisyQuadratic,
    lrs: Sequence[float] = FIGURE1_LRS,
    seeds: int = 16,
    iters: int = 2000,
    progress: bool = False,
) -> list[Theorem1Row]:
    """Measure the stationary angle of plain SGD at each lr and compare it with eq. 6.

    Runs start from SGD's stationary law, so every iteration counts (the angle at t = 1
    is undefined and skipped). Seeds are independent, so the jackknife over seeds gives
    an honest standard error whatever the autocorrelation over iterations.
    """
    if seeds < 2:
        raise ValueError(f"seeds={seeds!r} is invalid: expected >= 2 (the standard error needs two)")
    traj = simulate(model, lrs, range(seeds), iters, start="stationary", progress=progress)
    angles = traj.angles()[..., 1:]
    cosines = np.cos(np.radians(angles))
    rows = []
    for i, lr in enumerate(traj.lrs):
        per_seed = angles[i].mean(axis=-1)
        dot = traj.dot[i, :, 1:].sum(axis=-1)
        sq_now, sq_before = traj.sq_norm[i, :, 1:].sum(axis=-1), traj.sq_norm[i, :, :-1].sum(axis=-1)
        measured, se = _jackknife_ratio(dot, sq_now, sq_before)
        predicted = theorem1_angle(model, float(lr))
        rows.append(
            Theorem1Row(
                preset=model.name,
                lr=float(lr),
                n_eff=participation_ratio(model, float(lr)),
                predicted=predicted,
                measured=measured,
                standard_error=se,
                tolerance=THEOREM1_TOLERANCE,
                agrees=abs(measured - predicted) <= THEOREM1_TOLERANCE,
                resolved=THEOREM1_SIGMAS * se <= THEOREM1_TOLERANCE,
                mean_angle=float(per_seed.mean()),
                mean_angle_standard_error=float(per_seed.std(ddof=1) / math.sqrt(seeds)),
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
