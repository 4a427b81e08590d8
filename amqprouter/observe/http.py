"""A tiny HTTP/1.1 server for ``/metrics``, the probes and the status page: GET, HEAD
and OPTIONS, one request each.

Just enough HTTP for a Prometheus scraper, a load balancer's health probe, a browser
and curl. The protocol itself is h11's (the sans-IO HTTP/1.1 that httpx and hypercorn
build on): it parses the request head and writes the response. Around it, this module
bounds the request head in size and time, ignores the body (if any), gives every
response ``Content-Length`` and ``Connection: close``, and closes the connection after
it. Anything unexpected gets a short error status, never a traceback.

HEAD answers what GET would, headers only (``Content-Length`` is the GET body's).
OPTIONS answers ``200`` and ``Allow: GET, HEAD, OPTIONS``: HAProxy's ``option httpchk``
sends ``OPTIONS / HTTP/1.0`` by default, and a 405 there marks the router down. On a
probe path (``PROBE_PATHS``) OPTIONS answers as the probe does (503 when it fails, with
the same ``Allow``), so a balancer that checks a probe with OPTIONS is never told "up"
by a router that cannot route. Any other method is 405 with the same ``Allow``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final

import attrs
import h11
import structlog
import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.http")

#: A request head (request line and headers) longer than this is refused.
MAX_REQUEST_BYTES: Final = 8192
#: The head and the blank line that ends it: the most bytes read before a request.
_HEAD_LIMIT: Final = MAX_REQUEST_BYTES + len(b"\r\n\r\n")
#: A client must send its whole request head within this.
READ_TIMEOUT: Final = 5.0
#: Writing a response to a client that does not read gives up after this.
WRITE_TIMEOUT: Final = 5.0
#: After the response, what the client still sends is read and dropped for at most
#: this long and this much, before closing (``_linger``).
LINGER_TIMEOUT: Final = 1.0
LINGER_MAX_BYTES: Final = 256 * 1024
TEXT: Final = "text/plain; charset=utf-8"
#: The methods served, as the ``Allow`` header lists them.
ALLOW: Final = "GET, HEAD, OPTIONS"
#: The probes: OPTIONS on one of these answers as the probe does.
PROBE_PATHS: Final = frozenset({"/livez", "/readyz", "/healthz"})
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@attrs.frozen
class Response:
    status: int
    body: str
    content_type: str = TEXT
    #: Send ``Allow`` (a 405 always does; OPTIONS's answers too).
    allow: bool = False

    def encode(self, *, head: bool = False) -> bytes:
        """The whole response, as h11 writes it for a connection about to close;
        ``head``: for a HEAD request, the headers alone."""
        body = self.body.encode()
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        if self.allow or self.status == 405:
            headers.append(("Allow", ALLOW))
        writer = h11.Connection(h11.SERVER)
        if head:
            # h11 frames a response by its request: told it answers a HEAD, it writes
            # the GET's Content-Length and no body.
            writer.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.next_event()
        reason = _REASONS.get(self.status, "Error").encode()
        events: list[h11.Response | h11.Data | h11.EndOfMessage] = [
            h11.Response(status_code=self.status, headers=headers, reason=reason)
        ]
        if not head:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        return b"".join(writer.send(event) or b"" for event in events)


Routes = Mapping[str, Callable[[], Response]]


def respond(request: h11.Request, routes: Routes) -> Response:
    """The response to one request (a HEAD's body is left out by ``encode``)."""
    method = request.method
    if method not in (b"GET", b"HEAD", b"OPTIONS"):
        return Response(405, f"only {ALLOW} are served\n")
    path = request.target.decode("latin-1").split("?", 1)[0]
    if method == b"OPTIONS" and path == "*":
        return Response(200, "", allow=True)
    route = routes.get(path)
    if route is None:
        return Response(404, "not found: try /, /metrics, /livez or /readyz\n")
    if method == b"OPTIONS":
        if path in PROBE_PATHS:
            return attrs.evolve(route(), allow=True)
        return Response(200, "", allow=True)  # the page itself is not built
    return route()


async def _read_request(stream: trio.SocketStream) -> h11.Request | Response:
    """The request head, parsed by h11; or the error response it deserves."""
    # h11 refuses an incomplete head past its bound; and it is never given more than a
    # whole head may take, so a complete one is within the limit too, and a longer one,
    # valid or not, is refused as too large (not first parsed).
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=_HEAD_LIMIT - 1)
    received = 0
    with trio.move_on_after(READ_TIMEOUT):
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    return _too_large()
                return Response(exc.error_status_hint, f"bad request: {str(exc)[:200]}\n")
            if isinstance(event, h11.Request):
                return event
            if received >= _HEAD_LIMIT:  # h11 dropped some (blank lines before the head)
                return _too_large()
            data = await stream.receive_some(min(4096, _HEAD_LIMIT - received))
            if not data:
                return Response(400, "incomplete request\n")
            received += len(data)
            parser.receive_data(data)
    return Response(408, "request head not received in time\n")


async def _linger(stream: trio.SocketStream) -> None:
    """Close gently: say we are done writing, then read what the client still sends (a
    request not read to its end: too large, or with a body) until it closes, for a
    moment. Closing with bytes unread makes the kernel reset the connection, and the
    reset can reach the client before it has read the response."""
    await stream.send_eof()
    with trio.move_on_after(LINGER_TIMEOUT):
        drained = 0
        while drained <= LINGER_MAX_BYTES and (data := await stream.receive_some(65536)):
            drained += len(data)


def _too_large() -> Response:
    return Response(431, f"request head over {MAX_REQUEST_BYTES} bytes\n")


async def _serve_one(routes: Routes, stream: trio.SocketStream) -> None:
    try:
        request = await _read_request(stream)
        response = request if isinstance(request, Response) else respond(request, routes)
        head = isinstance(request, h11.Request) and request.method == b"HEAD"
        with trio.move_on_after(WRITE_TIMEOUT) as writing:
            await stream.send_all(response.encode(head=head))
        if not writing.cancelled_caught:
            await _linger(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:  # one bad request must not end the server
        log.exception("http request failed")
    finally:
        await trio.aclose_forcefully(stream)


async def serve_http(
    port: int,
    routes: Routes,
    *,
    host: str | None = None,
    task_status: TaskStatus[Sequence[int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` on ``port`` (every address when ``host`` is None) until cancelled.

    ``task_status.started`` gets the bound ports (``port`` 0 picks a free one).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    ports = sorted({int(listener.socket.getsockname()[1]) for listener in listeners})
    log.info("http listening", ports=ports)
    async with trio.open_nursery() as nursery:
        task_status.started(ports)
        await trio.serve_listeners(partial(_serve_one, routes), listeners, handler_nursery=nursery)
