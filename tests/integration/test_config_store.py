"""``--config-store``: two routers sharing one configuration through a private Redis.

What these prove: a BACKEND/FARM/MAP change made through one router reaches the other
within a second and routes clients through both; a router started later takes the
stored configuration over its own flags; Redis stopped under load loses no session,
refuses configuration commands with a clear error (never a local-only change), keeps
/readyz at 200 with a body that says so, and when Redis returns empty the store is
re-seeded with the routers' configuration, after which changes flow again; a store
emptied while the routers run is re-seeded.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pika
import pytest

from tests.brokers import SystemBroker, free_port, port_is_open
from tests.integration.test_control_plane import CtlResult, ctl
from tests.redis_server import RedisServer, start_redis
from tests.router import spawn

pytestmark = pytest.mark.broker

WAIT = 20.0
#: The configuration a change through router 1 makes: clients reach RabbitMQ.
CHANGE = [
    "BACKEND ADD rabbit dc1 127.0.0.1 5672",
    "FARM ADD rf round-robin rabbit",
    "MAP DEFAULT rf",
]


@attrs.define
class Router:
    socket: Path
    http_port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ctl(self, line: str) -> CtlResult:
        return ctl(self.socket, *line.split())

    def config(self) -> str:
        return self.ctl("CONFIG PRINT").out

    def readyz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz") as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics") as reply:
            return str(reply.read().decode())

    def store_stat(self) -> dict[str, Any]:
        """STAT's ``configStore``, from one STAT LISTEN json all snapshot (read as a plain
        client reads it: the chunks, no framing)."""
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(WAIT)
            conn.connect(str(self.socket))
            conn.sendall(b"STAT LISTEN json all\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                assert chunk, "the STAT LISTEN stream ended"
                data += chunk
        store = json.loads(data.split(b"\n")[0])["configStore"]
        assert isinstance(store, dict)
        return store

    def session_ids(self) -> list[str]:
        return re.findall(r"^id=(\d+)", self.ctl("CONN").out, re.MULTILINE)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> float:
    """Seconds it took ``predicate`` to hold."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amqprouter-cs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@attrs.define
class Pair:
    port: int
    routers: list[Router]


@pytest.fixture
def pair(workdir: Path, redis: RedisServer, system_broker: SystemBroker) -> Iterator[Pair]:
    # The flags' broker is a closed port: until the shared change, no client is served.
    port = free_port()
    routers = []
    for name in ("r1", "r2"):
        http_port = free_port()
        socket_path = workdir / name
        args = [
            "--listen-port", str(port), "--destination-dns", "127.0.0.1",
            "--destination-port", "1", "--control-socket", str(socket_path),
            "--http-port", str(http_port), "-v", "3", "--config-store", redis.url,
        ]  # fmt: skip
        process = spawn(args, workdir / f"{name}.out", workdir / f"{name}.err")
        router = Router(socket_path, http_port, process, workdir / f"{name}.err")
        wait_for(partial(_listening, socket_path, port), f"{name} to start")
        routers.append(router)
    yield Pair(port, routers)
    for router in routers:
        if router.process.poll() is None:
            router.process.send_signal(signal.SIGTERM)
            router.process.wait(WAIT)


def _listening(socket_path: Path, port: int) -> bool:
    return socket_path.exists() and port_is_open(port)


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1)
    )


def apply_change(router: Router) -> None:
    for line in CHANGE:
        result = router.ctl(line)
        assert result.code == 0, f"{line}: {result}\n{router.stderr}"


def test_a_change_through_one_router_routes_clients_through_both(pair: Pair) -> None:
    first, second = pair.routers
    assert first.config() == second.config()  # the second took the seeded store's
    apply_change(first)
    took = wait_for(lambda: "MAP DEFAULT rf" in second.config(), "the change to reach r2")
    assert took < 1.5
    assert second.config() == first.config()
    clients = [connect(pair.port) for _ in range(16)]
    try:
        for client in clients:
            client.channel().queue_declare("", exclusive=True)
        # Both routers listen on the port (SO_REUSEPORT) and both served clients.
        assert first.session_ids() and second.session_ids()
    finally:
        for client in clients:
            client.close()


def test_redis_away_loses_no_session_and_no_change(pair: Pair, redis: RedisServer) -> None:
    first, second = pair.routers
    apply_change(first)
    wait_for(lambda: "MAP DEFAULT rf" in second.config(), "the change to reach r2")
    clients = [connect(pair.port) for _ in range(8)]
    channels = [client.channel() for client in clients]
    for channel in channels:
        channel.confirm_delivery()
    before = sorted(first.session_ids() + second.session_ids())
    store = first.store_stat()
    assert store["up"] is True and store["version"] >= 1
    assert store["secondsSinceRead"] <= 1.5  # the repair read, once a second
    redis.stop()
    wait_for(lambda: "unreachable" in first.readyz()[1], "r1 to notice")
    # STAT says it too: down, the version still in force, its last read growing old.
    wait_for(lambda: first.store_stat()["up"] is False, "STAT to show the outage")
    assert first.store_stat()["version"] == store["version"]
    wait_for(lambda: first.store_stat()["secondsSinceRead"] > 2, "STAT's last read to age")
    status, body = first.readyz()
    assert status == 200 and "serving the last configuration" in body
    assert "amqprouter_config_store_up 0" in first.metrics()
    refused = first.ctl("MAP BACKEND v1 rabbit")
    assert refused.code == 1 and "Not applied: configuration store" in refused.out
    assert "MAP BACKEND v1" not in first.config()  # never a local-only change
    for channel in channels:  # meanwhile every session forwards
        channel.basic_publish("", "nowhere", b"during the outage")
    redis.start()  # empty: no persistence
    wait_for(lambda: "MAP DEFAULT rf" in redis.cli("HGET", "amqprouter:config", "text"), "reseed")
    wait_for(lambda: second.readyz()[1].strip() == "ok", "r2 to reconnect")
    wait_for(lambda: first.readyz()[1].strip() == "ok", "r1 to reconnect")
    assert "amqprouter_config_store_up 1" in first.metrics()
    assert first.ctl("MAP BACKEND v1 rabbit").code == 0
    wait_for(lambda: "MAP BACKEND v1 rabbit" in second.config(), "the later change to reach r2")
    assert "MAP DEFAULT rf" in second.config()
    assert sorted(first.session_ids() + second.session_ids()) == before
    for channel in channels:
        channel.basic_publish("", "nowhere", b"after the outage")
    for client in clients:
        client.close()
    assert "configuration store unreachable" in first.stderr


def test_an_emptied_store_is_reseeded(pair: Pair, redis: RedisServer) -> None:
    first, second = pair.routers
    apply_change(first)
    wait_for(lambda: "MAP DEFAULT rf" in second.config(), "the change to reach r2")
    version = int(redis.cli("HGET", "amqprouter:config", "version"))
    redis.cli("FLUSHALL")
    wait_for(lambda: "MAP DEFAULT rf" in redis.cli("HGET", "amqprouter:config", "text"), "reseed")
    # Seeded at a version above the one it replaced, and neither router lost anything.
    assert int(redis.cli("HGET", "amqprouter:config", "version")) > version
    assert "MAP DEFAULT rf" in first.config() and "MAP DEFAULT rf" in second.config()


def test_a_bad_command_changes_nothing_anywhere(pair: Pair, redis: RedisServer) -> None:
    first, second = pair.routers
    version = redis.cli("HGET", "amqprouter:config", "version")
    failed = first.ctl("FARM ADD f2 round-robin nosuchbackend")
    assert failed.code == 1
    time.sleep(1.2)
    assert redis.cli("HGET", "amqprouter:config", "version") == version
    assert "f2" not in second.config()


def test_workers_share_the_store_with_other_routers(
    workdir: Path, redis: RedisServer, system_broker: SystemBroker
) -> None:
    port = free_port()
    common = ["--listen-port", str(port), "--destination-dns", "127.0.0.1",
              "--destination-port", "1", "-v", "3", "--config-store", redis.url]  # fmt: skip
    fleet_socket, single_socket = workdir / "fleet", workdir / "single"
    fleet = spawn(
        [*common, "--workers", "2", "--control-socket", str(fleet_socket)],
        workdir / "fleet.out",
        workdir / "fleet.err",
    )
    single = spawn(
        [*common, "--control-socket", str(single_socket)],
        workdir / "single.out",
        workdir / "single.err",
    )
    try:
        wait_for(partial(_listening, fleet_socket, port), "the fleet to start")
        wait_for(partial(_listening, single_socket, port), "the single router to start")

        def everyone() -> list[str]:
            workers = sorted(workdir.glob(".fleet.workers-*/w*.sock"))
            assert len(workers) == 2
            return [ctl(path, "CONFIG PRINT").out for path in [single_socket, *workers]]

        # Through the supervisor: one worker writes it, the other worker and the other
        # router take it from the store.
        for line in CHANGE:
            assert ctl(fleet_socket, *line.split()).code == 0, line
        wait_for(lambda: all("MAP DEFAULT rf" in text for text in everyone()), "fleet change")
        # Through the other router: both workers take it.
        assert ctl(single_socket, "MAP", "BACKEND", "v9", "rabbit").code == 0
        wait_for(lambda: all("MAP BACKEND v9" in text for text in everyone()), "single's change")
        assert len(set(everyone())) == 1
        # Redis away: the supervisor refuses too, and no worker changes.
        redis.stop()
        wait_for(
            lambda: "unreachable" in ctl(fleet_socket, "MAP", "BACKEND", "v8", "rabbit").out,
            "the refusal",
        )
        assert not any("v8" in text for text in everyone())
    finally:
        for process in (fleet, single):
            process.send_signal(signal.SIGTERM)
            process.wait(WAIT)
