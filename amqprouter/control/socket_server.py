"""The control socket: one command line per connection, a raw-text reply, then close.

amqpprox's conventions: a Unix stream socket; the client writes one line ending in
``\\n``; the server answers with raw text and closes (so the client reads to EOF);
successful mutating commands answer nothing.

Two additions, for ``amqprouter_ctl``: lines that start with ``AMQPROUTER_CTL ``
before the command line ask for something about its reply, and are never commands
(no verb starts so). A client that sends ``STATUS_HELLO`` gets its reply followed by
a NUL byte and ``0`` (success) or ``1`` (the command failed); one that sends
``JSON_HELLO`` (``--json``) gets the command's JSON form, one object a line, or an
error if it has none (``control.json_replies``). Plain clients (``nc -U``, socat,
amqpprox scripts) never send either and see only the reply text.

A streaming reply (``STAT LISTEN``) is never closed by the server: it is written
chunk by chunk until the client disconnects. Its status (NUL and ``S``) comes first,
before the chunks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import socket
import stat
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import structlog
import trio

from amqprouter.control.grammar import MAX_LINE_LENGTH
from amqprouter.observe import logging as router_logging
from amqprouter.server.capacity import DescriptorReserve

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.control")

#: Sent first by amqprouter_ctl to ask for the status trailer.
STATUS_HELLO: Final = "AMQPROUTER_CTL STATUS"
#: Sent before the command by ``amqprouter_ctl --json``: the reply in JSON.
JSON_HELLO: Final = "AMQPROUTER_CTL JSON"
STATUS_SEPARATOR: Final = b"\0"
#: The status of a streaming reply, sent before its first chunk: what follows is the
#: stream (amqprouter_ctl prints it until EOF or Ctrl-C, and exits 0).
STATUS_STREAMING: Final = b"S"
#: A command line longer than this is refused (the grammar's limit, plus "\r\n").
MAX_LINE_BYTES: Final = MAX_LINE_LENGTH + 2
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


class Handler(Protocol):
    """Answers one command line; ``as_json`` when the client sent ``JSON_HELLO``."""

    def __call__(self, line: str, *, as_json: bool = False) -> Awaitable[Reply]: ...


class ControlSocketError(Exception):
    """The control socket cannot be served at this path (the message says why)."""


class ControlSocketInUse(ControlSocketError):
    """Another live router answers on the control socket path."""


class UnsafeControlDirectory(ControlSocketError):
    """Another user could replace the control socket in its directory."""


#: Where the control socket lives by default when that directory can be used.
RUN_DIRECTORY: Final = Path("/run/amqprouter")
RUN_SOCKET: Final = RUN_DIRECTORY / "control"
#: amqpprox's default, kept when /run/amqprouter is not ours to use.
FALLBACK_SOCKET: Final = Path("/tmp/amqprouter")
#: How often a running router checks that its socket file is still the one it bound.
WATCH_INTERVAL: Final = 2.0


def default_control_socket() -> Path:
    """``/run/amqprouter/control`` when that directory is usable, else ``/tmp/amqprouter``.

    Root creates /run/amqprouter (mode 0755) when it is missing; another user uses it
    only when it exists and it may create files there (a service manager's
    RuntimeDirectory=). /run/amqprouter can be written only by its owner, so nobody
    else can hold the socket path before the router binds it (in /tmp anyone can).
    """
    if not RUN_DIRECTORY.is_dir() and os.geteuid() == 0 and RUN_DIRECTORY.parent.is_dir():
        with contextlib.suppress(OSError):  # a read-only /run: the fallback below
            RUN_DIRECTORY.mkdir(mode=0o755)
            RUN_DIRECTORY.chmod(0o755)  # whatever the umask; /run is root's alone
    if RUN_DIRECTORY.is_dir() and os.access(RUN_DIRECTORY, os.W_OK | os.X_OK):
        return RUN_SOCKET
    return FALLBACK_SOCKET


def check_directory(directory: str, st: os.stat_result) -> None:
    """Refuse a directory in which another user could replace or redirect the socket.

    Its owner can (even in a sticky directory), and so can anyone with write access
    to a directory without the sticky bit. Root and this user are trusted.
    """
    if not stat.S_ISDIR(st.st_mode):
        raise ControlSocketError(f"{directory} is not a directory")
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeControlDirectory(
            f"{directory} belongs to {_user_name(st.st_uid)}, who could replace the control "
            "socket; use a directory owned by this user or root, such as "
            f"{RUN_DIRECTORY}"
        )
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not st.st_mode & stat.S_ISVTX:
        raise UnsafeControlDirectory(
            f"{directory} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}) "
            "and not sticky, so another user could replace the control socket; use a "
            f"directory only this user (or root) can write, such as {RUN_DIRECTORY}"
        )


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


_PROC_FDS: Final = "/proc/self/fd"


def _at(dir_fd: int, name: str, path: Path) -> str:
    """A path to ``name`` in the directory open as ``dir_fd`` (which is ``path.parent``).

    Through /proc the directory is the one already opened and checked, even if a
    component above it is renamed meanwhile; without /proc, the plain path.
    """
    if os.path.isdir(_PROC_FDS):
        return f"{_PROC_FDS}/{dir_fd}/{name}"
    return str(path.parent / name)


def _prepare(dir_fd: int, path: Path) -> None:
    """Remove a stale socket file; refuse to steal one a live router answers on."""
    name = path.name
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketInUse(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(_at(dir_fd, name, path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            # Stale: left by a router that died.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
            return
        raise ControlSocketInUse(f"{path} cannot be checked: {exc.strerror}") from exc
    finally:
        probe.close()
    owner = "" if st.st_uid == os.geteuid() else f" (it belongs to {_user_name(st.st_uid)})"
    raise ControlSocketInUse(
        f"{path} is the control socket of a running router{owner}; stop it or choose "
        "another --control-socket"
    )


def prepare_path(path: Path) -> None:
    """Remove a stale socket file at ``path``; refuse to steal one a live router answers on."""
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _prepare(dir_fd, path)
    finally:
        os.close(dir_fd)


@attrs.frozen
class BoundSocket:
    """A listening control socket and the identity of the file it is reachable at."""

    sock: socket.socket
    #: (st_dev, st_ino) of the socket file: another file at the path is not ours.
    identity: tuple[int, int]

    def is_at(self, path: Path) -> bool:
        try:
            st = path.lstat()
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity


def bind_control_socket(
    path: Path, mode: int = DEFAULT_MODE, *, check_dir: bool = True
) -> BoundSocket:
    """Bind and listen on ``path`` with exactly ``mode``, without a race on the path.

    The socket is bound in a fresh private directory (0700) beside the final path,
    given its mode there (no other user can reach that entry), and only then
    hard-linked into place; a link never replaces an existing file. No step follows
    a name another user could have swapped for a symlink, and the umask (process-wide,
    so not ours to change) only ever narrows the mode before the chmod sets it.
    ``check_dir=False`` skips the directory check (only the tests that prove the bind
    itself safe in a hostile directory use it).
    """
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if check_dir:
            check_directory(str(path.parent), os.fstat(dir_fd))
        _prepare(dir_fd, path)
        private = f".{path.name}.{secrets.token_hex(6)}"
        os.mkdir(private, 0o700, dir_fd=dir_fd)
        try:
            private_fd = os.open(
                private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd
            )
            try:
                return _bind_and_link(dir_fd, private_fd, path.parent / private, path, mode)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink("socket", dir_fd=private_fd)
                os.close(private_fd)
        finally:
            os.rmdir(private, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _bind_and_link(
    dir_fd: int, private_fd: int, private_path: Path, path: Path, mode: int
) -> BoundSocket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Linux creates the file with the socket's own mode minus the umask: private
        # from the first instant, whatever happens next.
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(_at(private_fd, "socket", private_path / "socket"))
        os.chmod("socket", mode, dir_fd=private_fd)
        st = os.stat("socket", dir_fd=private_fd, follow_symlinks=False)
        sock.listen(socket.SOMAXCONN)
        for _attempt in range(3):
            try:
                os.link("socket", path.name, src_dir_fd=private_fd, dst_dir_fd=dir_fd)
            except FileExistsError:
                _prepare(dir_fd, path)  # created since we looked: live, stale or not a socket
                continue
            return BoundSocket(sock, (st.st_dev, st.st_ino))
        raise ControlSocketInUse(f"{path} keeps being recreated by someone else")
    except BaseException:
        sock.close()
        raise


async def serve_control(
    path: Path,
    handler: Handler,
    *,
    mode: int = DEFAULT_MODE,
    reserve: DescriptorReserve | None = None,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket until cancelled; the socket file is removed on exit.

    ``reserve``: descriptors the client listeners leave alone; released when an
    accept here finds the process out of them, so the operator is still answered.

    Every ``WATCH_INTERVAL`` the path is checked: a socket file deleted or replaced
    under the running router is recreated (one WARNING line), so the router stays
    reachable; a live router or a file that is not a socket now at the path is left
    alone (one WARNING line too).
    """
    bound = bind_control_socket(path, mode)
    try:
        async with trio.open_nursery() as nursery:
            accepting = await nursery.start(_accept, bound.sock, handler, nursery, reserve)
            task_status.started()
            problem: str | None = None
            while True:
                await trio.sleep(WATCH_INTERVAL)
                if bound.is_at(path):
                    problem = None
                    continue
                gone = _what_happened(path)
                try:
                    fresh = bind_control_socket(path, mode)
                except (ControlSocketError, OSError) as exc:
                    reason = str(exc)
                    if reason != problem:
                        log.warning(
                            f"control socket file was {gone}; cannot recreate it",
                            path=str(path),
                            reason=reason,
                        )
                        problem = reason
                    continue
                problem = None
                log.warning(f"control socket file was {gone}; recreated it", path=str(path))
                accepting.cancel()  # its listener closes; connections being served go on
                bound = fresh
                accepting = await nursery.start(_accept, bound.sock, handler, nursery, reserve)
    finally:
        if bound.is_at(path):  # never remove a file that another router put there
            with contextlib.suppress(OSError):
                path.unlink()  # noqa: ASYNC240 - a local socket file; unlink is instant
        bound.sock.close()


def _what_happened(path: Path) -> str:
    return "replaced" if os.path.lexists(path) else "removed"


#: accept() errors that mean "not now" (out of descriptors or memory), as trio's
#: serve_listeners treats them: wait and try again, where a bare loop would end.
ACCEPT_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_RETRY_DELAY: Final = 0.1


async def _accept(
    sock: socket.socket,
    handler: Handler,
    handler_nursery: trio.Nursery,
    reserve: DescriptorReserve | None = None,
    *,
    task_status: TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept control connections until cancelled, each served in ``handler_nursery``.

    Out of descriptors, the ``reserve`` is released and the connection accepted at
    once (no other task runs in between to take them), then the reserve is taken
    back. Without a reserve (or with it spent), trio.serve_listeners would survive
    too, but logs a traceback ten times a second while it lasts: here it is one
    WARNING when it starts and one INFO line when accepting works again.
    """
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    with trio.CancelScope() as scope:
        task_status.started(scope)
        async with listener:
            short_of: str | None = None
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    if reserve is not None and reserve.held:
                        # Linux says EMFILE before it looks at the queue: an empty one
                        # too. Wait for a connection before releasing the reserve.
                        await trio.lowlevel.wait_readable(sock.fileno())
                        reserved = _accept_on_reserve(sock, reserve)
                        if reserved is not None:
                            handler_nursery.start_soon(_serve_one, reserved, handler)
                            continue
                    if short_of is None:
                        short_of = os.strerror(exc.errno)
                        log.warning(
                            "control socket cannot accept; retrying",
                            reason=short_of,
                            every=ACCEPT_RETRY_DELAY,
                        )
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                    continue
                if short_of is not None:
                    log.info("control socket accepting again", was=short_of)
                    short_of = None
                if reserve is not None:
                    reserve.refill()  # spent by an earlier shortage: take it back now
                handler_nursery.start_soon(_serve_one, stream, handler)


def _accept_on_reserve(
    sock: socket.socket, reserve: DescriptorReserve | None
) -> trio.SocketStream | None:
    """Accept one pending connection with the reserve's descriptors; None if it cannot."""
    if reserve is None or not reserve.held:
        return None
    reserve.release()
    try:
        client, _address = sock.accept()
    except OSError:  # still short, or the client left meanwhile
        return None
    finally:
        reserve.refill()  # what this connection left over; the listeners refill the rest
    return trio.SocketStream(trio.socket.from_stdlib_socket(client))


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
    want_status = want_json = False
    with trio.move_on_after(READ_TIMEOUT):
        while True:
            newline = buffer.find(b"\n")
            if newline >= 0:
                line = bytes(buffer[:newline]).decode(errors="replace").rstrip("\r")
                del buffer[: newline + 1]
                if line == STATUS_HELLO and not want_status:
                    want_status = True
                    continue
                if line == JSON_HELLO and not want_json:
                    want_json = True
                    continue
                if newline > MAX_LINE_BYTES:
                    return Reply("Command line too long.\n", ok=False), want_status
                reply = await handler(line, as_json=want_json)
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
