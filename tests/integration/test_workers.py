"""``--workers 2`` against the machine's RabbitMQ: a supervisor and two worker processes.

What these prove: clients are served by both workers (SO_REUSEPORT spreads them, CONN
through the one control socket lists both workers' sessions); a configuration command
reaches every worker, and one that fails changes none; a SIGKILLed worker is replaced by
one that holds the configuration of the moment and serves new clients; SESSION reaches
the worker that holds the session; SIGTERM drains every worker's clients with a 320 and
leaves no process behind; a worker above --worker-max-rss is replaced and drained;
SIGUSR2 replaces every worker while clients publishing with confirms lose nothing and
most never notice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pika
import pika.exceptions
import pytest

from amqprouter.fleet.role import SESSION_ID_BITS
from tests.brokers import SystemBroker, free_port, port_is_open
from tests.integration.test_control_plane import ctl
from tests.router import REPO, router_command, spawn

pytestmark = pytest.mark.broker

WAIT = 30.0


@attrs.define
class Fleet:
    socket: Path
    port: int
    http_port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def must(self, *words: str | int) -> str:
        result = ctl(self.socket, *words)
        assert result.code == 0, f"{words}: {result}\n{self.stderr[-3000:]}"
        return result.out

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            page = r.read().decode()
        match = re.search(rf"^{name} (\S+)$", page, re.MULTILINE)
        assert match, page
        return float(match.group(1))

    def worker_pids(self) -> dict[int, int]:
        """serial → pid of the running workers (their command line names both)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--fleet-worker" in words and str(self.socket).encode() in words:
                spec = words[words.index(b"--fleet-worker") + 1].decode()
                found[int(spec.split(":")[0])] = int(entry.name)
        return found

    def worker_sockets(self) -> list[Path]:
        return sorted(self.socket.parent.glob(f".{self.socket.name}.workers-*/w*.sock"))

    def serials_in_conn(self) -> set[int]:
        ids = [int(i) for i in re.findall(r"^id=(\d+)", self.must("CONN"), re.MULTILINE)]
        return {i >> SESSION_ID_BITS for i in ids}

    def wait_until(self, predicate: object, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.stderr}"
            time.sleep(0.1)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amqprouter-fl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_fleet(workdir: Path, *extra: str) -> Fleet:
    port, http_port = free_port(), free_port()
    socket_path = workdir / "control"
    args = [
        "--workers",
        "2",
        "--listen-port",
        str(port),
        "--destination-dns",
        "127.0.0.1",
        "--destination-port",
        "5672",
        "--control-socket",
        str(socket_path),
        "--http-port",
        str(http_port),
        "-v",
        "3",
        *extra,
    ]
    process = spawn(args, workdir / "stdout", workdir / "stderr")
    fleet = Fleet(socket_path, port, http_port, process, workdir / "stderr")
    deadline = time.monotonic() + WAIT
    while not (socket_path.exists() and port_is_open(port)):
        assert process.poll() is None, fleet.stderr
        assert time.monotonic() < deadline, fleet.stderr
        time.sleep(0.05)
    return fleet


@pytest.fixture
def fleet(workdir: Path, system_broker: SystemBroker) -> Iterator[Fleet]:
    started = start_fleet(workdir)
    yield started
    if started.process.poll() is None:
        started.process.send_signal(signal.SIGTERM)
        started.process.wait(WAIT)
    assert not started.worker_pids()


def connect(port: int, vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, vhost, connection_attempts=1)
    )


def test_clients_are_served_by_both_workers(fleet: Fleet) -> None:
    clients = [connect(fleet.port) for _ in range(16)]
    try:
        for client in clients:  # each is forwarded to the broker, whichever worker took it
            client.channel().queue_declare("", exclusive=True)
        # 16 connections all hashed to one of two workers: a 1 in 32768 chance.
        assert fleet.serials_in_conn() == set(fleet.worker_pids())
        assert len(fleet.worker_pids()) == 2
        opened = fleet.metric('amqprouter_sessions_opened_total{worker="1"}') + fleet.metric(
            'amqprouter_sessions_opened_total{worker="2"}'
        )
        assert opened == 16
        assert fleet.metric("amqprouter_workers") == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{fleet.http_port}/", timeout=5) as r:
            assert "2 of 2 workers serving" in r.read().decode()
    finally:
        for client in clients:
            client.close()


def test_configuration_commands_reach_every_worker_or_none(fleet: Fleet) -> None:
    fleet.must("BACKEND ADD b2 dc1 127.0.0.1 5672")
    fleet.must("FARM ADD f2 round-robin b2")
    fleet.must("MAP FARM other f2")
    sockets = fleet.worker_sockets()
    assert len(sockets) == 2
    for path in sockets:  # asked directly, each worker holds the change
        assert "MAP FARM other f2" in ctl(path, "CONFIG PRINT").out
    # A command that fails fails on the first worker, and no other is asked.
    failed = ctl(fleet.socket, "BACKEND ADD b2 dc1 127.0.0.1 5673")
    assert failed.code == 1 and "Failed to insert backend" in failed.out
    for path in sockets:
        assert "BACKEND ADD b2 dc1 127.0.0.1 5672" in ctl(path, "CONFIG PRINT").out
    # Through the supervisor the listings come once, not once per worker.
    assert fleet.must("MAP PRINT").count("other") == 1


def test_a_killed_worker_is_replaced_with_the_configuration_of_the_moment(
    fleet: Fleet,
) -> None:
    fleet.must("BACKEND ADD b2 dc1 127.0.0.1 5672")
    pids = fleet.worker_pids()
    os.kill(pids[1], signal.SIGKILL)
    fleet.wait_until(lambda: set(fleet.worker_pids()) == {2, 3}, "worker 3")
    fleet.wait_until(lambda: len(fleet.worker_sockets()) == 2, "worker 3's socket")
    assert "worker died; replacing it" in fleet.stderr
    assert fleet.metric("amqprouter_worker_restarts_total") == 1
    new_socket = next(p for p in fleet.worker_sockets() if p.name == "w3.sock")
    assert "BACKEND ADD b2 dc1 127.0.0.1 5672" in ctl(new_socket, "CONFIG PRINT").out
    clients = [connect(fleet.port) for _ in range(16)]
    try:
        for client in clients:
            client.channel().queue_declare("", exclusive=True)
        assert fleet.serials_in_conn() == {2, 3}
    finally:
        for client in clients:
            client.close()


def test_session_commands_reach_the_worker_holding_the_session(fleet: Fleet) -> None:
    clients = [connect(fleet.port) for _ in range(8)]
    try:
        for client in clients:
            client.channel()
        ids = [int(i) for i in re.findall(r"^id=(\d+)", fleet.must("CONN"), re.MULTILINE)]
        assert len(ids) == 8
        for session_id in ids:
            fleet.must(f"SESSION {session_id} DISCONNECT_GRACEFUL")
        for client in clients:  # every one of them was closed with a 320, whichever worker
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
                client.process_data_events(time_limit=5)
                client.sleep(5)
            assert closed.value.reply_code == 320
    finally:
        for client in clients:
            if client.is_open:
                client.close()


def test_sigterm_drains_every_worker(fleet: Fleet) -> None:
    clients = [connect(fleet.port) for _ in range(8)]
    for client in clients:
        client.channel()
    assert len(fleet.serials_in_conn()) == 2
    fleet.process.send_signal(signal.SIGTERM)
    for client in clients:
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            client.sleep(10)
        assert closed.value.reply_code == 320
    assert fleet.process.wait(WAIT) == 0
    assert not fleet.worker_pids()
    assert not port_is_open(fleet.port)
    assert not list(fleet.socket.parent.glob(".control.workers-*"))


def test_a_worker_above_its_memory_bound_is_replaced(
    workdir: Path, system_broker: SystemBroker
) -> None:
    # Every worker is above 1 MB: each is replaced, then drains and exits, in turn.
    fleet = start_fleet(workdir, "--worker-max-rss", "1")
    try:
        fleet.wait_until(lambda: "worker retired" in fleet.stderr, "a retired worker")
        assert "above --worker-max-rss 1 MB" in fleet.stderr
        # Meanwhile clients are served: a client that lands on a worker as it begins to
        # drain is closed (a 320) and connects again, as client libraries do.
        for _attempt in range(10):
            try:
                client = connect(fleet.port)
                client.channel().queue_declare("", exclusive=True)
                client.close()
                break
            except pika.exceptions.AMQPError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"no client was served\n{fleet.stderr}")
    finally:
        fleet.process.send_signal(signal.SIGTERM)
        assert fleet.process.wait(WAIT) == 0
    assert not fleet.worker_pids()


def test_workers_refuse_what_they_do_not_honour(workdir: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            router_command(*args),
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
            cwd=REPO,
        )

    control = ["--control-socket", str(workdir / "c")]
    result = run("--workers", "2", *control, "--log-directory", str(workdir))
    assert result.returncode == 2 and "--log-directory is not available" in result.stderr
    result = run("--workers", "2", *control, "--sticky-file", str(workdir / "sticky"))
    assert result.returncode == 2 and "--sticky-file is not available" in result.stderr
    result = run("--worker-max-rss", "100", *control)
    assert result.returncode == 2 and "applies to --workers above 1" in result.stderr
    for value in ("0", "many", "9999"):
        result = run("--workers", value, *control)
        assert result.returncode == 2 and "must be a number from 1 to" in result.stderr


def test_a_restart_loses_no_confirmed_message_and_most_clients_never_notice(
    workdir: Path, system_broker: SystemBroker
) -> None:
    # Old workers keep their sessions for --shutdown-timeout after a SIGUSR2.
    fleet = start_fleet(workdir, "--shutdown-timeout", "4")
    queue = f"restart-{os.getpid()}-{time.monotonic_ns()}"
    setup = connect(fleet.port)
    setup.channel().queue_declare(queue)
    setup.close()
    stop = threading.Event()
    confirmed = [0]
    sessions = [0]
    noticed: list[str] = []

    def short_lived() -> None:
        # Connect, publish three messages with confirms, leave: most sessions end
        # before the old workers' deadline, so a restart is invisible to them.
        while not stop.is_set():
            try:
                client = connect(fleet.port)
                channel = client.channel()
                channel.confirm_delivery()
                for _ in range(3):
                    channel.basic_publish("", queue, b"short", mandatory=True)
                    confirmed[0] += 1
                client.close()
                sessions[0] += 1
            except pika.exceptions.AMQPError as exc:
                noticed.append(repr(exc))
                time.sleep(0.05)

    def long_lived() -> None:
        # One session through the restart: a 320 at the old worker's deadline, then it
        # reconnects and publishes on; only confirmed messages count.
        client = connect(fleet.port)
        channel = client.channel()
        channel.confirm_delivery()
        while not stop.is_set():
            try:
                channel.basic_publish("", queue, b"long", mandatory=True)
                confirmed[0] += 1
                client.sleep(0.02)
            except pika.exceptions.AMQPError as exc:
                noticed.append(f"long-lived: {exc!r}")
                client = connect(fleet.port)
                channel = client.channel()
                channel.confirm_delivery()
        client.close()

    threads = [threading.Thread(target=short_lived) for _ in range(3)]
    threads.append(threading.Thread(target=long_lived))
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        fleet.process.send_signal(signal.SIGUSR2)
        fleet.wait_until(lambda: set(fleet.worker_pids()) == {3, 4}, "the old workers to go")
        assert "restart: new workers serving; the old ones retire" in fleet.stderr
        time.sleep(1.0)  # the new workers serve on
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT)
    check = connect(fleet.port)
    stored = check.channel().queue_declare(queue, passive=True).method.message_count
    check.channel().queue_delete(queue)
    check.close()
    fleet.process.send_signal(signal.SIGTERM)
    assert fleet.process.wait(WAIT) == 0
    # Nothing confirmed is lost (a message the broker took as its connection was closed
    # may be stored unconfirmed: more is allowed, never less).
    assert stored >= confirmed[0], (stored, confirmed[0], noticed)
    # The long-lived session noticed (a 320 at the deadline); of the short-lived
    # sessions, at most a few met a closing listener.
    assert sessions[0] > 20
    short_noticed = [n for n in noticed if not n.startswith("long-lived")]
    assert len(short_noticed) <= max(2, sessions[0] // 20), noticed


def test_workers_drain_when_the_supervisor_is_killed(
    workdir: Path, system_broker: SystemBroker
) -> None:
    fleet = start_fleet(workdir)
    pids = fleet.worker_pids()
    assert len(pids) == 2
    fleet.process.kill()  # SIGKILL: the supervisor stops nobody
    fleet.process.wait(WAIT)
    fleet.wait_until(lambda: not fleet.worker_pids(), "the orphaned workers to exit")
    assert "the supervisor is gone; draining" in fleet.stderr


def test_stat_listen_streams_every_workers_statistics(fleet: Fleet) -> None:
    seen: set[str] = set()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(fleet.socket))
        client.sendall(b"STAT LISTEN json\n")
        received = b""
        deadline = time.monotonic() + WAIT
        while seen != {"1", "2"}:
            assert time.monotonic() < deadline, received[-2000:]
            received += client.recv(65536)
            found = re.findall(rb'^\{"worker": (\d+), ', received, re.MULTILINE)
            seen = {serial.decode() for serial in found}
    # Every line is still one JSON object.
    for line in received.decode().splitlines()[:-1]:
        json.loads(line)


def test_session_trace_streams_from_the_worker_holding_the_session(
    fleet: Fleet, workdir: Path
) -> None:
    """SESSION TRACE and CAPTURE reach the worker whose session it is (a trace streamed
    through the supervisor as it comes); VHOST TRACE is refused, saying why."""
    clients = {
        f"traced-{n}": pika.BlockingConnection(
            pika.ConnectionParameters(
                "127.0.0.1", fleet.port, client_properties={"connection_name": f"traced-{n}"}
            )
        )
        for n in range(8)
    }
    try:
        records = [json.loads(line) for line in fleet.must("--json", "CONN").splitlines()]
        one_each = {r["id"] >> SESSION_ID_BITS: r for r in records}  # a session per worker
        for record in one_each.values():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as reader:
                reader.settimeout(10)
                reader.connect(str(fleet.socket))
                reader.sendall(f"SESSION TRACE {record['id']}\n".encode())
                received = b""
                while b"\n" not in received:
                    received += reader.recv(65536)
                assert received.startswith(f"# trace of session {record['id']}: ".encode())
                clients[record["connectionName"]].channel()
                while b" method Channel.OpenOk " not in received:
                    chunk = reader.recv(65536)
                    assert chunk, received
                    received += chunk
                assert (
                    f" s{record['id']} client>broker ch1 method Channel.Open ".encode() in received
                )
            path = workdir / f"{record['id']}.pcap"
            assert fleet.must("SESSION", "CAPTURE", record["id"], str(path)).startswith(
                f"Capturing session {record['id']} "
            )
            assert path.exists()
        refused = ctl(fleet.socket, "VHOST", "TRACE", "/")
        assert refused.code == 1
        assert refused.out.startswith("VHOST TRACE is not available with --workers; ")
    finally:
        for client in clients.values():
            client.close()
