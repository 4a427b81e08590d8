"""The control socket: one command line per connection, a raw-text reply, then close.

amqpprox's conventions: a Unix stream socket; the client writes one line ending in
``\\n``; the server answers with raw text and closes (so the client reads to EOF);
successful mutating commands answer nothing.

One addition, for ``amqprouter_ctl``'s exit codes: a client that starts with the
line ``STATUS_HELLO`` gets its reply followed by a NUL byte and ``0`` (success) or
``1`` (the command failed). Plain clients (``nc -U``, socat, amqpprox scripts) never
send it and see only the reply text.

A streaming reply (``STAT LISTEN``) is never closed by the server: it is written
chunk by chunk until the client disconnects. Its status (NUL and ``S``) comes first,
before the chunks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from amqprouter.observe import logging as router_logging

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.control")

#: Sent first by amqprouter_ctl to ask for the status trailer.
STATUS_HELLO: Final = "AMQPROUTER_CTL STATUS"
STATUS_SEPARATOR: Final = b"\0"
#: The status of a streaming reply, sent before its first chunk: what follows is the
#: stream (amqprouter_ctl prints it until EOF or Ctrl-C, and exits 0).
STATUS_STREAMING: Final = b"S"
#: A command line longer than this is refused (the grammar's limit, plus the newline).
MAX_LINE_BYTES: Final = 4096 + 2
#: A client that connects and never finishes its line is answered and dropped after this.
READ_TIMEOUT: Final = 5.0
#: Writing a reply to a client that stopped reading gives up after this.
WRITE_TIMEOUT: Final = 5.0
DEFAULT_MODE: Final = 0o600
#: After replying, input still arriving is read and dropped for this long / this much.
DRAIN_TIMEOUT: Final = 1.0
DRAIN_LIMIT: Final = 1 << 20


@attrs.frozen
class Reply:
    text: str
    ok: bool = True
    #: Run once the reply has been written (EXIT stops the router only then).
    after: Callable[[], None] | None = attrs.field(default=None, eq=False)
    #: A streaming reply (STAT LISTEN): chunks written as they come, after ``text``,
    #: until the client disconnects or the stream ends.
    stream: AsyncGenerator[str, None] | None = attrs.field(default=None, eq=False)


Handler = Callable[[str], Awaitable[Reply]]


class ControlSocketInUse(Exception):
    """Another live router answers on the control socket path."""


def prepare_path(path: Path) -> None:
    """Remove a stale socket file; refuse to steal one a live router answers on."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketInUse(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink(missing_ok=True)  # stale: left by a router that died
            return
        raise ControlSocketInUse(f"{path} cannot be checked: {exc.strerror}") from exc
    finally:
        probe.close()
    raise ControlSocketInUse(
        f"{path} is the control socket of a running router; stop it or choose another "
        "--control-socket"
    )


async def bind_control_socket(path: Path, mode: int = DEFAULT_MODE) -> trio.socket.SocketType:
    prepare_path(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Create it private from the first instant (no window where others may connect),
    # then widen to the requested mode.
    previous = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(previous)
    os.chmod(path, mode)
    sock.listen(socket.SOMAXCONN)
    return sock


async def serve_control(
    path: Path,
    handler: Handler,
    *,
    mode: int = DEFAULT_MODE,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket until cancelled; the socket file is removed on exit."""
    sock = await bind_control_socket(path, mode)
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_one, stream, handler)
    finally:
        # Unlink first: the close below is a checkpoint, and we are being cancelled.
        with contextlib.suppress(OSError):
            path.unlink()  # noqa: ASYNC240 - a local socket file; unlink is instant
        await trio.aclose_forcefully(listener)


async def _serve_one(stream: trio.SocketStream, handler: Handler) -> None:
    reply: Reply | None = None
    try:
        reply, want_status = await _read_and_handle(stream, handler)
        if reply.stream is not None:
            await _stream_reply(stream, reply, want_status)
            return
        payload = reply.text.encode()
        if want_status:
            payload += STATUS_SEPARATOR + (b"0" if reply.ok else b"1")
        with trio.move_on_after(WRITE_TIMEOUT):
            await stream.send_all(payload)
            await stream.send_eof()
            # Closing with unread input makes the kernel send RST, which can destroy the
            # reply before the client reads it: discard what the client still sends.
            with trio.move_on_after(DRAIN_TIMEOUT):
                drained = 0
                while drained < DRAIN_LIMIT and (chunk := await stream.receive_some(65536)):
                    drained += len(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:  # one bad control connection must not end the control loop
        log.exception("control connection failed")
    finally:
        await trio.aclose_forcefully(stream)
        if reply is not None and reply.after is not None:
            reply.after()


async def _stream_reply(stream: trio.SocketStream, reply: Reply, want_status: bool) -> None:
    """Write ``reply.text``, then each chunk of ``reply.stream``, until the client leaves.

    The client's EOF (or any reset) is watched for while the stream waits for its
    next chunk, so a listener that went away is dropped at once, not at the next
    write; a client that stops reading is dropped after ``WRITE_TIMEOUT``.
    """
    assert reply.stream is not None
    head = reply.text.encode()
    if want_status:
        head += STATUS_SEPARATOR + STATUS_STREAMING
    chunks = reply.stream
    async with contextlib.aclosing(chunks), trio.open_nursery() as nursery:

        async def watch_for_eof() -> None:
            # Input after the command line is read and dropped; EOF ends the stream.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await stream.receive_some(4096):
                    pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_for_eof)
        # Caught here, inside the nursery: escaping it they would come wrapped in a group.
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError
        ):
            if head:
                with trio.fail_after(WRITE_TIMEOUT):
                    await stream.send_all(head)
            async for chunk in chunks:
                with trio.fail_after(WRITE_TIMEOUT):
                    await stream.send_all(chunk.encode())
        nursery.cancel_scope.cancel()


async def _read_and_handle(stream: trio.SocketStream, handler: Handler) -> tuple[Reply, bool]:
    buffer = bytearray()
    want_status = False
    with trio.move_on_after(READ_TIMEOUT):
        while True:
            newline = buffer.find(b"\n")
            if newline >= 0:
                line = bytes(buffer[:newline]).decode(errors="replace").rstrip("\r")
                del buffer[: newline + 1]
                if line == STATUS_HELLO and not want_status:
                    want_status = True
                    continue
                if newline > MAX_LINE_BYTES:
                    return Reply("Command line too long.\n", ok=False), want_status
                reply = await handler(line)
                log.info(
                    "control", command=line, reply=router_logging.truncate(reply.text), ok=reply.ok
                )
                return reply, want_status
            if len(buffer) > MAX_LINE_BYTES:
                return Reply("Command line too long.\n", ok=False), want_status
            data = await stream.receive_some(4096)
            if not data:
                return Reply("Command line must end with a newline.\n", ok=False), want_status
            buffer += data
    return Reply(f"No command line within {READ_TIMEOUT:g}s.\n", ok=False), want_status
