"""The JAX adapter's logging hook: a decision and its state as a flat dict of finite floats.

It only calls :func:`autodrop_core.log_scalars` with the pending count read from the
AutoDrop state; it must not apply any AutoDrop rule.
"""

from __future__ import annotations

from autodrop_core import Decision
from autodrop_core import log_scalars as _core_log_scalars
from autodrop_jax._state import AutoDropState

__all__ = ["log_scalars"]


def log_scalars(decision: Decision, state: AutoDropState | None = None) -> dict[str, float]:
    """``autodrop/angle``, ``autodrop/delta``, ``autodrop/lr_0``, ... of one epoch, undefined ones left out.

    With ``state`` (the state :func:`autodrop_jax.update` returned with ``decision``) the
    dict also holds ``autodrop/pending``.
    """
    pending = None if state is None else state.core_state.pending
    return _core_log_scalars(decision, pending=pending)
