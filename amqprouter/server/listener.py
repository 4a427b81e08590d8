"""Listening sockets and the accept loop."""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Callable
from typing import Final

import trio

from amqprouter.net import sockets
from amqprouter.server.capacity import AcceptGate

#: Out of file descriptors or memory: shed a silent connection or pause (capacity.py),
#: and keep serving rather than let one bad moment end the listener.
ACCEPT_CAPACITY_ERRNOS: Final = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: Connections accepted per wake-up of a listener before the others get a turn.
ACCEPT_BATCH: Final = 64


async def resolve_listen_address(
    host: str, port: int
) -> tuple[socket.AddressFamily, tuple[str, int]] | None:
    """Where ``host`` listens (None for an empty host: every address).

    trio's getaddrinfo answers a literal address at once and looks a name up in a
    worker thread, so a slow resolver never stalls the event loop.
    """
    if not host:
        return None
    family, _type, _proto, _canon, address = (
        await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    )[0]
    return family, (str(address[0]), int(address[1]))


def bind_listener(
    port: int,
    resolved: tuple[socket.AddressFamily, tuple[str, int]] | None = None,
    *,
    reuse_port: bool = False,
) -> socket.socket:
    """Bind a listening socket; OSError says why not.

    ``resolved`` is ``resolve_listen_address``'s answer. Without one the router listens
    on every address, IPv6 and IPv4 alike where the machine has IPv6 (amqpprox listens
    on IPv4 only). ``reuse_port`` sets SO_REUSEPORT: the workers of one supervisor
    (``--workers``) each bind the same port and the kernel spreads new connections
    over them.
    """
    address: tuple[str, int]
    if resolved is not None:
        family, address = resolved
        sock = socket.socket(family, socket.SOCK_STREAM)
    elif socket.has_ipv6:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address = ("::", port)
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = ("0.0.0.0", port)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("0.0.0.0", port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def accept_loop(
    listener: socket.socket, on_client: Callable[[socket.socket], None], gate: AcceptGate
) -> None:
    """Accept until cancelled; each client goes to ``on_client`` at once.

    ``gate`` says when there is room (capacity.py): at the listener's cap or out of
    descriptors, a silent connection is shed or accepting stops, the kernel's
    backlog holding new connections meanwhile.
    """
    try:
        while True:
            await gate.room()
            await trio.lowlevel.wait_readable(listener.fileno())
            # Take the pending connections in batches: connection bursts are common,
            # and between batches the control socket and the sessions get their turn.
            for _ in range(ACCEPT_BATCH):
                if not gate.has_room():
                    break
                try:
                    client, _address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                        # Linux says EMFILE before it looks at the queue: an empty queue
                        # is no reason to shed anyone.
                        if _has_pending(listener):
                            await gate.room(short_of=os.strerror(exc.errno))
                        break
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue
                    raise
                gate.accepted()
                try:
                    sockets.tune_socket(client)
                except OSError:
                    client.close()
                    continue
                on_client(client)
    finally:
        sockets.close_socket(listener)


def _has_pending(listener: socket.socket) -> bool:
    """Whether a connection waits on ``listener`` (poll() needs no descriptor)."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))
