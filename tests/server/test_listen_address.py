"""Server.listen with a host name: resolved off the event loop, then bound there."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
import trio

from amqprouter.server import Server
from amqprouter.session import SessionSettings


async def test_a_host_name_is_resolved_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, bool]] = []
    real = socket.getaddrinfo

    def watched(host: Any, *args: Any, **kwargs: Any) -> Any:
        # getaddrinfo(host, port, family, type, proto, flags)
        flags = kwargs.get("flags", args[4] if len(args) > 4 else 0)
        if not flags & socket.AI_NUMERICHOST:  # a real lookup, which may block
            calls.append((str(host), threading.current_thread() is threading.main_thread()))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", watched)
    server = Server(SessionSettings())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        port = await server.listen(0, "localhost")
        assert calls and not any(on_loop for _host, on_loop in calls), calls
        assert port in server.listeners
        with socket.create_connection(("localhost", port), timeout=5):
            pass
        nursery.cancel_scope.cancel()
