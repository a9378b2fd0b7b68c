"""Noisy quadratic model (NQM) simulator in numba: the evidence behind AutoDrop, rerun in seconds.

L(x) = 1/2 (x - c)^T A (x - c), c ~ N(0, Sigma) afresh each iteration (the paper's
Definition 2), trained by SGD, heavy ball or Nesterov in the unified-momentum form.
Many runs (lrs x seeds) go in one parallel call; the noise is counter-based, so a
seed's result does not depend on the thread count. Closed forms (exact expected
dynamics, Theorem 1) check the simulations; ``autodrop nqm`` reproduces Theorem 1 and
Figures 1 and 3. Needs the ``nqm`` extra (numpy, numba, matplotlib, tqdm);
``autodrop_core`` itself never imports this package.

>>> from autodrop_core.nqm import figure1_model, simulate, theorem1_angle
>>> model = figure1_model(n=200)
>>> round(theorem1_angle(model, 0.06), 1)
106.3
"""

from autodrop_core.nqm._experiments import (
    FIGURE1_LRS,
    THEOREM1_SIGMAS,
    THEOREM1_TOLERANCE,
    Theorem1Row,
    figure1_runs,
    ratio_of_means_angle,
    theorem1_rows,
)
from autodrop_core.nqm._figure3 import AutoDropRun, autodrop_run, figure3_lrs
from autodrop_core.nqm._model import (
    PRESETS,
    ZHANG2019_BATCH_SIZE,
    Momentum,
    NoisyQuadratic,
    figure1_model,
    heavy_ball,
    nesterov,
    participation_ratio,
    preset,
    sgd,
    zhang2019_model,
)
from autodrop_core.nqm._oracles import (
    ExpectedDynamics,
    expected_dynamics,
    stationary_second_moment,
    theorem1_angle,
    theorem1_cosine,
)
from autodrop_core.nqm._rng import standard_normals
from autodrop_core.nqm._simulate import NQMRun, Trajectories, simulate, step_angles, window_means

__all__ = [
    "FIGURE1_LRS",
    "PRESETS",
    "THEOREM1_SIGMAS",
    "THEOREM1_TOLERANCE",
    "ZHANG2019_BATCH_SIZE",
    "AutoDropRun",
    "ExpectedDynamics",
    "Momentum",
    "NQMRun",
    "NoisyQuadratic",
    "Theorem1Row",
    "Trajectories",
    "autodrop_run",
    "expected_dynamics",
    "figure1_model",
    "figure1_runs",
    "figure3_lrs",
    "heavy_ball",
    "nesterov",
    "participation_ratio",
    "preset",
    "ratio_of_means_angle",
    "sgd",
    "simulate",
    "standard_normals",
    "stationary_second_moment",
    "step_angles",
    "theorem1_angle",
    "theorem1_cosine",
    "theorem1_rows",
    "window_means",
    "zhang2019_model",
]
