"""autodrop_core: the AutoDrop decision rules as a pure state machine.

Feed it two scalars per epoch, the inner product of the last two parameter steps and
the squared norm of the last step, and it says when to average the parameters and
when to drop the learning rate (Teng, Wang, Choromanska, "AutoDrop", UAI 2024).

This package imports nothing outside the Python standard library and never sees a
tensor; framework adapters compute the reductions and apply the decisions.
"""

from autodrop_core._config import DEFAULTS, TRIGGERS, AutoDropConfig, ConfigError
from autodrop_core._controller import CHECKPOINT_FORMAT, Controller
from autodrop_core._history import DEFAULT_HISTORY_SIZE, DecisionHistory
from autodrop_core._log import LOG_PREFIX, log_scalars
from autodrop_core._ownership import LRConflictError, check_lrs_unchanged
from autodrop_core._records import (
    STATE_FORMAT_VERSION,
    AutoDropState,
    Decision,
    StateError,
    initial_state,
)
from autodrop_core._rules import InvalidReductionError, advance, step_angle

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULTS",
    "DEFAULT_HISTORY_SIZE",
    "LOG_PREFIX",
    "STATE_FORMAT_VERSION",
    "TRIGGERS",
    "AutoDropConfig",
    "AutoDropState",
    "ConfigError",
    "Controller",
    "Decision",
    "DecisionHistory",
    "InvalidReductionError",
    "LRConflictError",
    "StateError",
    "advance",
    "check_lrs_unchanged",
    "initial_state",
    "log_scalars",
    "step_angle",
]

__version__ = "0.1.0"
