"""A number given as text reaches the core whole, so the message shows the whole value."""

from __future__ import annotations

import numpy as np
import pytest
from autodrop_numpy import NumpyAutoDrop

from autodrop_core import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lrs": "0.1"}, "lrs='0.1' is invalid"),
        ({"lrs": None}, "lrs=None is invalid"),
        ({"lrs": 0.1, "min_lr": "1e-4"}, "min_lr='1e-4' is invalid"),
    ],
)
def test_text_settings_are_refused_whole(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        NumpyAutoDrop([np.zeros(3)], **kwargs)  # type: ignore[arg-type]


def test_a_numpy_scalar_lr_is_one_group() -> None:
    assert NumpyAutoDrop([np.zeros(3)], lrs=np.float32(0.5)).lrs == (0.5,)
