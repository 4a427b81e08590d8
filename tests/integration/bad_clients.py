"""The bad-client matrix's kit: a scripted client that records what it receives.

A ``Probe`` is one raw TCP client of the router. A row of the matrix drives it (sends,
dribbles, resets, half-closes) and marks the moment it stops acting; the harness then
reads everything the router still sends until end of stream and notes when the
router let go of the connection, as the client saw it (EOF) and as the router's
session registry shows it (the session gone). ``Outcome`` is that record.

Expected bytes are compared frame by frame (``tokens``): frames the router writes
must match byte for byte, frames the real broker writes are decoded and compared
method, channel and arguments (``BrokerSays``).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio
from pamqp import base, body, commands, frame, header

from amqprouter.protocol import FrameReader, constants
from amqprouter.protocol.properties import START_FRAME
from amqprouter.server import Server
from amqprouter.session import Session

#: Polling interval for the session registry (the router offers no event for it).
POLL = 0.01


class Timeline:
    """Monotonic time, in seconds, relative to when the probe was created."""

    def __init__(self) -> None:
        self.origin = trio.current_time()

    def now(self) -> float:
        return trio.current_time() - self.origin


@attrs.define
class Outcome:
    """What one bad client saw, and when the router let it go."""

    received: bytes = b""
    #: The router closed its end (FIN, or RST while the client read).
    eof: bool = False
    #: Seconds from the client's mark (it stopped acting) to EOF / to its session gone.
    eof_after: float | None = None
    gone_after: float | None = None
    #: The client itself reset the connection (nothing to read afterwards).
    client_reset: bool = False
    #: The client read after acting (False: a client that never reads).
    read: bool = True
    #: Anything that went wrong in the harness or the row itself.
    error: str | None = None


class Probe:
    """One raw client connection to the router."""

    def __init__(self, stream: trio.SocketStream, server: Server | None) -> None:
        self.stream = stream
        #: The router under test (None for a reference connection straight to the broker).
        self.server = server
        #: Client behaviour that goes on while the harness reads (a slowloris dribble).
        self.background: list[Callable[[], Awaitable[None]]] = []
        self.clock = Timeline()
        self.received = bytearray()
        self.marked: float | None = None
        self.reset_done = False
        self.send_failed = False
        self.eof = False
        #: False for a client that stops reading: ``finish`` then only watches its session.
        self.reads = True
        self.address: tuple[str, int] = stream.socket.getsockname()[:2]

    @classmethod
    async def connect(cls, port: int, server: Server | None, *, rcvbuf: int | None = None) -> Probe:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connect, so that the TCP window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        return cls(trio.SocketStream(sock), server)

    # -- acting ---------------------------------------------------------------------

    def mark(self) -> None:
        """The client stops acting here: bounds on closing are measured from now."""
        self.marked = self.clock.now()

    async def send(self, data: bytes) -> None:
        """Send, unless the router already closed (then later sends are skipped)."""
        if self.send_failed:
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.send_failed = True

    async def send_method(self, method: base.Frame, channel: int = 0) -> None:
        await self.send(frame.marshal(method, channel))

    async def dribble(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte at a time, ``every`` seconds apart (slowloris)."""
        for index in range(len(data)):
            await self.send(data[index : index + 1])
            if self.send_failed:
                return
            await trio.sleep(every)

    async def half_close(self) -> None:
        """FIN: no more data from the client; it still reads."""
        try:
            await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.send_failed = True

    async def reset(self) -> None:
        """RST: SO_LINGER 0, then close."""
        self.mark()
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(self.stream)
        self.reset_done = True

    async def receive(self, timeout: float) -> bool:
        """One read into ``received``; False at end of stream."""
        with trio.fail_after(timeout):
            try:
                data = await self.stream.receive_some(1 << 20)
            except trio.BrokenResourceError:
                data = b""
        if not data:
            self.eof = True
            return False
        self.received += data
        return True

    async def read_frames(self, count: int, timeout: float = 5.0) -> None:
        """Read until ``count`` whole frames (the protocol header counts as one) arrived."""
        while len(tokens(bytes(self.received))) < count:
            if not await self.receive(timeout):
                raise AssertionError(
                    f"EOF after {describe_all(bytes(self.received))}, wanted {count} frames"
                )

    async def read_method(self, timeout: float = 5.0) -> Any:
        """Read the next frame and decode it (for rows that talk to the broker)."""
        await self.read_frames(len(tokens(bytes(self.received))) + 1, timeout)
        return decode(tokens(bytes(self.received))[-1])

    async def wait_session(self, timeout: float = 2.0) -> None:
        """Until the router has registered this client's session."""
        with trio.fail_after(timeout):
            while not self.has_session():
                await trio.sleep(POLL)

    def session(self) -> Session | None:
        """This client's session in the router, if it has one."""
        if self.server is not None:
            for session in list(self.server.sessions.values()):
                if session.client_address == self.address:
                    return session
        return None

    def has_session(self) -> bool:
        return self.session() is not None

    # -- after acting ---------------------------------------------------------------

    async def finish(self, cap: float) -> Outcome:
        """Read until EOF (unless reset or not reading) and watch the session go.

        Each bounded by ``cap`` seconds from the mark.
        """
        if self.marked is None:
            self.mark()
        outcome = Outcome(client_reset=self.reset_done, read=self.reads)
        async with trio.open_nursery() as nursery:
            for behaviour in self.background:
                nursery.start_soon(behaviour)
            if self.reset_done or not self.reads:
                await self._watch_session(outcome, cap)
            else:
                nursery.start_soon(self._watch_session, outcome, cap)
                with trio.move_on_after(cap):
                    while await self.receive(cap):
                        pass
                if self.eof:
                    outcome.eof = True
                    outcome.eof_after = self.clock.now() - self._mark()
            await trio.aclose_forcefully(self.stream)
        outcome.received = bytes(self.received)
        return outcome

    def _mark(self) -> float:
        assert self.marked is not None
        return self.marked

    async def _watch_session(self, outcome: Outcome, cap: float) -> None:
        with trio.move_on_after(cap):
            while self.has_session():
                await trio.sleep(POLL)
            outcome.gone_after = self.clock.now() - self._mark()


# -- the bytes a client sees -----------------------------------------------------------


def tokens(data: bytes) -> list[bytes]:
    """``data`` cut into a protocol header (if it starts with one) and whole frames.

    A trailing partial frame, or bytes that are no frame, end the list as one token.
    """
    out: list[bytes] = []
    if data.startswith(b"AMQP") or (data and b"AMQP".startswith(data[:4])):
        out.append(data[:8])
        data = data[8:]
    reader = FrameReader(frame_max=0)
    reader.feed(data)
    while True:
        try:
            item = reader.next_frame()
        except Exception:  # not frames: keep the rest as is
            item = None
        if item is None:
            break
        out.append(item.raw)
    rest = reader.drain()
    if rest:
        out.append(rest)
    return out


def decode(token: bytes) -> Any:
    """A frame as pamqp reads it (a method, a content header or body, a heartbeat)."""
    return frame.unmarshal(token)[2]


def describe(token: bytes) -> str:
    """One token, readable in a failure message."""
    if token.startswith(b"AMQP") and len(token) == 8:
        return f"header {token!r}"
    try:
        channel = struct.unpack_from(">H", token, 1)[0]
        value = decode(token)
    except Exception:
        return f"raw {token[:80]!r}{'...' if len(token) > 80 else ''} ({len(token)} bytes)"
    if isinstance(value, commands.Connection.Start):
        return f"ch{channel} Connection.Start" + ("" if token == START_FRAME else " (not ours)")
    if isinstance(value, base.Frame):
        return f"ch{channel} {value.name}{dict(value)}"
    return f"ch{channel} {type(value).__name__}"


def describe_all(data: bytes) -> str:
    return "[" + ", ".join(describe(t) for t in tokens(data)) + "]" if data else "nothing"


@attrs.frozen
class BrokerSays:
    """A frame the real broker writes: compared decoded (method, channel, arguments)."""

    method: base.Frame
    channel: int = 0


@attrs.frozen
class CloseMatching:
    """A router's Connection.Close on channel 0 whose text is only known up to ``pattern``
    (a regular expression matched in full): for texts that carry a Python object's
    address, which changes from run to run."""

    reply_code: int
    pattern: str


Expected = Sequence[bytes | BrokerSays | CloseMatching]


def mismatch(received: bytes, expected: Expected) -> str | None:
    """Why ``received`` is not ``expected``, or None if it is, frame by frame."""
    want: list[bytes | BrokerSays | CloseMatching] = []
    for item in expected:
        want.extend(tokens(item) if isinstance(item, bytes) else [item])
    got = tokens(received)
    for index, (have, should) in enumerate(zip(got, want, strict=False)):
        if isinstance(should, bytes):
            if have != should:
                return f"token {index}: got {describe(have)}, expected {describe(should)}"
            continue
        try:
            channel = struct.unpack_from(">H", have, 1)[0]
            value = decode(have)
        except Exception:
            return f"token {index}: got {describe(have)}, expected {describe_expected(should)}"
        if isinstance(should, CloseMatching):
            if (
                not isinstance(value, commands.Connection.Close)
                or channel != 0
                or value.reply_code != should.reply_code
                or not re.fullmatch(should.pattern, str(value.reply_text))
                or (value.class_id, value.method_id) != (0, 0)
            ):
                return f"token {index}: got {describe(have)}, expected {describe_expected(should)}"
            continue
        if (
            not isinstance(value, base.Frame)
            or value.name != should.method.name
            or channel != should.channel
            or dict(value) != dict(should.method)
        ):
            return f"token {index}: got {describe(have)}, expected {describe_expected(should)}"
    if len(got) != len(want):
        return (
            f"got {len(got)} tokens {describe_all(received)}, expected {len(want)}: "
            + ", ".join(describe(w) if isinstance(w, bytes) else describe_expected(w) for w in want)
        )
    return None


def describe_expected(item: BrokerSays | CloseMatching) -> str:
    if isinstance(item, CloseMatching):
        return f"ch0 Connection.Close {item.reply_code} matching {item.pattern!r}"
    return f"ch{item.channel} {item.method.name}{dict(item.method)} (from the broker)"


# -- building bad input ----------------------------------------------------------------


def raw_frame(
    frame_type: int, channel: int, payload: bytes, end: int = constants.FRAME_END
) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes((end,))


def method_payload(class_id: int, method_id: int, arguments: bytes = b"") -> bytes:
    return struct.pack(">HH", class_id, method_id) + arguments


def start_ok_with_table(table: bytes) -> bytes:
    """A StartOk frame whose client-properties table is ``table`` (raw), PLAIN guest."""
    response = b"\0guest\0guest"
    arguments = (
        struct.pack(">I", len(table))
        + table
        + b"\x05PLAIN"
        + struct.pack(">I", len(response))
        + response
        + b"\x05en_US"
    )
    return raw_frame(constants.FRAME_METHOD, 0, method_payload(10, 11, arguments))


def start_ok_of_size(total: int) -> bytes:
    """A well-formed StartOk frame of exactly ``total`` bytes (padded client properties)."""
    padding = total - len(start_ok_with_table(b"\x01xS\x00\x00\x00\x00"))
    return start_ok_with_table(b"\x01xS" + struct.pack(">I", padding) + b"p" * padding)


def nested_arrays(depth: int) -> bytes:
    """A client-properties table holding ``depth`` arrays nested in one another."""
    value = b"A" + struct.pack(">I", 0)
    for _ in range(depth - 1):
        value = b"A" + struct.pack(">I", len(value)) + value
    return b"\x01x" + value


def open_frame(vhost: bytes) -> bytes:
    """Connection.Open built by hand: pamqp refuses to marshal vhosts over 127 characters."""
    arguments = bytes((len(vhost),)) + vhost + b"\x00" + b"\x00"
    return raw_frame(constants.FRAME_METHOD, 0, method_payload(10, 40, arguments))


def publish_frames(channel: int, routing_key: str, payload: bytes) -> bytes:
    """Basic.Publish, its content header and one body frame."""
    return (
        frame.marshal(commands.Basic.Publish(routing_key=routing_key), channel)
        + frame.marshal(header.ContentHeader(body_size=len(payload)), channel)
        + frame.marshal(body.ContentBody(payload), channel)
    )


def tls_client_hello() -> bytes:
    """The first flight of a real TLS client (a ClientHello record), made by ssl itself."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def start_ok(
    *,
    password: str = "guest",
    mechanism: str = "PLAIN",
    properties: dict[str, Any] | None = None,
) -> commands.Connection.StartOk:
    return commands.Connection.StartOk(
        client_properties=properties
        if properties is not None
        else {
            "connection_name": "bad-client-matrix",
            "capabilities": {"authentication_failure_close": True},
        },
        mechanism=mechanism,
        response=f"\0guest\0{password}",
    )


#: The TuneOk a well-behaved client answers the router's default offer with.
def tune_ok(
    channel_max: int = 2047, frame_max: int = 131072, heartbeat: int = 0
) -> commands.Connection.TuneOk:
    return commands.Connection.TuneOk(
        channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat
    )
