"""Non-blocking socket operations on trio's event loop, without trio's socket wrapper.

trio's ``SocketStream`` and ``trio.socket`` checkpoint around every call, even when
the kernel has data ready or buffer space free. On the forwarding path each of
those scheduling round trips adds latency (DESIGN.md measured ~47 µs per traversal
for a plain trio relay), so these helpers try the system call first and only park
the task on ``wait_readable``/``wait_writable`` when it would block. Callers that
loop without blocking must checkpoint now and then themselves (as the session's
pumps do), or one busy session could starve the others.

Closing goes through ``close_socket`` so that any task parked on the socket is woken
with ``trio.ClosedResourceError`` instead of waiting on a dead file descriptor.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import sys
from typing import Final

import trio

#: One read moves up to this much. Large reads are the throughput lever (DESIGN.md);
#: CPython shrinks the bytes object to what arrived, so idle sessions hold nothing.
READ_SIZE = 256 * 1024


class PeerGone(Exception):
    """The peer closed or reset the connection."""


async def recv_some(sock: socket.socket, size: int = READ_SIZE) -> bytes:
    """Wait for and return at least one byte; PeerGone on EOF or reset."""
    while True:
        try:
            data = sock.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock.fileno())
            continue
        except OSError as exc:  # reset, timed-out keepalive, unreachable: all mean gone
            raise PeerGone(str(exc)) from exc
        if not data:
            raise PeerGone("end of stream")
        return data


async def send_all(sock: socket.socket, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data``, parking only while the kernel buffer is full."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise PeerGone(str(exc)) from exc
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        await trio.lowlevel.wait_writable(sock.fileno())
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        view = view[sent:]


async def send_pieces(sock: socket.socket, pieces: list[bytes | memoryview]) -> None:
    """Write several buffers in order with one scatter write (no joining copy)."""
    # The forwarding path's write (every traversal): the common case, one piece that
    # the kernel takes whole, costs one system call and no coroutine below this one.
    single = len(pieces) == 1
    try:
        sent = sock.send(pieces[0]) if single else sock.sendmsg(pieces)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise PeerGone(str(exc)) from exc
    if single:
        if sent < len(pieces[0]):  # the kernel buffer filled up: park until it drains
            await send_all(sock, memoryview(pieces[0])[sent:])
    elif sent < sum(len(piece) for piece in pieces):
        # The kernel buffer filled up: copy what is left once and finish as usual.
        await send_all(sock, b"".join(pieces)[sent:])


def tune_socket(sock: socket.socket) -> None:
    """Options for both legs, as amqpprox sets them: no Nagle delay, kernel keepalive."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


class ConnectTimedOut(TimeoutError):
    """``connect`` was not done within its ``timeout``."""


async def connect(
    address: tuple[str, int], family: socket.AddressFamily, within: float = math.inf
) -> socket.socket:
    """Open a TCP connection to an already-resolved address (OSError on failure).

    Bounded by ``within`` seconds (ConnectTimedOut), in a cancel scope entered only if
    the connect has to wait: a broker on this host, or close by, has often answered
    within the connect call itself, and a zero-timeout poll says so for one system call
    where a cancel scope and a park of the task cost scheduler work. Without a
    ``within`` the caller bounds it; on cancellation the half-open socket is closed.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        tune_socket(sock)
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            if not _writable_now(sock):
                with trio.move_on_after(within) as waited:
                    await trio.lowlevel.wait_writable(sock.fileno())
                if waited.cancelled_caught:
                    raise ConnectTimedOut(f"not connected within {within:g}s")
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code != 0:
            raise OSError(code, os.strerror(code))
    except BaseException:
        close_socket(sock)
        raise
    return sock


def _writable_now(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(0))


def close_socket(sock: socket.socket) -> None:
    """Close now; wake any task waiting on it. Safe to call twice."""
    if sock.fileno() == -1:
        return
    trio.lowlevel.notify_closing(sock.fileno())
    sock.close()


def _host_port(address: tuple[object, ...]) -> tuple[str, int]:
    host = str(address[0])
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; show them as a.b.c.d.
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]
    # Interned: each session keeps four addresses, and most share a host (the broker's,
    # the router's own, a client host's many connections): one string each, not four
    # per session.
    return sys.intern(host), int(str(address[1]))


#: Addresses that many sessions hold (a listener's, a broker's), one tuple each instead
#: of one per session; bounded, since past it an address is simply not shared.
SHARED_ADDRESSES: Final = 4096
_shared: dict[tuple[str, int], tuple[str, int]] = {}


def shared(address: tuple[str, int]) -> tuple[str, int]:
    """``address``, or an equal tuple already held (memory per idle session: a session
    keeps four addresses, and its listener's and its broker's are everyone's)."""
    known = _shared.get(address)
    if known is not None:
        return known
    if len(_shared) < SHARED_ADDRESSES:
        _shared[address] = address
    return address


def endpoint(address: tuple[str, int]) -> str:
    """``host:port`` for logs and replies; an IPv6 host in brackets (``[::1]:5672``)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_name(sock: socket.socket) -> tuple[str, int]:
    try:
        return _host_port(sock.getpeername())
    except OSError:
        return ("0.0.0.0", 0)


def local_name(sock: socket.socket) -> tuple[str, int]:
    try:
        return _host_port(sock.getsockname())
    except OSError:
        return ("0.0.0.0", 0)
