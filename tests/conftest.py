"""Shared pytest fixtures.

Broker fixtures (real RabbitMQ; helpers live in tests/brokers.py):

* ``system_broker``   -- session: the machine's broker on 127.0.0.1:5672,
  started if needed; the run FAILS (never skips) if it cannot be had.
* ``system_vhost``    -- function: a fresh vhost on the system broker (guest
  has full rights), deleted afterwards.
* ``rabbit_node_factory`` -- function: ``factory() -> RabbitNode`` boots a
  private node (~4-5 s); every node it made is killed and deleted after the test.
* ``session_rabbit_node_factory`` -- the same, but nodes live until the end of
  the session: use it for shared backends in (module/session) fixtures.
* ``rabbit_node``     -- function: one private node, free to kill/stop/restart.

All of these are sync fixtures; they work unchanged with async tests under
pytest-trio's trio_mode.

Import the helpers as ``from tests.brokers import free_port, wait_for, ...``.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Literal

import pytest

from tests.brokers import (
    BrokerError,
    RabbitNode,
    RabbitNodeFactory,
    SystemBroker,
    unique_name,
)
from tests.tls_certs import tls_files

__all__ = ["tls_files"]  # certificates for TLS tests (tests/tls_certs.py)

# --------------------------------------------------------------------------- #
# the compiled frame scanner
# --------------------------------------------------------------------------- #


def pytest_sessionstart(session: pytest.Session) -> None:
    """AMQPROUTER_EXPECT_COMPILED=1 (scripts/compiled_check.py): the run is meant for the
    mypyc-compiled frames module, and stops at once if the pure one was imported."""
    if os.environ.get("AMQPROUTER_EXPECT_COMPILED") != "1":
        return
    from amqprouter.net import engine
    from amqprouter.protocol import frames

    for module in (frames, engine):
        if not module.COMPILED:
            raise pytest.UsageError(
                f"AMQPROUTER_EXPECT_COMPILED=1, but {module.__file__} is the pure module: "
                "put the compiled build first on PYTHONPATH (scripts/compiled_check.py does)"
            )


# --------------------------------------------------------------------------- #
# the data plane: --forwarding engine|tasks
# --------------------------------------------------------------------------- #


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--forwarding",
        choices=("engine", "tasks"),
        default=None,
        help="the routers' data plane for this run (sets AMQPROUTER_FORWARDING, which the "
        "router processes the tests spawn read, and which tests/session/wire.py's "
        "in-process routers follow); default: the environment's, else the router's own "
        "(engine)",
    )


def pytest_configure(config: pytest.Config) -> None:
    forwarding = config.getoption("--forwarding")
    if forwarding is not None:
        os.environ["AMQPROUTER_FORWARDING"] = forwarding


def forwarding() -> Literal["engine", "tasks"]:
    """The data plane in-process routers use in this run (AMQPROUTER_FORWARDING): the
    router's default, the engine, unless the run asks for the pumps."""
    return "tasks" if os.environ.get("AMQPROUTER_FORWARDING") == "tasks" else "engine"


# --------------------------------------------------------------------------- #
# brokers
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def system_broker() -> SystemBroker:
    broker = SystemBroker()
    try:
        broker.ensure_running()
    except BrokerError as exc:
        pytest.fail(f"the machine's RabbitMQ broker is required: {exc}", pytrace=False)
    return broker


@pytest.fixture
def system_vhost(system_broker: SystemBroker) -> Iterator[str]:
    name = unique_name("amqprt-vhost")
    system_broker.add_vhost(name)
    yield name
    system_broker.delete_vhost(name)


@pytest.fixture(scope="session")
def session_rabbit_node_factory() -> Iterator[RabbitNodeFactory]:
    with RabbitNodeFactory() as factory:
        yield factory


@pytest.fixture
def rabbit_node_factory() -> Iterator[RabbitNodeFactory]:
    with RabbitNodeFactory() as factory:
        yield factory


@pytest.fixture
def rabbit_node(rabbit_node_factory: RabbitNodeFactory) -> RabbitNode:
    return rabbit_node_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, append the tails of the test's private nodes' logs to the report."""
    report = yield
    if report.failed and isinstance(item, pytest.Function):
        for fixture in ("rabbit_node_factory", "session_rabbit_node_factory"):
            factory = item.funcargs.get(fixture)
            if isinstance(factory, RabbitNodeFactory):
                for node in factory.nodes:
                    report.sections.append((f"RabbitMQ node {node.name}", node.log_tail(30)))
    return report


# --------------------------------------------------------------------------- #
# the `broker` marker: `pytest -m "not broker"` runs the fast layer, no RabbitMQ
# --------------------------------------------------------------------------- #

#: Fixtures that give a test a real RabbitMQ.
BROKER_FIXTURES = frozenset(
    {
        "system_broker",
        "system_vhost",
        "rabbit_node_factory",
        "session_rabbit_node_factory",
        "rabbit_node",
    }
)
#: Test files (relative to tests/) whose every test talks to a real broker, directly or
#: through a router process; other modules mark themselves with ``pytestmark``.
BROKER_PATHS = ("integration/", "test_examples", "test_brokers.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        relative = item.path.relative_to(root).as_posix()
        uses_broker = BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_broker or relative.startswith(BROKER_PATHS):
            item.add_marker(pytest.mark.broker)


# --------------------------------------------------------------------------- #
# router fixtures (amqprouter instances in front of the brokers above) go here
# --------------------------------------------------------------------------- #
