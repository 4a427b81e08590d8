"""Statistics end to end: a router process, the real broker, pika, amqprouter_ctl.

Traffic goes through the router to the machine's RabbitMQ; the figures are read the
three ways operators read them (STAT LISTEN over amqprouter_ctl, StatsD datagrams on
a real UDP socket, /metrics over HTTP) and checked against the bytes published.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqprouter.app import EXIT_HTTP_FAILED
from tests.brokers import SystemBroker, free_port
from tests.integration.test_control_plane import (
    CTL,
    WAIT,
    ControlledRouter,
    client,
    running_router,
    workdir,  # noqa: F401 - fixture
)
from tests.router import router_command

MESSAGES = 50
BODY = b"s" * 2000


@pytest.fixture
def router(workdir: Path, system_broker: SystemBroker, system_vhost: str) -> Iterator[Any]:  # noqa: F811
    http_port = free_port()
    args = ("--cleanup-interval-ms", "100", "--http-port", str(http_port))
    with running_router(workdir / "control", *args, "--statsd-prefix", "myrouter") as started:
        started.must("BACKEND ADD sys dc1 127.0.0.1", system_broker.port)
        started.must("MAP BACKEND", system_vhost, "sys")
        started.listen()
        yield started, http_port


class Stream:
    """``amqprouter_ctl <socket> STAT LISTEN ...`` running, its lines in a queue."""

    def __init__(self, router: ControlledRouter, *words: str) -> None:
        self.process = subprocess.Popen(
            [str(CTL), str(router.socket), "STAT", "LISTEN", *words],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.lines: Queue[bytes] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self) -> bytes:
        try:
            return self.lines.get(timeout=WAIT)
        except Empty:
            raise AssertionError("no STAT LISTEN line within the wait") from None

    def interrupt(self) -> int:
        """Ctrl-C, as an operator ends a STAT LISTEN; the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(WAIT)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        self._reader.join(WAIT)
        assert self.process.stdout is not None
        self.process.stdout.close()


def publish(port: int, vhost: str) -> None:
    connection = client(port, vhost, "stats-test")
    channel = connection.channel()
    for _ in range(MESSAGES):
        channel.basic_publish("", "nowhere", BODY)
    connection.close()


def metrics(http_port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=WAIT) as page:
        text = page.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_stat_listen_json_counts_the_published_bytes_and_a_graceful_close(
    router: tuple[ControlledRouter, int], system_vhost: str
) -> None:
    started, http_port = router
    stream = Stream(started, "json", "all")
    try:
        check_stream(stream, started, http_port, system_vhost)
    finally:
        stream.close()


def check_stream(
    stream: Stream, started: ControlledRouter, http_port: int, system_vhost: str
) -> None:
    first = json.loads(stream.next())  # listening before any traffic
    assert first["overall"]["activeConnectionCount"] == 0
    publish(started.port, system_vhost)
    received = sent = 0
    while True:
        chunk = json.loads(stream.next())
        assert list(chunk) == ["overall", "process", "bufferpool", "vhosts", "sources", "backends"]
        stats = chunk["vhosts"].get(system_vhost)
        if stats is None:
            continue
        received += stats["bytesReceived"]
        sent += stats["bytesSent"]
        assert chunk["backends"]["127.0.0.1_5672"] == stats
        assert chunk["sources"]["127.0.0.1"] == stats
        if stats["removedConnectionGraceful"]:
            assert stats["removedConnectionBrokerSnapped"] == 0
            assert stats["removedConnectionClientSnapped"] == 0
            break
    assert chunk["process"]["mem_rss_kb"] > 1000
    assert received >= MESSAGES * len(BODY)
    assert stream.interrupt() == 0
    # /metrics' running totals are the sum of every interval's deltas.
    where = {("vhost", system_vhost), ("backend", "sys")}
    samples = metrics(http_port)
    inbound = frozenset({*where, ("direction", "client_to_broker")})
    outbound = frozenset({*where, ("direction", "broker_to_client")})
    assert samples[("amqprouter_bytes_total", inbound)] == received
    assert samples[("amqprouter_bytes_total", outbound)] == sent
    assert samples[("amqprouter_frames_total", inbound)] >= 3 * MESSAGES
    ended = frozenset({*where, ("reason", "graceful")})
    assert samples[("amqprouter_sessions_ended_total", ended)] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=WAIT) as page:
        assert (page.status, page.read()) == (200, b"ok\n")


def get_page(http_port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=WAIT) as page:
            return page.status, page.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_probes_status_page_and_alerting_metrics_of_a_running_router(
    router: tuple[ControlledRouter, int], system_vhost: str
) -> None:
    """The operator's view: a routed session, a client's made-up vhost, a dead backend."""
    started, http_port = router
    dead_port = free_port()
    started.must("BACKEND ADD dead dc1 127.0.0.1", dead_port)
    started.must("MAP BACKEND to-the-dead dead")
    publish(started.port, system_vhost)
    made_up = "made-up<b>by a client"
    for vhost in (made_up, "to-the-dead"):
        with pytest.raises(pika.exceptions.AMQPError):
            client(started.port, vhost, "refused").close()
    # The collector's totals move once per interval: wait for the refusals to show.
    handshake_ended = [("amqprouter_sessions_ended_total", ("reason", "handshake"))]
    deadline = time.monotonic() + WAIT
    while True:
        samples = metrics(http_port)
        ended = sum(
            value
            for (name, labels), value in samples.items()
            for wanted, label in handshake_ended
            if name == wanted and label in labels
        )
        if ended >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert samples[("amqprouter_sessions_opened_total", frozenset())] == 1
    closed = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "amqprouter_sessions_closed_total"
    }
    assert closed == {"client": 1, "broker": 0, "operator": 0, "error": 0, "shutdown": 0}
    refused = frozenset({("backend", "dead"), ("reason", "refused")})
    assert samples[("amqprouter_backend_connect_failures_total", refused)] >= 1
    assert samples[("amqprouter_connect_seconds_count", frozenset({("backend", "sys")}))] == 1
    assert samples[("amqprouter_handshake_seconds_count", frozenset())] == 3
    # No series for the made-up vhost: every vhost label is routed, mapped, or the bucket.
    vhosts = {
        dict(labels)["vhost"]
        for (_name, labels), _value in samples.items()
        if "vhost" in dict(labels)
    }
    assert vhosts <= {system_vhost, "to-the-dead", "", "__other__"}
    assert "__other__" in vhosts
    assert abs(samples[("process_start_time_seconds", frozenset())] - time.time()) < 120
    assert samples[("process_open_fds", frozenset())] > 3
    assert get_page(http_port, "/livez") == (200, "ok\n")
    assert get_page(http_port, "/readyz") == (200, "ok\n")
    status, page = get_page(http_port, "/")
    assert status == 200 and "<td>sys</td>" in page and "<td>dead</td>" in page
    assert "made-up&lt;b&gt;by a client" not in page, "no traffic: not a top vhost"
    # Every backend down or disabled: not ready, still live.
    started.must("BACKEND DISABLE sys")
    started.must("BACKEND DISABLE dead")
    assert get_page(http_port, "/readyz") == (503, "every backend is disabled\n")
    assert get_page(http_port, "/healthz") == (503, "every backend is disabled\n")
    assert get_page(http_port, "/livez") == (200, "ok\n")


def test_stat_send_statsd_lines_with_the_configured_prefix(
    router: tuple[ControlledRouter, int], system_vhost: str
) -> None:
    started, _http_port = router
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(WAIT)
    port = receiver.getsockname()[1]
    try:
        assert started.must("STAT SEND localhost", port) == f"Sending stats on localhost:{port}\n"
        connection = client(started.port, system_vhost, "statsd-test")
        try:
            active = re.compile(
                rb"myrouter\.activeConnectionCount,rmqEndpointType=vhost,"
                + rf"rmqVhostName={re.escape(system_vhost)}:1\|g".encode()
            )
            seen: list[bytes] = []
            while not any(active.fullmatch(line) for line in seen):
                seen.append(receiver.recv(65536))
                assert len(seen) < 10_000, "no activeConnectionCount line for the vhost"
        finally:
            connection.close()
        assert any(
            re.fullmatch(rb"myrouter\.pausedConnectionCount,rmqEndpointType=overall:[0-9]+\|g", x)
            for x in seen
        )
        assert started.must("STAT STOP SEND") == "Stopped sending stats.\n"
    finally:
        receiver.close()


def test_stat_errors_through_amqprouter_ctl(router: tuple[ControlledRouter, int]) -> None:
    started, _http_port = router
    result = started.ctl("STAT LISTEN yaml")
    assert (result.code, result.out) == (1, "json or human must be the type of output\n")
    result = started.ctl("STAT SEND no-such-host.invalid 8125")
    assert result.code == 1 and result.out.startswith("Failed to resolve 'no-such-host.invalid'")
    assert started.must("STAT ENABLE per-source") == "ENABLE per-source applied.\n"
    # The control loop lives on.
    assert "STAT (DISABLE|ENABLE) per-source" in started.must("HELP")


def test_healthz_503_without_a_listener(workdir: Path) -> None:  # noqa: F811
    http_port = free_port()
    with running_router(workdir / "control", "--http-port", str(http_port)):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=WAIT)
        assert error.value.code == 503
        assert error.value.read() == b"no listener\n"


def test_http_port_in_use_is_a_clear_error(workdir: Path) -> None:  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            router_command(
                "--control-socket",
                str(workdir / "control"),
                "--log-directory",
                str(workdir / "logs"),
                "--http-port",
                str(port),
            ),
            capture_output=True,
            text=True,
            timeout=WAIT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert result.returncode == EXIT_HTTP_FAILED
    assert f"Cannot serve HTTP on port {port}: Address already in use" in result.stderr
