"""The adapter's state: a pytree that threads through a JAX training loop and checkpoints.

:class:`AutoDropState` holds the device buffers (snapshot x̂, previous step s, running
average W) and the core state machine's memory. The core state is stored as a small
``uint32`` array carrying the exact bits of its float64 fields, so it survives
``jax.jit`` without ``jax_enable_x64`` and saves and restores bit for bit with orbax;
the configuration is static pytree metadata. This module holds no rule of AutoDrop and
launches no device computation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from autodrop_core import AutoDropConfig, StateError
from autodrop_core import AutoDropState as CoreState
from autodrop_core._calibrated import MAX_HISTORY

__all__ = ["AutoDropState", "decode_core", "encode_core"]

#: Layout version of the encoded core state (bumped when the layout below changes).
#: Layout 1 is the paper trigger's (unchanged, so its checkpoints keep their shape);
#: layout 2, for ``trigger="calibrated"``, appends len(recent) and MAX_HISTORY slots.
CORE_LAYOUT_VERSION = 1
CALIBRATED_LAYOUT_VERSION = 2
_HEADER = 9  # layout version, core version, epoch, pending, theta, prev_sq_norm, has m, m, len(H)
_CONFIG_TAIL = 6  # drop_factor, threshold, max_threshold, drop_delay, angle_window, reset_on_drop


def _calibrated_slots(config: AutoDropConfig) -> int:
    return 1 + MAX_HISTORY if config.trigger == "calibrated" else 0


def _layout_size(config: AutoDropConfig) -> int:
    base = _HEADER + config.angle_window + config.num_groups + 2 * config.num_groups + _CONFIG_TAIL
    return base + _calibrated_slots(config)


def _config_values(config: AutoDropConfig) -> list[float]:
    return [
        *config.lrs,
        *config.floors,
        config.drop_factor,
        config.threshold,
        config.max_threshold,
        float(config.drop_delay),
        float(config.angle_window),
        float(config.reset_on_drop),
    ]


def encode_core(state: CoreState, config: AutoDropConfig) -> np.ndarray:
    """The core state (and a fingerprint of ``config``) as exact float64 bits in ``uint32``.

    The length depends only on ``config`` (``angle_window`` and the number of groups),
    so a restore target built from the same config has the same shape.
    """
    window = [0.0] * config.angle_window
    window[: len(state.angles)] = state.angles
    smoothed = state.prev_smoothed_angle
    calibrated = config.trigger == "calibrated"
    recent: list[float] = []
    if calibrated:
        recent = [float(len(state.recent)), *state.recent, *[0.0] * (MAX_HISTORY - len(state.recent))]
    values = [
        float(CALIBRATED_LAYOUT_VERSION if calibrated else CORE_LAYOUT_VERSION),
        float(state.version),
        float(state.epoch),
        float(state.pending),
        state.theta,
        state.prev_sq_norm,
        0.0 if smoothed is None else 1.0,
        0.0 if smoothed is None else smoothed,
        float(len(state.angles)),
        *window,
        *state.lrs,
        *_config_values(config),
        *recent,
    ]
    bits: np.ndarray = np.asarray(values, dtype="<f8").view("<u4").copy()
    return bits


def decode_core(blob: Any, config: AutoDropConfig) -> CoreState:
    """Inverse of :func:`encode_core`, validated against ``config``.

    Raises:
        StateError: the array has the wrong size or layout version, was written with
            a different configuration, or holds an invalid core state.
    """
    host = jax.device_get(blob) if isinstance(blob, jax.Array) else blob  # restored or jitted states
    bits = np.ascontiguousarray(np.asarray(host), dtype="<u4")
    expected = 2 * _layout_size(config)
    if bits.shape != (expected,):
        raise StateError(
            f"encoded core state has shape {bits.shape}, expected ({expected},) for this configuration "
            f"(angle_window={config.angle_window}, {config.num_groups} group(s))"
        )
    values = bits.view("<f8").tolist()
    layout = CALIBRATED_LAYOUT_VERSION if config.trigger == "calibrated" else CORE_LAYOUT_VERSION
    if values[0] != layout:
        raise StateError(
            f"encoded core layout version={values[0]!r} is not readable: expected {layout} "
            f"for trigger={config.trigger!r}"
        )
    slots = _calibrated_slots(config)
    recent: list[float] = []
    if slots:
        values, tail = values[:-slots], values[-slots:]
        if not (tail[0] == int(tail[0]) and 0 <= tail[0] <= MAX_HISTORY):
            raise StateError(f"encoded core state holds {tail[0]!r} recent angles, expected 0..{MAX_HISTORY}")
        recent = tail[1 : 1 + int(tail[0])]
    window, groups = config.angle_window, config.num_groups
    n_angles = values[8]
    if not (n_angles == int(n_angles) and 0 <= n_angles <= window):
        raise StateError(f"encoded core state holds {n_angles!r} angles, expected 0..{window}")
    lrs = values[_HEADER + window : _HEADER + window + groups]
    saved_config = values[_HEADER + window + groups :]
    if saved_config != _config_values(config):
        raise StateError(
            "the encoded core state was written with a different configuration than the state's "
            f"config ({config}); rebuild the restore target with the configuration of the saved run"
        )
    for name, value in (("epoch", values[2]), ("pending", values[3]), ("version", values[1])):
        if not (math.isfinite(value) and value == int(value)):
            raise StateError(f"encoded core state {name}={value!r} is invalid: expected an integer")
    data = {
        "version": int(values[1]),
        "epoch": int(values[2]),
        "pending": int(values[3]),
        "theta": values[4],
        "prev_sq_norm": values[5],
        "prev_smoothed_angle": values[7] if values[6] else None,
        "angles": values[_HEADER : _HEADER + int(n_angles)],
        "lrs": lrs,
        "recent": recent,
    }
    return CoreState.from_dict(data, config)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AutoDropState:
    """AutoDrop's state for one parameter pytree: thread it through your loop, save it with orbax.

    Build it with :func:`autodrop_jax.init`, advance it with :func:`autodrop_jax.update`.
    All fields but ``config`` are pytree leaves; ``config`` is static metadata, so an
    orbax restore target must be built with the same configuration (a mismatch is
    detected and refused when the state is next used).

    Attributes:
        snapshot: x̂(t-1), the parameters at the start of the current epoch (own buffers,
            parameter dtype, parameter sharding).
        prev_step: s(t-1) in the accumulation dtype (float64 with ``jax_enable_x64``,
            else float32); zeros before the first epoch.
        average: the running average W in the accumulation dtype. Always allocated so
            that the pytree keeps one shape; meaningful only while a drop is pending.
        average_lo: without x64, the low float32 halves of W (W = average + average_lo,
            see :func:`autodrop_jax._programs.absorb`); with x64, 0-d placeholders.
        core: the core state machine's memory, encoded exactly as ``uint32`` (see
            :attr:`core_state` for the decoded record).
        config: the validated :class:`autodrop_core.AutoDropConfig` (static).
    """

    snapshot: Any
    prev_step: Any
    average: Any
    average_lo: Any
    core: Any
    config: AutoDropConfig = dataclasses.field(metadata={"static": True})

    @property
    def core_state(self) -> CoreState:
        """The decoded :class:`autodrop_core.AutoDropState` (epoch, lrs, theta, pending...)."""
        return decode_core(self.core, self.config)

    @property
    def lrs(self) -> tuple[float, ...]:
        """The lr of each parameter group for the coming epoch."""
        return self.core_state.lrs

    @property
    def epoch(self) -> int:
        """Epochs observed so far (0 before the first)."""
        return self.core_state.epoch
