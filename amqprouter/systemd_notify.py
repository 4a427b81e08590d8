"""sd_notify: tell the service manager (systemd's Type=notify) how start-up, reload and stop go.

The protocol is one datagram of ``KEY=value`` lines sent to the Unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); see
sd_notify(3). It is short enough to speak here rather than depend on libsystemd or a
binding of it. Without ``$NOTIFY_SOCKET`` (not started by systemd, or not
Type=notify) every call is a no-op, so the router calls ``notify`` unconditionally.

A leaf module: the standard library only, usable from any layer.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Final

READY: Final = "READY=1"
STOPPING: Final = "STOPPING=1"
RELOADING: Final = "RELOADING=1"


def notify_socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address of a ``$NOTIFY_SOCKET`` value; None if we cannot use it.

    ``@name`` is the abstract namespace (a leading NUL byte on the wire). systemd also
    knows ``vsock:`` addresses (a VM's manager), which a router never runs under.
    """
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notify(*assignments: str) -> bool:
    """Send ``assignments`` (``READY=1``, ``STATUS=...``) in one datagram; True if sent.

    Best effort, as sd_notify's callers treat it: a manager that is gone must not stop
    the router, so a failed send is one line on stderr (the journal, under systemd)
    and False. ``RELOADING=1`` gets the ``MONOTONIC_USEC`` systemd asks to come with it.
    """
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target:
        return False
    address = notify_socket_address(target)
    if address is None:
        sys.stderr.write(f"amqprouter: NOTIFY_SOCKET={target!r} is not a Unix socket path\n")
        return False
    lines = list(assignments)
    if RELOADING in lines and not any(line.startswith("MONOTONIC_USEC=") for line in lines):
        lines.append(f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        sys.stderr.write(f"amqprouter: sd_notify to {target} failed: {exc.strerror or exc}\n")
        return False
    return True
