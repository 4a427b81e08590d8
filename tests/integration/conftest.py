"""Routers in front of real brokers, started as users start them (a subprocess)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import SYSTEM_PORT, SystemBroker
from tests.router import RouterProcess, running_router


@pytest.fixture(scope="module")
def system_router(system_broker: SystemBroker) -> Iterator[RouterProcess]:
    """One router in simple mode in front of the machine's broker, shared by a module."""
    with running_router(SYSTEM_PORT) as router:
        yield router
