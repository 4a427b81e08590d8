"""The bad-client matrix: each kind of bad client, what it receives, how soon
it is let go, and a router that is unharmed afterwards.

One in-process router runs in front of the real RabbitMQ at 127.0.0.1:5672. Every row
of ``ROWS`` is one kind of bad client; all rows run concurrently (bounded by a
CapacityLimiter) in one ``trio.run`` of the module fixture, each recording an
``Outcome``: every byte it received until the router closed, the seconds from the
moment it stopped acting to EOF and to its session leaving the router. The
parametrized test then checks each row:

* the exact bytes received: frames the router writes byte for byte (built here as the
  router builds them: its Connection.Start, its Tune, pamqp-marshalled Close frames
  with the exact code and text), frames the real broker writes decoded and compared;
  the broker's refusals are compared with what the broker says to the same request
  made straight to it (``Refs``), so "RabbitMQ's own text" is literally that;
* an upper bound on the time to close, derived from ``TIMEOUTS`` plus ``SLACK``;
* the session gone. After all rows: no session left, and a well-behaved client served.

Rows whose correct expectation is not today's behaviour (a known defect)
carry ``xfail(strict=True)``: they flip to XPASS, and fail the run, when the fix lands.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
from pamqp import body, commands, frame, header

from amqprouter.protocol import constants
from amqprouter.protocol.properties import START_FRAME
from amqprouter.routing import Backend
from amqprouter.server import Server
from amqprouter.server.admission import ListenOptions
from amqprouter.session import SessionSettings, Timeouts
from tests.brokers import SYSTEM_PORT, SystemBroker
from tests.integration.bad_clients import (
    BrokerSays,
    CloseMatching,
    Expected,
    Outcome,
    Probe,
    describe_all,
    method_payload,
    mismatch,
    nested_arrays,
    open_frame,
    publish_frames,
    raw_frame,
    start_ok,
    start_ok_of_size,
    start_ok_with_table,
    tls_client_hello,
    tokens,
    tune_ok,
)
from tests.session.wire import router, wait_no_sessions

#: Short timeouts so that the rows that wait for one stay fast.
TIMEOUTS = Timeouts(
    client_handshake=1.0, connect=1.0, broker_handshake=5.0, close=0.3, disconnect=1.0
)
#: Scheduling allowance on a loaded 2-core machine (the rows run concurrently).
SLACK = 1.5
#: The router answers at once and closes (nothing of the client's is awaited).
AT_ONCE = SLACK
#: The router sends Close and waits the close timeout for a Close-Ok that never comes.
AFTER_CLOSE = TIMEOUTS.close + SLACK
#: Measured from connect: the client handshake timeout.
HANDSHAKE = TIMEOUTS.client_handshake + SLACK
#: Rows run at most this many at a time.
CONCURRENCY = 24
#: A row's reads and waits give up this long after its own bound (it fails, not hangs).
GRACE = 3.0

HEADER = constants.PROTOCOL_HEADER
OFFER = SessionSettings().tune
TUNE = frame.marshal(
    commands.Connection.Tune(
        channel_max=OFFER.channel_max, frame_max=OFFER.frame_max, heartbeat=OFFER.heartbeat
    ),
    0,
)
CLOSE_OK = frame.marshal(commands.Connection.CloseOk(), 0)
OPEN_OK = BrokerSays(commands.Connection.OpenOk())


# RabbitMQ's Channel.OpenOk carries an empty channel_id, which pamqp refuses to build
# (its validate wants "0"), so the expected method is decoded from the bytes.
def _channel_open_ok() -> BrokerSays:
    method = frame.unmarshal(raw_frame(1, 1, method_payload(20, 11, b"\x00\x00\x00\x00")))[2]
    assert isinstance(method, commands.Channel.OpenOk)
    return BrokerSays(method, channel=1)


CHANNEL_OPEN_OK = _channel_open_ok()
HANDSHAKE_DONE: Expected = (START_FRAME, TUNE, OPEN_OK)
#: The rest of a client's handshake, pipelined after its StartOk.
TUNE_OK_OPEN = (
    frame.marshal(tune_ok(), 0),
    frame.marshal(commands.Connection.Open(virtual_host="/"), 0),
)


def close(code: int, text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    """The Close frame the router writes, as pamqp marshals it."""
    return frame.marshal(
        commands.Connection.Close(
            reply_code=code, reply_text=text, class_id=class_id, method_id=method_id
        ),
        0,
    )


def refused_by_router(code: int, text: str) -> Expected:
    """After the header: the router's Start, then its Close."""
    return (START_FRAME, close(code, text))


def refused_after_tune(code: int, text: str) -> Expected:
    return (START_FRAME, TUNE, close(code, text))


#: The backend as ``tests.session.wire.router`` configures it.
BACKEND = Backend("fake", "none", "127.0.0.1", SYSTEM_PORT)
BROKER_SILENTLY_CLOSED = close(
    constants.CONNECTION_FORCED,
    f"CONNECTION_FORCED - broker {BACKEND.label} closed the connection during the handshake",
)

MALFORMED_AFTER_OPEN: Expected = (
    *HANDSHAKE_DONE,
    close(constants.FRAME_ERROR, "FRAME_ERROR - malformed frame"),
)

#: A vhost RabbitMQ accepts as a name but pamqp refuses to marshal (over 127 characters).
LONG_VHOST = "v" * 130
MISSING_VHOST = "amqprouter-matrix-no-such-vhost"
#: Arrays nested this deep in a StartOk's client properties exhaust Python's recursion
#: limit in pamqp's decoder (4,046 bytes: under the 4096 a frame may have before Tune).
NESTING = 800


# -- the broker's own answers ----------------------------------------------------------


@attrs.define
class Refs:
    """What the real broker answers, asked directly (no router in between)."""

    wrong_password: commands.Connection.Close | None = None
    missing_vhost: commands.Connection.Close | None = None
    long_vhost: commands.Connection.Close | None = None
    unopened_channel: commands.Connection.Close | None = None


async def ask_broker(
    *, password: str = "guest", vhost: bytes = b"/", after_open: bytes = b""
) -> commands.Connection.Close:
    """Run a handshake straight against RabbitMQ and return the Close it answers with."""
    probe = await Probe.connect(SYSTEM_PORT, None)
    try:
        await probe.send(HEADER)
        assert isinstance(await probe.read_method(), commands.Connection.Start)
        await probe.send_method(start_ok(password=password))
        method = await probe.read_method()
        if isinstance(method, commands.Connection.Tune):
            await probe.send_method(tune_ok())
            await probe.send(open_frame(vhost))
            method = await probe.read_method()
        if isinstance(method, commands.Connection.OpenOk):
            await probe.send(after_open)
            while not isinstance(method := await probe.read_method(), commands.Connection.Close):
                pass
        assert isinstance(method, commands.Connection.Close), describe_all(bytes(probe.received))
        return method
    finally:
        await trio.aclose_forcefully(probe.stream)


async def broker_refs() -> Refs:
    refs = Refs()
    refs.wrong_password = await ask_broker(password="not-the-password")
    refs.missing_vhost = await ask_broker(vhost=MISSING_VHOST.encode())
    refs.long_vhost = await ask_broker(vhost=LONG_VHOST.encode())
    refs.unopened_channel = await ask_broker(after_open=publish_frames(5, "q", b"x"))
    # The references are the refusals they stand for, not some other close.
    for close_method, code in (
        (refs.wrong_password, constants.ACCESS_REFUSED),
        (refs.missing_vhost, constants.NOT_ALLOWED),
        (refs.long_vhost, constants.NOT_ALLOWED),
        (refs.unopened_channel, 504),  # CHANNEL_ERROR
    ):
        assert close_method is not None and close_method.reply_code == code, close_method
    return refs


def says(close_method: commands.Connection.Close | None) -> BrokerSays:
    assert close_method is not None, "the broker reference was not taken"
    return BrokerSays(close_method)


# -- client steps ------------------------------------------------------------------------


async def to_start(c: Probe) -> None:
    await c.send(HEADER)
    await c.read_frames(1)


async def to_tune(c: Probe) -> None:
    await to_start(c)
    await c.send_method(start_ok())
    await c.read_frames(2)


async def to_open(c: Probe, *, heartbeat: int = 0, frame_max: int = OFFER.frame_max) -> None:
    await to_tune(c)
    await c.send_method(tune_ok(heartbeat=heartbeat, frame_max=frame_max))
    await c.send_method(commands.Connection.Open(virtual_host="/"))
    await c.read_frames(3)


async def to_channel(c: Probe, *, heartbeat: int = 0) -> None:
    await to_open(c, heartbeat=heartbeat)
    await c.send_method(commands.Channel.Open(), 1)
    await c.read_frames(4)


def sends(*chunks: bytes) -> Callable[[Probe], Awaitable[None]]:
    """A row that sends ``chunks`` right after connecting, then only reads."""

    async def act(c: Probe) -> None:
        for chunk in chunks:
            await c.send(chunk)

    return act


def after(
    step: Callable[[Probe], Awaitable[None]], *chunks: bytes, then: str = "read"
) -> Callable[[Probe], Awaitable[None]]:
    """A row that does ``step``, sends ``chunks``, then reads / half-closes / resets."""

    async def act(c: Probe) -> None:
        await step(c)
        for chunk in chunks:
            await c.send(chunk)
        if then == "fin":
            await c.half_close()
        elif then == "rst":
            await c.reset()

    return act


async def connect_only(c: Probe) -> None:
    pass


async def silent(c: Probe) -> None:
    c.marked = 0.0  # the handshake timeout runs from connect


def silent_after(*chunks: bytes) -> Callable[[Probe], Awaitable[None]]:
    async def act(c: Probe) -> None:
        for chunk in chunks:
            await c.send(chunk)
        c.marked = 0.0

    return act


def slowloris(
    step: Callable[[Probe], Awaitable[None]], data: bytes
) -> Callable[[Probe], Awaitable[None]]:
    """Dribble ``data`` a byte every 0.3 s, longer in all than the handshake timeout."""
    assert len(data) * 0.3 > TIMEOUTS.client_handshake + 1

    async def act(c: Probe) -> None:
        await step(c)
        c.marked = 0.0
        c.background.append(lambda: c.dribble(data, 0.3))

    return act


#: How much a client that never reads is sent: far more than the socket buffers hold
#: with the client's receive buffer at 4 KiB (the router's send buffer grows to 4 MiB).
FLOOD_MESSAGES = 2500
FLOOD_SIZE = 4000


async def flood_unread(c: Probe, *, heartbeat: int) -> None:
    """Open, fill an exclusive queue, consume it without ever reading the deliveries."""
    await to_channel(c, heartbeat=heartbeat)
    await c.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
    declare_ok = await c.read_method()
    assert isinstance(declare_ok, commands.Queue.DeclareOk) and declare_ok.queue
    payload = b"m" * FLOOD_SIZE
    batch = publish_frames(1, declare_ok.queue, payload) * 100
    for _ in range(FLOOD_MESSAGES // 100):
        await c.send(batch)
    await c.send_method(commands.Basic.Consume(queue=declare_ok.queue, no_ack=True), 1)
    await router_stalls(c, FLOOD_MESSAGES * FLOOD_SIZE)


async def router_stalls(c: Probe, sent: int) -> None:
    """Until the router has stopped forwarding to ``c`` well short of ``sent`` bytes:
    it is blocked writing to a client that does not read (and buffers nothing more)."""
    session = c.session()
    assert session is not None
    last, unchanged = -1, 0
    with trio.fail_after(10):
        while unchanged < 5:
            await trio.sleep(0.1)
            forwarded = session.egress.bytes
            unchanged = unchanged + 1 if forwarded == last else 0
            last = forwarded
    assert 0 < last < sent // 2, f"the router forwarded {last} of {sent} bytes"
    assert session.egress.pending < OFFER.frame_max, "the router buffers more than a frame"


async def never_reads_then_leaves(c: Probe) -> None:
    await flood_unread(c, heartbeat=0)
    await c.reset()


async def never_reads_broker_dies(c: Probe) -> None:
    await flood_unread(c, heartbeat=1)
    c.mark()
    # Never reads again, never sends a heartbeat: RabbitMQ drops its side after two
    # missed heartbeats; the router, blocked writing to this client, should notice too.
    c.reads = False


# -- the matrix --------------------------------------------------------------------------

ExpectFn = Callable[[Refs], Expected]


@attrs.frozen
class Row:
    name: str
    act: Callable[[Probe], Awaitable[None]]
    #: The bytes the client receives, exactly (None: not checked, see ``check``).
    expect: Expected | ExpectFn | None
    #: Seconds from the client's mark to EOF and to its session gone.
    within: float
    #: The defect, in a few words, when today's behaviour is not the correct one.
    defect: str | None = None
    #: The client's receive buffer (small: a client that cannot keep up).
    rcvbuf: int | None = None
    #: Extra check on the outcome (for rows whose bytes cannot be known exactly).
    check: Callable[[Outcome], str | None] | None = None
    #: The row's client reaches the ACCEPT-PROXY listener (``PROXY_OPTIONS``), not the
    #: plain one: it is no balancer named by FROM, so it never gets a session.
    proxied: bool = False


def refused_with_any_of(*codes: int) -> Callable[[Outcome], str | None]:
    """Start, then one Connection.Close with one of ``codes`` and a reason (for a fix
    whose exact code and text are the fixer's to choose)."""

    def check(outcome: Outcome) -> str | None:
        problems = [
            mismatch(outcome.received, (START_FRAME, CloseMatching(code, ".+"))) for code in codes
        ]
        return None if None in problems else problems[0]

    return check


def flood_unread_check(outcome: Outcome) -> str | None:
    """What a never-reading client read before it stalled: the handshake, its channel
    and the queue (the deliveries that followed it were never read)."""
    got = tokens(outcome.received)
    problem = mismatch(b"".join(got[:4]), (*HANDSHAKE_DONE, CHANNEL_OPEN_OK))
    if problem is None and not isinstance(frame.unmarshal(got[4])[2], commands.Queue.DeclareOk):
        problem = f"no Queue.DeclareOk: {describe_all(outcome.received)}"
    return problem


ROWS: list[Row] = [
    # -- wrong, partial and garbage protocol headers: our header back, then EOF --------
    Row("binary garbage", sends(b"\x00\xff" * 50), (HEADER,), AT_ONCE),
    Row("HTTP GET", sends(b"GET / HTTP/1.1\r\nHost: router\r\n\r\n"), (HEADER,), AT_ONCE),
    Row(
        "HTTP CONNECT",
        sends(b"CONNECT broker:5672 HTTP/1.1\r\nHost: broker:5672\r\n\r\n"),
        (HEADER,),
        AT_ONCE,
    ),
    Row(
        "PROXY protocol v1 line",
        sends(b"PROXY TCP4 10.0.0.1 10.0.0.2 40000 5672\r\n" + HEADER),
        (HEADER,),
        AT_ONCE,
    ),
    # A client that reaches an ACCEPT-PROXY port itself, naming an address ALLOW admits:
    # closed at accept, before a byte is read (no protocol header back).
    Row(
        "PROXY header from a peer not in ACCEPT-PROXY FROM",
        sends(b"PROXY TCP4 10.66.66.66 10.0.0.2 40000 5672\r\n" + HEADER),
        (),
        AT_ONCE,
        proxied=True,
    ),
    Row("TLS ClientHello", sends(tls_client_hello()), (HEADER,), AT_ONCE),
    Row("AMQP 0-10 header", sends(b"AMQP\x01\x01\x00\x0a"), (HEADER,), AT_ONCE),
    Row("AMQP 1.0 header", sends(b"AMQP\x00\x01\x00\x00"), (HEADER,), AT_ONCE),
    Row("AMQP 1.0 SASL header", sends(b"AMQP\x03\x01\x00\x00"), (HEADER,), AT_ONCE),
    Row("AMQP 0-8 header", sends(b"AMQP\x01\x01\x08\x00"), (HEADER,), AT_ONCE),
    Row("AMQP 0-9 (not 0-9-1) header", sends(b"AMQP\x00\x00\x09\x00"), (HEADER,), AT_ONCE),
    Row("lower-case amqp header", sends(b"amqp\x00\x00\x09\x01"), (HEADER,), AT_ONCE),
    # -- silence and slowloris: the handshake timeout, counted from connect -------------
    Row("silent", silent, (), HANDSHAKE),
    Row("half a header, then silent", silent_after(b"AMQ"), (), HANDSHAKE),
    Row("whole header, then silent", silent_after(HEADER), (START_FRAME,), HANDSHAKE),
    Row(
        "half a StartOk, then silent",
        silent_after(HEADER, frame.marshal(start_ok(), 0)[:20]),
        (START_FRAME,),
        HANDSHAKE,
    ),
    Row(
        "StartOk, then silent",
        silent_after(HEADER, frame.marshal(start_ok(), 0)),
        (START_FRAME, TUNE),
        HANDSHAKE,
    ),
    Row("slowloris header", slowloris(connect_only, HEADER), (), HANDSHAKE),
    Row(
        "slowloris StartOk",
        slowloris(to_start, frame.marshal(start_ok(), 0)),
        (START_FRAME,),
        HANDSHAKE,
    ),
    # -- malformed frames during the handshake: Start, then Close 501/505 ----------------
    Row(
        "bad frame-end in StartOk",
        after(to_start, frame.marshal(start_ok(), 0)[:-1] + b"\x00"),
        refused_by_router(501, "bad frame-end octet 0x00"),
        AFTER_CLOSE,
    ),
    Row(
        "unknown frame type",
        after(to_start, raw_frame(9, 0, b"")),
        refused_by_router(501, "unknown frame type 9"),
        AFTER_CLOSE,
    ),
    Row(
        "frame length 1<<30",
        after(to_start, b"\x01\x00\x00" + (1 << 30).to_bytes(4, "big")),
        refused_by_router(501, f"frame of {(1 << 30) + 8} bytes exceeds frame_max 4096"),
        AFTER_CLOSE,
    ),
    Row(
        "StartOk one byte over the 4096 pre-Tune limit",
        after(to_start, start_ok_of_size(4097)),
        refused_by_router(501, "frame of 4097 bytes exceeds frame_max 4096"),
        AFTER_CLOSE,
    ),
    Row(
        "method on channel 1 before StartOk",
        after(to_start, frame.marshal(commands.Channel.Open(), 1)),
        refused_by_router(
            505,
            "UNEXPECTED_FRAME - client, while awaiting Connection.StartOk: frame type 1 on "
            "channel 1",
        ),
        AFTER_CLOSE,
    ),
    Row(
        "content header before StartOk",
        after(to_start, frame.marshal(header.ContentHeader(body_size=1), 1)),
        refused_by_router(
            505,
            "UNEXPECTED_FRAME - client, while awaiting Connection.StartOk: frame type 2 on "
            "channel 1",
        ),
        AFTER_CLOSE,
    ),
    Row(
        "content body on channel 0 before StartOk",
        after(to_start, frame.marshal(body.ContentBody(b"x"), 0)),
        refused_by_router(
            505,
            "UNEXPECTED_FRAME - client, while awaiting Connection.StartOk: frame type 3 on "
            "channel 0",
        ),
        AFTER_CLOSE,
    ),
    Row(
        "content body on channel 1 after StartOk",
        after(to_tune, frame.marshal(body.ContentBody(b"x"), 1)),
        refused_after_tune(
            505,
            "UNEXPECTED_FRAME - client, while awaiting Connection.TuneOk: frame type 3 on "
            "channel 1",
        ),
        AFTER_CLOSE,
    ),
    Row(
        "method frame truncated to its class id",
        after(to_start, raw_frame(1, 0, b"\x00\x0a")),
        refused_by_router(501, "FRAME_ERROR - method frame too short for a method id"),
        AFTER_CLOSE,
    ),
    Row(
        "StartOk without arguments",
        after(to_start, raw_frame(1, 0, method_payload(10, 11))),
        refused_by_router(501, "FRAME_ERROR - client properties: a length overruns its table"),
        AFTER_CLOSE,
    ),
    Row(
        "StartOk table length overruns the frame",
        after(to_start, raw_frame(1, 0, method_payload(10, 11, b"\x00\x00\xff\xff"))),
        refused_by_router(501, "FRAME_ERROR - client properties: a length overruns its table"),
        AFTER_CLOSE,
    ),
    Row(
        "StartOk table with an unknown field type",
        after(to_start, start_ok_with_table(b"\x01xZ\x00")),
        refused_by_router(501, "FRAME_ERROR - client properties: unknown field type b'Z'"),
        AFTER_CLOSE,
    ),
    Row(
        "StartOk table with a key overrunning the table",
        after(to_start, start_ok_with_table(b"\x7fxS")),
        refused_by_router(501, "FRAME_ERROR - client properties: a field overruns its table"),
        AFTER_CLOSE,
    ),
    Row(
        # 488 levels (the audit's 2,486 bytes) crashed a router whose stack was deeper
        # when it decoded; in this process it takes more (see NESTING).
        f"StartOk properties nesting {NESTING} empty arrays",
        after(to_start, start_ok_with_table(nested_arrays(NESTING))),
        None,
        AFTER_CLOSE,
        check=refused_with_any_of(constants.FRAME_ERROR, constants.SYNTAX_ERROR),
    ),
    Row(
        "unknown class and method",
        after(to_start, raw_frame(1, 0, method_payload(99, 99))),
        refused_by_router(501, "FRAME_ERROR - unknown method 99.99"),
        AFTER_CLOSE,
    ),
    # -- wrong methods at each handshake step ----------------------------------------------
    Row(
        "Channel.Open on channel 0 instead of StartOk",
        after(to_start, frame.marshal(commands.Channel.Open(), 0)),
        refused_by_router(503, "COMMAND_INVALID - expected Connection.StartOk, got Channel.Open"),
        AFTER_CLOSE,
    ),
    Row(
        "Open instead of StartOk",
        after(to_start, frame.marshal(commands.Connection.Open(virtual_host="/"), 0)),
        refused_by_router(
            503, "COMMAND_INVALID - expected Connection.StartOk, got Connection.Open"
        ),
        AFTER_CLOSE,
    ),
    Row(
        "a second StartOk",
        after(to_tune, frame.marshal(start_ok(), 0)),
        refused_after_tune(
            503, "COMMAND_INVALID - expected Connection.TuneOk, got Connection.StartOk"
        ),
        AFTER_CLOSE,
    ),
    Row(
        "Open before TuneOk",
        after(to_tune, frame.marshal(commands.Connection.Open(virtual_host="/"), 0)),
        refused_after_tune(
            503, "COMMAND_INVALID - expected Connection.TuneOk, got Connection.Open"
        ),
        AFTER_CLOSE,
    ),
    Row(
        "TuneOk frame_max below 4096",
        after(to_tune, frame.marshal(tune_ok(frame_max=1024), 0)),
        refused_after_tune(530, "NOT_ALLOWED - TuneOk frame_max=1024 is below the minimum 4096"),
        AFTER_CLOSE,
    ),
    Row(
        "TuneOk frame_max above the offer",
        after(to_tune, frame.marshal(tune_ok(frame_max=OFFER.frame_max + 1), 0)),
        refused_after_tune(
            530,
            f"NOT_ALLOWED - TuneOk frame_max={OFFER.frame_max + 1} is above the "
            f"{OFFER.frame_max} offered",
        ),
        AFTER_CLOSE,
    ),
    Row(
        "TuneOk channel_max above the offer",
        after(to_tune, frame.marshal(tune_ok(channel_max=OFFER.channel_max + 1), 0)),
        refused_after_tune(
            530,
            f"NOT_ALLOWED - TuneOk channel_max={OFFER.channel_max + 1} is above the "
            f"{OFFER.channel_max} offered",
        ),
        AFTER_CLOSE,
    ),
    Row(
        "TuneOk without its heartbeat",
        after(to_tune, raw_frame(1, 0, method_payload(10, 31, b"\x07\xff\x00\x02\x00\x00"))),
        refused_after_tune(
            501,
            "method frame too short: unpack_from requires a buffer of at least 19 bytes for "
            "unpacking 8 bytes at offset 11 (actual buffer size is 18)",
        ),
        AFTER_CLOSE,
    ),
    Row(
        # RabbitMQ accepts any heartbeat a client picks, above the offer too: so must we.
        "TuneOk heartbeat 65535, above the offer (accepted)",
        after(
            to_tune,
            frame.marshal(tune_ok(heartbeat=65535), 0),
            frame.marshal(commands.Connection.Open(virtual_host="/"), 0),
            close(200, "bye"),
        ),
        (*HANDSHAKE_DONE, BrokerSays(commands.Connection.CloseOk())),
        AT_ONCE,
    ),
    Row(
        "heartbeat with a bad frame-end before StartOk",
        after(to_start, raw_frame(constants.FRAME_HEARTBEAT, 0, b"", end=0)),
        refused_by_router(501, "bad frame-end octet 0x00"),
        AFTER_CLOSE,
    ),
    Row(
        "Close-Ok instead of StartOk",
        after(to_start, CLOSE_OK),
        refused_by_router(
            503, "COMMAND_INVALID - expected Connection.StartOk, got Connection.CloseOk"
        ),
        AFTER_CLOSE,
    ),
    Row(
        "Close truncated to its reply code",
        after(to_tune, raw_frame(1, 0, method_payload(10, 50, b"\x00\xc8"))),
        # One Close 501 and no Close-Ok: a Close that cannot be read was not understood.
        refused_after_tune(501, "FRAME_ERROR - Connection.Close too short"),
        AFTER_CLOSE,
    ),
    Row(
        "TuneOk twice",
        after(to_tune, frame.marshal(tune_ok(), 0) * 2),
        refused_after_tune(
            503, "COMMAND_INVALID - expected Connection.Open, got Connection.TuneOk"
        ),
        AFTER_CLOSE,
    ),
    Row(
        "Open with a vhost that is not UTF-8",
        after(to_tune, frame.marshal(tune_ok(), 0), open_frame(b"\xff\xfe")),
        refused_after_tune(501, "short string is not UTF-8"),
        AFTER_CLOSE,
    ),
    Row(
        "Open with a vhost length overrunning the frame",
        after(
            to_tune, frame.marshal(tune_ok(), 0), raw_frame(1, 0, method_payload(10, 40, b"\x40/"))
        ),
        refused_after_tune(501, "short string overruns the frame"),
        AFTER_CLOSE,
    ),
    # -- the broker refuses: its own code and text reach the client ------------------------
    Row(
        "wrong password",
        sends(HEADER, frame.marshal(start_ok(password="not-the-password"), 0), *TUNE_OK_OPEN),
        lambda refs: (START_FRAME, TUNE, says(refs.wrong_password)),
        AFTER_CLOSE,
    ),
    # RabbitMQ closes these without a word, after its 3 s SILENT_CLOSE_DELAY (the
    # client did not ask for authentication_failure_close; an unknown mechanism is
    # refused the same way); the router then tells the client what it saw.
    Row(
        "wrong password, without authentication_failure_close",
        sends(
            HEADER,
            frame.marshal(start_ok(password="not-the-password", properties={}), 0),
            *TUNE_OK_OPEN,
        ),
        (START_FRAME, TUNE, BROKER_SILENTLY_CLOSED),
        TIMEOUTS.broker_handshake + AFTER_CLOSE,
    ),
    Row(
        "unknown SASL mechanism",
        sends(HEADER, frame.marshal(start_ok(mechanism="NOPE"), 0), *TUNE_OK_OPEN),
        (START_FRAME, TUNE, BROKER_SILENTLY_CLOSED),
        TIMEOUTS.broker_handshake + AFTER_CLOSE,
    ),
    Row(
        "unknown vhost",
        after(
            to_tune,
            frame.marshal(tune_ok(), 0),
            frame.marshal(commands.Connection.Open(virtual_host=MISSING_VHOST), 0),
        ),
        lambda refs: (START_FRAME, TUNE, says(refs.missing_vhost)),
        AFTER_CLOSE,
    ),
    Row(
        "vhost of 130 characters (unknown to the broker)",
        after(to_tune, frame.marshal(tune_ok(), 0), open_frame(LONG_VHOST.encode())),
        lambda refs: (START_FRAME, TUNE, says(refs.long_vhost)),
        AFTER_CLOSE,
    ),
    # -- the client's own Connection.Close at each step: Close-Ok, then EOF ----------------
    Row(
        "Close instead of StartOk",
        after(to_start, close(200, "bye")),
        (START_FRAME, CLOSE_OK),
        AT_ONCE,
    ),
    Row(
        "Close instead of TuneOk",
        after(to_tune, close(200, "bye")),
        (START_FRAME, TUNE, CLOSE_OK),
        AT_ONCE,
    ),
    Row(
        "Close instead of Open",
        after(to_tune, frame.marshal(tune_ok(), 0), close(200, "bye")),
        (START_FRAME, TUNE, CLOSE_OK),
        AT_ONCE,
    ),
    Row(
        "Close pipelined with Open",
        after(
            to_tune,
            frame.marshal(tune_ok(), 0),
            frame.marshal(commands.Connection.Open(virtual_host="/"), 0),
            close(200, "bye"),
        ),
        (*HANDSHAKE_DONE, BrokerSays(commands.Connection.CloseOk())),
        AT_ONCE,
    ),
    Row(
        "Close after Open",
        after(to_open, close(200, "bye")),
        (*HANDSHAKE_DONE, BrokerSays(commands.Connection.CloseOk())),
        AT_ONCE,
    ),
    # -- resets (RST) and FINs: the session goes; after a FIN the client reads EOF ---------
    Row("RST at once", after(connect_only, then="rst"), (), AT_ONCE),
    Row("RST mid-header", after(connect_only, b"AMQP\x00", then="rst"), (), AT_ONCE),
    Row("RST awaiting StartOk", after(to_start, then="rst"), (START_FRAME,), AT_ONCE),
    Row(
        "RST mid-StartOk frame",
        after(to_start, frame.marshal(start_ok(), 0)[:30], then="rst"),
        (START_FRAME,),
        AT_ONCE,
    ),
    Row(
        "RST while the router opens the broker",
        after(
            to_tune,
            frame.marshal(tune_ok(), 0),
            frame.marshal(commands.Connection.Open(virtual_host="/"), 0),
            then="rst",
        ),
        (START_FRAME, TUNE),
        AFTER_CLOSE,
    ),
    Row("RST after Open", after(to_open, then="rst"), HANDSHAKE_DONE, AFTER_CLOSE),
    Row(
        "RST mid-frame after Open",
        after(to_channel, publish_frames(1, "q", b"x")[:15], then="rst"),
        (*HANDSHAKE_DONE, CHANNEL_OPEN_OK),
        AFTER_CLOSE,
    ),
    Row(
        "RST mid-message after Open",
        after(to_channel, publish_frames(1, "q", b"xyz")[:-12], then="rst"),
        (*HANDSHAKE_DONE, CHANNEL_OPEN_OK),
        AFTER_CLOSE,
    ),
    Row("FIN at once", after(connect_only, then="fin"), (), AT_ONCE),
    Row("FIN mid-header", after(connect_only, b"AMQP\x00", then="fin"), (), AT_ONCE),
    Row(
        "FIN mid-StartOk frame",
        after(to_start, frame.marshal(start_ok(), 0)[:30], then="fin"),
        (START_FRAME,),
        AT_ONCE,
    ),
    Row("FIN after Open", after(to_open, then="fin"), HANDSHAKE_DONE, AFTER_CLOSE),
    Row(
        "FIN mid-frame after Open",
        after(to_open, publish_frames(1, "q", b"x")[:15], then="fin"),
        HANDSHAKE_DONE,
        AFTER_CLOSE,
    ),
    Row(
        "FIN mid-message after Open",
        after(to_channel, publish_frames(1, "q", b"xyz")[:-12], then="fin"),
        (*HANDSHAKE_DONE, CHANNEL_OPEN_OK),
        AFTER_CLOSE,
    ),
    # -- garbage after a completed handshake: Close 501, the broker closed with 200 -------
    Row(
        "bad frame-end after Open",
        after(to_open, raw_frame(1, 0, b"x", end=0)),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "unknown frame type after Open",
        after(to_open, raw_frame(9, 0, b"")),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "HTTP after Open",
        after(to_open, b"GET / HTTP/1.1\r\n\r\n"),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "TLS ClientHello after Open",
        after(to_open, tls_client_hello()),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "protocol header again after Open",
        after(to_open, HEADER),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "frame length 1<<30 after Open",
        after(to_open, b"\x03\x00\x01" + (1 << 30).to_bytes(4, "big")),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "frame one byte over the negotiated frame_max",
        after(to_open, b"\x03\x00\x01" + (OFFER.frame_max - 7).to_bytes(4, "big")),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "frame one byte over a negotiated frame_max of 8192",
        after(
            lambda c: to_open(c, frame_max=8192),
            b"\x03\x00\x01" + (8192 - 7).to_bytes(4, "big"),
        ),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "Close truncated to its reply code after Open",
        after(to_open, raw_frame(1, 0, method_payload(10, 50, b"\x00\xc8"))),
        MALFORMED_AFTER_OPEN,
        AFTER_CLOSE,
    ),
    Row(
        "publish on a channel never opened",
        after(to_open, publish_frames(5, "q", b"x")),
        lambda refs: (*HANDSHAKE_DONE, says(refs.unopened_channel)),
        AFTER_CLOSE,
    ),
    # -- a client that never reads while the broker sends it a lot -------------------------
    Row(
        "never reads a flood, then leaves",
        never_reads_then_leaves,
        None,
        AFTER_CLOSE,
        rcvbuf=4096,
        check=flood_unread_check,
    ),
    Row(
        "never reads, and the broker drops its side (heartbeat 1 s)",
        never_reads_broker_dies,
        None,
        # RabbitMQ drops the broker side after two missed heartbeats; the router,
        # watching the same heartbeat, gives the client up as dead after two intervals.
        2 * 1 + TIMEOUTS.close + SLACK,
        rcvbuf=4096,
        check=flood_unread_check,
    ),
]


# -- running the matrix -------------------------------------------------------------------


@attrs.define
class Matrix:
    refs: Refs = attrs.Factory(Refs)
    outcomes: dict[str, Outcome] = attrs.Factory(dict)
    #: What went wrong for the thousand clients at once (empty: nothing).
    crowd: list[str] = attrs.Factory(lambda: ["not run"])
    #: The longest a crowd client waited for its EOF (for the report; bounded above).
    crowd_slowest: float = math.nan
    sessions_left: int = -1
    well_behaved: str | None = "not run"


#: A thousand clients at once, half silent, half sending garbage.
CROWD = 1000
#: Each is let go within this long of its connect: a silent one at the handshake
#: timeout, plus an allowance for two thousand sockets served by one process on a
#: loaded machine (measured: the slowest at 1.7 s alone, 5.7 s with three copies of
#: this module running at once on 2 cores).
CROWD_WITHIN = TIMEOUTS.client_handshake + 6 * SLACK


async def crowd(port: int, matrix: Matrix) -> list[str]:
    """Connect all at once; each must get exactly its answer, then EOF, in time."""
    problems: list[str] = []
    matrix.crowd_slowest = 0.0

    async def one(index: int) -> None:
        garbage = index % 2 == 1
        try:
            probe = await Probe.connect(port, None)
        except OSError as exc:
            problems.append(f"client {index}: connect failed: {exc}")
            return
        try:
            if garbage:
                await probe.send(b"\x16\x03\x01\x02\x00" + bytes(range(64)))
            probe.marked = 0.0
            outcome = await probe.finish(CROWD_WITHIN + GRACE)
        except Exception as exc:
            problems.append(f"client {index}: {type(exc).__name__}: {exc}")
            return
        expected = (HEADER,) if garbage else ()
        problem = mismatch(outcome.received, expected)
        if problem is not None:
            problems.append(f"client {index}: {problem}")
        elif outcome.eof_after is None or outcome.eof_after > CROWD_WITHIN:
            problems.append(f"client {index}: EOF after {outcome.eof_after}s")
        else:
            matrix.crowd_slowest = max(matrix.crowd_slowest, outcome.eof_after)

    async with trio.open_nursery() as nursery:
        for index in range(CROWD):
            nursery.start_soon(one, index)
    return problems


#: The ACCEPT-PROXY listener of the ``proxied`` rows: its only balancer is an address no
#: probe connects from (they come from 127.0.0.1), and ALLOW admits what they claim.
PROXY_OPTIONS = ListenOptions(proxy_from=("127.0.0.2/32",), allow=("10.0.0.0/8",))


async def run_row(row: Row, port: int, server: Server) -> Outcome:
    cap = row.within + GRACE
    try:
        with trio.fail_after(30):
            probe = await Probe.connect(port, server, rcvbuf=row.rcvbuf)
            if not row.proxied:  # a proxied row's client is refused before any session
                await probe.wait_session()
            await row.act(probe)
            return await probe.finish(cap)
    except Exception as exc:  # recorded for the row's own test to report
        return Outcome(error=f"{type(exc).__name__}: {exc}")


async def well_behaved_client(port: int) -> str | None:
    """A full handshake and a round trip on a channel, through the router; None if fine."""
    probe = await Probe.connect(port, None)
    try:
        await to_channel(probe)
        await probe.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
        if not isinstance(await probe.read_method(), commands.Queue.DeclareOk):
            return f"no Queue.DeclareOk: {describe_all(bytes(probe.received))}"
        await probe.send(close(200, "done"))
        if not isinstance(await probe.read_method(), commands.Connection.CloseOk):
            return f"no Close-Ok: {describe_all(bytes(probe.received))}"
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await trio.aclose_forcefully(probe.stream)


async def run_matrix() -> Matrix:
    matrix = Matrix()
    matrix.refs = await broker_refs()
    limit = trio.CapacityLimiter(CONCURRENCY)
    async with router(SYSTEM_PORT, timeouts=TIMEOUTS) as (server, port):
        proxy_port = await server.listen(0, "127.0.0.1", options=PROXY_OPTIONS)

        async def one(row: Row) -> None:
            async with limit:
                row_port = proxy_port if row.proxied else port
                matrix.outcomes[row.name] = await run_row(row, row_port, server)

        # The slow rows first, so that they overlap the many quick ones.
        ordered = sorted(ROWS, key=lambda row: -row.within)
        async with trio.open_nursery() as nursery:
            for row in ordered:
                nursery.start_soon(one, row)
        with trio.move_on_after(5):
            await wait_no_sessions(server, timeout=5)
        matrix.crowd = await crowd(port, matrix)
        with trio.move_on_after(5):
            await wait_no_sessions(server, timeout=5)
        matrix.sessions_left = len(server.sessions)
        matrix.well_behaved = await well_behaved_client(port)
    return matrix


@pytest.fixture(scope="module")
def matrix(system_broker: SystemBroker) -> Matrix:
    # Runs outside pytest-trio's per-test loop: one trio.run for every row.
    return trio.run(run_matrix)


def _param(row: Row) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=row.defect)] if row.defect else []
    return pytest.param(row, id=row.name, marks=marks)


@pytest.mark.parametrize("row", [_param(row) for row in ROWS])
def test_bad_client(matrix: Matrix, row: Row) -> None:
    outcome = matrix.outcomes[row.name]
    assert outcome.error is None, outcome.error
    expected = row.expect(matrix.refs) if callable(row.expect) else row.expect
    if expected is not None:
        problem = mismatch(outcome.received, expected)
        assert problem is None, problem
    if row.check is not None:
        problem = row.check(outcome)
        assert problem is None, problem
    if not outcome.client_reset and outcome.read:
        assert outcome.eof, (
            f"no EOF within {row.within + GRACE:g}s: {describe_all(outcome.received)}"
        )
        assert outcome.eof_after is not None and outcome.eof_after <= row.within, (
            f"EOF after {outcome.eof_after:.2f}s, bound {row.within:g}s"
        )
    assert outcome.gone_after is not None, f"session still there {row.within + GRACE:g}s on"
    assert outcome.gone_after <= row.within, (
        f"session gone after {outcome.gone_after:.2f}s, bound {row.within:g}s"
    )


def test_a_thousand_at_once(matrix: Matrix) -> None:
    assert not matrix.crowd, f"{len(matrix.crowd)} problems, first: {matrix.crowd[:5]}"


def test_no_session_left_and_router_serves(matrix: Matrix) -> None:
    assert matrix.sessions_left == 0
    assert matrix.well_behaved is None, matrix.well_behaved


def test_rows_cover_every_kind_of_bad_client() -> None:
    assert len(ROWS) >= 50
    assert len({row.name for row in ROWS}) == len(ROWS)
