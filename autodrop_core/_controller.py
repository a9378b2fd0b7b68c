"""A small mutable holder around the pure transition, for callers who prefer objects.

:class:`Controller` keeps one config and the current state, feeds each epoch's two
scalars through :func:`autodrop_core.advance`, and serialises both to one JSON-safe
checkpoint. It adds no rule of its own and never sees a tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autodrop_core._config import AutoDropConfig, show
from autodrop_core._records import AutoDropState, Decision, StateError, initial_state
from autodrop_core._rules import advance, average_weight

__all__ = ["CHECKPOINT_FORMAT", "Controller"]

#: Tag written into every checkpoint so that a foreign JSON file is refused clearly.
CHECKPOINT_FORMAT = "autodrop.checkpoint"


class Controller:
    """The AutoDrop state machine with its state held for you.

    Args:
        config: the configuration.
        state: a state to resume from; the initial state when omitted. It is checked
            against ``config`` as :meth:`from_dict` checks a checkpoint (StateError).

    >>> c = Controller(AutoDropConfig(lrs=(0.1,)))
    >>> c.observe(dot=0.0, sq_norm=1.0).angle is None
    True
    >>> c.state.epoch
    1
    """

    def __init__(self, config: AutoDropConfig, state: AutoDropState | None = None) -> None:
        if not isinstance(config, AutoDropConfig):
            raise TypeError(f"config must be an AutoDropConfig, got {type(config).__name__}")
        if state is not None:
            if not isinstance(state, AutoDropState):
                raise TypeError(f"state must be an AutoDropState, got {type(state).__name__}")
            # The same checks as a loaded checkpoint: a state that cannot happen under this config is refused.
            AutoDropState.from_dict(state.to_dict(), config)
        self._config = config
        self._state = initial_state(config) if state is None else state
        self._last: Decision | None = None

    @property
    def config(self) -> AutoDropConfig:
        """The configuration (immutable)."""
        return self._config

    @property
    def state(self) -> AutoDropState:
        """The state after the last observed epoch (immutable)."""
        return self._state

    @property
    def lrs(self) -> tuple[float, ...]:
        """The lr of each parameter group for the coming epoch."""
        return self._state.lrs

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last observed epoch, None before the first."""
        return self._last

    @property
    def pending_average_weight(self) -> float | None:
        """The weight c the next epoch will absorb x(t) with, when a drop is pending; else None.

        Known before the next epoch's reductions only while a drop is pending (k > 0): then
        the next decision's ``average_weight`` is 2 / (k + 2) whatever the reductions are.
        Otherwise it depends on the trigger and is None. Adapters use it to fuse the
        absorption into the pass that forms the step; the decision stays the authority.
        """
        pending = self._state.pending
        return average_weight(pending + 1) if pending > 0 else None

    def observe(self, dot: float, sq_norm: float) -> Decision:
        """Feed one epoch's reductions; on error nothing changes (see :func:`advance`)."""
        decision, self._state = advance(self._config, self._state, dot, sq_norm)
        self._last = decision
        return decision

    def preview(self, dot: float, sq_norm: float) -> tuple[Decision, AutoDropState]:
        """The decision and state :meth:`observe` would produce, without committing them.

        Adapters call this, apply the decision to their tensors, then :meth:`commit`,
        so that a failure while applying leaves the controller where it was.
        """
        return advance(self._config, self._state, dot, sq_norm)

    def commit(self, decision: Decision, state: AutoDropState) -> None:
        """Adopt a previewed decision and state."""
        self._state = state
        self._last = decision

    def to_dict(self) -> dict[str, Any]:
        """A versioned, JSON-safe checkpoint of the config and the state."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self._config.to_dict(),
            "state": self._state.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Controller:
        """Rebuild a controller from :meth:`to_dict`'s output, validating everything.

        Raises:
            StateError: not an autodrop checkpoint, or a malformed state.
            ConfigError: a malformed configuration.
        """
        if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise StateError(f"not an autodrop checkpoint: format={show(found)}, expected {CHECKPOINT_FORMAT!r}")
        missing = [key for key in ("config", "state") if key not in data]
        if missing:
            raise StateError(f"checkpoint is missing {missing}: expected keys 'format', 'config' and 'state'")
        config = AutoDropConfig.from_dict(data["config"])
        return cls(config, AutoDropState.from_dict(data["state"], config))
