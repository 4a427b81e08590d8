"""HEAD and OPTIONS on the probes: what load balancers send, answered instead of 405.

HEAD answers what GET would without the body; OPTIONS answers 200 with ``Allow``, and on
a probe path as the probe does (503 when it fails). Last, HAProxy itself checks the
router: with ``option httpchk`` as it comes (``OPTIONS / HTTP/1.0``), and with
``OPTIONS /readyz``, which follows readiness.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from amqprouter.observe import http
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from tests.brokers import free_port, port_is_open
from tests.observe.test_http import get, serving

WAIT = 10.0
PROBES = ("/livez", "/readyz", "/healthz")


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, whatever followed the head) once the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        raw = b""
        with trio.fail_after(WAIT):
            while data := await stream.receive_some(65536):
                raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    return int(status_line.split(" ")[1]), dict(line.split(": ", 1) for line in lines), rest


def _request(method: str, path: str, version: str = "1.1") -> bytes:
    host = "Host: x\r\n" if version == "1.1" else ""
    return f"{method} {path} HTTP/{version}\r\n{host}\r\n".encode()


@contextlib.asynccontextmanager
async def _router(*, listening: bool) -> AsyncIterator[tuple[Server, int]]:
    server = Server(SessionSettings(), RoutingTable.single(Backend("b1", "dc", "127.0.0.1", 1)))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        if listening:
            await server.listen(0, "127.0.0.1")
        async with serving(server) as (port, _stats):
            yield server, port
        nursery.cancel_scope.cancel()


async def test_head_answers_gets_headers_without_the_body() -> None:
    async with _router(listening=False) as (server, port):
        for path in (*PROBES, "/", "/metrics", "/nope"):
            status, headers, body = await get(port, _request("GET", path))
            head_status, head_headers, rest = await _raw(port, _request("HEAD", path))
            assert rest == b"", path
            assert head_status == status, path
            assert head_headers["Content-Type"] == headers["Content-Type"]
            if path not in ("/", "/metrics"):  # those two change between requests
                assert head_headers["Content-Length"] == str(len(body.encode())), path
        # Not ready (no listener): HEAD says so too, as a load balancer needs.
        assert (await _raw(port, _request("HEAD", "/readyz")))[0] == 503
        assert (await _raw(port, _request("HEAD", "/livez")))[0] == 200
        await server.listen(0, "127.0.0.1")
        for path in PROBES:
            status, headers, rest = await _raw(port, _request("HEAD", path, "1.0"))
            assert (status, headers["Content-Length"], rest) == (200, "3", b"")


async def test_options_is_200_with_allow_and_follows_a_probe() -> None:
    async with _router(listening=False) as (server, port):
        for target in ("/", "*", "/metrics"):
            status, headers, body = await get(port, _request("OPTIONS", target, "1.0"))
            assert (status, headers["Allow"], body) == (200, http.ALLOW, ""), target
        # On a probe path OPTIONS is the probe: not ready yet.
        status, headers, body = await get(port, _request("OPTIONS", "/readyz"))
        assert (status, headers["Allow"], body) == (503, http.ALLOW, "no listener\n")
        assert (await get(port, _request("OPTIONS", "/livez")))[::2] == (200, "ok\n")
        await server.listen(0, "127.0.0.1")
        for path in PROBES:
            status, headers, body = await get(port, _request("OPTIONS", path))
            assert (status, headers["Allow"], body) == (200, http.ALLOW, "ok\n"), path
        assert (await get(port, _request("OPTIONS", "/nope")))[0] == 404
        for method in ("POST", "PUT", "DELETE"):
            status, headers, _body = await get(port, _request(method, "/readyz"))
            assert (status, headers["Allow"]) == (405, http.ALLOW)


# --------------------------------------------------------------------------- #
# HAProxy's own health checks
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def _haproxy(binary: str, http_port: int) -> Iterator[Path]:
    """HAProxy checking the router's HTTP port twice: ``option httpchk`` as it comes
    (server ``default``) and ``option httpchk OPTIONS /readyz`` (server ``ready``);
    yields its stats socket."""
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-chk-"))
    stats = workdir / "stats.sock"
    frontend = free_port()
    check = f"127.0.0.1:{http_port} check inter 100 fall 1 rise 1"
    (workdir / "haproxy.cfg").write_text(
        "global\n"
        f"    stats socket {stats}\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        "    timeout check 2s\n"
        "backend default\n"
        "    option httpchk\n"
        f"    server default {check}\n"
        "backend ready\n"
        "    option httpchk OPTIONS /readyz\n"
        f"    server ready {check}\n"
        "frontend web\n"
        f"    bind 127.0.0.1:{frontend}\n"
        "    default_backend default\n"
    )
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen(
        [binary, "-db", "-f", str(workdir / "haproxy.cfg")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + WAIT
        while not (port_is_open(frontend) and stats.exists()):
            assert time.monotonic() < deadline, (workdir / "haproxy.log").read_text()
            time.sleep(0.05)
        yield stats
    finally:
        process.terminate()
        process.wait(WAIT)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _status(stats: Path) -> dict[str, str]:
    """Each checked server's status (``UP``, ``DOWN``...) from HAProxy's ``show stat``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(stats))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {row["svname"]: row["status"] for row in rows if row["svname"] in ("default", "ready")}


def _haproxy_binary() -> str:
    found = shutil.which("haproxy")
    if found is None:
        pytest.fail("HAProxy is needed: apt-get install -y haproxy (scripts/bench-setup)")
    return found


async def test_haproxy_httpchk_sees_the_router_up_and_readyz_follows_readiness() -> None:
    async with _router(listening=False) as (server, port):
        with _haproxy(_haproxy_binary(), port) as stats:

            async def wait_for(expected: dict[str, str]) -> None:
                with trio.fail_after(WAIT):
                    while (found := await trio.to_thread.run_sync(_status, stats)) != expected:
                        await trio.sleep(0.1)
                assert found == expected

            # No client listener: the router answers HTTP (OPTIONS / is 200) but cannot
            # route, and the readiness check says so.
            await wait_for({"default": "UP", "ready": "DOWN"})
            await server.listen(0, "127.0.0.1")
            await wait_for({"default": "UP", "ready": "UP"})
