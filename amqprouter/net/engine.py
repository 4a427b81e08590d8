"""The forwarding engine: one thread moves every established session's bytes.

Why a thread (docs/benchmark.md, "Forwarding engine: two designs measured"): a trio
task per direction pays trio's wake-up and park on every read (epoll_wait, the run
loop's pass, the one-shot re-arm), two thirds of a round trip's instructions. Here one
thread blocks in its own ``epoll.poll`` (the GIL released while it waits) over an
edge-triggered set where each socket is registered once, and per read does only
``recv``, the frame scan and ``send``. Trio keeps everything else: accept,
handshakes (TLS's too), routing, control, supervision, closing.

TLS. A side whose transport is a ``TLSTransport`` is read through the transport's
``recv`` (TLS records until a read's size or until OpenSSL wants the socket, so a short
read means nothing is left decrypted) and written on its ``ssl.SSLSocket``, whose
``SSL_read``/``SSL_write`` release the GIL like ``recv``/``send``. A read that must write
first (``want_write``: a key update's answer) is retried on ``EPOLLOUT``; a write the
socket cannot take (``SSLWantWriteError``) is owed and retried with the same bytes, as
OpenSSL requires; a write that must read first (renegotiation) hands the link back,
since the task path knows that dance; bytes OpenSSL already decrypted when the link
enters are read on the thread's next pass (no edge would say so).

Ownership. A session hands its two sockets to the engine after Open-Ok (``forward``)
and awaits an ``Outcome``. While a ``Link`` is inside, only the engine thread reads or
writes its sockets and scanners; every change of who holds a link (add, evict, end)
happens under ``Engine.lock``, which the thread holds while it handles a batch of
events and releases while it waits. So when ``evict`` returns, the thread is done
with that link's sockets, and the session may write to them or close them.

What crosses back to trio goes through the trio token (``run_sync_soon``, one call
per batch): a link's end, and channel-0 method frames (Close, Close-Ok, Blocked,
Unblocked) for the session to act on. ``Outcome.LEFT`` means "continue on the task
path": the session paused, got a data-rate limit, or the engine stopped; any bytes the
engine still owed a peer are in the link (``owed_to_client``/``owed_to_broker``) and go
out first. A session handed back comes in again, with a new ``Link`` over the same
sockets and scanners, once nothing holds it on the task path (session/forwarding.py).

Back-pressure and memory: a side is not read while bytes are owed to its peer, so a
link holds at most one read (``READ_SIZE``) and one partial frame per direction.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, cast

import structlog
import trio
from outcome import Value

from amqprouter.net.sockets import READ_SIZE
from amqprouter.protocol import constants
from amqprouter.protocol.errors import ProtocolError
from amqprouter.protocol.frames import Frame, FrameScanner
from amqprouter.protocol.methods import peer_closed

log = structlog.get_logger("amqprouter.engine")

#: Whether this module is the mypyc-compiled build of itself (``AMQPROUTER_COMPILE=1``,
#: setup.py's ``COMPILED_MODULES``), as ``protocol.frames.COMPILED`` says of the scanner.
COMPILED: Final = not __file__.endswith(".py")
#: Reads in a row from one socket before the other ready sockets get their turn.
BURST: Final = 16
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
_MASK: Final = select.EPOLLIN | select.EPOLLOUT | select.EPOLLET | select.EPOLLRDHUP
_GONE: Final = select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP
#: The GIL hand-off bound while the trio thread is busy: the interpreter's 5 ms default
#: would add up to 5 ms to a read that arrives during a handshake storm.
SWITCH_INTERVAL: Final = 0.0005


class Outcome(enum.Enum):
    """How a link left the engine."""

    CLEAN = "close handshake completed"
    CLIENT_GONE = "client closed the TCP connection"
    BROKER_GONE = "broker closed the TCP connection"
    CLIENT_ERROR = "client sent a malformed frame"
    BROKER_ERROR = "broker sent a malformed frame"
    #: Handed back: continue on the task path (pause, data-rate limit, engine stop).
    LEFT = "left the engine"
    #: Handed back after an error of the engine's own on this link (``Link.detail``):
    #: the session continues on the task path and does not come back.
    FAILED = "the engine failed on it"


class Owner(Protocol):
    """What the engine reads and stamps on the session it forwards for."""

    last_ingress: float
    last_egress: float

    @property
    def data_budget(self) -> object: ...


class WriteSet(Protocol):
    """The session's set of transports with a write under way (a ``set`` will do)."""

    def add(self, transport: Any, /) -> None: ...

    def discard(self, transport: Any, /) -> None: ...


class TlsTransport(Protocol):
    """What the engine uses of a TLS side's transport (net/tls_transport.py's
    ``TLSTransport``; not imported here, so that the compiled build type-checks this
    module without the TLS modules' optional imports)."""

    #: Its last read needed the socket writable (TLS had to send first).
    want_write: bool

    @property
    def recv(self) -> Callable[[int], bytes]: ...

    def pending(self) -> int: ...


class _Side:
    """One socket of a link: what it reads goes to ``peer``."""

    __slots__ = (
        "fd",
        "from_client",
        "hangup",
        "link",
        "owed",
        "peer",
        "readable",
        "scanner",
        "sock",
        "tls",
        "transport",
    )

    def __init__(
        self, link: Link, sock: socket.socket, transport: object, scanner: FrameScanner
    ) -> None:
        self.link = link
        self.sock = sock
        self.transport = transport
        #: The TLS transport when the socket carries TLS records (its socket is an
        #: ``ssl.SSLSocket``; its ``recv`` reads records up to a read's size), else None.
        self.tls = cast(TlsTransport, transport) if isinstance(sock, ssl.SSLSocket) else None
        self.scanner = scanner
        self.from_client = False
        #: The descriptor it is registered under (kept: the socket may be closed first).
        self.fd = -1
        #: Bytes read from the peer and not yet taken by this socket's kernel buffer.
        self.owed: memoryview | None = None
        #: Edge-triggered: True until a read finds the kernel buffer empty.
        self.readable = True
        #: The peer has shut down its side (EPOLLRDHUP): read on to the end of stream
        #: even after a short read, since no further edge will come.
        self.hangup = False
        self.peer: _Side = self


class Link:
    """One session inside the engine: its two sockets, scanners and outcome."""

    __slots__ = (
        "_engine",
        "_task",
        "broker",
        "clean",
        "client",
        "detail",
        "on_channel_zero",
        "outcome",
        "owner",
        "writing",
    )

    def __init__(
        self,
        owner: Owner,
        client: tuple[socket.socket, object, FrameScanner],
        broker: tuple[socket.socket, object, FrameScanner],
        writing: WriteSet,
        on_channel_zero: Callable[[list[Frame], str], None],
    ) -> None:
        self.owner = owner
        #: Called on the trio thread with a read's channel-0 method frames and who sent
        #: them ("client", "broker"), after that read was forwarded.
        self.on_channel_zero = on_channel_zero
        self.client = _Side(self, *client)
        self.broker = _Side(self, *broker)
        self.client.from_client = True
        self.client.peer, self.broker.peer = self.broker, self.client
        #: The session's set of transports with a write in progress (the watchdog's
        #: stuck-write check and the closing path read it): a transport is in it while
        #: bytes are owed to it.
        self.writing = writing
        self.outcome: Outcome | None = None
        #: A Close-Ok was read: the link ends CLEAN once it is written.
        self.clean = False
        #: What went wrong, for the session's log line (a malformed frame's error).
        self.detail = ""
        self._task: trio.lowlevel.Task | None = None
        self._engine: Engine | None = None

    def abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        """The waiting session was cancelled (trio's abort callback, on the trio thread):
        the thread forgets the link, and an end it already posted is not delivered. A
        method, not a closure made per wait: an idle session holds only its bound form."""
        engine = self._engine
        assert engine is not None
        with engine.lock:
            if self in engine._links:
                engine._drop(self)
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    @property
    def owed_to_client(self) -> bytes:
        return b"" if self.client.owed is None else bytes(self.client.owed)

    @property
    def owed_to_broker(self) -> bytes:
        return b"" if self.broker.owed is None else bytes(self.broker.owed)


class Engine:
    """The forwarding thread, its epoll set and the links in it; ``run`` owns it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._epoll: select.epoll | None = None
        self._wake = -1
        # Each registered socket's side, indexed by its descriptor (a list, not a dict:
        # 8 bytes a socket where a dict entry costs over 50); grown in place only, since
        # the thread holds it in a local.
        self._sides: list[_Side | None] = []
        self._links: set[Link] = set()
        self._again: collections.deque[_Side] = collections.deque()
        # Filled by the thread under the lock, handed to trio once per batch.
        self._ended: list[Link] = []
        self._controls: list[tuple[Link, list[Frame], str]] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._running = False
        self._stopping = False
        #: Reads forwarded and links served since start (tests and the status of it).
        self.reads = 0
        self.served = 0

    @property
    def running(self) -> bool:
        return self._running

    def __len__(self) -> int:
        return len(self._links)

    # -- the owner task (trio) ------------------------------------------------------

    # ``task_status`` is Any, not trio_typing's TaskStatus: the compiled build type-checks
    # with trio's own annotations and without the stubs, which disagree on its type.
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine until cancelled; then hand every link back (``LEFT``)."""
        self._token = trio.lowlevel.current_trio_token()
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, _IN)
        self._stopping = False
        thread = threading.Thread(target=self._loop, name="amqprouter-forwarding", daemon=True)
        previous_interval = _set_switch_interval()
        thread.start()
        self._running = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._running = False
            with self.lock:
                self._stopping = True
            os.eventfd_write(self._wake, 1)
            # The thread ends at its next wake-up, which the eventfd just caused.
            thread.join()
            with self.lock:
                for link in list(self._links):
                    self._finish(link, Outcome.LEFT)
                self._epoll.close()
                os.close(self._wake)
                ended, controls = self._take_posted()
            self._deliver(ended, controls)
            _restore_switch_interval(previous_interval)

    async def forward(self, link: Link) -> Outcome:
        """Move ``link``'s bytes until it ends or leaves; cancellation evicts it.

        On the trio thread; the caller checked ``running``. A session does the same in
        its own frame (``enter``, then the wait), a coroutine less per idle session.
        """
        self.enter(link)
        outcome: Outcome = await trio.lowlevel.wait_task_rescheduled(link.abort)
        return outcome

    def enter(self, link: Link) -> None:
        """Take ``link`` in for the current task, which then awaits
        ``trio.lowlevel.wait_task_rescheduled(link.abort)``: the ``Outcome``.

        On the trio thread; the caller checked ``running``.
        """
        assert self._epoll is not None
        link._task = trio.lowlevel.current_task()
        link._engine = self
        with self.lock:
            self._links.add(link)
            for side in (link.client, link.broker):
                fd = side.fd = side.sock.fileno()
                if fd >= len(self._sides):
                    self._sides.extend([None] * max(fd + 1 - len(self._sides), 64))
                self._sides[fd] = side
                # Edge-triggered, once for the link's life: registering a socket that
                # already has data (or room) reports it once, so nothing is missed.
                self._epoll.register(fd, _MASK)
                if side.tls is not None and side.tls.pending():
                    # Bytes OpenSSL decrypted already, with nothing on the socket: no
                    # edge will say so, so the thread reads them on its next pass.
                    self._again.append(side)
                    os.eventfd_write(self._wake, 1)
            self.served += 1

    def evict(self, link: Link) -> None:
        """Hand ``link`` back now (trio thread): its ``forward`` returns ``LEFT``."""
        with self.lock:
            if link in self._links:
                self._finish(link, Outcome.LEFT)
            ended, controls = self._take_posted()
        self._deliver(ended, controls)

    def _take_posted(self) -> tuple[list[Link], list[tuple[Link, list[Frame], str]]]:
        """Under the lock: what the thread queued for trio, taken."""
        ended, controls = self._ended, self._controls
        self._ended, self._controls = [], []
        return ended, controls

    def _deliver(self, ended: list[Link], controls: list[tuple[Link, list[Frame], str]]) -> None:
        """On the trio thread: channel-0 frames to their sessions, then the ends."""
        for link, frames, side in controls:
            if link._task is None:  # not after an eviction or a cancellation
                continue
            try:
                link.on_channel_zero(frames, side)
            except Exception as exc:  # here, in trio's callback, it would end the run
                log.exception("channel-0 frame not handled", error=str(exc))
                with self.lock:
                    if link in self._links:
                        self._drop(link)
                link.outcome = Outcome.CLIENT_ERROR if side == "client" else Outcome.BROKER_ERROR
                link.detail = str(exc)
                ended.append(link)
        for link in ended:
            task, link._task = link._task, None
            if task is not None:
                trio.lowlevel.reschedule(task, Value(link.outcome))

    # -- the thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # the engine stops; its sessions go on as tasks
            log.exception("forwarding engine stopped", error=str(exc))
            self._running = False
            with self.lock:
                for link in list(self._links):
                    self._finish(link, Outcome.LEFT)
                ended, controls = self._take_posted()
            assert self._token is not None
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._deliver, ended, controls)

    def _serve(self) -> None:
        epoll = self._epoll
        assert epoll is not None and self._token is not None
        token, lock, sides = self._token, self.lock, self._sides
        while True:
            events = epoll.poll(0 if self._again else -1)
            with lock:
                if self._stopping:
                    return
                for fd, mask in events:
                    if fd == self._wake:
                        os.eventfd_read(fd)  # level-triggered: drained, or it fires again
                        continue
                    side = sides[fd] if fd < len(sides) else None
                    if side is not None:
                        self._handle(side, mask)
                for _ in range(len(self._again)):
                    side = self._again.popleft()
                    if side.link in self._links:
                        self._pump(side)
                if self._ended or self._controls:
                    ended, controls = self._take_posted()
                    try:
                        token.run_sync_soon(self._deliver, ended, controls)
                    except trio.RunFinishedError:
                        return

    def _handle(self, side: _Side, mask: int) -> None:
        try:
            if mask & (_IN | _GONE):
                # Noted first: an edge not noted now is not reported again.
                side.readable = True
                if mask & _GONE:
                    side.hangup = True
            if mask & _OUT and side.tls is not None and side.tls.want_write:
                side.readable = True  # its last TLS read had to write first: read again
            if mask & _OUT and side.owed is not None:
                peer = side.peer
                if self._flush(side) and peer.readable:  # its reads waited for this write
                    self._pump(peer)
                if side.link not in self._links:
                    return
            if side.readable:
                self._pump(side)
        except Exception as exc:  # a bug here must end one session, not the engine
            log.exception("forwarding engine error", error=str(exc))
            if side.link in self._links:
                side.link.detail = repr(exc)
                self._finish(side.link, Outcome.FAILED)

    def _flush(self, side: _Side) -> bool:
        """Write what ``side`` is owed; whether all of it is out (False: full or ended)."""
        owed = side.owed
        assert owed is not None
        try:
            # TLS: the same bytes again, as OpenSSL wants a retried write.
            sent = side.sock.send(owed)
        except (BlockingIOError, ssl.SSLWantWriteError):
            return False
        except ssl.SSLWantReadError:
            # TLS must read before it can write (a renegotiation): the task path does
            # that dance (TLSTransport.send_all); the owed bytes go with the link.
            self._finish(side.link, Outcome.LEFT)
            return False
        except OSError:
            self._finish(side.link, _gone(side))
            return False
        if sent < len(owed):
            side.owed = owed[sent:]
            return False
        side.owed = None
        link = side.link
        link.writing.discard(side.transport)
        if link.clean:
            self._finish(link, Outcome.CLEAN)
            return False
        return True

    def _pump(self, side: _Side) -> None:
        """Read ``side`` and forward to its peer until drained, blocked or a burst is done."""
        link, peer, scanner = side.link, side.peer, side.scanner
        owner = link.owner
        # A TLS transport's recv reads records until a read's size or until OpenSSL
        # wants the socket (BlockingIOError; ``want_write`` if it must write first), so
        # a short read means drained here too: nothing is left decrypted in OpenSSL.
        recv = side.sock.recv if side.tls is None else side.tls.recv
        for _ in range(BURST):
            if peer.owed is not None or not side.readable:
                return
            if side.from_client and owner.data_budget is not None:
                # A data-rate limit applies now: the task path paces reads.
                self._finish(link, Outcome.LEFT)
                return
            try:
                data = recv(READ_SIZE)
            except BlockingIOError:
                side.readable = False
                return
            except OSError:
                self._finish(link, _gone(side))
                return
            if not data:
                self._finish(link, _gone(side))
                return
            if len(data) < READ_SIZE and not side.hangup:
                # A short read emptied the kernel buffer; the next arrival is a new edge,
                # so no recv only to hear EAGAIN.
                side.readable = False
            if side.from_client:
                owner.last_ingress = time.monotonic()
            else:
                owner.last_egress = time.monotonic()
            try:
                pieces, controls = scanner.scan(data)
                if controls is not None:
                    # A Close is read here, before it is forwarded, as the pumps do: one
                    # too short to read ends the link as malformed, not forwarded.
                    for frame in controls:
                        if frame.method_id == constants.CONNECTION_CLOSE:
                            peer_closed(frame)
            except ProtocolError as exc:
                link.detail = str(exc)
                self._finish(
                    link, Outcome.CLIENT_ERROR if side.from_client else Outcome.BROKER_ERROR
                )
                return
            self.reads += 1
            if controls is not None:
                self._controls.append((link, controls, "client" if side.from_client else "broker"))
                if any(f.method_id == constants.CONNECTION_CLOSE_OK for f in controls):
                    # Forwarded, then the session ends clean: nothing may follow a Close-Ok.
                    link.clean = True
            if pieces and not self._write(peer, pieces):
                return
            if link.clean:
                self._finish(link, Outcome.CLEAN)
                return
        self._again.append(side)

    def _write(self, peer: _Side, pieces: Sequence[bytes | memoryview]) -> bool:
        """Write ``pieces`` to ``peer``; False if the link ended or bytes are owed."""
        try:
            if len(pieces) == 1 or peer.tls is not None:
                # TLS has no sendmsg (one record stream): one joined write, all of it
                # or a want (no partial-write mode), retried with the same bytes.
                piece = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                sent = peer.sock.send(piece)
                if sent == len(piece):
                    return True
                rest = memoryview(piece)[sent:]
            else:
                sent = peer.sock.sendmsg(pieces)
                joined = b"".join(pieces)
                if sent == len(joined):
                    return True
                rest = memoryview(joined)[sent:]
        except (BlockingIOError, ssl.SSLWantWriteError):
            rest = memoryview(b"".join(pieces))
        except ssl.SSLWantReadError:
            # TLS must read before it can write: the task path does that (above).
            peer.owed = memoryview(b"".join(pieces))
            peer.link.writing.add(peer.transport)
            self._finish(peer.link, Outcome.LEFT)
            return False
        except OSError:
            self._finish(peer.link, _gone(peer))
            return False
        # The kernel buffer is full: keep the rest (one read at most) and stop reading
        # the other side until EPOLLOUT says it has gone out.
        peer.owed = rest
        peer.link.writing.add(peer.transport)
        return False

    def _finish(self, link: Link, outcome: Outcome) -> None:
        """Under the lock: take ``link`` out and queue its outcome for trio."""
        if link.outcome is None:
            link.outcome = outcome
        self._drop(link)
        self._ended.append(link)

    def _drop(self, link: Link) -> None:
        """Under the lock: the thread forgets ``link``'s sockets."""
        self._links.discard(link)
        assert self._epoll is not None
        for side in (link.client, link.broker):
            fd = side.fd
            if 0 <= fd < len(self._sides) and self._sides[fd] is side:
                self._sides[fd] = None
                if side.sock.fileno() != fd:
                    continue  # closed: the kernel dropped it (the number may be reused)
                with contextlib.suppress(OSError):  # already closed: the kernel dropped it
                    self._epoll.unregister(fd)


def _gone(side: _Side) -> Outcome:
    """The outcome when ``side``'s socket failed (its own read, or a write to it)."""
    return Outcome.CLIENT_GONE if side.from_client else Outcome.BROKER_GONE


def _set_switch_interval() -> float:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SWITCH_INTERVAL))
    return previous


def _restore_switch_interval(previous: float) -> None:
    sys.setswitchinterval(previous)
