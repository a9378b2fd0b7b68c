"""autodrop_numpy: the reference AutoDrop adapter over a list of numpy arrays.

It is deliberately plain: every step is formed element by element in float64, every
reduction is accumulated in float64, and the running average is held in float64.
The conformance suite uses it as its oracle, so it favours obvious correctness over
speed, and it must never take a shortcut another adapter could not reproduce.
"""

from autodrop_core._extras import missing_framework

try:
    from autodrop_numpy._adapter import NumpyAutoDrop, reduce_steps
except ModuleNotFoundError as _err:
    _missing = missing_framework(_err, "autodrop_numpy", "numpy", ("numpy",))
    if _missing is None:
        raise
    raise _missing from _err

__all__ = ["NumpyAutoDrop", "reduce_steps"]
