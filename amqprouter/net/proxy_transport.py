"""The PROXY protocol on the wire: reading a client's header, writing a backend's.

Reading takes *exactly* the header's bytes off the socket, never one more: whatever
follows (the client's AMQP header, or a TLS ClientHello on a secure listener) stays
in the kernel for the next reader. It peeks, and consumes only bytes the sans-IO
parser says belong to the header.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

from amqprouter.net.sockets import PeerGone
from amqprouter.net.transport import Transport
from amqprouter.protocol.proxy_header import MAX_HEADER, ProxyHeader, parse


class ClientRefused(PeerGone):
    """The client (as its PROXY header names it) is not allowed; already logged, so the
    session ends without another line."""


async def read_proxy_header(sock: socket.socket) -> ProxyHeader:
    """Read one PROXY header (v1 or v2) from ``sock``, and nothing after it.

    Unbounded in time: the caller holds the deadline. Raises ProxyHeaderError for bytes
    that are not a valid header, PeerGone if the peer leaves first.
    """
    taken = b""
    while True:
        try:
            peeked = sock.recv(MAX_HEADER - len(taken), socket.MSG_PEEK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock.fileno())
            continue
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        if not peeked:
            raise PeerGone("end of stream before a complete PROXY header")
        parsed = parse(taken + peeked)
        # Incomplete: every byte seen is header, so take them all (and wait for more,
        # rather than peek the same bytes again). Complete: take just the rest of it.
        wanted = len(peeked) if parsed is None else parsed.consumed - len(taken)
        taken += _take(sock, wanted)
        if parsed is not None:
            return parsed.header


def _take(sock: socket.socket, size: int) -> bytes:
    """Consume ``size`` bytes already peeked (so already in the kernel buffer)."""
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        if not chunk:
            raise PeerGone("end of stream inside a PROXY header")
        data += chunk
    return data


class ProxiedTransport:
    """``inner``, except that its peer is the client a PROXY header named.

    Everything else goes straight to ``inner``; ``recv`` is ``inner``'s own, so the
    pumps pay nothing for the wrapper.
    """

    __slots__ = ("_inner", "_peer", "recv")

    def __init__(self, inner: Transport, peer: tuple[str, int]) -> None:
        self._inner = inner
        self._peer = peer
        self.recv: Callable[[int], bytes] = inner.recv

    async def wait_readable(self) -> None:
        await self._inner.wait_readable()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        await self._inner.send_pieces(pieces)

    def pending(self) -> int:
        return self._inner.pending()

    def close(self) -> None:
        self._inner.close()

    def peer_name(self) -> tuple[str, int]:
        return self._peer

    def local_name(self) -> tuple[str, int]:
        return self._inner.local_name()

    def peer_subject(self) -> str | None:
        return self._inner.peer_subject()

    def tls_version(self) -> str | None:
        return self._inner.tls_version()

    def raw_socket(self) -> socket.socket | None:
        return self._inner.raw_socket()


async def send_proxy_header(transport: Transport, header: bytes) -> None:
    """Write a PROXY header to a fresh backend connection (before anything else)."""
    await transport.send_all(header)
