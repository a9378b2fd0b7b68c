"""The conformance suite as a pytest class that any adapter's tests can subclass.

Point it at an adapter with ``--autodrop-adapter=NAME`` (see ``_pytest_plugin``), or
subclass :class:`AdapterConformance` in your own tests and set ``driver``. Each test
draws whole cases with Hypothesis and runs one of the checks in ``_check``. It must not
contain any check of its own: what passes here is what ``check_case`` passes.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autodrop_conformance._case import Case
from autodrop_conformance._check import check_against_reference, check_checkpoint, check_nan_step
from autodrop_conformance._protocol import DTYPES, Driver, lr_dtype, size_thresholds
from autodrop_conformance._registry import adapter_names, load_driver
from autodrop_conformance._strategies import cases

__all__ = ["AdapterConformance"]


_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        # the driver fixture is only read; no state lives on the test instance, so one test
        # method running under several adapters (several instances) is safe
        HealthCheck.function_scoped_fixture,
        HealthCheck.differing_executors,
    ],
)


def _draw_case(data: st.DataObject, driver: Driver) -> Case:
    return data.draw(cases(driver), label="case")


class AdapterConformance:
    """Conformance tests for one adapter.

    Subclass it (the subclass's name must start with ``Test``) and either set ``driver``
    to your driver object, or leave it None and run pytest with
    ``--autodrop-adapter=NAME`` to test a
    registered adapter. The number of examples is Hypothesis's (its active profile).
    """

    driver: ClassVar[Driver | None] = None

    @pytest.fixture
    def autodrop_driver(self, request: pytest.FixtureRequest) -> Driver:
        """The driver under test: ``driver``, else the adapter named by ``--autodrop-adapter``."""
        if self.driver is not None:
            return self.driver
        name = getattr(request, "param", None)
        if name is None:
            pytest.skip(
                "no adapter chosen: run pytest with --autodrop-adapter=NAME "
                f"(registered: {adapter_names()})"
            )
        return load_driver(name)  # a requested adapter that does not load is an error, not a skip

    def test_driver_follows_the_protocol(self, autodrop_driver: Driver) -> None:
        assert isinstance(autodrop_driver, Driver)
        assert autodrop_driver.dtypes and set(autodrop_driver.dtypes) <= set(DTYPES)
        assert autodrop_driver.accumulation in ("float64", "float32")
        size_thresholds(autodrop_driver)  # the optional attributes, when declared, are valid
        lr_dtype(autodrop_driver)

    @_SETTINGS
    @given(data=st.data())
    def test_decisions_reductions_and_averages_match_the_reference(
        self, autodrop_driver: Driver, data: st.DataObject
    ) -> None:
        check_against_reference(autodrop_driver, _draw_case(data, autodrop_driver))

    @_SETTINGS
    @given(data=st.data())
    def test_nan_step_is_rejected_like_the_reference_with_state_intact(
        self, autodrop_driver: Driver, data: st.DataObject
    ) -> None:
        check_nan_step(autodrop_driver, _draw_case(data, autodrop_driver))

    @_SETTINGS
    @given(data=st.data())
    def test_restoring_a_checkpoint_reproduces_the_uninterrupted_run(
        self, autodrop_driver: Driver, data: st.DataObject
    ) -> None:
        check_checkpoint(autodrop_driver, _draw_case(data, autodrop_driver))

