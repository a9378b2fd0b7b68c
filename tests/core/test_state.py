"""The state record: immutable, JSON-safe, versioned, and exact through a round trip."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from autodrop_core import (
    CHECKPOINT_FORMAT,
    STATE_FORMAT_VERSION,
    AutoDropConfig,
    AutoDropState,
    Controller,
    StateError,
    initial_state,
)

CONFIG = AutoDropConfig(lrs=(0.3, 0.1), drop_delay=4, angle_window=3)


def busy_state() -> AutoDropState:
    controller = Controller(CONFIG)
    for dot in (0.1, 0.1, 0.1234567890123, 0.1234567890123, 0.1234567890123, 0.1234567890123):
        controller.observe(dot, 1.0 / 3.0)
    return controller.state


def test_state_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        busy_state().epoch = 3  # type: ignore[misc]


def test_state_carries_its_format_version() -> None:
    assert busy_state().to_dict()["version"] == STATE_FORMAT_VERSION


def test_state_round_trips_exactly_through_json_text() -> None:
    state = busy_state()
    assert state.pending > 0 and len(state.angles) == 3  # a state with everything filled in
    assert AutoDropState.from_dict(json.loads(json.dumps(state.to_dict())), CONFIG) == state


def test_checkpoint_names_its_format() -> None:
    assert Controller(CONFIG).to_dict()["format"] == CHECKPOINT_FORMAT


def test_unknown_version_is_refused_clearly() -> None:
    data = busy_state().to_dict() | {"version": STATE_FORMAT_VERSION + 1}
    with pytest.raises(StateError, match=rf"version={STATE_FORMAT_VERSION + 1} is not readable"):
        AutoDropState.from_dict(data, CONFIG)


@pytest.mark.parametrize(
    ("field", "value"),
    [("epoch", -1), ("pending", 4), ("lrs", [0.1]), ("theta", 2.0), ("prev_sq_norm", -1.0),
     ("angles", [1.0, 2.0, 3.0, 4.0]), ("prev_smoothed_angle", "x"), ("epoch", True)],
)
def test_malformed_state_is_refused_naming_the_field(field: str, value: object) -> None:
    data = busy_state().to_dict() | {field: value}
    with pytest.raises(StateError, match=field):
        AutoDropState.from_dict(data, CONFIG)


def test_missing_and_unknown_fields_are_refused() -> None:
    data = busy_state().to_dict()
    del data["theta"]
    data["extra"] = 1
    with pytest.raises(StateError, match=r"missing \['theta'\], unknown \['extra'\]"):
        AutoDropState.from_dict(data, CONFIG)


def test_foreign_json_is_not_taken_for_a_checkpoint() -> None:
    with pytest.raises(StateError, match="not an autodrop checkpoint"):
        Controller.from_dict({"config": {}, "state": {}})


def test_initial_state_starts_at_epoch_zero_with_theta_at_threshold() -> None:
    state = initial_state(CONFIG)
    assert (state.epoch, state.theta, state.prev_sq_norm, state.angles, state.pending) == (0, 0.01, 0.0, (), 0)
    assert state.lrs == CONFIG.lrs


def test_importing_the_core_loads_no_third_party_module() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import autodrop_core, autodrop_core._cli, autodrop_core._replay\n"
        "new_roots = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "foreign = new_roots - set(sys.stdlib_module_names) - {'autodrop_core'}\n"
        "heavy = {'numpy', 'numba', 'torch', 'jax', 'tensorflow', 'keras', 'optax', 'scipy'} & set(sys.modules)\n"
        "print(sorted(r for r in foreign if not r.startswith('_')), sorted(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] []"
