"""Connection capacity: per-listener caps, a descriptor reserve, shedding silent clients.

A flood of connections that never speak (or never finish TLS) must not starve the
clients that do, the sessions already forwarding, or the operator:

* Each listener accepts at most ``max_connections`` sessions at once (HAProxy's
  ``maxconn``); beyond that the kernel's listen backlog holds new connections.
* At the cap, or when the process is out of descriptors, the oldest connection still
  in its client handshake (``State.HANDSHAKE``: no protocol header, TLS not done, no
  Connection.Open yet) is cut to make room; only when there is none does the listener
  stop accepting. A session that reached Connection.Open is never shed.
* A few descriptors are held open on /dev/null (``DescriptorReserve``) and refilled
  before every client accept, so client listeners never take the last ones: the
  control socket releases them when its own accept hits EMFILE, and is answered.
* Each stop and each resume is one log line, not one per retry.
* After a burst of closed connections the freed heap is handed back to the system
  (glibc ``malloc_trim``; OpenSSL's buffers of a TLS handshake fragment the heap).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
from collections import defaultdict
from collections.abc import Callable
from typing import Final, Protocol

import structlog
import trio

from amqprouter.session import End
from amqprouter.session.session import State

log = structlog.get_logger("amqprouter.capacity")

#: Descriptors a session holds once forwarding: its client's and its broker's.
DESCRIPTORS_PER_SESSION: Final = 2
#: Descriptors the derived cap leaves to everything but sessions: listeners, the control
#: socket and its connections, the reserve, log files, the HTTP server, DNS lookups,
#: primed broker connections (8 per backend by default), the epoll descriptor.
HEADROOM: Final = 128
#: Descriptors held for the control socket (it needs one per connection; a handler
#: that opens a file, such as CONFIG RELOAD, one more).
RESERVED_DESCRIPTORS: Final = 8
#: A soft RLIMIT_NOFILE of "unlimited" is taken as this many (the kernel's nr_open default).
UNLIMITED_NOFILE: Final = 1 << 20
#: While stopped for want of descriptors, look again this often even if no session
#: ended (descriptors are also freed by broker connections, log files, DNS).
RECHECK_SECONDS: Final = 0.5
#: The heap is trimmed once this many connections have closed since the last trim...
TRIM_AFTER_CLOSED: Final = 256
#: ...and this long after that count was reached (a burst is over by then; at most one
#: trim per this interval).
TRIM_DELAY: Final = 2.0


def nofile_limit() -> int:
    """The process's soft RLIMIT_NOFILE (``UNLIMITED_NOFILE`` when unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_NOFILE if soft == resource.RLIM_INFINITY else int(soft)


def derived_max_connections(nofile: int) -> int:
    """The default per-listener cap under a descriptor limit of ``nofile``.

    Every session at the cap can be forwarding (two descriptors) and ``HEADROOM``
    descriptors stay for the rest: 1024 gives 448, 65536 gives 32704.
    """
    return max(1, (nofile - HEADROOM) // DESCRIPTORS_PER_SESSION)


class Sheddable(Protocol):
    """What capacity needs of a session (``session.Session`` is one)."""

    @property
    def id(self) -> int: ...
    @property
    def listen_port(self) -> int: ...
    @property
    def state(self) -> State: ...
    @property
    def vhost(self) -> str | None: ...
    def disconnect(self, end: End, reason: str) -> bool: ...


class DescriptorReserve:
    """``size`` descriptors on /dev/null, held so that the control socket can accept."""

    def __init__(self, size: int = RESERVED_DESCRIPTORS) -> None:
        self.size = size
        self._fds: list[int] = []

    @property
    def held(self) -> int:
        return len(self._fds)

    def refill(self) -> bool:
        """Take back what was released; False if the process lacks the descriptors."""
        while len(self._fds) < self.size:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return False
        return True

    def release(self) -> None:
        """Give every reserved descriptor back (just before the accept they are for)."""
        while self._fds:
            os.close(self._fds.pop())


def _handshaking(session: Sheddable) -> bool:
    """Still before Connection.Open: no protocol header, TLS not done, or no Open yet.

    A client held at Connection.Open (a paused vhost, a LIMIT's refusal on its way)
    is still in State.HANDSHAKE, but it has spoken: its vhost is known.
    """
    return session.state is State.HANDSHAKE and session.vhost is None


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``; None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class Capacity:
    """Counts each listener's sessions and sheds the oldest silent one when room is needed.

    ``max_connections`` is the per-listener cap; 0 derives it from RLIMIT_NOFILE
    (``derived_max_connections``).
    """

    def __init__(
        self,
        max_connections: int = 0,
        *,
        reserve: DescriptorReserve | None = None,
        trim: Callable[[], object] | None = _malloc_trim(),  # noqa: B008 - looked up once
    ) -> None:
        derived = derived_max_connections(nofile_limit())
        self.max_connections = max_connections or derived
        #: Sessions of every listener together: what the descriptor limit holds with two
        #: descriptors each and ``HEADROOM`` left, whatever the per-listener caps say.
        self.budget = derived
        if max_connections > derived:
            log.warning(
                "--max-connections exceeds what the descriptor limit holds; the router "
                "serves at most the budget of sessions",
                max_connections=max_connections,
                nofile=nofile_limit(),
                budget=derived,
            )
        self.reserve = reserve if reserve is not None else DescriptorReserve()
        #: Connections cut to make room (``amqprouter_connections_shed_total``).
        self.shed_total = 0
        self._live: defaultdict[int, int] = defaultdict(int)
        self.total = 0
        # Per listener, its sessions in accept order that were in their handshake when
        # last looked at: the front is the oldest. Entries that moved on are dropped
        # when shedding reaches them (a session never goes back to its handshake).
        self._handshaking: defaultdict[int, dict[int, Sheddable]] = defaultdict(dict)
        self._changed = trio.Event()
        self._trim = trim
        self._closed_since_trim = 0
        self._trim_due = trio.Event()

    def live(self, port: int) -> int:
        """Sessions of listener ``port`` now (shed ones count until their socket closes)."""
        return self._live.get(port, 0)

    def opened(self, session: Sheddable) -> None:
        self.total += 1
        self._live[session.listen_port] += 1
        self._handshaking[session.listen_port][session.id] = session

    def closed(self, session: Sheddable) -> None:
        port = session.listen_port
        self.total -= 1
        self._live[port] -= 1
        if not self._live[port]:
            del self._live[port]
        handshaking = self._handshaking.get(port)
        if handshaking is not None:
            handshaking.pop(session.id, None)
            if not handshaking:
                del self._handshaking[port]
        self._changed.set()
        self._closed_since_trim += 1
        if self._closed_since_trim >= TRIM_AFTER_CLOSED:
            self._trim_due.set()

    def shed_oldest(self, port: int | None = None) -> bool:
        """Cut the oldest session still in its client handshake, of listener ``port``
        (None: of any listener); False if there is none."""
        while True:
            fronts = [
                (next(iter(sessions.values())), sessions)
                for listener, sessions in self._handshaking.items()
                if sessions and (port is None or listener == port)
            ]
            if not fronts:
                return False
            session, sessions = min(fronts, key=lambda front: front[0].id)
            del sessions[session.id]
            if _handshaking(session) and session.disconnect(
                End.OPERATOR_FORCED, "shed: the listener needs room for a new client"
            ):
                self.shed_total += 1
                return True

    def next_change(self) -> trio.Event:
        """Set when a session closes from now on (take it before acting, then wait)."""
        if self._changed.is_set():
            self._changed = trio.Event()
        return self._changed

    def gate(self, port: int) -> AcceptGate:
        return AcceptGate(self, port)

    async def run(self) -> None:
        """Hold the reserve and trim the heap after bursts, until cancelled."""
        try:
            self.reserve.refill()
            while True:
                await self._trim_due.wait()
                await trio.sleep(TRIM_DELAY)
                self._trim_due = trio.Event()
                self._closed_since_trim = 0
                if self._trim is not None:
                    # In a thread: trimming a large heap takes milliseconds.
                    await trio.to_thread.run_sync(self._trim)
        finally:
            self.reserve.release()


#: Why a listener stopped accepting, besides an errno's text.
CAP: Final = "max-connections"
BUDGET: Final = "descriptor budget"


class AcceptGate:
    """One listener's view of ``Capacity``: when it may accept, and the log lines."""

    def __init__(self, capacity: Capacity, port: int) -> None:
        self._capacity = capacity
        self.port = port
        # Why accepting stopped (CAP, BUDGET or an errno's text), until it works again.
        self._stopped: str | None = None

    def has_room(self) -> bool:
        """Below the caps, and the reserve whole (so this accept cannot take its place)."""
        capacity = self._capacity
        return (
            capacity.live(self.port) < capacity.max_connections
            and capacity.total < capacity.budget
            and capacity.reserve.refill()
        )

    async def room(self, short_of: str | None = None) -> None:
        """Return once an accept may be tried: shed a silent connection if that makes
        room, else stop accepting (one WARNING) until a session ends.

        ``short_of``: the accept just failed for want of descriptors (its errno text).
        """
        capacity = self._capacity
        while True:
            if short_of is None and not capacity.reserve.refill():
                short_of = os.strerror(errno.EMFILE)
            if short_of is not None:
                reason = short_of
            elif capacity.total >= capacity.budget:
                reason = BUDGET
            elif capacity.live(self.port) >= capacity.max_connections:
                reason = CAP
            else:
                if self._stopped in (CAP, BUDGET):
                    log.info("listener accepting again", port=self.port, was=self._stopped)
                    self._stopped = None
                return
            # At this listener's cap, one of its own silent connections makes room;
            # otherwise any listener's will. Its own task closes its socket: wait for that.
            changed = capacity.next_change()
            if capacity.shed_oldest(self.port if reason == CAP else None):
                await _wait(changed)
                short_of = None
                continue
            if self._stopped != reason:
                if reason == CAP:
                    log.warning(
                        "listener at its connection cap; stopped accepting",
                        port=self.port,
                        max_connections=capacity.max_connections,
                    )
                elif reason == BUDGET:
                    log.warning(
                        "router at its session budget for the descriptor limit; stopped accepting",
                        port=self.port,
                        sessions=capacity.total,
                        nofile=nofile_limit(),
                    )
                else:
                    log.warning(
                        "listener out of file descriptors; stopped accepting",
                        port=self.port,
                        reason=short_of,
                        nofile=nofile_limit(),
                    )
                self._stopped = reason
            await _wait(changed)
            short_of = None

    def accepted(self) -> None:
        """An accept worked: a stop for want of descriptors is over."""
        if self._stopped is not None and self._stopped not in (CAP, BUDGET):
            log.info("listener accepting again", port=self.port, was=self._stopped)
            self._stopped = None


async def _wait(changed: trio.Event) -> None:
    """Until ``changed`` is set (a session closed), or ``RECHECK_SECONDS`` at most."""
    with trio.move_on_after(RECHECK_SECONDS):
        await changed.wait()
