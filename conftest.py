"""Test order for parallel runs (`make test` runs pytest-xdist workers): the longest tests
first, so that the workers do not wait on a whole-frame simulation at the end. The two
whole frames (sim/test_frame.py, minutes each), then the other Verilator testbenches
(sim/), then tests/; within each, the collection order."""

from __future__ import annotations

import pytest


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return 0 if path.endswith("sim/test_frame.py") else 1 if path.startswith("sim/") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)
