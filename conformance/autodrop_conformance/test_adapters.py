"""The suite's entry for ``pytest --pyargs autodrop_conformance --autodrop-adapter=NAME``.

It only instantiates :class:`AdapterConformance` for the adapters named on the command
line; without the option its tests skip, saying which adapters are registered.
"""

from autodrop_conformance import AdapterConformance


class TestRegisteredAdapter(AdapterConformance):
    """The conformance tests, parametrised by ``--autodrop-adapter``."""
