"""The adapter's state: a pytree that threads through a JAX training loop and checkpoints.

:class:`AutoDropState` holds the device buffers (snapshot x̂(t-1), the step's base
x̂(t-2) and, for one epoch after an applied average, its head x(t-1); the running average
W only while a drop is pending) and the core state machine's memory. The core state is stored as a small
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

__all__ = ["AutoDropState", "Buffers", "decode_buffers", "decode_core", "encode_buffers", "encode_core"]

#: Version of the buffer layout, the first entry of :attr:`AutoDropState.layout`. Layout 1
#: (before issue 15) had no ``layout`` leaf and stored s(t-1) explicitly as ``prev_step`` in
#: the accumulation dtype, with W always allocated; such checkpoints are read by
#: :func:`autodrop_jax.from_checkpoint`. Layout 2 stores x̂(t-2) instead of s(t-1).
BUFFERS_LAYOUT_VERSION = 2
#: ``step_head`` kinds: absent (A is the snapshot), x(t-1) after an applied average, or an
#: explicit s(t-1) in the accumulation dtype (only in a state read from a layout-1 checkpoint).
HEAD_IS_SNAPSHOT, HEAD_IS_COPY, HEAD_IS_STEP = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Buffers:
    """Which of the state's optional buffers are real arrays (the others are 0-d placeholders)."""

    base: bool
    head: int
    average: bool


def encode_buffers(buffers: Buffers) -> np.ndarray:
    """The ``layout`` leaf: uint32 [version, base present, head kind, average present]."""
    values = [BUFFERS_LAYOUT_VERSION, int(buffers.base), buffers.head, int(buffers.average)]
    return np.asarray(values, dtype=np.uint32)


def decode_buffers(blob: Any) -> Buffers:
    """Inverse of :func:`encode_buffers`.

    Raises:
        StateError: the leaf has the wrong shape, an unknown version or invalid flags.
    """
    host = jax.device_get(blob) if isinstance(blob, jax.Array) else blob
    values = np.asarray(host).tolist()
    if np.shape(host) != (4,) or values[0] != BUFFERS_LAYOUT_VERSION:
        raise StateError(
            f"the state's buffer layout {values!r} is not readable: expected [{BUFFERS_LAYOUT_VERSION}, base, head, "
            "average]; a state saved before this layout is read with autodrop_jax.from_checkpoint"
        )
    _, base, head, average = values
    if base not in (0, 1) or average not in (0, 1) or head not in (HEAD_IS_SNAPSHOT, HEAD_IS_COPY, HEAD_IS_STEP):
        raise StateError(f"the state's buffer layout {values!r} holds invalid flags")
    if head == HEAD_IS_COPY and not base:
        raise StateError(f"the state's buffer layout {values!r} has a step head without a base")
    if head == HEAD_IS_STEP and base:
        raise StateError(f"the state's buffer layout {values!r} has an explicit step and a base")
    return Buffers(base=bool(base), head=int(head), average=bool(average))

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


#: States this process encoded, by their bits and configuration. Every epoch end decodes the
#: core that the one before encoded; decoding means validating it again (0.1 ms, most of it
#: in :meth:`CoreState.from_dict`), so :func:`decode_core` returns the encoded state itself
#: when the bits are the same bytes (the record is frozen). Holds the last few only.
_ENCODED: dict[tuple[bytes, AutoDropConfig], CoreState] = {}
_ENCODED_MAX = 8


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
    if len(_ENCODED) >= _ENCODED_MAX:
        del _ENCODED[next(iter(_ENCODED))]  # the oldest
    _ENCODED[(bits.tobytes(), config)] = state
    return bits


def decode_core(blob: Any, config: AutoDropConfig) -> CoreState:
    """Inverse of :func:`encode_core`, validated against ``config``.

    Raises:
        StateError: the array has the wrong size or layout version, was written with
            a different configuration, or holds an invalid core state.
    """
    host = jax.device_get(blob) if isinstance(blob, jax.Array) else blob  # restored or jitted states
    bits = np.ascontiguousarray(np.asarray(host), dtype="<u4")
    if bits.ndim == 1:
        known = _ENCODED.get((bits.tobytes(), config))
        if known is not None:  # the same bytes this process encoded from a valid state
            return known
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

    The previous step s(t-1) is not stored: it is formed on the fly, element by element,
    as acc(A) - acc(B) in the accumulation dtype (float64 with ``jax_enable_x64``, else
    float32), which rounds exactly as the stored step of layout 1 did. Absent buffers are
    0-d host placeholders of the same dtype (no device memory), so that the tree's
    structure and dtypes are the same in every phase; ``layout`` says which are real.
    At rest a float32 parameter costs 8 bytes outside an averaging window (S and B),
    16 inside one (plus W), and 12 in the one epoch after an applied average (plus A).

    Attributes:
        snapshot: S = x̂(t-1), the parameters at the start of the current epoch (own
            buffers, parameter dtype, parameter sharding).
        step_base: B = x̂(t-2) (parameter dtype); a placeholder before the first epoch,
            where s(t-1) = 0.
        step_head: A, a placeholder meaning "A is the snapshot", except in the epoch after
            an applied average, where the snapshot is the written average and A is x(t-1)
            as it was before (parameter dtype); in a state read from a layout-1 checkpoint,
            the explicit s(t-1) in the accumulation dtype for one epoch.
        average: the running average W in the accumulation dtype while a drop is pending;
            placeholders otherwise.
        average_lo: without x64 and inside a window, the low float32 halves of W
            (W = average + average_lo, see :func:`autodrop_jax._programs.absorb`);
            placeholders otherwise.
        layout: which buffers are real, as ``uint32`` [version, base, head, average]
            (see :func:`encode_buffers`).
        core: the core state machine's memory, encoded exactly as ``uint32`` (see
            :attr:`core_state` for the decoded record).
        config: the validated :class:`autodrop_core.AutoDropConfig` (static).
    """

    snapshot: Any
    step_base: Any
    step_head: Any
    average: Any
    average_lo: Any
    layout: Any
    core: Any
    config: AutoDropConfig = dataclasses.field(metadata={"static": True})

    @property
    def buffers(self) -> Buffers:
        """Which of ``step_base``, ``step_head`` and ``average`` hold real arrays."""
        return decode_buffers(self.layout)

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
