"""A flood of silent connections under a low descriptor limit: a router process whose
RLIMIT_NOFILE is 256, with a TLS listener in front of the machine's RabbitMQ.

The flood (more connections than the limit allows, none of them ever speaking) must
not stall the operator, a new client or a session already forwarding: the router
sheds the oldest silent connections to make room, and says so in a few lines, not a
line per retry.
"""

from __future__ import annotations

import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pika

from tests.brokers import SYSTEM_PORT, free_port, port_is_open, wait_for
from tests.router import START_TIMEOUT, RouterProcess, router_command
from tests.tls_certs import TlsFiles

CTL = Path(sys.executable).parent / "amqprouter_ctl"
NOFILE = 256
#: Silent connections opened at once: well past what 256 descriptors hold.
FLOOD = 600
#: What "promptly" means here. Without shedding, the flood holds every descriptor
#: until the client handshake timeout (10 s) ends it.
PROMPT = 3.0
#: The listener lines that say accepting stopped or resumed (not the per-session lines).
CAPACITY_LINE = re.compile(r"stopped accepting|accepting again|cannot accept|accept failed")


def _limit_descriptors() -> None:  # runs in the child, between fork and exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@contextmanager
def low_limit_router(files: TlsFiles) -> Iterator[tuple[RouterProcess, int]]:
    """A router in simple mode with RLIMIT_NOFILE ``NOFILE`` and a TLS listener."""
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-fds-"))
    port, tls_port = free_port(), free_port()
    args = router_command(
        "--listen-port",
        str(port),
        "--destination-dns",
        "127.0.0.1",
        "--destination-port",
        str(SYSTEM_PORT),
        "--listen-tls-port",
        str(tls_port),
        "--tls-cert-chain",
        str(files.server.chain),
        "--tls-key",
        str(files.server.key),
        "--control-socket",
        str(workdir / "control"),
        "-v",
        "3",
    )
    stdout_path, stderr_path = workdir / "stdout", workdir / "stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            preexec_fn=_limit_descriptors,  # only setrlimit between fork and exec
        )
    router = RouterProcess(port, process, stdout_path, stderr_path)
    try:
        wait_for(lambda: port_is_open(tls_port), timeout=START_TIMEOUT, what="the TLS listener")
        yield router, tls_port
    finally:
        router.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _timed_conn(router: RouterProcess) -> tuple[float, str]:
    began = time.monotonic()
    result = subprocess.run(
        [str(CTL), str(router.stdout_path.parent / "control"), "CONN"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return time.monotonic() - began, result.stdout


def _timed_tls_client(files: TlsFiles, port: int) -> float:
    """Seconds for a pika client to open a connection and a channel through TLS."""
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        ssl_options=pika.SSLOptions(files.client_context(), server_hostname="localhost"),
        socket_timeout=30,
        stack_timeout=30,
        blocked_connection_timeout=30,
    )
    began = time.monotonic()
    connection = pika.BlockingConnection(params)
    try:
        connection.channel().queue_declare("", exclusive=True)
        return time.monotonic() - began
    finally:
        connection.close()


def _round_trip(channel: pika.adapters.blocking_connection.BlockingChannel, body: bytes) -> None:
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, body)
    deadline = time.monotonic() + PROMPT
    while (got := channel.basic_get(queue, auto_ack=True))[0] is None:
        assert time.monotonic() < deadline, "the message never came back"
        channel.connection.sleep(0.02)
    assert got[2] == body


def test_silent_flood_past_the_descriptor_limit_stalls_nobody(tls_files: TlsFiles) -> None:
    with low_limit_router(tls_files) as (router, tls_port), ExitStack() as stack:
        established = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", router.port, socket_timeout=30)
        )
        stack.callback(established.close)
        channel = established.channel()
        _round_trip(channel, b"before the flood")

        for _ in range(FLOOD):
            sock = stack.enter_context(socket.socket())
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", tls_port))
        time.sleep(0.3)  # the router is taking them in

        # The operator and a new client, both while the flood is still there.
        with ThreadPoolExecutor(2) as pool:
            conn = pool.submit(_timed_conn, router)
            client = pool.submit(_timed_tls_client, tls_files, tls_port)
            conn_seconds, conn_reply = conn.result(timeout=30)
            client_seconds = client.result(timeout=30)
        assert conn_seconds < PROMPT, f"CONN took {conn_seconds:.1f}s\n{router.stderr[-3000:]}"
        # It lists the session that was forwarding before the flood.
        assert re.search(r"^id=\d+ vhost=/ ", conn_reply, re.M), conn_reply
        assert client_seconds < PROMPT, f"the client took {client_seconds:.1f}s"
        # The session that was forwarding before the flood was never shed.
        _round_trip(channel, b"after the flood")

        log = router.stderr
        assert "shed: the listener needs room" in log
        capacity_lines = [line for line in log.splitlines() if CAPACITY_LINE.search(line)]
        assert len(capacity_lines) <= 6, "\n".join(capacity_lines[:20])
