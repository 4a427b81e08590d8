"""A real HTTP auth service for the tests: a stdlib HTTP/1.1 server in a thread that
reads the protobuf ``AuthRequest`` the router POSTs and answers what the test says.

``answer`` decides from the decoded request: an ``AuthResponse`` (sent as protobuf,
status 200), or raw ``(status, body)`` for the broken services (garbage, 500). A
``hang`` service holds each request until the test ends (the timeout tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs

from amqprouter.server.authproto import auth_pb2

Answer = Callable[[auth_pb2.AuthRequest], "auth_pb2.AuthResponse | tuple[int, bytes]"]


def allow(request: auth_pb2.AuthRequest) -> auth_pb2.AuthResponse:
    return auth_pb2.AuthResponse(result=auth_pb2.AuthResponse.ALLOW, reason="welcome")


@attrs.define
class Received:
    path: str
    headers: dict[str, str]
    request: auth_pb2.AuthRequest


@attrs.define
class AuthServiceForTests:
    port: int
    answer: Answer = allow
    hang: bool = False
    received: list[Received] = attrs.Factory(list)
    released: threading.Event = attrs.Factory(threading.Event)

    @property
    def target(self) -> str:
        return "/auth"


@contextmanager
def auth_service() -> Iterator[AuthServiceForTests]:
    state = AuthServiceForTests(0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = auth_pb2.AuthRequest()
            request.ParseFromString(body)
            state.received.append(Received(self.path, dict(self.headers.items()), request))
            if state.hang:
                state.released.wait(30)
                return
            answer = state.answer(request)
            status, payload = (
                (200, answer.SerializeToString())
                if isinstance(answer, auth_pb2.AuthResponse)
                else answer
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
