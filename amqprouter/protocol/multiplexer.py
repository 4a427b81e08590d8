"""Many clients' channels on one broker connection: the sans-IO core of pooling mode.

Theory of operation
-------------------

The pool (session/pool.py) hands this machine whole frames, each one client's or the
broker's, and writes what it answers: a list of ``(target, frame)``, where the target
is a client or ``BROKER``. Channel 0 is not its business (the connection's own
methods, heartbeats: the pool's); every other frame is.

* **Channels are remapped** (channel_map.py): a client's Channel.Open takes an idle
  broker channel if one is kept (the router answers Open-Ok itself) or opens a fresh
  one (the broker's Open-Ok is relayed). Every frame on a channel has its channel
  field rewritten both ways; a broker channel serves one client channel at a time.
* **Channels are kept when safe** (pooled_channel.py): a client's Channel.Close on a
  channel that only published (confirms included, once all confirmed) and fetched with
  no_ack is answered by the router and the channel kept open for the next client (whose
  Confirm.Select the router answers too, when the channel is in confirm mode already);
  any other is closed on the broker, and its number freed once the broker's Close-Ok
  arrives.
* **Errors stay with their channel**: a broker Channel.Close (404, 406...) goes to
  that client's channel only, and its Close-Ok back; the channel is then gone.
* **A client that leaves** (``detach``) has its reusable channels kept and the others
  closed on the broker, which requeues what was delivered and not acked.
* **A client's mistakes stay its own where the router can see them**: a frame on a
  channel the client has not opened, or a second Open of an open channel, would be a
  connection error at the broker, ending every client of the connection; the router
  answers that client alone with Connection.Close 504 (``ClientError``).

Nothing here does I/O or keeps time; the pool decides which connection a client goes
to, heartbeats each side and ends clients when the broker connection ends.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, Generic

from amqprouter.protocol import constants
from amqprouter.protocol.channel_map import ChannelMap, ClientT, rewrite_channel
from amqprouter.protocol.errors import FrameError, ProtocolError
from amqprouter.protocol.frames import Frame, check_frame_header, is_known_method
from amqprouter.protocol.methods import method_frame, short_string
from amqprouter.protocol.pooled_channel import (
    CHANNEL_CLOSE,
    CHANNEL_CLOSE_OK,
    CHANNEL_OPEN,
    CHANNEL_OPEN_OK,
    CONFIRM_SELECT,
    CONFIRM_SELECT_OK,
    PooledChannel,
    Stage,
)

#: The target of a frame meant for the broker.
BROKER: Final = None

#: 504 CHANNEL_ERROR: a frame on a channel the client has not opened.
CHANNEL_ERROR: Final = 504

_CHANNEL_OPEN_OK_ARGS: Final = b"\x00\x00\x00\x00"  # reserved long string, empty
_CLOSE_TAIL: Final = struct.Struct(">HH")
_unpack_header = constants.FRAME_HEADER_STRUCT.unpack_from
_pack_channel = struct.Struct(">H").pack_into
#: A kept channel's first methods that say nothing of what its client will do with it.
_NOT_SETTLING: Final = frozenset({CHANNEL_OPEN, CHANNEL_CLOSE, CHANNEL_CLOSE_OK})


def channel_close_frame(
    channel: int, reply_code: int, reply_text: str, method: tuple[int, int] = (0, 0)
) -> bytes:
    """A Channel.Close on ``channel``."""
    text = reply_text.encode()[:255].decode(errors="ignore")
    return method_frame(
        CHANNEL_CLOSE,
        struct.pack(">H", reply_code)
        + short_string(text, "reply text")
        + _CLOSE_TAIL.pack(*method),
        channel,
    )


def channel_open_frame(channel: int) -> bytes:
    return method_frame(CHANNEL_OPEN, b"\x00", channel)  # reserved short string, empty


def channel_open_ok_frame(channel: int) -> bytes:
    return method_frame(CHANNEL_OPEN_OK, _CHANNEL_OPEN_OK_ARGS, channel)


def channel_close_ok_frame(channel: int) -> bytes:
    return method_frame(CHANNEL_CLOSE_OK, b"", channel)


class ClientError(ProtocolError):
    """A client did what the broker would end the whole connection for: that client is
    closed with ``reply_code`` (the router's Connection.Close), the others go on."""


def _check_client_frame(frame: Frame, method: tuple[int, int] | None) -> None:
    """Refuse, for this client alone, the frames on a channel that the broker would end
    the whole connection for: a heartbeat off channel 0, an unknown method, a
    Connection method off channel 0."""
    if frame.frame_type == constants.FRAME_HEARTBEAT:
        raise ClientError(
            f"FRAME_ERROR - heartbeat on channel {frame.channel}",
            reply_code=constants.FRAME_ERROR,
        )
    if method is None:
        return
    if not is_known_method(method):
        raise ClientError(
            f"NOT_IMPLEMENTED - unknown method {method[0]}.{method[1]}",
            reply_code=constants.NOT_IMPLEMENTED,
        )
    if method[0] == 10:
        raise ClientError(
            f"COMMAND_INVALID - {frame.name} on channel {frame.channel}",
            reply_code=constants.COMMAND_INVALID,
        )


class Multiplexer(Generic[ClientT]):
    """The channels of one pooled broker connection, and the clients using them."""

    __slots__ = ("_channels", "_idle", "_refused", "channels", "reused")

    def __init__(self, channel_max: int) -> None:
        self.channels: ChannelMap[ClientT] = ChannelMap(channel_max or 65535)
        self._channels: dict[int, PooledChannel] = {}
        #: Broker channels open and kept for reuse, most recently kept last.
        self._idle: list[int] = []
        #: Client channels whose Open the router refused with a Channel.Close, until
        #: the client's Close-Ok.
        self._refused: set[tuple[ClientT, int]] = set()
        #: Channel.Opens answered with a kept channel (statistics).
        self.reused = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    # -- frames from a client ------------------------------------------------------

    def client_frame(self, client: ClientT, frame: Frame) -> list[tuple[ClientT | None, bytes]]:
        """What to send for ``client``'s ``frame`` (not on channel 0). Raises
        ``ClientError`` for a frame the broker would end the connection for."""
        channel = frame.channel
        method = frame.method_id
        _check_client_frame(frame, method)
        broker_channel = self.channels.to_broker(client, channel)
        if broker_channel is None:
            if method == CHANNEL_OPEN:
                return self._open(client, channel)
            if (client, channel) in self._refused:
                if method == CHANNEL_CLOSE_OK:
                    self._refused.discard((client, channel))
                return []  # what the client sent before it saw the refusal
            raise ClientError(
                f"CHANNEL_ERROR - expected 'channel.open' on channel {channel}",
                reply_code=CHANNEL_ERROR,
            )
        state = self._channels[broker_channel]
        if state.unsettled and method is not None:
            # The rare case (a reused channel's first method): what settling sends goes first.
            broker_channel, state, sends = self._settle(
                client, channel, broker_channel, state, method
            )
            return sends + self._client_method(client, channel, broker_channel, state, frame)
        return self._client_method(client, channel, broker_channel, state, frame)

    def _client_method(
        self,
        client: ClientT,
        channel: int,
        broker_channel: int,
        state: PooledChannel,
        frame: Frame,
    ) -> list[tuple[ClientT | None, bytes]]:
        method = frame.method_id
        if method is None:  # content header, body (heartbeats are on channel 0)
            if state.stage is Stage.OPEN or state.stage is Stage.OPENING:
                return [(BROKER, rewrite_channel(frame.raw, broker_channel))]
            return []
        if method == CHANNEL_OPEN:
            raise ClientError(
                f"CHANNEL_ERROR - second 'channel.open' on channel {channel}",
                reply_code=CHANNEL_ERROR,
            )
        if method == CHANNEL_CLOSE:
            return self._client_close(client, channel, broker_channel, state, frame)
        if method == CHANNEL_CLOSE_OK:
            if state.stage is Stage.BROKER_CLOSING:
                self.channels.unbind(broker_channel)
                self._forget(broker_channel)
                return [(BROKER, rewrite_channel(frame.raw, broker_channel))]
            return []
        if state.stage is not Stage.OPEN and state.stage is not Stage.OPENING:
            return []  # after a Close, only Close and Close-Ok count (AMQP 0-9-1 2.3.7)
        raw = state.client_method(frame, method)
        if raw is None:  # a Confirm.Select on a channel in confirm mode already
            if state.wants_answer(frame):
                return [(client, method_frame(CONFIRM_SELECT_OK, b"", channel))]
            return []
        return [(BROKER, rewrite_channel(raw, broker_channel))]

    def _open(self, client: ClientT, channel: int) -> list[tuple[ClientT | None, bytes]]:
        if self._idle:
            kept = self._idle.pop()
            self._channels[kept].handed_over()
            self.channels.bind(client, channel, kept)
            self.reused += 1
            return [(client, channel_open_ok_frame(channel))]
        broker_channel = self.channels.allocate()
        if broker_channel is None:
            self._refused.add((client, channel))
            text = (
                "RESOURCE_ERROR - no channel free on the pooled broker connection "
                f"({self.channels.channel_max} in use)"
            )
            return [
                (client, channel_close_frame(channel, constants.RESOURCE_ERROR, text, CHANNEL_OPEN))
            ]
        self._channels[broker_channel] = PooledChannel()
        self.channels.bind(client, channel, broker_channel)
        return [(BROKER, channel_open_frame(broker_channel))]

    def _settle(
        self,
        client: ClientT,
        channel: int,
        broker_channel: int,
        state: PooledChannel,
        method: tuple[int, int],
    ) -> tuple[int, PooledChannel, list[tuple[ClientT | None, bytes]]]:
        """A kept channel's first method from its new client: a channel in confirm mode
        for a client that does not start with Confirm.Select (a publisher that wants no
        confirms) would make the broker ack every publish for the router to drop, so it
        is swapped for a kept channel of the right kind, or, for a client that wants no
        confirms, a fresh one (opened on the broker behind the Open-Ok the client has
        had). A client starting with Confirm.Select gets a kept confirming channel if
        there is one. Otherwise the channel stays. The broker channel, its state, and
        what to send first."""
        state.unsettled = False
        wants_confirms = method == CONFIRM_SELECT
        if (
            state.confirming == wants_confirms
            or state.stage is not Stage.OPEN
            or method in _NOT_SETTLING
        ):
            return broker_channel, state, []
        sends: list[tuple[ClientT | None, bytes]] = []
        other = self._take_idle(confirming=wants_confirms)
        if other is not None:
            other_state = self._channels[other]
            other_state.handed_over()
            other_state.unsettled = False
        elif wants_confirms:
            return broker_channel, state, []  # the Select goes to the broker
        else:
            other = self.channels.allocate()
            if other is None:
                return broker_channel, state, []  # the acks are dropped, as before
            other_state = PooledChannel()
            other_state.open_answered = True
            self._channels[other] = other_state
            sends.append((BROKER, channel_open_frame(other)))
        self.channels.unbind(broker_channel)
        self._keep(broker_channel, state)
        self.channels.bind(client, channel, other)
        return other, other_state, sends

    def _take_idle(self, *, confirming: bool) -> int | None:
        """The most recently kept idle channel in (or not in) confirm mode, taken."""
        idle, channels = self._idle, self._channels
        for at in range(len(idle) - 1, -1, -1):
            if channels[idle[at]].confirming == confirming:
                return idle.pop(at)
        return None

    def _client_close(
        self,
        client: ClientT,
        channel: int,
        broker_channel: int,
        state: PooledChannel,
        frame: Frame,
    ) -> list[tuple[ClientT | None, bytes]]:
        if state.stage is Stage.BROKER_CLOSING:
            # Both closed at once: the client's Close counts as its Close-Ok (2.3.7).
            self.channels.unbind(broker_channel)
            self._forget(broker_channel)
            return [(BROKER, channel_close_ok_frame(broker_channel))]
        if state.reusable:
            self.channels.unbind(broker_channel)
            self._keep(broker_channel, state)
            return [(client, channel_close_ok_frame(channel))]
        if state.stage is Stage.CLIENT_CLOSING:
            return []
        state.stage = Stage.CLIENT_CLOSING
        return [(BROKER, rewrite_channel(frame.raw, broker_channel))]

    # -- frames from the broker ----------------------------------------------------

    def broker_frame(self, frame: Frame) -> list[tuple[ClientT | None, bytes]]:
        """What to send for the broker's ``frame`` (not on channel 0)."""
        broker_channel = frame.channel
        state = self._channels.get(broker_channel)
        if state is None:
            return []  # a channel the router never opened: nothing to tell anyone
        method = frame.method_id
        bound = self.channels.to_client(broker_channel)
        if method == CHANNEL_CLOSE_OK:
            if bound is not None:
                self.channels.unbind(broker_channel)
            self._forget(broker_channel)
            if bound is None or state.stage is not Stage.CLIENT_CLOSING:
                return []
            return [(bound[0], rewrite_channel(frame.raw, bound[1]))]
        if method == CHANNEL_CLOSE:
            if bound is None:
                # An idle or router-closing channel: nobody to tell; the broker is answered.
                if broker_channel in self._idle:
                    self._idle.remove(broker_channel)
                self._forget(broker_channel)
                return [(BROKER, channel_close_ok_frame(broker_channel))]
            state.stage = Stage.BROKER_CLOSING
            return [(bound[0], rewrite_channel(frame.raw, bound[1]))]
        if bound is None:
            return []  # a channel being closed by the router, or kept idle
        if method is None:
            state.broker_content(frame)
            return [(bound[0], rewrite_channel(frame.raw, bound[1]))]
        if method == CHANNEL_OPEN_OK:
            if state.stage is Stage.OPENING:
                state.stage = Stage.OPEN
            if state.open_answered:  # a channel swapped in (``_settle``)
                state.open_answered = False
                return []
            return [(bound[0], rewrite_channel(frame.raw, bound[1]))]
        raw = state.broker_method(frame, method)
        if raw is None:  # a confirm for a client that did not ask for confirms
            return []
        return [(bound[0], rewrite_channel(raw, bound[1]))]

    # -- a client leaves -----------------------------------------------------------

    def detach(self, client: ClientT) -> list[tuple[ClientT | None, bytes]]:
        """``client`` is gone: its reusable channels kept, the others closed on the broker
        (which requeues their unacked deliveries)."""
        sends: list[tuple[ClientT | None, bytes]] = []
        self._refused = {key for key in self._refused if key[0] != client}
        for _channel, broker_channel in self.channels.channels_of(client):
            self.channels.unbind(broker_channel)
            state = self._channels[broker_channel]
            if state.reusable:
                self._keep(broker_channel, state)
            elif state.stage is Stage.BROKER_CLOSING:
                self._forget(broker_channel)
                sends.append((BROKER, channel_close_ok_frame(broker_channel)))
            elif state.stage is Stage.CLIENT_CLOSING:
                state.stage = Stage.ROUTER_CLOSING  # its Close went already
            else:
                state.stage = Stage.ROUTER_CLOSING
                sends.append(
                    (
                        BROKER,
                        channel_close_frame(
                            broker_channel, constants.REPLY_SUCCESS, "client left the pool"
                        ),
                    )
                )
        return sends

    def passing(self, client: ClientT, channel: int) -> tuple[int, PooledChannel] | None:
        """The broker channel (and its state) that ``client``'s content frames and
        publishes on ``channel`` go to with only their channel number changed (a publish
        noted with ``PooledChannel.client_published``); None: ``client_frame`` decides."""
        broker_channel = self.channels.to_broker(client, channel)
        if broker_channel is None:
            return None
        state = self._channels[broker_channel]
        stage = state.stage
        if (stage is Stage.OPEN or stage is Stage.OPENING) and not state.unsettled:
            return broker_channel, state
        return None

    def clients(self) -> set[ClientT]:
        return self.channels.clients()

    # -- bookkeeping ---------------------------------------------------------------

    def _keep(self, broker_channel: int, state: PooledChannel) -> None:
        state.stage = Stage.IDLE
        self._idle.append(broker_channel)

    def _forget(self, broker_channel: int) -> None:
        del self._channels[broker_channel]
        self.channels.release(broker_channel)


class _Zero(enum.Enum):
    CHANNEL_ZERO = "channel 0"


#: The target of a channel-0 frame in ``ClientStream``'s answer: the caller's to handle.
CHANNEL_ZERO: Final = _Zero.CHANNEL_ZERO


class ClientStream(Generic[ClientT]):
    """One pooled client's bytes in, what to send out: the multiplexer's hot path.

    A read is cut into whole frames (the rest kept for the next read, bounded by
    ``frame_max``). Content frames (a publish's header and body: most of the bytes) on
    an open channel have their channel number rewritten in place and go on in runs, one
    copy per run, as an unpooled session forwards a read; every other frame goes through
    ``Multiplexer.client_frame``; channel-0 frames come back as ``(CHANNEL_ZERO, frame)``
    for the caller (heartbeats, the client's Close), in their place in the order.
    """

    __slots__ = ("_buffer", "_client", "_mux", "frame_max", "frames")

    def __init__(self, mux: Multiplexer[ClientT], client: ClientT, frame_max: int) -> None:
        self._mux, self._client = mux, client
        self.frame_max = frame_max
        self._buffer = bytearray()
        #: Whole frames read so far (CONN's inFrames).
        self.frames = 0

    def receive(
        self, data: bytes
    ) -> list[tuple[ClientT | _Zero | None, bytes | bytearray | Frame]]:
        """The sends for ``data`` (with what came before it), in order. Raises
        ``FrameError`` for a malformed frame and ``ClientError`` as ``client_frame``."""
        buffer = self._buffer
        if buffer:
            buffer += data
        else:
            buffer = self._buffer = bytearray(data)
        out: list[tuple[ClientT | _Zero | None, bytes | bytearray | Frame]] = []
        mux, client, frame_max = self._mux, self._client, self.frame_max
        limit = frame_max - constants.FRAME_OVERHEAD if frame_max else 1 << 32
        # The channel whose content and publishes pass straight on (``Multiplexer.
        # passing``), looked up when the channel changes: a publisher's frames come in
        # runs on one channel. Only ``client_frame`` changes a channel's stage while
        # this runs (broker frames are handled between reads), so after each call of it
        # the channel is looked up again. The loop is the pooled publisher's hot path:
        # locals and literals (7, 8: a frame's header and overhead; 206: its end).
        unpack, pack = _unpack_header, _pack_channel
        fast_channel = 0  # none: channel 0 is never passed straight on
        broker_channel = 0
        state: PooledChannel | None = None
        length = len(buffer)
        frames = 0
        position = run = 0  # the current run of rewritten content frames starts at ``run``
        while length - position >= 7:
            frame_type, channel, size = unpack(buffer, position)
            if size > limit or not (1 <= frame_type <= 3 or frame_type == 8):
                check_frame_header(frame_type, size, frame_max)
            end = position + size + 8
            if end > length:
                break
            if buffer[end - 1] != 206:
                raise FrameError(f"bad frame-end octet {buffer[end - 1]:#04x}")
            frames += 1
            if channel:
                if channel != fast_channel:
                    hit = mux.passing(client, channel)
                    if hit is None:
                        fast_channel, state = 0, None
                    else:
                        fast_channel = channel
                        broker_channel, state = hit
                if state is not None:
                    if frame_type == 3 or frame_type == 2:
                        if broker_channel != channel:
                            pack(buffer, position + 1, broker_channel)
                        position = end
                        continue
                    if (
                        frame_type == 1
                        and size >= 8
                        and buffer[position + 10] == 40  # Basic.Publish: class 60, method 40
                        and buffer[position + 8] == 60
                        and not buffer[position + 7]
                        and not buffer[position + 9]
                    ):
                        # Basic.Publish, the other frame of every message: its flags
                        # octet follows a reserved short and two short strings.
                        at = position + 13
                        at += 1 + buffer[at]
                        if at < end - 1:
                            at += 1 + buffer[at]
                        if at < end - 1:
                            flags = buffer[at]
                            if flags & 0b11 or state.confirming:  # else nothing to note
                                state.client_published(flags)
                            if broker_channel != channel:
                                pack(buffer, position + 1, broker_channel)
                            position = end
                            continue
            if run < position:
                out.append((BROKER, bytes(buffer[run:position])))
            frame = Frame(frame_type, channel, bytes(buffer[position:end]))
            if channel:
                fast_channel, state = 0, None  # looked up again after this
                out += mux.client_frame(client, frame)
            else:
                out.append((CHANNEL_ZERO, frame))
            position = run = end
        self.frames += frames
        if run == 0 and position:
            # Every whole frame went on as it is (the common case of a publisher): the
            # buffer itself is handed over, uncopied, and what follows them (less than
            # a frame) starts the next one. Copying a large read costs more than it
            # seems: each new buffer of that size is fresh memory for the kernel to map.
            tail = buffer[position:]
            del buffer[position:]
            out.append((BROKER, buffer))
            self._buffer = tail
            return out
        if run < position:
            out.append((BROKER, bytes(buffer[run:position])))
        del buffer[:position]
        return out
