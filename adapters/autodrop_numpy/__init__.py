"""autodrop_numpy: the reference AutoDrop adapter over a list of numpy arrays.

It is deliberately plain: every step is formed element by element in float64, every
reduction is accumulated in float64, and the running average is held in float64.
The conformance suite uses it as its oracle, so it favours obvious correctness over
speed, and it must never take a shortcut another adapter could not reproduce.
"""

from autodrop_numpy._adapter import NumpyAutoDrop, reduce_steps

__all__ = ["NumpyAutoDrop", "reduce_steps"]
