"""``lrs`` given as text is refused whole (it used to be read character by character)."""

from __future__ import annotations

import autodrop_jax
import jax.numpy as jnp
import pytest

from autodrop_core import ConfigError


@pytest.mark.parametrize(("lrs", "shown"), [("0.1", "lrs='0.1'"), (None, "lrs=None")])
def test_text_lrs_are_refused_whole(lrs: object, shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        autodrop_jax.init({"w": jnp.zeros(3)}, lrs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"{shown} is invalid")


def test_text_min_lr_is_refused_whole() -> None:
    with pytest.raises(ConfigError, match=r"^min_lr='1e-4' is invalid"):
        autodrop_jax.init({"w": jnp.zeros(3)}, 0.1, min_lr="1e-4")
