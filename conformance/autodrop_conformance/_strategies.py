"""Hypothesis strategies for conformance cases: configurations, layouts and step trajectories.

Every draw is labelled so that a shrunk failure reads like a recipe. Most trajectories
are built to make the angle saturate (constant, alternating, quarter-turn and steady
rotations, optionally with noise), so that triggers, averaging windows and drops really
happen; a share wanders freely, and any of them may hold zero, repeated or reversed
steps. A share rotates by a fixed angle with a few degrees of jitter for 40 to 80 epochs
(a noisy saturation, what a calibrated trigger is for). Rare configurations are drawn on
purpose, each from a labelled regime: pinned groups (floor at or above the lr), floors
that bind at the first drop, floors that exhaust every drop, ``reset_on_drop``, angle
windows, the calibrated trigger where the core has one, and tensors of the sizes at
which adapters switch code paths (built from a few blocks of equal values, so they stay
cheap to draw and to print). This module builds data only: it never calls an adapter.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

from autodrop_conformance._case import Case
from autodrop_conformance._protocol import Array, Driver, DType, Layout, round_to, size_thresholds
from autodrop_core import DEFAULTS, AutoDropConfig

__all__ = ["MOTIFS", "cases", "configs", "layouts"]

#: How a trajectory's steps are built (see :func:`cases`).
MOTIFS = ("constant", "alternating", "quarter-turns", "rotation", "noisy rotation", "wandering", "jittered rotation")

#: A tensor with more elements than this is built from ``blocks`` runs of equal values.
_BLOCKY = 64
#: The most epochs of a case holding a large tensor (kept cheap).
_LARGE_EPOCHS = 8
#: Epochs of a "jittered rotation" (a noisy saturation a calibrated trigger can detect).
_JITTER_EPOCHS = (40, 80)
#: What the per-group floors of a configuration are built for.
FLOOR_REGIMES = ("one floor", "per-group floors", "pinned group", "binding floors", "exhausting floors")


def _has_trigger() -> bool:
    return any(f.name == "trigger" for f in dataclasses.fields(AutoDropConfig))

_SHAPES: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (3,), (2, 3), (4, 1), (2, 0, 3), (7,))
_FEW_SHAPES: tuple[tuple[int, ...], ...] = ((), (3,), (2, 0))

# Binary exponent range of the per-case scale, by dtype: 2**99 is about 6e29, 2**-99
# about 1.6e-30; float16 keeps well inside 6e-5 .. 65504.
_EXPONENTS: dict[str, tuple[int, int]] = {
    "float64": (-99, 99),
    "float32": (-99, 99),
    "bfloat16": (-99, 99),
    "float16": (-6, 6),
}
# Where an adapter accumulates in float32, squares must stay finite and nonzero.
_FLOAT32_ACCUMULATION = (-40, 40)


def _unit(bound: float) -> st.SearchStrategy[float]:
    """Floats in [-bound, bound] whose magnitude is 0 or at least 2**-16.

    Scaled by the smallest drawn scale (about 1e-30), a float much nearer zero would become
    subnormal in float32, and frameworks that flush subnormals to zero on the CPU (TensorFlow
    does) would then differ from the reference in the values they are handed, not in AutoDrop.
    """
    return st.floats(-bound, bound).map(lambda v: 0.0 if abs(v) < 2.0**-16 else v)


@st.composite
def configs(draw: st.DrawFn, num_groups: int) -> AutoDropConfig:
    """Configurations over every spec field, per-group lrs and floors included.

    The floors follow a labelled regime (:data:`FLOOR_REGIMES`): a pinned group never
    moves, binding floors stop the first drop short of ``rho * lr``, exhausting floors
    make every due drop after the first (or every one) exhausted. The ``trigger`` field
    is drawn only when :class:`AutoDropConfig` has one.
    """
    lr = st.one_of(st.sampled_from([0.1, 0.01, 1.0, 0.3]), st.floats(1e-6, 10.0))
    lrs = tuple(draw(st.lists(lr, min_size=num_groups, max_size=num_groups), label="lrs"))
    rho = draw(st.sampled_from([0.1, 0.25, 0.5, 0.9]), label="drop_factor")
    regime = draw(st.sampled_from(FLOOR_REGIMES[:1] * 2 + FLOOR_REGIMES[1:]), label="floor regime")

    def binding(lr_: float) -> float:  # strictly between rho * lr and lr
        return lr_ * (rho + (1.0 - rho) * draw(st.sampled_from([0.25, 0.5]), label="binding floor position"))

    def pinned(lr_: float) -> float:
        return lr_ * draw(st.sampled_from([1.0, 2.0]), label="pinned floor / lr")

    min_lr: Any
    if regime == "one floor":
        min_lr = draw(st.sampled_from([0.0, 1e-8, 1e-4]), label="floor")
    elif regime == "per-group floors":
        min_lr = tuple(draw(st.lists(st.sampled_from([0.0, 1e-8, 1e-4, 1e-4, 0.05, 1.0]), min_size=num_groups,
                                     max_size=num_groups), label="floors"))
    elif regime == "pinned group":
        floors = [draw(st.sampled_from([0.0, 1e-4]), label="floor of a free group") for _ in lrs]
        which = draw(st.integers(0, num_groups - 1), label="pinned group")
        floors[which] = pinned(lrs[which])
        min_lr = tuple(floors)
    elif regime == "binding floors":
        min_lr = tuple(binding(x) if draw(st.booleans(), label="this floor binds") else 0.0 for x in lrs)
    else:
        every = draw(st.booleans(), label="every drop exhausted (all groups pinned)")
        min_lr = tuple(pinned(x) if every else binding(x) for x in lrs)
    threshold = draw(st.sampled_from([0.01, 0.1, 1.0, 5.0] * 3 + [45.0, 90.0]), label="threshold")
    short = regime == "exhausting floors"
    settings: dict[str, Any] = {
        "lrs": lrs,
        "min_lr": min_lr,
        "drop_factor": rho,
        "threshold": threshold,
        "max_threshold": threshold * draw(st.sampled_from([1.0, 4.0, 100.0]), label="max_threshold / threshold"),
        "drop_delay": draw(st.integers(1, 3 if short else 6), label="drop_delay"),
        "angle_window": draw(st.integers(1, 3), label="angle_window"),
        "reset_on_drop": draw(st.booleans(), label="reset_on_drop"),
    }
    if _has_trigger() and draw(st.sampled_from(("paper", "calibrated")), label="trigger") == "calibrated":
        # the calibrated trigger refuses the settings only the paper's trigger reads
        for name in ("threshold", "max_threshold", "angle_window", "reset_on_drop"):
            settings[name] = DEFAULTS[name]
        settings["trigger"] = "calibrated"
    return AutoDropConfig(**settings)


@st.composite
def layouts(
    draw: st.DrawFn, dtypes: tuple[DType, ...], few_shapes: bool = False, max_groups: int = 3,
    large_sizes: tuple[int, ...] = (),
) -> Layout:
    """1 to 8 tensors (0-d and empty included, at least two elements overall), groups, dtypes.

    With ``large_sizes``, about one layout in eight also holds one or two tensors of those
    element counts (an adapter's size thresholds).
    """
    pool = _FEW_SHAPES if few_shapes else _SHAPES
    count = draw(st.integers(1, 3 if few_shapes else 8), label="tensors")
    shapes = list(draw(st.lists(st.sampled_from(pool), min_size=count, max_size=count), label="shapes"))
    if sum(math.prod(s) for s in shapes) < 2:
        shapes[0] = (3,)
    if large_sizes:
        large = draw(st.sampled_from([0] * 20 + [1, 1, 2]), label="large tensors")
        for _ in range(large):
            size = draw(st.sampled_from(large_sizes), label="large tensor size (a size threshold)")
            at = draw(st.integers(0, len(shapes)), label="position of the large tensor")
            shapes.insert(at, (size,))
        count = len(shapes)
    if draw(st.booleans(), label="one dtype for all tensors"):
        chosen = [draw(st.sampled_from(dtypes), label="dtype")] * count
    else:
        chosen = draw(st.lists(st.sampled_from(dtypes), min_size=count, max_size=count), label="dtypes")
    num_groups = draw(st.integers(1, min(max_groups, count)), label="groups")
    rest = draw(st.lists(st.integers(0, num_groups - 1), min_size=count - num_groups,
                         max_size=count - num_groups), label="group of each further tensor")
    return Layout(shapes=tuple(shapes), dtypes=tuple(chosen), groups=tuple(range(num_groups)) + tuple(rest))


def _logical(shape: tuple[int, ...], blocks: int) -> int:
    size = math.prod(shape)
    return blocks if size > _BLOCKY else size


def _split(flat: Array, shapes: tuple[tuple[int, ...], ...], blocks: int) -> tuple[Array, ...]:
    """Cut ``flat`` into tensors; a large tensor takes ``blocks`` values, each repeated over a run."""
    out, start = [], 0
    for shape in shapes:
        size, n = math.prod(shape), _logical(shape, blocks)
        part = flat[start:start + n]
        if size > _BLOCKY:
            counts = [size // n + (1 if i < size % n else 0) for i in range(n)]
            part = np.repeat(part, counts)
        out.append(part.reshape(shape).copy())
        start += n
    return tuple(out)


@st.composite
def _directions(draw: st.DrawFn, size: int) -> tuple[Array, Array]:
    """Two nonzero vectors on a coarse grid with disjoint supports (so <u, v> = 0 exactly)."""
    cut = draw(st.integers(1, size - 1), label="split of the elements between u and v")
    coarse = st.sampled_from([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    u = np.zeros(size)
    v = np.zeros(size)
    u[:cut] = draw(st.lists(coarse, min_size=cut, max_size=cut), label="u")
    v[cut:] = draw(st.lists(coarse, min_size=size - cut, max_size=size - cut), label="v")
    order = np.array(draw(st.permutations(range(size)), label="element order"))
    return u[order], v[order]


@st.composite
def _flat_steps(draw: st.DrawFn, size: int, epochs: int, motif: str, tie: bool = False) -> list[Array]:
    u, v = draw(_directions(size))
    if draw(st.booleans(), label="constant radius") or motif == "jittered rotation":
        radii = [2.0 ** draw(st.integers(-2, 2), label="radius")] * epochs
    else:
        radii = [2.0 ** k for k in draw(st.lists(st.integers(-2, 2), min_size=epochs, max_size=epochs),
                                        label="radii")]
    steps: list[Array] = []
    alpha = math.radians(draw(st.floats(5.0, 175.0), label="rotation angle (degrees)"))
    noise = draw(st.sampled_from([1e-6, 1e-4, 1e-2]), label="noise")
    phi = 0.0
    if motif == "jittered rotation":
        jitter = draw(st.sampled_from([0.5, 2.0, 5.0]), label="jitter (degrees)")
        # drawn from a seed: 40 to 80 floats would crowd out the rest of the example
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed of the jitter"))
        turns = [alpha + math.radians(jitter * j) for j in rng.uniform(-1.0, 1.0, epochs)]
    for t, r in enumerate(radii):
        if motif == "constant":
            step = u
        elif motif == "alternating":
            step = u if t % 2 == 0 else -u
        elif motif == "quarter-turns":
            step = (u, v, -u, -v)[t % 4]
        elif motif == "rotation":
            step = math.cos(t * alpha) * u + math.sin(t * alpha) * v
        elif motif == "jittered rotation":
            phi += turns[t]
            step = math.cos(phi) * u + math.sin(phi) * v
        elif motif == "noisy rotation":
            wobble = np.array(draw(st.lists(_unit(1.0), min_size=size, max_size=size), label="noise"))
            step = math.cos(t * alpha) * u + math.sin(t * alpha) * v + noise * wobble
        else:
            step = np.array(draw(st.lists(_unit(2.0), min_size=size, max_size=size), label="free step"))
        steps.append(r * step)
    for t in draw(st.sets(st.integers(0, epochs - 1), max_size=3), label="epochs with a zero step"):
        steps[t] = np.zeros(size)
    for t in draw(st.sets(st.integers(1, epochs - 1), max_size=2) if epochs > 1 else st.just(set()),
                  label="epochs repeating the last step"):
        steps[t] = steps[t - 1].copy()
    for t in draw(st.sets(st.integers(1, epochs - 1), max_size=2) if epochs > 1 else st.just(set()),
                  label="epochs reversing the last step"):
        steps[t] = -steps[t - 1]
    if tie:
        # u, then w twice, w a single element of v: angle(2) is 90 and angle(3) is 0 exactly
        # (|w|^2 is a square), so delta(3) is exactly 90 degrees, the threshold of a tie
        w = np.where(np.arange(size) == np.flatnonzero(v)[0], v, 0.0)
        steps[:3] = [u, w, w.copy()]
    return steps


@st.composite
def cases(draw: st.DrawFn, driver: Driver, max_epochs: int = 30) -> Case:
    """Whole conformance cases for ``driver``.

    Its ``dtypes`` and ``accumulation`` are respected, and the optional attributes
    ``few_shapes`` (True: at most 3 tensors from 3 shapes, for frameworks that compile
    per shape), ``max_groups`` (the most parameter groups the adapter manages) and
    ``size_thresholds`` (tensor sizes at which it switches code paths; see
    :func:`autodrop_conformance.size_thresholds`).
    """
    few_shapes = bool(getattr(driver, "few_shapes", False))
    layout = draw(layouts(driver.dtypes, few_shapes, int(getattr(driver, "max_groups", 3)), size_thresholds(driver)))
    large = any(math.prod(s) > _BLOCKY for s in layout.shapes)
    config = draw(configs(max(layout.groups) + 1))
    low = max(_EXPONENTS[d][0] for d in layout.dtypes)
    high = min(_EXPONENTS[d][1] for d in layout.dtypes)
    if driver.accumulation == "float32":
        low, high = max(low, _FLOAT32_ACCUMULATION[0]), min(high, _FLOAT32_ACCUMULATION[1])
    # the extremes of the range (about 1e-30 and 1e30 for most dtypes) are drawn on purpose
    exponent = draw(st.one_of(st.sampled_from([low, high]), st.integers(low, high)),
                    label="binary exponent of the scale")
    offsets = draw(st.lists(st.integers(-2, 2), min_size=len(layout.shapes), max_size=len(layout.shapes)),
                   label="per-tensor exponent offsets")
    blocks = draw(st.integers(2, 9), label="blocks of a large tensor") if large else 1
    size = sum(_logical(s, blocks) for s in layout.shapes)
    scales = np.concatenate([np.full(_logical(s, blocks), 2.0 ** (exponent + o))
                             for s, o in zip(layout.shapes, offsets)])
    # the exact saturating motifs twice as often as the others; long jittered runs only without large tensors
    pool = MOTIFS[:3] * 2 + MOTIFS[3:6] + (() if large else MOTIFS[6:])
    if getattr(config, "trigger", "paper") == "calibrated" and not large:
        pool = pool + MOTIFS[6:] * 4  # it needs 20 angles since a drop: mostly long, noisy saturations
    motif = draw(st.sampled_from(pool), label="motif")
    cap = min(max_epochs, _LARGE_EPOCHS) if large else max_epochs
    if motif == "jittered rotation":
        epochs = draw(st.integers(*_JITTER_EPOCHS), label="epochs")
    elif draw(st.integers(0, 3), label="short run (0) or long run") == 0:
        epochs = draw(st.integers(1, cap), label="epochs")
    else:
        epochs = draw(st.integers(min(15, cap), cap), label="epochs")
    start = np.array(draw(st.lists(st.integers(-8, 8), min_size=size, max_size=size), label="initial (grid units)"))
    if draw(st.booleans(), label="off-grid initial values"):
        start = start + np.array(draw(st.lists(_unit(0.5), min_size=size, max_size=size),
                                      label="initial offsets"))
    paper = getattr(config, "trigger", "paper") == "paper"
    tie = paper and epochs >= 3 and draw(st.integers(0, 11), label="a tie: delta(3) == theta == 90 (0) or not") == 0
    if tie:
        # delta(3) is the first delta only with a window of one angle
        config = dataclasses.replace(config, threshold=90.0, max_threshold=max(90.0, config.max_threshold),
                                     angle_window=1)
    flat_steps = draw(_flat_steps(size, epochs, motif, tie))
    shapes = layout.shapes
    initial = tuple(round_to(d, a) for a, d in zip(_split(start * scales * 0.25, shapes, blocks), layout.dtypes))
    steps = tuple(_split(s * scales * 0.25, shapes, blocks) for s in flat_steps)
    substeps = draw(st.integers(1, 4), label="training steps per epoch (checkpoint check)")
    save_at = draw(st.integers(0, epochs), label="save and restore after epoch")
    save_step = 0
    if substeps > 1 and save_at < epochs:
        save_step = draw(st.integers(0, substeps - 1), label="save after this training step of the next epoch")
    nan_at = draw(st.integers(1, epochs), label="NaN at epoch")
    return Case(config=config, layout=layout, initial=initial, steps=steps, save_at=save_at, nan_at=nan_at,
                save_step=save_step, substeps=substeps, motif=motif)
