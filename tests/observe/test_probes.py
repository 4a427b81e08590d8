"""The probes (/livez, /readyz, /healthz) and the status page, over real HTTP in process."""

from __future__ import annotations

from html.parser import HTMLParser

import trio
import trio.testing

from amqprouter.app import start_http, start_stats
from amqprouter.observe import probes
from amqprouter.observe.probes import LoopHeartbeat
from amqprouter.observe.stats import Totals
from amqprouter.observe.status_page import REFRESH
from amqprouter.routing import Backend, Farm, RoutingTable
from amqprouter.server import Server
from amqprouter.server.admission import ListenOptions
from amqprouter.session import SessionSettings
from tests.observe.test_http import get, get_request, serving

#: Names an attacker (a client's vhost) or a careless operator could choose.
HOSTILE_VHOST = '<script>alert("vhost")</script>&amp;\n'
HOSTILE_BACKEND = "<img src=x onerror=alert(1)>"


async def test_readyz_and_healthz_are_readiness_livez_is_not() -> None:
    """A broker outage makes the router unready, never "not live"."""
    backend = Backend("b1", "dc", "127.0.0.1", 5672)
    server = Server(SessionSettings(), RoutingTable.single(backend))
    up = {"b1": False}
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with serving(server, lambda: up) as (port, _stats):
            await server.listen(0, "127.0.0.1")
            for path in ("/readyz", "/healthz"):
                status, headers, body = await get(port, get_request(path))
                assert (status, body) == (503, "no backend up\n")
                assert headers["Content-Type"] == "text/plain; charset=utf-8"
            assert (await get(port, get_request("/livez")))[::2] == (200, "ok\n")
            up["b1"] = True
            for path in ("/readyz", "/healthz", "/livez"):
                assert (await get(port, get_request(path)))[::2] == (200, "ok\n"), path
        nursery.cancel_scope.cancel()


async def test_livez_fails_once_the_loop_went_without_a_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heartbeat = LoopHeartbeat()
    assert heartbeat.stalled() is None
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        await trio.sleep(10 * probes.STALE)  # beating all along: live
        assert heartbeat.stalled() is None
        nursery.cancel_scope.cancel()
    # The task no longer runs, as when the loop was stuck in a blocking call.
    await trio.sleep(probes.STALE + 0.1)
    reason = heartbeat.stalled()
    assert reason is not None and reason.startswith("event loop stalled: no heartbeat for 5.")


class _Page(HTMLParser):
    """The elements and the text of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def configured_server() -> Server:
    """Two backends (one hostile name, one disabled), a farm, maps, a paused vhost."""
    backends = {
        "alpha-broker": Backend("alpha-broker", "dc1", "127.0.0.1", 5672),
        HOSTILE_BACKEND: Backend(HOSTILE_BACKEND, "dc2", "127.0.0.2", 5673, tls=True),
    }
    routing = RoutingTable(
        backends=backends,
        farms={"main-farm": Farm("main-farm", "round-robin", tuple(backends))},
        mappings={HOSTILE_VHOST: ("backend", "alpha-broker"), "orders": ("farm", "main-farm")},
        default_farm="main-farm",
        disabled={HOSTILE_BACKEND},
    )
    server = Server(SessionSettings(), routing)
    server.vhosts.paused.add("paused-vhost")
    return server


async def test_status_page_shows_the_configuration_and_escapes_every_name() -> None:
    server = configured_server()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        bound = await server.listen(0, "127.0.0.1", options=ListenOptions(allow=("127.0.0.1",)))
        async with serving(server, lambda: {"alpha-broker": True}) as (port, stats):
            stats.collector.totals[(HOSTILE_VHOST, "alpha-broker")] = Totals(
                bytes_received=3 * 1024 * 1024, bytes_sent=2048
            )
            stats.collector.totals[("orders", "alpha-broker")] = Totals(bytes_received=10)
            stats.collector.totals[("never-routed", "")] = Totals()  # no traffic: not listed
            status, headers, body = await get(port, get_request("/"))
        nursery.cancel_scope.cancel()
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert f'<meta http-equiv="refresh" content="{REFRESH}">' in body
    page = _Page()
    page.feed(body)
    # Only our own markup: no script, no image, no event handler from a name.
    assert "script" not in page.tags and "img" not in page.tags
    assert set(page.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2"} | {
        "table",
        "tr",
        "th",
        "td",
        "p",
        "em",
    }
    assert not [name for name, _value in page.attributes if name.startswith("on")]
    text = "".join(page.text)
    # The names are there, as text (the vhost's newline as the control socket prints it).
    assert HOSTILE_BACKEND in text
    assert '<script>alert("vhost")</script>&amp;\\n' in text
    for shown in (
        "alpha-broker",
        "127.0.0.1:5672",
        "127.0.0.2:5673",
        "main-farm (default)",
        "round-robin",
        "farm main-farm",
        "orders",
        "paused-vhost",
        str(bound),
        "3.0 MiB",
        "disabled",
    ):
        assert shown in text, shown
    assert "never-routed" not in text
    # The hostile vhost has the most traffic: first row of the top-vhosts table.
    top = body.split("Top vhosts by traffic", 1)[1]
    assert top.index("&lt;script&gt;") < top.index("orders")


async def test_the_status_page_is_served_by_start_http_with_the_probes() -> None:
    server = configured_server()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        stats = await start_stats(nursery, server, interval=1.0)
        (port,) = await start_http(nursery, server, stats, port=0, host="127.0.0.1")
        status, _headers, body = await get(port, get_request("/"))
        assert status == 200 and "no listener" in body, "readiness shown on the page"
        assert (await get(port, get_request("/nothing")))[2] == (
            "not found: try /, /metrics, /livez or /readyz\n"
        )
        nursery.cancel_scope.cancel()
