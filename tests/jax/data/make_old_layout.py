"""Writes the old-layout (layout 1: an explicit ``prev_step``) orbax checkpoints that test_checkpoint reads.

Run it once with the adapter as of commit e06a85e (before issue 15) on the path, from a
checkout of that commit::

    git worktree add /tmp/base e06a85e
    PYTHONPATH=/tmp/base:/tmp/base/adapters python tests/jax/data/make_old_layout.py tests/jax/data/old_layout

For each precision mode (``float32``: jax_enable_x64 off, ``x64``: on) it runs 24 epochs of a
small float32 + bfloat16 pytree and saves ``{"autodrop": state, "params": params}`` after
the last epoch inside the first averaging window that does not apply it, and after the epoch that applies it,
with ``expected.json`` holding the decisions of every epoch and ``trail.npz`` the returned
parameters, so that a resumed run can be compared with the old code's own continuation.
It must not be imported by the tests (it is data generation only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

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
    """A deterministic stand-in for an epoch of training: drift plus noise (the test has the same function)."""
    rng = np.random.default_rng(3000 + epoch)
    return {
        k: (np.asarray(x, np.float64) + 0.05 * (1.0 + 1.0 * rng.standard_normal(x.shape))).astype(x.dtype)
        for k, x in params.items()
    }


def main(out: Path) -> None:
    import autodrop_jax

    for mode, x64 in (("float32", False), ("x64", True)):
        with jax.enable_x64(x64):
            params = start()
            state = autodrop_jax.init(params, 0.1, **SETTINGS)
            decisions, trail, states = [], [], {}
            for epoch in range(EPOCHS):
                params, state, decision = autodrop_jax.update(state, {k: jnp.asarray(v) for k, v in
                                                                      epoch_step(params, epoch).items()})
                decisions.append(decision.to_dict())
                trail.append({k: np.asarray(v) for k, v in params.items()})
                states[epoch] = (state, params)
            applied = [e for e, d in enumerate(decisions) if d["apply_average"]]
            pending = [e for e in range(EPOCHS) if decisions[e]["average_weight"] is not None and e not in applied]
            assert applied and pending, (applied, pending)
            kept = sorted({pending[-1], applied[0]})
            where = out / mode
            where.mkdir(parents=True, exist_ok=True)
            with ocp.StandardCheckpointer() as checkpointer:
                for epoch in kept:
                    state, params = states[epoch]
                    checkpointer.save((where / f"epoch{epoch}").absolute(), {"autodrop": state, "params": params})
                checkpointer.wait_until_finished()
            (where / "expected.json").write_text(json.dumps({"kept": kept, "decisions": decisions}, indent=1))
            flat = {f"{e}/{k}": (v.view(np.uint16) if v.dtype.itemsize == 2 else v)
                    for e, tree in enumerate(trail) for k, v in tree.items()}
            np.savez(where / "trail.npz", **flat)
            print(mode, "kept", kept, "applied", applied)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
