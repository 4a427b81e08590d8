"""``sockets.connect`` bounds itself, and waits (a cancel scope, a park) only when it must."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
import trio

from amqprouter.net import sockets


@contextlib.contextmanager
def _listener(backlog: int) -> Iterator[tuple[str, int]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(backlog)
        yield listener.getsockname()


async def test_a_listening_peer_on_this_host_is_connected_within_the_call() -> None:
    with _listener(8) as address:
        with trio.CancelScope(deadline=trio.current_time() + 5):
            sock = await sockets.connect(address, socket.AF_INET, within=5.0)
        try:
            assert sock.getpeername() == address
        finally:
            sockets.close_socket(sock)


async def test_a_connect_that_has_to_wait_ends_after_within_seconds() -> None:
    # A full accept queue drops further SYNs: the connect would wait for ever.
    with _listener(0) as address:
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(address)
                fillers.append(filler)
            began = time.monotonic()
            with pytest.raises(sockets.ConnectTimedOut):
                await sockets.connect(address, socket.AF_INET, within=0.3)
            assert 0.25 <= time.monotonic() - began < 3
        finally:
            for filler in fillers:
                filler.close()


async def test_a_refused_connect_is_an_oserror_not_a_timeout() -> None:
    with _listener(8) as address:
        pass  # closed: nothing listens there now
    with pytest.raises(OSError) as caught:
        await sockets.connect(address, socket.AF_INET, within=5.0)
    assert not isinstance(caught.value, sockets.ConnectTimedOut)
