"""What a session forwards over: a connected byte stream, plain or TLS.

The session's pumps are the hot path, so the interface is shaped for them rather
than for generality:

* ``recv(size)`` is a plain synchronous call that returns what is there now: bytes,
  ``b""`` at end of stream, ``BlockingIOError`` when nothing is ready (any other
  ``OSError`` means the peer is gone). For a plain socket it *is* ``socket.recv``
  (bound when asked for, not kept: one bound method less per transport of every idle
  session), which a pump takes once, so the seam costs the plain path nothing.
* ``wait_readable()`` parks until ``recv`` may return something. A TLS transport may
  have decrypted bytes already (``pending()``), and it may need the socket
  *writable* before it can read (a renegotiation or a key update): it knows which,
  so the pump never has to.
* ``send_all`` / ``send_pieces`` write everything, parking only while the kernel
  buffer is full; ``PeerGone`` when the peer has gone.

Every transport owns what it reads and writes: ``close()`` wakes any task parked on
it. The pumps write a plain socket themselves (``PlainTransport.sock``); nothing else
in a session reaches a socket, so a session runs over ``MemoryTransport`` (a pair of
connected in-memory transports, memory_transport.py) as it does over TCP.

``recv_some`` and ``converse`` are the reads of everything that is not a pump: the
handshakes, the close handshake, the pause hold; ``converse`` drives a sans-IO
protocol machine over a transport.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import trio

from amqprouter.net import sockets


class Transport(Protocol):
    """A connected, non-blocking byte stream (see the module docstring)."""

    @property
    def recv(self) -> Callable[[int], bytes]:
        """Read what is ready now: bytes, b"" at EOF, BlockingIOError if nothing is."""
        ...

    async def wait_readable(self) -> None: ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def send_pieces(self, pieces: list[bytes | memoryview]) -> None: ...

    def pending(self) -> int:
        """Bytes already read off the socket and decoded, that ``recv`` returns at once."""
        ...

    def close(self) -> None: ...

    def peer_name(self) -> tuple[str, int]: ...

    def local_name(self) -> tuple[str, int]: ...

    def peer_subject(self) -> str | None:
        """The verified peer certificate's subject (mutual TLS), else None."""
        ...

    def tls_version(self) -> str | None:
        """The negotiated TLS version ("TLSv1.3"), None for plain TCP."""
        ...

    def raw_socket(self) -> socket.socket | None:
        """The TCP socket underneath when its bytes are this stream's bytes (plain TCP),
        for work done on the socket itself: reading a PROXY header exactly, a TLS
        handshake. None for a transport without one (TLS, in memory)."""
        ...


class PlainTransport:
    """A TCP socket as it is: every call goes straight to the socket."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @property
    def recv(self) -> Callable[[int], bytes]:
        return self.sock.recv

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.sock.fileno())

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await sockets.send_all(self.sock, data)

    async def send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        # (The session's pumps call sockets.send_pieces on the socket themselves.)
        await sockets.send_pieces(self.sock, pieces)

    def pending(self) -> int:
        return 0

    def close(self) -> None:
        sockets.close_socket(self.sock)

    def peer_name(self) -> tuple[str, int]:
        return sockets.peer_name(self.sock)

    def local_name(self) -> tuple[str, int]:
        return sockets.local_name(self.sock)

    def peer_subject(self) -> str | None:
        return None

    def tls_version(self) -> str | None:
        return None

    def raw_socket(self) -> socket.socket | None:
        return self.sock


class Writing(dict[Any, None]):
    """The transports with a write under way (a session's ``_writing``): a set's
    ``add``, ``discard`` and ``in`` over a dict, since an empty dict is 64 bytes where
    an empty set is 216, and every idle session has one."""

    __slots__ = ()

    def add(self, transport: object) -> None:
        self[transport] = None

    def discard(self, transport: object) -> None:
        self.pop(transport, None)
        if not self:
            self.clear()  # a dict keeps its table once used: back to 64 bytes


def tcp_socket(transport: Transport) -> socket.socket:
    """``transport``'s TCP socket, for a hook that works on the socket itself;
    OSError if it has none."""
    sock = transport.raw_socket()
    if sock is None:
        raise OSError(f"{type(transport).__name__} has no TCP socket of its own")
    return sock


async def recv_some(transport: Transport, size: int = sockets.READ_SIZE) -> bytes:
    """Wait for and return at least one byte; PeerGone on EOF or any other error.

    For the handshakes and the pause hold, not the pumps (they inline this loop).
    """
    while True:
        try:
            data = transport.recv(size)
        except BlockingIOError:
            await transport.wait_readable()
            continue
        except OSError as exc:  # reset, timed-out keepalive, unreachable: all mean gone
            raise sockets.PeerGone(str(exc)) from exc
        if not data:
            raise sockets.PeerGone("end of stream")
        return data


_Event = TypeVar("_Event", covariant=True)


class Conversation(Protocol[_Event]):
    """A sans-IO machine: bytes in, events out, bytes to send."""

    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> _Event | None: ...
    def data_to_send(self) -> bytes: ...


async def converse(peer: Transport, machine: Conversation[_Event]) -> _Event:
    """Feed ``machine`` from ``peer`` and send what it says until it has an event.

    What the machine queued is sent before its event is returned (a Close-Ok owed to a
    peer goes out first). Unbounded on its own: callers hold the deadline.
    """
    while True:
        event = machine.next_event()
        outgoing = machine.data_to_send()
        if outgoing:
            await peer.send_all(outgoing)
        if event is not None:
            return event
        machine.receive_data(await recv_some(peer))
