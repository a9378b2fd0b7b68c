"""The state's buffer layout (issue 15): bytes held at rest, and checkpoints of the old layout.

Layout 2 keeps x̂(t-1) and x̂(t-2) in the parameter dtype and forms s(t-1) on the fly, holds
W only while a drop is pending, and x(t-1) only for the epoch after an applied average. The
decisions and parameters must be bit for bit those of layout 1 (recorded by the adapter at
commit e06a85e in tests/jax/data/old_layout, see make_old_layout.py there), and checkpoints
written in layout 1 must restore and continue exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import autodrop_jax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from autodrop_jax._state import HEAD_IS_COPY, HEAD_IS_SNAPSHOT, HEAD_IS_STEP

DATA = Path(__file__).parent / "data" / "old_layout"
# The same run as make_old_layout.py (kept in step with it by the bit-for-bit test below).
SETTINGS = {"threshold": 0.5, "max_threshold": 4.0, "drop_factor": 0.5, "drop_delay": 3, "min_lr": 0.01}
EPOCHS = 24


def start() -> dict[str, jax.Array]:
    rng = np.random.default_rng(11)
    return {
        "b": jnp.zeros(4, jnp.float32),
        "h": jnp.asarray(rng.standard_normal(6), jnp.bfloat16),
        "w": jnp.asarray(rng.standard_normal((5, 4)), jnp.float32),
    }


def epoch_step(params: dict[str, jax.Array], epoch: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(3000 + epoch)
    return {
        k: jnp.asarray((np.asarray(x, np.float64) + 0.05 * (1.0 + 1.0 * rng.standard_normal(x.shape))).astype(x.dtype))
        for k, x in params.items()
    }


def recorded(x64: bool) -> tuple[list[int], list[dict], list[dict[str, np.ndarray]]]:
    where = DATA / ("x64" if x64 else "float32")
    expected = json.loads((where / "expected.json").read_text())
    like = {k: np.asarray(v) for k, v in start().items()}
    with np.load(where / "trail.npz") as flat:
        trail = [{k: flat[f"{e}/{k}"].view(v.dtype) for k, v in like.items()} for e in range(EPOCHS)]
    return expected["kept"], expected["decisions"], trail


def continue_run(state, params, first: int) -> tuple[list[dict], list[dict[str, np.ndarray]]]:
    decisions, trail = [], []
    for epoch in range(first, EPOCHS):
        params, state, decision = autodrop_jax.update(state, epoch_step(params, epoch))
        decisions.append(decision.to_dict())
        trail.append({k: np.asarray(v) for k, v in params.items()})
    return decisions, trail


def assert_same_trail(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]) -> None:
    assert len(got) == len(want)
    for epoch, (a, b) in enumerate(zip(got, want, strict=True)):
        for k in b:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k].view(np.uint8), b[k].view(np.uint8), err_msg=f"{k} after {epoch}")


def test_decisions_and_parameters_are_bit_for_bit_those_of_the_old_layout(x64):
    _, decisions, trail = recorded(x64)
    params = start()
    got, got_trail = continue_run(autodrop_jax.init(params, 0.1, **SETTINGS), params, 0)
    assert got == decisions  # angles included: the same float64 values, not merely close
    assert_same_trail(got_trail, trail)


def test_old_layout_checkpoints_restore_and_continue_bit_for_bit(x64):
    ocp = pytest.importorskip("orbax.checkpoint")
    kept, decisions, trail = recorded(x64)
    where = DATA / ("x64" if x64 else "float32")
    with ocp.StandardCheckpointer() as checkpointer:
        for epoch in kept:
            raw = checkpointer.restore((where / f"epoch{epoch}").absolute())
            assert "prev_step" in raw["autodrop"]  # really a layout-1 checkpoint
            state = autodrop_jax.from_checkpoint(raw["autodrop"], autodrop_jax.init(start(), 0.1, **SETTINGS))
            assert state.buffers.head == HEAD_IS_STEP and not state.buffers.base
            assert state.buffers.average == (state.core_state.pending > 0)
            params = {k: jnp.asarray(v) for k, v in raw["params"].items()}
            got, got_trail = continue_run(state, params, epoch + 1)
            assert got == decisions[epoch + 1 :], f"resuming the layout-1 checkpoint after epoch {epoch} diverged"
            assert_same_trail(got_trail, trail[epoch + 1 :])


def test_a_layout_2_state_goes_through_from_checkpoint_unchanged(x64):
    params = start()
    state = autodrop_jax.init(params, 0.1, **SETTINGS)
    want_decisions, want_trail = continue_run(state, params, 0)
    for stop in (1, 14, 15, 16):  # first epoch, inside the window, the apply epoch, the one after
        state, params = autodrop_jax.init(start(), 0.1, **SETTINGS), start()
        for epoch in range(stop):
            params, state, _ = autodrop_jax.update(state, epoch_step(params, epoch))
        fields = {name: jax.device_get(getattr(state, name)) for name in
                  ("snapshot", "step_base", "step_head", "average", "average_lo", "layout", "core")}
        copy = autodrop_jax.from_checkpoint(fields, autodrop_jax.init(start(), 0.1, **SETTINGS))
        assert copy.buffers == state.buffers
        got, got_trail = continue_run(copy, params, stop)
        assert got == want_decisions[stop:]
        assert_same_trail(got_trail, want_trail[stop:])


def test_from_checkpoint_refuses_a_mismatched_state_naming_the_field():
    from autodrop_core import StateError

    params = start()
    _, state, _ = autodrop_jax.update(autodrop_jax.init(params, 0.1, **SETTINGS), epoch_step(params, 0))
    _, state, _ = autodrop_jax.update(state, epoch_step(params, 1))
    fields = {name: getattr(state, name) for name in
              ("snapshot", "step_base", "step_head", "average", "average_lo", "layout", "core")}
    bad = {**fields, "step_base": {**fields["step_base"], "w": np.zeros((4, 5), np.float32)}}
    with pytest.raises(StateError, match=r"step_base\['w'\] is float32\[4, 5\], expected float32\[5, 4\]"):
        autodrop_jax.from_checkpoint(bad, autodrop_jax.init(params, 0.1, **SETTINGS))
    with pytest.raises(StateError, match="lacks"):
        autodrop_jax.from_checkpoint({k: v for k, v in fields.items() if k != "layout"}, state)


def device_bytes(tree: object) -> int:
    """Bytes of the unique device buffers among a pytree's jax.Array leaves (host placeholders hold none)."""
    seen: dict[tuple[str, int], int] = {}
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            for shard in leaf.addressable_shards:
                seen[(str(shard.device), shard.data.unsafe_buffer_pointer())] = shard.data.nbytes
    return sum(seen.values())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bytes_at_rest_two_copies_outside_a_window_16_per_float32_inside_three_after_an_average(x64, dtype):
    rng = np.random.default_rng(0)
    shapes = {"w": (64, 50), "v": (1000,)}
    direction = {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}
    params = {k: jnp.zeros(s, dtype) for k, s in shapes.items()}
    n = sum(int(np.prod(s)) for s in shapes.values())
    copy = n * jnp.dtype(dtype).itemsize  # one parameter-dtype copy of the model
    state = autodrop_jax.init(params, 0.1, drop_delay=3, threshold=45.0, max_threshold=90.0)
    assert device_bytes(state) == copy  # x̂(0) only: s(0) = 0 needs no buffer
    seen = {"window": 0, "after": 0, "outside": 0}
    applied = False
    for t in range(1, 16):  # (nearly) constant steps: the angle is about 0, so the rule triggers and drops
        params, state, decision = autodrop_jax.update(state, jax.tree.map(lambda d, t=t: t * d, direction))
        held = device_bytes(state)
        if decision.apply_average:
            assert state.buffers.head == HEAD_IS_COPY
            assert held == 3 * copy, f"epoch {t}: {held / n} B/param after an applied average"
            seen["after"] += 1
            applied = True
            continue
        assert state.buffers.head == HEAD_IS_SNAPSHOT
        if state.core_state.pending > 0:
            assert state.buffers.average
            assert held <= 2 * copy + 8 * n, f"epoch {t}: {held / n} B/param in a window"
            if dtype == "float32":
                assert held <= 16 * n
            seen["window"] += 1
        else:
            assert not state.buffers.average
            assert held <= 2 * copy, f"epoch {t}: {held / n} B/param outside a window"
            seen["outside"] += 1
        if applied:  # the epoch after an applied average returns to two copies (plus W if pending again)
            assert held <= 2 * copy + (8 * n if state.core_state.pending > 0 else 0)
            applied = False
    assert all(count > 0 for count in seen.values()), seen
