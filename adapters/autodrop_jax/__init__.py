"""autodrop_jax: AutoDrop as a functional, pytree-valued state for JAX, optax and flax.

Thread an :class:`AutoDropState` through your training loop: :func:`init` before
training, :func:`update` after each epoch, and write the returned ``decision.lrs``
into an ``optax.inject_hyperparams`` optimizer state with :func:`set_learning_rates`
(or do both for a flax ``TrainState`` with :func:`update_train_state`). Reductions
run on the device in one jitted program; the decision is the core's, on the host.
The state is a pytree of arrays that orbax saves exactly; :func:`from_checkpoint` reads it back.

>>> import jax.numpy as jnp, autodrop_jax
>>> state = autodrop_jax.init({"w": jnp.zeros(3)}, lrs=0.1, drop_delay=2)
>>> params, state, decision = autodrop_jax.update(state, {"w": jnp.ones(3)})
>>> decision.epoch, decision.angle, state.lrs
(1, None, (0.1,))
"""

from autodrop_core._extras import missing_framework

try:
    from autodrop_jax._api import accumulation_dtype, from_checkpoint, init, step_reductions, update
    from autodrop_jax._extras import ExtrasAverage, init_extras, update_extras
    from autodrop_jax._log import log_scalars
    from autodrop_jax._optax import check_learning_rates, learning_rates, set_learning_rates, update_train_state
    from autodrop_jax._state import AutoDropState
except ModuleNotFoundError as _err:
    _missing = missing_framework(_err, "autodrop_jax", "jax", ("jax", "jaxlib", "optax", "numpy"))
    if _missing is None:
        raise
    raise _missing from _err

__all__ = [
    "AutoDropState",
    "ExtrasAverage",
    "accumulation_dtype",
    "check_learning_rates",
    "from_checkpoint",
    "init",
    "init_extras",
    "learning_rates",
    "log_scalars",
    "set_learning_rates",
    "step_reductions",
    "update",
    "update_extras",
    "update_train_state",
]
