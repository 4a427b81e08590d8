"""/metrics and /healthz over real HTTP, in process; the page read by Prometheus's parser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from amqprouter import __version__
from amqprouter.app import BackendHealth, start_http, start_stats
from amqprouter.control.controller import Controller
from amqprouter.observe import http
from amqprouter.observe.prometheus import escape_label, metrics_text, ready_reason
from amqprouter.observe.service import StatsService
from amqprouter.observe.stats import StatsCollector, Totals
from amqprouter.observe.status_page import status_page
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.server.admission import ListenOptions
from amqprouter.session import SessionSettings
from tests.brokers import SystemBroker
from tests.observe.test_collector import open_channel, publish_frames
from tests.session.wire import WAIT, open_client, router
from tests.tls_certs import TlsFiles


async def get(port: int, request: bytes, timeout: float = WAIT) -> tuple[int, dict[str, str], str]:
    """Send ``request`` raw; (status, headers, body) once the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        raw = b""
        with trio.fail_after(timeout):
            while data := await stream.receive_some(65536):
                raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    return int(status_line.split(" ")[1]), headers, body.decode()


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n".encode()


@asynccontextmanager
async def serving(
    server: Server, health: BackendHealth = lambda: None
) -> AsyncIterator[tuple[int, StatsService]]:
    async with trio.open_nursery() as nursery:
        stats = await start_stats(nursery, server, interval=0.05)
        ports = await start_http(
            nursery, server, stats, port=0, host="127.0.0.1", backend_health=health
        )
        yield ports[0], stats
        nursery.cancel_scope.cancel()


async def test_healthz_is_503_without_a_listener_and_200_once_one_is_up() -> None:
    backend = Backend("b1", "dc", "127.0.0.1", 5672)
    server = Server(SessionSettings(), RoutingTable.single(backend))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with serving(server) as (port, _stats):
            assert await get(port, get_request("/healthz")) == (
                503,
                {"Content-Type": http.TEXT, "Content-Length": "12", "Connection": "close"},
                "no listener\n",
            )
            await server.listen(0, "127.0.0.1")
            status, _headers, body = await get(port, get_request("/healthz"))
            assert (status, body) == (200, "ok\n")
            server.stop_listening()
            assert (await get(port, get_request("/healthz")))[0] == 503
        nursery.cancel_scope.cancel()


def test_ready_reasons() -> None:
    assert ready_reason(listeners=0, backends=1) == "no listener"
    assert ready_reason(listeners=1, backends=0) == "no backend configured"
    assert ready_reason(listeners=1, backends=2, backend_up={"a": False, "b": False}) == (
        "no backend up"
    )
    assert ready_reason(listeners=1, backends=2, backend_up={"a": False, "b": True}) is None
    assert ready_reason(listeners=1, backends=1, backend_up={}) is None
    # BACKEND DISABLE/DRAIN: a disabled backend cannot serve, up or not.
    assert ready_reason(listeners=1, backends=1, disabled={"a"}) == "every backend is disabled"
    up_but_disabled = {"a": True, "b": False}
    assert ready_reason(listeners=1, backends=2, backend_up=up_but_disabled, disabled={"a"}) == (
        "no backend up"
    )
    assert ready_reason(listeners=1, backends=2, backend_up=up_but_disabled, disabled={"b"}) is None


async def test_metrics_parse_and_count_real_traffic(system_broker: SystemBroker) -> None:
    async with router(system_broker.port) as (server, _port):
        health = {"fake": True, "other": False}
        async with serving(server, lambda: health) as (port, stats):
            client = await open_client(next(iter(server.listeners)))
            (session,) = server.sessions.values()
            await open_channel(client)
            with trio.fail_after(WAIT):
                while stats.collector.last.overall.active != 1:
                    await trio.sleep(0.01)
            await client.aclose()
            with trio.fail_after(WAIT):
                while stats.collector.last.overall.removed_client != 1:
                    await trio.sleep(0.01)
            status, headers, body = await get(port, get_request("/metrics"))
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {family.name: family for family in text_string_to_metric_families(body)}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    assert samples[("amqprouter_build_info", (("version", __version__),))] == 1
    where = (("backend", "fake"), ("vhost", "/"))
    inbound = (("backend", "fake"), ("direction", "client_to_broker"), ("vhost", "/"))
    outbound = (("backend", "fake"), ("direction", "broker_to_client"), ("vhost", "/"))
    assert samples[("amqprouter_bytes_total", inbound)] == session.ingress.bytes > 0
    assert samples[("amqprouter_bytes_total", outbound)] == session.egress.bytes > 0
    assert samples[("amqprouter_frames_total", inbound)] == session.ingress.frames
    assert samples[("amqprouter_reads_total", outbound)] == session.egress.reads
    ended = "amqprouter_sessions_ended_total"
    assert samples[(ended, (where[0], ("reason", "client_snapped"), where[1]))] == 1
    assert samples[(ended, (where[0], ("reason", "graceful"), where[1]))] == 0
    assert samples[("amqprouter_sessions_active", where)] == 0
    assert samples[("amqprouter_sessions_paused", where)] == 0
    # Neither has a BACKEND CHECK: no up/down evidence, so no sample, whatever the
    # registry says (test_backend_up_has_a_sample_only_for_a_checked_backend).
    assert families["amqprouter_backend_up"].samples == []
    assert samples[("amqprouter_listeners", ())] == 1
    assert samples[("amqprouter_connections_refused_total", ())] == 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert families["amqprouter_bytes"].type == "counter"
    assert families["amqprouter_sessions_active"].type == "gauge"


def test_label_values_are_escaped() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    collector = StatsCollector({}, 1.0)
    odd = 'we"ird\\vhost\nname'
    collector.totals[(odd, "b")] = Totals(bytes_received=5)
    text = metrics_text(collector, listeners=0, backend_up=None)
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "amqprouter_bytes"]
    labels = [sample.labels for sample in family.samples if sample.value == 5]
    assert labels == [{"direction": "client_to_broker", "vhost": odd, "backend": "b"}]
    backend_up = [f for f in text_string_to_metric_families(text) if f.name.endswith("_up")]
    assert backend_up[0].samples == [], "no health monitor: no samples"


async def test_bad_requests_get_short_errors() -> None:
    server = Server(SessionSettings())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with serving(server) as (port, _stats):
            assert (await get(port, get_request("/nope")))[0] == 404
            status, headers, _body = await get(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (status, headers["Allow"]) == (405, "GET, HEAD, OPTIONS")
            assert (await get(port, b"GARBAGE\r\n\r\n"))[0] == 400
            huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * http.MAX_REQUEST_BYTES + b"\r\n\r\n"
            assert (await get(port, huge))[0] == 431
            assert (await get(port, get_request("/metrics?x=1")))[0] == 200
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /metrics\r\n\r\n",  # no version
        b"GET /metrics HTTP/one\r\nHost: x\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n",  # two spaces
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain port
        # HTTP/1.1 requires Host (RFC 9112, 3.2): a request without one is a bad request.
        b"GET /metrics HTTP/1.1\r\n\r\n",
    ],
)
async def test_a_malformed_request_is_400(request_head: bytes) -> None:
    async with trio.open_nursery() as nursery:
        routes = {"/metrics": lambda: http.Response(200, "m\n")}
        (port,) = await nursery.start(partial(http.serve_http, 0, routes, host="127.0.0.1"))
        status, _headers, body = await get(port, request_head)
        assert status == 400 and body.startswith("bad request: "), (status, body)
        # HTTP/1.0 needs no Host, and HTTP/1.1 with one is served.
        assert (await get(port, b"GET /metrics HTTP/1.0\r\n\r\n"))[::2] == (200, "m\n")
        assert (await get(port, get_request("/metrics")))[::2] == (200, "m\n")
        nursery.cancel_scope.cancel()


async def test_an_oversized_header_is_431_whether_it_arrives_whole_or_in_pieces() -> None:
    limit = http.MAX_REQUEST_BYTES
    async with trio.open_nursery() as nursery:
        routes = {"/": lambda: http.Response(200, "ok\n")}
        (port,) = await nursery.start(partial(http.serve_http, 0, routes, host="127.0.0.1"))
        start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
        # A head of exactly the limit (request line and headers, the blank line that
        # ends it not counted) is served...
        at_limit = start + b"a" * (limit - len(start))
        assert (await get(port, at_limit + b"\r\n\r\n"))[0] == 200
        # ...one byte more, sent at once, is refused...
        status, _headers, body = await get(port, at_limit + b"a\r\n\r\n")
        assert (status, body) == (431, f"request head over {limit} bytes\n")
        # ...and a head that keeps coming is refused once past the limit, unfinished.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(start)
            with trio.fail_after(WAIT):
                try:
                    for _ in range(2 * limit // 1024):
                        await stream.send_all(b"a" * 1024)
                except trio.BrokenResourceError:
                    pass  # the server answered and closed while we were still sending
                answer = b""
                while data := await stream.receive_some(65536):
                    answer += data
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer
        nursery.cancel_scope.cancel()


async def test_a_silent_client_is_answered_408_at_the_read_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time: the server's read timeout passes as soon as everyone waits.
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(partial(http.serve_http, 0, {}, host="127.0.0.1"))
        started = trio.current_time()
        status, _headers, body = await get(
            port, b"GET /metrics HTTP/1.1\r\n", 2 * http.READ_TIMEOUT
        )
        assert (status, body) == (408, "request head not received in time\n")
        assert trio.current_time() - started >= http.READ_TIMEOUT
        nursery.cancel_scope.cancel()


async def test_the_status_page_names_who_may_send_a_proxy_header() -> None:
    server = Server(SessionSettings(), RoutingTable())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        options = ListenOptions(proxy_from=("10.0.1.5/32",), allow=("10.0.0.0/8",))
        await server.listen(0, "127.0.0.1", options=options)
        await server.listen(0, "127.0.0.1")
        page = status_page(server, StatsCollector(server.sessions, 1.0), ready=None, live=None)
        assert "PROXY header from" in page
        assert "<td>10.0.1.5/32</td><td>10.0.0.0/8</td>" in page
        assert "<td>no</td><td>anyone</td>" in page
        nursery.cancel_scope.cancel()


def _rows(page: str, title: str) -> list[list[str]]:
    """The cells of each body row of the table under the heading starting with ``title``."""
    section = page.split(f"<h2>{title}", 1)[1].split("<h2>", 1)[0]
    return [
        re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", section)
    ]


async def test_the_status_page_shows_rates_errors_and_the_top_talkers(
    system_broker: SystemBroker,
) -> None:
    async with router(system_broker.port) as (server, _port), serving(server) as (port, stats):
        listen = next(iter(server.listeners))
        busy, idle = await open_client(listen), await open_client(listen)
        await open_channel(busy)
        busy_id = min(server.sessions)  # the first to connect
        (backend,) = server.routing.backends.values()
        stats.events.connect_failed(backend, "refused")
        publish = publish_frames(5)

        async def talk() -> None:
            while True:
                await busy.send(publish)
                await trio.sleep(0.005)

        async with trio.open_nursery() as talking:
            talking.start_soon(talk)
            with trio.fail_after(WAIT):
                while True:
                    _status, _headers, page = await get(port, get_request("/"))
                    talkers = _rows(page, "Top talkers")
                    # Once the busy one's publishing fills an interval and the idle
                    # one's handshake (its Open-Ok) is an interval behind.
                    if [row[0] for row in talkers] == [str(busy_id)] and talkers[0][7] != "0 B/s":
                        break
                    await trio.sleep(0.05)
            talking.cancel_scope.cancel()
        # Only the session that sent something: the idle one has no rate.
        ((session_id, vhost, address, name, user, connection, library, *rates),) = talkers
        busy_session = server.sessions[int(session_id)]
        assert address == f"127.0.0.1:{busy_session.client_address[1]}"
        assert (vhost, name, user, connection, library) == ("/", "fake", "guest", "wire-test", "-")
        assert rates[0] != "0 B/s" and rates[0].endswith("/s") and int(rates[2]) > 0
        (fake,) = _rows(page, "Backends")
        assert fake[0] == "fake" and fake[6] == "2", "two sessions"
        assert fake[7] != "0 B/s", "in/s"
        assert fake[9:] == ["1", "0"], "one connect failure, no session ended by error"
        # A client that goes without a Close ended by error: the backend and the vhost say so.
        await idle.aclose()
        with trio.fail_after(WAIT):
            while True:
                _status, _headers, page = await get(port, get_request("/"))
                (fake,) = _rows(page, "Backends")
                if fake[10] == "1":
                    break
                await trio.sleep(0.05)
        assert 'class="fail">1</td>' in page
        ((vhost, *_traffic, active, in_rate, out_rate, ended),) = _rows(page, "Top vhosts")
        assert (vhost, active, ended) == ("/", "1", "1")
        assert in_rate.endswith("/s") and out_rate.endswith("/s")


async def test_backend_up_has_a_sample_only_for_a_checked_backend(
    system_broker: SystemBroker,
) -> None:
    async with router(system_broker.port) as (server, _port):
        controller = Controller(server, request_exit=lambda: None)
        for line in (
            "BACKEND ADD dead dc 127.0.0.1 1",
            "BACKEND ADD plain dc 127.0.0.1 2",
            "BACKEND CHECK fake ON 100 1 1 2000",
            "BACKEND CHECK dead ON 100 1 1 500",
        ):
            assert (await controller.handle(line)).ok, line
        async with serving(server, server.backend_up) as (port, _stats):
            with trio.fail_after(WAIT):
                while True:
                    _status, _headers, body = await get(port, get_request("/metrics"))
                    families = {f.name: f for f in text_string_to_metric_families(body)}
                    up = {
                        sample.labels["backend"]: sample.value
                        for sample in families["amqprouter_backend_up"].samples
                    }
                    if up.get("dead") == 0:
                        break
                    await trio.sleep(0.05)
    # "plain" has no check: it is not reported up (nor down) on no evidence.
    assert up == {"fake": 1, "dead": 0}


async def test_metrics_give_each_presented_certificates_expiry(tls_files: TlsFiles) -> None:
    server = Server(SessionSettings())
    controller = Controller(server, request_exit=lambda: None)
    server_cert, client_cert = tls_files.server, tls_files.client
    for line in (
        f"TLS INGRESS CERT_CHAIN_FILE {server_cert.chain}",
        f"TLS INGRESS KEY_FILE {server_cert.key}",
        f"TLS EGRESS CERT_CHAIN_FILE {client_cert.chain}",
        f"TLS EGRESS KEY_FILE {client_cert.key}",
    ):
        assert (await controller.handle(line)).ok, line
    expected = {}
    for role, files in (("ingress", server_cert), ("egress", client_cert)):
        certificate = x509.load_pem_x509_certificate(files.chain.read_bytes())
        expected[(role, certificate.subject.rfc4514_string())] = (
            certificate.not_valid_after_utc.timestamp()
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with serving(server) as (port, _stats):
            _status, _headers, body = await get(port, get_request("/metrics"))
        nursery.cancel_scope.cancel()
    (family,) = [
        f
        for f in text_string_to_metric_families(body)
        if f.name == "amqprouter_tls_certificate_expiry_seconds"
    ]
    assert family.type == "gauge"
    found = {(s.labels["role"], s.labels["subject"]): s.value for s in family.samples}
    assert found == expected
    assert any(subject.startswith("CN=client,") for _role, subject in found)


def test_no_certificate_no_expiry_sample() -> None:
    text = metrics_text(StatsCollector({}, 1.0), listeners=0)
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "amqprouter_tls_certificate_expiry_seconds"
    ]
    assert family.samples == []
