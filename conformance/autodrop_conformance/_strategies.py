"""Hypothesis strategies for conformance cases: configurations, layouts and step trajectories.

Every draw is labelled so that a shrunk failure reads like a recipe. Most trajectories
are built to make the angle saturate (constant, alternating, quarter-turn and steady
rotations, optionally with noise), so that triggers, averaging windows and drops really
happen; a share wanders freely, and any of them may hold zero, repeated or reversed
steps. This module builds data only: it never calls an adapter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

from autodrop_conformance._case import Case
from autodrop_conformance._protocol import Array, Driver, DType, Layout, round_to
from autodrop_core import AutoDropConfig

__all__ = ["MOTIFS", "cases", "configs", "layouts"]

#: How a trajectory's steps are built (see :func:`cases`).
MOTIFS = ("constant", "alternating", "quarter-turns", "rotation", "noisy rotation", "wandering")

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


@st.composite
def configs(draw: st.DrawFn, num_groups: int) -> AutoDropConfig:
    """Configurations over every spec field, per-group lrs and floors included."""
    lr = st.one_of(st.sampled_from([0.1, 0.01, 1.0, 0.3]), st.floats(1e-6, 10.0))
    lrs = tuple(draw(st.lists(lr, min_size=num_groups, max_size=num_groups), label="lrs"))
    min_lr: Any
    if draw(st.booleans(), label="per-group floors"):
        min_lr = tuple(draw(st.lists(st.sampled_from([0.0, 1e-8, 1e-4, 1e-4, 0.05, 1.0]), min_size=num_groups,
                                     max_size=num_groups), label="floors"))
    else:
        min_lr = draw(st.sampled_from([0.0, 1e-8, 1e-4]), label="floor")
    threshold = draw(st.sampled_from([0.01, 0.1, 1.0, 5.0]), label="threshold")
    return AutoDropConfig(
        lrs=lrs,
        min_lr=min_lr,
        drop_factor=draw(st.sampled_from([0.1, 0.25, 0.5, 0.9]), label="drop_factor"),
        threshold=threshold,
        max_threshold=threshold * draw(st.sampled_from([1.0, 4.0, 100.0]), label="max_threshold / threshold"),
        drop_delay=draw(st.integers(1, 6), label="drop_delay"),
        angle_window=draw(st.integers(1, 3), label="angle_window"),
        reset_on_drop=draw(st.booleans(), label="reset_on_drop"),
    )


@st.composite
def layouts(draw: st.DrawFn, dtypes: tuple[DType, ...], few_shapes: bool = False, max_groups: int = 3) -> Layout:
    """1 to 8 tensors (0-d and empty included, at least two elements overall), groups, dtypes."""
    pool = _FEW_SHAPES if few_shapes else _SHAPES
    count = draw(st.integers(1, 3 if few_shapes else 8), label="tensors")
    shapes = list(draw(st.lists(st.sampled_from(pool), min_size=count, max_size=count), label="shapes"))
    if sum(math.prod(s) for s in shapes) < 2:
        shapes[0] = (3,)
    if draw(st.booleans(), label="one dtype for all tensors"):
        chosen = [draw(st.sampled_from(dtypes), label="dtype")] * count
    else:
        chosen = draw(st.lists(st.sampled_from(dtypes), min_size=count, max_size=count), label="dtypes")
    num_groups = draw(st.integers(1, min(max_groups, count)), label="groups")
    rest = draw(st.lists(st.integers(0, num_groups - 1), min_size=count - num_groups,
                         max_size=count - num_groups), label="group of each further tensor")
    return Layout(shapes=tuple(shapes), dtypes=tuple(chosen), groups=tuple(range(num_groups)) + tuple(rest))


def _split(flat: Array, shapes: tuple[tuple[int, ...], ...]) -> tuple[Array, ...]:
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[start:start + size].reshape(shape).copy())
        start += size
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
def _flat_steps(draw: st.DrawFn, size: int, epochs: int) -> tuple[str, list[Array]]:
    # the exact saturating motifs twice as often as the others
    motif = draw(st.sampled_from(MOTIFS[:3] * 2 + MOTIFS[3:]), label="motif")
    u, v = draw(_directions(size))
    radii = [2.0 ** k for k in draw(st.lists(st.integers(-2, 2), min_size=epochs, max_size=epochs), label="radii")]
    if draw(st.booleans(), label="constant radius"):
        radii = [radii[0]] * epochs
    steps: list[Array] = []
    alpha = math.radians(draw(st.floats(5.0, 175.0), label="rotation angle (degrees)"))
    noise = draw(st.sampled_from([1e-6, 1e-4, 1e-2]), label="noise")
    for t, r in enumerate(radii):
        if motif == "constant":
            step = u
        elif motif == "alternating":
            step = u if t % 2 == 0 else -u
        elif motif == "quarter-turns":
            step = (u, v, -u, -v)[t % 4]
        elif motif == "rotation":
            step = math.cos(t * alpha) * u + math.sin(t * alpha) * v
        elif motif == "noisy rotation":
            wobble = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=size, max_size=size), label="noise"))
            step = math.cos(t * alpha) * u + math.sin(t * alpha) * v + noise * wobble
        else:
            step = np.array(draw(st.lists(st.floats(-2.0, 2.0), min_size=size, max_size=size), label="free step"))
        steps.append(r * step)
    for t in draw(st.sets(st.integers(0, epochs - 1), max_size=3), label="epochs with a zero step"):
        steps[t] = np.zeros(size)
    for t in draw(st.sets(st.integers(1, epochs - 1), max_size=2) if epochs > 1 else st.just(set()),
                  label="epochs repeating the last step"):
        steps[t] = steps[t - 1].copy()
    for t in draw(st.sets(st.integers(1, epochs - 1), max_size=2) if epochs > 1 else st.just(set()),
                  label="epochs reversing the last step"):
        steps[t] = -steps[t - 1]
    return motif, steps


@st.composite
def cases(draw: st.DrawFn, driver: Driver, max_epochs: int = 30) -> Case:
    """Whole conformance cases for ``driver``.

    Its ``dtypes`` and ``accumulation`` are respected, and two optional attributes:
    ``few_shapes`` (True: at most 3 tensors from 3 shapes, for frameworks that compile
    per shape) and ``max_groups`` (the most parameter groups the adapter manages).
    """
    few_shapes = bool(getattr(driver, "few_shapes", False))
    layout = draw(layouts(driver.dtypes, few_shapes, int(getattr(driver, "max_groups", 3))))
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
    size = sum(math.prod(s) for s in layout.shapes)
    scales = np.concatenate([np.full(math.prod(s), 2.0 ** (exponent + o)) for s, o in zip(layout.shapes, offsets)])
    if draw(st.integers(0, 3), label="short run (0) or long run") == 0:
        epochs = draw(st.integers(1, max_epochs), label="epochs")
    else:
        epochs = draw(st.integers(min(15, max_epochs), max_epochs), label="epochs")
    start = np.array(draw(st.lists(st.integers(-8, 8), min_size=size, max_size=size), label="initial (grid units)"))
    if draw(st.booleans(), label="off-grid initial values"):
        start = start + np.array(draw(st.lists(st.floats(-0.5, 0.5), min_size=size, max_size=size),
                                      label="initial offsets"))
    motif, flat_steps = draw(_flat_steps(size, epochs))
    initial = tuple(round_to(d, a) for a, d in zip(_split(start * scales * 0.25, layout.shapes), layout.dtypes))
    steps = tuple(_split(s * scales * 0.25, layout.shapes) for s in flat_steps)
    save_at = draw(st.integers(0, epochs), label="save and restore after epoch")
    nan_at = draw(st.integers(1, epochs), label="NaN at epoch")
    return Case(config=config, layout=layout, initial=initial, steps=steps, save_at=save_at, nan_at=nan_at,
                motif=motif)
