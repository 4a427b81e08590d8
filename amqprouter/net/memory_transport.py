"""A pair of connected in-memory transports: a session without sockets.

Modelled on trio's ``memory_stream_pair``: what one end sends, the other receives, in
order, with no kernel in between, so a session (handshakes, pumps, close) runs in
milliseconds and on trio's mock clock. It keeps the ``Transport`` contract exactly as
the pumps rely on it:

* ``recv(size)`` returns at most ``size`` bytes of what the peer sent, ``b""`` once
  the peer has closed and everything it sent is read, ``BlockingIOError`` when
  nothing is there yet, and ``OSError`` after this end was closed;
* ``wait_readable()`` parks until ``recv`` has something to say (a checkpoint
  either way), and ``close()`` wakes it, as closing a socket does;
* ``send_all`` raises ``PeerGone`` once either end is closed. With ``max_buffer``
  (bytes waiting to be read, per direction) a sender parks while the peer's buffer is
  full, as a socket's kernel buffer makes it: a peer that stops reading can be shown.
  As with a socket, a write that fits is not a checkpoint: a test peer that writes in
  a loop without end must checkpoint itself.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import trio

from amqprouter.net.sockets import PeerGone


class _Pipe:
    """One direction: bytes sent and not yet read, and who waits on them."""

    __slots__ = ("buffer", "max_buffer", "readable", "reader_closed", "room", "writer_closed")

    def __init__(self, max_buffer: int | None) -> None:
        self.buffer = bytearray()
        self.max_buffer = max_buffer
        self.writer_closed = False  # the sending end closed: EOF once drained
        self.reader_closed = False  # the receiving end closed: sends fail
        self.readable = trio.lowlevel.ParkingLot()  # the reader, waiting for bytes
        self.room = trio.lowlevel.ParkingLot()  # writers, waiting for buffer space

    def wake(self) -> None:
        self.readable.unpark_all()
        self.room.unpark_all()


class MemoryTransport:
    """One end of a ``memory_transport_pair`` (see the module docstring)."""

    __slots__ = ("_closed", "_incoming", "_local", "_outgoing", "_peer", "recv")

    def __init__(
        self,
        incoming: _Pipe,
        outgoing: _Pipe,
        local: tuple[str, int],
        peer: tuple[str, int],
    ) -> None:
        self._incoming, self._outgoing = incoming, outgoing
        self._local, self._peer = local, peer
        self._closed = False
        # An attribute, as the interface has it.
        self.recv: Callable[[int], bytes] = self._recv

    def _recv(self, size: int) -> bytes:
        if self._closed:
            raise OSError(errno.EBADF, "transport closed")
        pipe = self._incoming
        if pipe.buffer:
            data = bytes(pipe.buffer[:size])
            del pipe.buffer[:size]
            pipe.room.unpark_all()
            return data
        if pipe.writer_closed:
            return b""
        raise BlockingIOError(errno.EAGAIN, "nothing to read")

    async def wait_readable(self) -> None:
        pipe = self._incoming
        if self._closed or pipe.buffer or pipe.writer_closed:
            await trio.lowlevel.checkpoint()
            return
        await pipe.readable.park()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        pipe = self._outgoing
        while True:
            if self._closed:
                raise PeerGone("transport closed")
            if pipe.reader_closed:
                raise PeerGone("peer closed the connection")
            if not view:
                return
            room = len(view) if pipe.max_buffer is None else pipe.max_buffer - len(pipe.buffer)
            if room <= 0:
                await pipe.room.park()
                continue
            pipe.buffer += view[:room]
            view = view[room:]
            pipe.readable.unpark_all()

    async def send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        await self.send_all(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def pending(self) -> int:
        return 0 if self._closed else len(self._incoming.buffer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._outgoing.writer_closed = True
        self._incoming.reader_closed = True
        self._incoming.buffer.clear()
        self._incoming.wake()
        self._outgoing.wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def peer_name(self) -> tuple[str, int]:
        return self._peer

    def local_name(self) -> tuple[str, int]:
        return self._local

    def peer_subject(self) -> str | None:
        return None

    def tls_version(self) -> str | None:
        return None

    def raw_socket(self) -> None:
        return None


def memory_transport_pair(
    left: tuple[str, int] = ("127.0.0.1", 40000),
    right: tuple[str, int] = ("127.0.0.1", 5672),
    *,
    max_buffer: int | None = None,
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected transports: ``left``'s address is the first's local name and the
    second's peer name, and the other way round. ``max_buffer``: see the module
    docstring (None: a sender never waits)."""
    to_right, to_left = _Pipe(max_buffer), _Pipe(max_buffer)
    return (
        MemoryTransport(to_left, to_right, left, right),
        MemoryTransport(to_right, to_left, right, left),
    )
