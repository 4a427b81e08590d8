"""Seeing inside a session: frame traces (SESSION/VHOST TRACE) and the tap they hang on.

Theory of operation
-------------------

A session with nothing watching it pays one slot read per forwarded read
(``self._trace is not None`` in forwarding.py's ``_scanned``) and no more: no call, no
copy. An operator's trace or capture puts a ``Tap`` in that slot; from then on every
read's whole frames (what the scanner forwards, never a partial one) go to the tap's
observers, each a ``FrameObserver``: a ``Trace`` (this module) or a ``Capture``
(capture.py). The engine forwards no watched session: watching one evicts it to the
task path (``Session.watch_frames``), so the engine's thread never pays for a trace.

A trace turns frames into lines (protocol/frame_describe.py) and puts them in a
bounded memory channel with ``send_nowait``: a reader that falls behind makes the
trace drop lines and count them, never the session wait. Its one reader (the control
connection of ``SESSION TRACE id``, or the task writing ``... TO file``) ends it:
at the trace's deadline, when the reader leaves, at ``... OFF``, or when the rate of
lines passes its bound (the trace stops itself rather than cost the session more).
Each way, the last line says why it stopped, how many lines it wrote and how many
it dropped. An observer that has stopped says so at the next read (``frames``
returns False) and the tap forgets it; a tap with no observer left empties the
session's slot, so a finished trace costs nothing either.

Time is the session's clock (``Session._now``: monotonic, or a test's trio clock),
shown as wall-clock UTC through an offset each observer takes when it first sees
the session.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Final, Protocol, TypeVar

import attrs
import structlog
import trio

from amqprouter.protocol.frame_describe import FrameRecord, count_frames, describe
from amqprouter.text import escape

log = structlog.get_logger("amqprouter.trace")

#: Lines a trace holds for its reader; past this, lines are dropped and counted.
TRACE_BUFFER: Final = 1024
#: A trace's defaults and bounds: lines per second (over it, the trace stops itself),
#: seconds it lasts, bytes of each body (BODIES).
DEFAULT_RATE: Final = 1000
MAX_RATE: Final = 100_000
DEFAULT_SECONDS: Final = 60.0
MAX_SECONDS: Final = 24 * 3600.0
MAX_BODIES: Final = 4096


class FrameObserver(Protocol):
    """What a session's tap hands frames to (a trace, a capture)."""

    def frames(self, session: Watched, from_client: bool, now: float, data: bytes) -> bool:
        """Whole frames ``data`` one way, at session clock ``now``; False: forget me."""
        ...

    def session_ended(self, session: Watched) -> None:
        """``session`` stopped forwarding: nothing more comes from it."""
        ...

    def stop(self, reason: str) -> None:
        """Stop now (OFF, the router's end); the reader writes the last line."""
        ...


class Watched(Protocol):
    """What an observer reads of the session it watches."""

    @property
    def id(self) -> int: ...
    @property
    def vhost(self) -> str | None: ...
    @property
    def client_address(self) -> tuple[str, int]: ...
    @property
    def broker_address(self) -> tuple[str, int]: ...


class Tap:
    """A watched session's observers (what fills its ``_trace`` slot)."""

    __slots__ = ("observers",)

    def __init__(self, observers: Sequence[FrameObserver]) -> None:
        self.observers = list(observers)

    def saw(
        self, session: Watched, from_client: bool, pieces: Sequence[bytes | memoryview], now: float
    ) -> bool:
        """One read's whole frames; False once no observer is left (empty the slot)."""
        if pieces:
            data = b"".join(pieces)
            self.observers = [
                o for o in self.observers if o.frames(session, from_client, now, data)
            ]
        return bool(self.observers)

    def ended(self, session: Watched) -> None:
        for observer in self.observers:
            observer.session_ended(session)
        self.observers.clear()


@attrs.frozen
class TraceOptions:
    """A trace's bounds and form: ``rate`` lines/s, ``seconds``, ``bodies`` bytes of
    each body (0: none), JSON lines or human text."""

    rate: int = DEFAULT_RATE
    seconds: float = DEFAULT_SECONDS
    bodies: int = 0
    as_json: bool = False


def wall_time(seconds: float) -> str:
    """Epoch ``seconds`` as the trace shows them: ISO 8601 UTC, microseconds."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def direction(from_client: bool) -> str:
    return "client>broker" if from_client else "broker>client"


def human_line(session_id: int, from_client: bool, when: float, record: FrameRecord) -> str:
    """One frame as a human line (names escaped: a client chose them)."""
    words = [wall_time(when), f"s{session_id}", direction(from_client), f"ch{record.channel}"]
    words.append(record.frame_type)
    if record.method is not None:
        words.append(record.method)
    words += [f"{name}='{escape(value)}'" for name, value in record.arguments]
    if record.body_size is not None:
        words.append(f"body_size={record.body_size}")
        words.append("properties=" + (",".join(record.properties) or "-"))
    if record.body is not None:
        words.append(f"body={record.body!r}")
    words.append(f"size={record.size}")
    if record.error is not None:
        words.append(f"error='{escape(record.error)}'")
    return " ".join(words) + "\n"


def json_line(session_id: int, from_client: bool, when: float, record: FrameRecord) -> str:
    """One frame as one JSON object (camelCase, as the other JSON replies)."""
    value: dict[str, object] = {
        "time": wall_time(when),
        "session": session_id,
        "direction": direction(from_client),
        "channel": record.channel,
        "frameType": record.frame_type,
        "size": record.size,
        "payload": record.payload,
    }
    if record.method is not None:
        value["method"] = record.method
    for name, argument in record.arguments:
        value[_CAMEL.get(name, name)] = argument
    if record.body_size is not None:
        value["bodySize"] = record.body_size
        value["properties"] = list(record.properties)
    if record.body is not None:
        value["bodyHex"] = record.body.hex()
    if record.error is not None:
        value["error"] = record.error
    return _dumps(value)


_CAMEL: Final = {"routing_key": "routingKey"}


def _dumps(value: dict[str, object]) -> str:
    # As json_replies encodes: ASCII only, DEL escaped, so no line holds a control byte.
    return json.dumps(value).replace("\x7f", "\\u007f") + "\n"


class Trace:
    """One trace: the frames of one session, or of a vhost's sessions, as lines for
    one reader (``stream`` or ``write_to``); see the module's docstring."""

    def __init__(
        self,
        label: str,
        options: TraceOptions,
        *,
        path: str | None = None,
        ends_with_session: bool = False,
    ) -> None:
        self.label = label
        self.options = options
        #: SESSION TRACE: the session's end ends the trace (VHOST TRACE goes on).
        self.ends_with_session = ends_with_session
        #: The file it is written to (``... TO file``), None when streamed.
        self.path = path
        self._send, self._receive = trio.open_memory_channel[str](TRACE_BUFFER)
        self.deadline = trio.current_time() + options.seconds
        #: Why it stopped, once it has.
        self.stopped: str | None = None
        self.lines = 0
        self.dropped = 0
        # The rate bound: lines in the current one-second window of the session clock.
        self._window = -1.0
        self._in_window = 0
        self._offsets: dict[int, float] = {}

    # -- the session side (FrameObserver) ------------------------------------------

    def frames(self, session: Watched, from_client: bool, now: float, data: bytes) -> bool:
        if self.stopped is not None:
            return False
        count = count_frames(data)
        if now - self._window >= 1.0:
            self._window, self._in_window = now, 0
        self._in_window += count
        if self._in_window > self.options.rate:
            # Checked before any frame is described: past the bound, describing is the
            # cost the bound is there to stop.
            self.stop(f"more than {self.options.rate} lines/s")
            return False
        offset = self._offsets.get(session.id)
        if offset is None:
            offset = self._offsets[session.id] = time.time() - now
        render = json_line if self.options.as_json else human_line
        when = now + offset
        for record in describe(data, bodies=self.options.bodies):
            try:
                self._send.send_nowait(render(session.id, from_client, when, record))
                self.lines += 1
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True

    def session_ended(self, session: Watched) -> None:
        self._offsets.pop(session.id, None)
        if self.ends_with_session:
            self.stop(f"session {session.id} ended")

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            self._send.close()  # the reader takes what is left, then the last line

    # -- the reader side -----------------------------------------------------------

    def head(self) -> str:
        """The first line(s): what is traced and how it is bounded."""
        options = self.options
        if options.as_json:
            value: dict[str, object] = {
                "event": "traceStarted",
                "trace": self.label,
                "seconds": options.seconds,
                "rate": options.rate,
                "bodies": options.bodies,
            }
            if self.path is not None:
                value["path"] = self.path
            return _dumps(value)
        text = (
            f"# trace of {self.label}: at most {options.seconds:g}s and "
            f"{options.rate} lines/s; one line per frame\n"
        )
        if self.path is not None:
            text += f"# written to {self.path}\n"
        if options.bodies:
            text += (
                f"# WARNING: BODIES {options.bodies}: the first {options.bodies} bytes of every "
                "message body are in this trace\n"
            )
        return text

    def tail(self) -> str:
        """The last line: why the trace stopped, what it wrote and what it dropped."""
        reason = self.stopped or "stopped"
        if self.options.as_json:
            return _dumps(
                {
                    "event": "traceStopped",
                    "trace": self.label,
                    "reason": reason,
                    "lines": self.lines,
                    "dropped": self.dropped,
                }
            )
        behind = " (the reader fell behind)" if self.dropped else ""
        return (
            f"# trace of {self.label} stopped: {reason}; {self.lines} lines, "
            f"{self.dropped} dropped{behind}\n"
        )

    async def stream(self) -> AsyncGenerator[str, None]:
        """The reader: lines until the trace stops (its deadline included), then the
        last line. Closing the generator (the reader left) stops the trace."""
        try:
            while True:
                # The deadline's scope never spans a yield: a generator suspended inside
                # a cancel scope would deliver its cancellation to the consumer.
                line: str | None = None
                with trio.move_on_at(self.deadline):
                    try:
                        line = await self._receive.receive()
                    except trio.EndOfChannel:
                        break
                if line is None:
                    self.stop(f"{self.options.seconds:g}s elapsed")
                    break
                yield line
            # Lines still buffered when it stopped (OFF, the rate bound) go first.
            while True:
                try:
                    line = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                yield line
            yield self.tail()
        finally:
            self.stop("the reader left")
            log.info(
                "trace stopped",
                trace=self.label,
                reason=self.stopped,
                lines=self.lines,
                dropped=self.dropped,
            )

    async def write_to(self, fd: int) -> None:
        """The reader of ``... TO file``: every line to the open file ``fd`` (closed here)."""
        stream = self.stream()
        try:
            await write_all(fd, self.head().encode())
            async for line in stream:
                # What is there already goes in the same write.
                await write_all(fd, "".join([line, *ready(self._receive)]).encode())
        except OSError as exc:
            log.warning("trace file write failed", trace=self.label, error=str(exc))
        finally:
            await stream.aclose()
            os.close(fd)


T = TypeVar("T")

#: A file writer takes at most this many waiting items into one write.
BATCH: Final = 256


def ready(receive: trio.MemoryReceiveChannel[T], limit: int = BATCH) -> list[T]:
    """What ``receive`` holds now (at most ``limit``), without waiting."""
    items: list[T] = []
    while len(items) < limit:
        try:
            items.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return items


async def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to the file ``fd``, off the event loop (a disk may be slow)."""
    while data:
        written = await trio.to_thread.run_sync(os.write, fd, data)
        data = data[written:]


def open_new_file(path: str) -> int:
    """Create ``path`` for a trace or capture: 0600, never an existing file, never
    through a symlink (O_CREAT | O_EXCL | O_NOFOLLOW); OSError with a clear text if not."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        kind = "a symlink" if os.path.islink(path) else "a file"
        raise OSError(f"{path} exists ({kind}); the router writes only new files") from None
    except OSError as exc:
        raise OSError(f"cannot create {path}: {exc.strerror or exc}") from None
    os.fchmod(fd, 0o600)  # the umask may only have narrowed it; never widened
    return fd
