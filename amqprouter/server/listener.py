"""Listening sockets and the accept loop."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Final

import structlog
import trio

from amqprouter.net import sockets

log = structlog.get_logger("amqprouter.listener")

#: Out of file descriptors or memory: log, pause, and keep serving (as trio does)
#: rather than let one bad moment end the listener.
ACCEPT_CAPACITY_ERRNOS: Final = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_PAUSE: Final = 0.1


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
    port: int, resolved: tuple[socket.AddressFamily, tuple[str, int]] | None = None
) -> socket.socket:
    """Bind a listening socket; OSError says why not.

    ``resolved`` is ``resolve_listen_address``'s answer. Without one the router listens
    on every address, IPv6 and IPv4 alike where the machine has IPv6 (amqpprox listens
    on IPv4 only).
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
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def accept_loop(listener: socket.socket, on_client: Callable[[socket.socket], None]) -> None:
    """Accept until cancelled; each client goes to ``on_client`` at once."""
    try:
        while True:
            await trio.lowlevel.wait_readable(listener.fileno())
            # Take every pending connection per wake-up: connection bursts are common.
            while True:
                try:
                    client, _address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                        log.error("accept failed, pausing", error=str(exc))
                        await trio.sleep(ACCEPT_PAUSE)
                        break
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue
                    raise
                try:
                    sockets.tune_socket(client)
                except OSError:
                    client.close()
                    continue
                on_client(client)
    finally:
        sockets.close_socket(listener)
