"""Keep the demo tests' generated-data cache inside pytest's temporary folder, never in the user's home."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_data_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("autodrop-cache")
    before = os.environ.get("AUTODROP_CACHE")
    os.environ["AUTODROP_CACHE"] = str(folder)  # inherited by the benchmark's spawned workers
    yield
    if before is None:
        del os.environ["AUTODROP_CACHE"]
    else:
        os.environ["AUTODROP_CACHE"] = before
