"""SESSION TRACE, SESSION CAPTURE and VHOST TRACE end to end: a router run as users run it,
real pika clients, the real broker, amqprouter_ctl, and Debian's tshark reading the
captures (scripts/setup.sh installs it; a missing tshark FAILS these tests).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dpkt
import pika
import pytest

from tests.brokers import SYSTEM_PORT, SystemBroker, free_port, wait_for
from tests.integration.test_tls import ctl, must
from tests.router import RouterProcess, running_router
from tests.tls_certs import TlsFiles

CTL = Path(sys.executable).parent / "amqprouter_ctl"
WAIT = 15.0
SECRET_BODY = b"the body a trace must not show"
PASSWORD = "guest"  # the system broker's; it must appear in no trace or capture


def control(router: RouterProcess) -> str:
    return str(router.stdout_path.parent / "control")


def session_of(router: RouterProcess, name: str) -> int:
    """The id of the session whose client named itself ``name``."""

    def find() -> int | None:
        for line in must(router, "--json", "CONN").splitlines():
            record = json.loads(line)
            if record["connectionName"] == name and record["egressRemote"]["port"]:
                return int(record["id"])
        return None

    wait_for(lambda: find() is not None, timeout=WAIT, what=f"the session of {name}")
    found = find()
    assert found is not None
    return found


def params(port: int, name: str, **extra: object) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=pika.PlainCredentials("guest", PASSWORD),
        client_properties={"connection_name": name},
        heartbeat=0,
        blocked_connection_timeout=WAIT,
        socket_timeout=WAIT,
        stack_timeout=WAIT,
        **extra,
    )


#: What ``talk`` sends, in order (the client's methods a trace and a capture must show).
SENT = [
    "Channel.Open",
    "Exchange.Declare",
    "Queue.Declare",
    "Queue.Bind",
    "Basic.Publish",
    "Channel.Close",
    "Connection.Close",
]


def talk(connection: pika.BlockingConnection, tag: str) -> None:
    """The methods of ``SENT``, then the connection closed."""
    channel = connection.channel()
    channel.exchange_declare(f"trace-ex-{tag}", "direct", auto_delete=True)
    channel.queue_declare(f"trace-q-{tag}", exclusive=True)
    channel.queue_bind(f"trace-q-{tag}", f"trace-ex-{tag}", routing_key=f"rk-{tag}")
    channel.basic_publish(
        f"trace-ex-{tag}",
        f"rk-{tag}",
        SECRET_BODY,
        pika.BasicProperties(content_type="text/plain", headers={"h": 1}),
    )
    channel.close()
    connection.close()


@contextmanager
def streaming(router: RouterProcess, *words: object, as_json: bool = False) -> Iterator[Stream]:
    flags = ["--json"] if as_json else []
    with subprocess.Popen(
        [str(CTL), *flags, control(router), *map(str, words)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as process:
        try:
            yield Stream(process, router)
        finally:
            process.kill()


class Stream:
    """A streaming amqprouter_ctl's output, line by line, each wait bounded. Read from
    the pipe's descriptor into our own buffer: select() says nothing of lines a file
    object already buffered."""

    def __init__(self, process: subprocess.Popen[bytes], router: RouterProcess) -> None:
        self.process = process
        self.router = router
        self.buffer = b""

    def line(self) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + WAIT
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no trace line within the wait:\n{self.router.stderr[-4000:]}"
            chunk = os.read(fd, 65536)
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest.decode()
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode() + "\n"

    def until(self, needle: str) -> list[str]:
        """Lines up to and with the first that holds ``needle``."""
        lines: list[str] = []
        while True:
            line = self.line()
            assert line, f"the stream ended before {needle!r}: {lines}"
            lines.append(line)
            if needle in line:
                return lines


@pytest.fixture(scope="module")
def router(system_broker: SystemBroker) -> Iterator[RouterProcess]:
    with running_router(SYSTEM_PORT) as process:
        yield process


def methods_of(lines: list[str], direction: str) -> list[str]:
    return [
        line.split()[5]
        for line in lines
        if not line.startswith("#") and f" {direction} " in line and " method " in line
    ]


def test_a_session_trace_shows_each_frame_and_never_a_body_or_a_password(
    router: RouterProcess,
) -> None:
    connection = pika.BlockingConnection(params(router.port, "traced-human"))
    sid = session_of(router, "traced-human")
    with streaming(router, "SESSION", "TRACE", sid) as stream:
        head = stream.line()
        assert head.startswith(f"# trace of session {sid}: at most 60s and 1000 lines/s")
        talk(connection, "human")
        lines = stream.until("stopped")
    text = "".join(lines)
    assert methods_of(lines, "client>broker") == SENT
    assert "Channel.OpenOk" in methods_of(lines, "broker>client")
    publish = next(line for line in lines if " Basic.Publish " in line)
    assert "exchange='trace-ex-human'" in publish and "routing_key='rk-human'" in publish
    header = next(line for line in lines if " header " in line)
    assert "properties=content_type,headers" in header
    assert f"body_size={len(SECRET_BODY)}" in header
    assert f" s{sid} client>broker ch1 body size={len(SECRET_BODY) + 8}" in text
    assert SECRET_BODY.decode() not in text and "body=" not in text
    assert PASSWORD not in text.replace("guest-", "")
    assert lines[-1].startswith(f"# trace of session {sid} stopped: session {sid} ended; ")


def test_a_json_trace_with_bodies_says_so_and_shows_their_first_bytes(
    router: RouterProcess,
) -> None:
    connection = pika.BlockingConnection(params(router.port, "traced-json"))
    sid = session_of(router, "traced-json")
    with streaming(router, "SESSION", "TRACE", sid, "BODIES", 8, as_json=True) as stream:
        head = json.loads(stream.line())
        assert head == {
            "event": "traceStarted",
            "trace": f"session {sid}",
            "seconds": 60.0,
            "rate": 1000,
            "bodies": 8,
        }
        talk(connection, "json")
        records = [json.loads(line) for line in stream.until("traceStopped")]
    sent = [r["method"] for r in records if r.get("direction") == "client>broker" and "method" in r]
    assert sent == SENT
    publish = next(r for r in records if r.get("method") == "Basic.Publish")
    assert (publish["exchange"], publish["routingKey"]) == ("trace-ex-json", "rk-json")
    body = next(r for r in records if r.get("frameType") == "body")
    assert bytes.fromhex(body["bodyHex"]) == SECRET_BODY[:8]
    assert records[-1]["event"] == "traceStopped" and records[-1]["dropped"] == 0
    wait_for(
        lambda: "trace shows message bodies" in router.stderr, timeout=WAIT, what="the warning"
    )


def test_a_vhost_trace_follows_sessions_opened_after_it_and_off_ends_it(
    router: RouterProcess,
) -> None:
    with streaming(router, "VHOST", "TRACE", "/") as stream:
        assert stream.line().startswith("# trace of vhost /:")
        connection = pika.BlockingConnection(params(router.port, "traced-vhost"))
        sid = session_of(router, "traced-vhost")
        talk(connection, "vhost")
        lines = stream.until(f"s{sid} client>broker ch0 method Connection.Close ")
        assert methods_of(lines, "client>broker") == SENT
        assert must(router, "VHOST", "TRACE", "/", "OFF") == "Stopped 1 trace(s) of vhost /.\n"
        rest = stream.until("stopped")
    assert rest[-1].startswith("# trace of vhost / stopped: turned off; ")


def test_a_trace_to_a_file_is_new_and_private_and_a_symlink_is_refused(
    router: RouterProcess, tmp_path: Path
) -> None:
    connection = pika.BlockingConnection(params(router.port, "traced-file"))
    sid = session_of(router, "traced-file")
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.trace"
    link.symlink_to(target)
    code, out = ctl(router, "SESSION", "TRACE", sid, "TO", link)
    assert code == 1 and out == (
        f"Cannot trace session {sid}: {link} exists (a symlink); the router writes only new files\n"
    )
    assert not target.exists()
    existing = tmp_path / "existing.trace"
    existing.write_text("keep me\n")
    code, out = ctl(router, "SESSION", "TRACE", sid, "TO", existing)
    assert code == 1 and "exists (a file)" in out
    assert existing.read_text() == "keep me\n"

    path = tmp_path / "session.trace"
    out = must(router, "SESSION", "TRACE", sid, "TO", path)
    assert f"# written to {path}\n" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    talk(connection, "file")
    wait_for(lambda: "stopped" in path.read_text(), timeout=WAIT, what="the trace's last line")
    lines = path.read_text().splitlines(keepends=True)
    assert methods_of(lines, "client>broker") == SENT


def test_a_reader_that_never_reads_slows_nothing_and_its_drops_are_counted(
    router: RouterProcess,
) -> None:
    """A trace whose reader never reads: publishing runs as fast as without a trace,
    lines are dropped, and the count is logged when the trace stops."""
    count = 3000

    def publish(name: str, traced: bool) -> float:
        connection = pika.BlockingConnection(params(router.port, name))
        sid = session_of(router, name)
        reader = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if traced:
                reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                reader.connect(control(router))
                reader.sendall(f"SESSION TRACE {sid} RATE 100000 SECONDS 600\n".encode())
                started = f"event='trace started' trace='session {sid}'"
                wait_for(lambda: started in router.stderr, timeout=WAIT, what="the trace")
            channel = connection.channel()
            queue = channel.queue_declare("", exclusive=True).method.queue
            began = time.monotonic()
            for _ in range(count):
                channel.basic_publish("", queue, b"x" * 64)
            channel.queue_declare(queue, passive=True)  # a round trip: all were forwarded
            elapsed = time.monotonic() - began
            connection.close()
            return elapsed
        finally:
            reader.close()

    plain = publish("untraced-speed", traced=False)
    traced = publish("traced-speed", traced=True)
    # On two shared cores timing is noisy: the bound is generous, but a reader that
    # held the session back (WRITE_TIMEOUT per stalled write) would be far past it.
    assert traced < 3 * plain + 1.0, (plain, traced)

    def dropped() -> int | None:
        for line in router.stderr.splitlines():
            if "event='trace stopped'" in line and "dropped=" in line:
                value = int(line.split("dropped=")[1].split()[0])
                if value:
                    return value
        return None

    wait_for(lambda: dropped() is not None, timeout=WAIT, what="the trace's drop count")
    assert dropped() is not None


# --------------------------------------------------------------------------- #
# captures, read by tshark
# --------------------------------------------------------------------------- #


def tshark() -> str:
    found = shutil.which("tshark")
    assert found is not None, (
        "tshark is missing: install Debian's (apt-get install -y tshark; scripts/setup.sh "
        "does it); the capture tests need it to read the files the router writes"
    )
    return found


def capture_finished(path: Path) -> bool:
    """Whether the file holds the capture's closing FIN exchange."""
    try:
        with path.open("rb") as file:
            packets = list(dpkt.pcap.Reader(file))
    except (ValueError, OSError):  # a header still being written
        return False
    fins = 0
    for _ts, raw in packets:
        segment = dpkt.ethernet.Ethernet(raw).data.data
        fins += bool(segment.flags & dpkt.tcp.TH_FIN)
    return fins == 2


def decoded_methods(path: Path, broker_port: int, client_port: int) -> list[str]:
    """The AMQP methods tshark decodes in the client's direction, in order, by the names
    its dissector gives them (its Info column: one frame a packet)."""
    result = subprocess.run(
        [
            tshark(),
            "-r",
            str(path),
            "-d",
            f"tcp.port=={broker_port},amqp",
            "-Y",
            f"amqp.method.class and tcp.srcport == {client_port}",
            "-T",
            "fields",
            "-e",
            "_ws.col.Info",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def captured_session(
    router: RouterProcess, port: int, name: str, path: Path, **extra: object
) -> int:
    """A pika session through ``port`` captured to ``path``; the client's port."""
    connection = pika.BlockingConnection(params(port, name, **extra))
    sid = session_of(router, name)
    record = next(
        json.loads(line)
        for line in must(router, "--json", "CONN").splitlines()
        if json.loads(line)["id"] == sid
    )
    out = must(router, "SESSION", "CAPTURE", sid, path)
    client = record["ingressRemote"]
    assert out.startswith(f"Capturing session {sid} ({client['host']}:{client['port']} to ")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    talk(connection, name)
    wait_for(lambda: capture_finished(path), timeout=WAIT, what="the capture's end")
    return int(client["port"])


def test_a_capture_of_a_pika_session_decodes_in_tshark_to_the_methods_sent(
    router: RouterProcess, tmp_path: Path
) -> None:
    path = tmp_path / "session.pcap"
    client_port = captured_session(router, router.port, "captured", path)
    assert decoded_methods(path, SYSTEM_PORT, client_port) == SENT
    data = path.read_bytes()
    assert SECRET_BODY in data  # a capture holds what was forwarded, bodies included


def test_a_tls_session_is_captured_in_clear(
    system_broker: SystemBroker, tls_files: TlsFiles, tmp_path: Path
) -> None:
    tls_port = free_port()
    flags = [
        "--listen-tls-port",
        str(tls_port),
        "--tls-cert-chain",
        str(tls_files.server.chain),
        "--tls-key",
        str(tls_files.server.key),
    ]
    with running_router(SYSTEM_PORT, extra=flags) as router:
        ssl_options = pika.SSLOptions(tls_files.client_context(), server_hostname="localhost")
        path = tmp_path / "tls.pcap"
        client_port = captured_session(
            router, tls_port, "captured-tls", path, ssl_options=ssl_options
        )
        assert decoded_methods(path, SYSTEM_PORT, client_port) == SENT
        assert SECRET_BODY in path.read_bytes()


def test_capture_refuses_an_existing_file(router: RouterProcess, tmp_path: Path) -> None:
    connection = pika.BlockingConnection(params(router.port, "capture-refused"))
    try:
        sid = session_of(router, "capture-refused")
        path = tmp_path / "taken.pcap"
        path.write_bytes(b"")
        os.chmod(path, 0o644)
        code, out = ctl(router, "SESSION", "CAPTURE", sid, path)
        assert code == 1
        assert out == (
            f"Cannot capture session {sid}: {path} exists (a file); the router writes only "
            "new files\n"
        )
    finally:
        connection.close()
