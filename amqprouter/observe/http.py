"""A tiny HTTP/1.1 server for ``/metrics``, the probes and the status page: GET only,
one request each.

Just enough HTTP for a Prometheus scraper, a load balancer's health probe, a browser
and curl:
the request head is bounded in size and time, the body (if any) is ignored, every
response carries ``Content-Length`` and ``Connection: close``, and the connection is
closed after it. Anything unexpected gets a short error status, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.http")

#: A request head (request line and headers) longer than this is refused.
MAX_REQUEST_BYTES: Final = 8192
#: A client must send its whole request head within this.
READ_TIMEOUT: Final = 5.0
#: Writing a response to a client that does not read gives up after this.
WRITE_TIMEOUT: Final = 5.0
TEXT: Final = "text/plain; charset=utf-8"
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

    def encode(self) -> bytes:
        body = self.body.encode()
        head = (
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
        )
        if self.status == 405:
            head += "Allow: GET\r\n"
        return head.encode() + b"\r\n" + body


Routes = Mapping[str, Callable[[], Response]]


def respond(head: bytes, routes: Routes) -> Response:
    """The response to one request head (without its final blank line)."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return Response(400, "bad request line\n")
    method, target, _version = parts
    if method != "GET":
        return Response(405, "only GET is served\n")
    route = routes.get(target.split("?", 1)[0])
    if route is None:
        return Response(404, "not found: try /, /metrics, /livez or /readyz\n")
    return route()


async def _read_head(stream: trio.SocketStream) -> bytes | Response:
    buffer = bytearray()
    with trio.move_on_after(READ_TIMEOUT):
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                return bytes(buffer[:end]) if end <= MAX_REQUEST_BYTES else _too_large()
            if len(buffer) > MAX_REQUEST_BYTES:
                return _too_large()
            data = await stream.receive_some(4096)
            if not data:
                return Response(400, "incomplete request\n")
            buffer += data
    return Response(408, "request head not received in time\n")


def _too_large() -> Response:
    return Response(431, f"request head over {MAX_REQUEST_BYTES} bytes\n")


async def _serve_one(routes: Routes, stream: trio.SocketStream) -> None:
    try:
        head = await _read_head(stream)
        response = head if isinstance(head, Response) else respond(head, routes)
        with trio.move_on_after(WRITE_TIMEOUT):
            await stream.send_all(response.encode())
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
