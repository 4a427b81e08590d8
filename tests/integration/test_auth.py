"""AUTH end to end: a router (run as users run it, driven by amqprouter_ctl) in front of
the machine's RabbitMQ, real pika clients, and real HTTP auth services speaking the
real protobuf: the test service (tests/auth_service.py) and examples/auth_service.py.

Whether the broker accepted the credentials is the broker's own answer: a client that
gets Connection.OpenOk and a message round trip through the router was let in by
RabbitMQ with the credentials the router sent it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import commands

from amqprouter.control.auth_commands import ALWAYS_ALLOW_TEXT
from amqprouter.server.authproto import auth_pb2
from amqprouter.session.auth import UNAVAILABLE
from tests.auth_service import AuthServiceForTests, auth_service
from tests.brokers import SystemBroker, free_port
from tests.integration.test_control_plane import (
    WAIT,
    ControlledRouter,
    assert_round_trip,
    log_lines,
    raw_open,
    running_router,
)
from tests.router import REPO

pytestmark = pytest.mark.broker

EXAMPLE = REPO / "examples" / "auth_service.py"
#: The router's --auth-timeout in these tests: the slow service is given up on after it.
AUTH_TIMEOUT = "1"


def _http_text(port: int) -> str:
    return (
        "HTTP Auth service will be used to authn/authz client connections: "
        f"http://127.0.0.1:{port}/auth\n"
    )


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amqprouter-auth-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def router(workdir: Path, system_broker: SystemBroker) -> Iterator[ControlledRouter]:
    with running_router(workdir / "control", "--auth-timeout", AUTH_TIMEOUT) as started:
        started.must("BACKEND ADD rabbit dc1 127.0.0.1", system_broker.port)
        started.must("MAP BACKEND / rabbit")
        started.listen()
        yield started


@pytest.fixture
def service(router: ControlledRouter) -> Iterator[AuthServiceForTests]:
    """The test auth service, installed in the router; ALWAYS_ALLOW again afterwards."""
    with auth_service() as started:
        assert router.must("AUTH SERVICE 127.0.0.1", started.port, "/auth") == _http_text(
            started.port
        )
        try:
            yield started
        finally:
            assert router.must("AUTH ALWAYS_ALLOW") == ALWAYS_ALLOW_TEXT


@pytest.fixture(scope="module")
def example_service() -> Iterator[int]:
    """examples/auth_service.py, run as documented: alice:secret, mapped onto guest."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--port",
            "0",
            "--user",
            "alice:secret",
            "--broker-user",
            "guest:guest",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)/auth\n", first)
        assert match, (first, process.poll())
        yield int(match.group(1))
    finally:
        process.terminate()
        process.wait(WAIT)
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()


def connect(port: int, user: str = "guest", password: str = "guest") -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            port,
            credentials=pika.PlainCredentials(user, password),
            client_properties={"connection_name": f"auth-{user}"},
            heartbeat=0,
            connection_attempts=1,
            socket_timeout=5,
            stack_timeout=WAIT,
        )
    )


def refused(port: int, user: str = "guest", password: str = "guest") -> tuple[int, str]:
    """The (code, text) of the Close that refused a pika client (pika advertises
    authentication_failure_close)."""
    with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
        connect(port, user, password).close()
    # pika quotes the text as repr does: in double quotes when it holds a single one.
    match = re.search(r"\((\d+)\) (['\"])(.*)\2", str(caught.value))
    assert match, str(caught.value)
    return int(match.group(1)), match.group(3)


def test_auth_print_and_errors(router: ControlledRouter) -> None:
    assert router.must("AUTH PRINT") == ALWAYS_ALLOW_TEXT
    assert router.must("AUTH SERVICE 127.0.0.1 8080 /auth") == _http_text(8080)
    assert router.must("AUTH PRINT") == _http_text(8080)
    for line, reply in [
        ("AUTH SERVICE", "No hostname specified.\n"),
        ("AUTH SERVICE h 0 /auth", "Invalid port provided.\n"),
        ("AUTH SERVICE h 80", "No http target specified.\n"),
        (
            "AUTH BOGUS",
            "Unknown subcommand: 'BOGUS'; valid subcommands: SERVICE, ALWAYS_ALLOW, PRINT.\n",
        ),
    ]:
        result = router.ctl(*line.split())
        assert (result.code, result.out) == (1, reply), line
    assert router.must("AUTH PRINT") == _http_text(8080), "a refused command changes nothing"
    assert router.must("AUTH ALWAYS_ALLOW") == ALWAYS_ALLOW_TEXT
    assert router.must("AUTH PRINT") == ALWAYS_ALLOW_TEXT


def test_allow_passes(router: ControlledRouter, service: AuthServiceForTests) -> None:
    connection = connect(router.port)
    try:
        assert_round_trip(connection, b"allowed")
    finally:
        connection.close()
    (received,) = service.received
    assert received.request.vhostName == "/"
    assert received.request.authData.authMechanism == "PLAIN"
    assert received.request.authData.credentials == b"\0guest\0guest"
    assert received.request.connectionName == "auth-guest"
    assert received.request.clientHostname == "127.0.0.1"


def test_deny_is_403_with_the_reason_and_logged(
    router: ControlledRouter, service: AuthServiceForTests
) -> None:
    service.answer = lambda r: auth_pb2.AuthResponse(
        result=auth_pb2.AuthResponse.DENY, reason="tenant suspended"
    )
    assert refused(router.port) == (403, "tenant suspended")
    assert log_lines(
        router, "Disconnecting unauthenticated/unauthorized client, reason: tenant suspended"
    )


def test_credentials_rewritten_by_the_example_service_are_accepted_by_the_broker(
    router: ControlledRouter, system_broker: SystemBroker, example_service: int
) -> None:
    # RabbitMQ itself does not know alice:
    assert refused(system_broker.port, "alice", "secret")[0] == 403
    router.must("AUTH SERVICE 127.0.0.1", example_service, "/auth")
    try:
        connection = connect(router.port, "alice", "secret")
        try:
            assert_round_trip(connection, b"alice as guest")
        finally:
            connection.close()
        assert refused(router.port, "alice", "wrong") == (
            403,
            "unknown user or wrong password for 'alice'",
        )
    finally:
        router.must("AUTH ALWAYS_ALLOW")


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ("down", "failed: ConnectError"),
        ("slow", f"did not answer within {AUTH_TIMEOUT}s"),
        ("garbage", "answered something not an AuthResponse"),
        ("500", "answered HTTP 500"),
    ],
)
def test_a_broken_service_denies_telling_the_client_nothing_of_it(
    router: ControlledRouter, service: AuthServiceForTests, broken: str, says: str
) -> None:
    port = service.port
    if broken == "down":
        port = free_port()
        router.must("AUTH SERVICE 127.0.0.1", port, "/auth")
    elif broken == "slow":
        service.hang = True
    elif broken == "garbage":
        service.answer = lambda r: (200, b"<html>hello</html>")
    else:
        service.answer = lambda r: (
            500,
            auth_pb2.AuthResponse(result=auth_pb2.AuthResponse.ALLOW).SerializeToString(),
        )
    url = f"http://127.0.0.1:{port}/auth"
    # The unauthenticated client learns that the service is unavailable, not where it is
    # nor what went wrong with it...
    assert refused(router.port) == (403, UNAVAILABLE)
    # ...which the log says, in one line with the session's id.
    (line,) = log_lines(router, f"reason: {UNAVAILABLE}", f"auth service {url} {says}")
    assert re.search(r"\bsession=\d+", line), line


def _raw_client_without_capability(port: int) -> Any:
    """A client whose StartOk advertises no capabilities: what it gets after Open
    (None: the socket was closed without a word)."""
    return raw_open(port, "/", {"product": "old-client"})[1]


def test_deny_without_the_capability_closes_the_socket(
    router: ControlledRouter, service: AuthServiceForTests
) -> None:
    assert isinstance(_raw_client_without_capability(router.port), commands.Connection.OpenOk)
    service.answer = lambda r: auth_pb2.AuthResponse(result=auth_pb2.AuthResponse.DENY, reason="no")
    assert _raw_client_without_capability(router.port) is None


def test_config_print_round_trip(workdir: Path, system_broker: SystemBroker) -> None:
    config = workdir / "auth.conf"
    with running_router(workdir / "first") as first:
        first.must("AUTH SERVICE auth.example 8443 /v1/auth")
        text = first.must("CONFIG PRINT")
    assert "AUTH SERVICE auth.example 8443 /v1/auth\n" in text
    config.write_text(text)
    with running_router(workdir / "second", "--config", str(config)) as second:
        assert second.must("AUTH PRINT") == (
            "HTTP Auth service will be used to authn/authz client connections: "
            "http://auth.example:8443/v1/auth\n"
        )
        assert second.must("CONFIG PRINT") == text
        second.must("AUTH ALWAYS_ALLOW")
        assert "AUTH" not in second.must("CONFIG PRINT")


def test_the_router_survived(router: ControlledRouter) -> None:
    with contextlib.closing(connect(router.port)) as connection:
        assert_round_trip(connection, b"still here")
    assert router.process.poll() is None
