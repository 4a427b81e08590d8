"""What the sans-IO machines share: bytes in through a frame reader, bytes out.

The two handshake machines are driven by one frame loop (``HandshakeMachine``) from a
table, as h11 keeps its transitions in ``_state.py``: for each state that reads
frames, every method it accepts, what handles it and the state it leads to. A method
not in the current state's row is refused by the machine's ``_refuse``; heartbeats are
dropped, anything not a channel-0 method is UNEXPECTED_FRAME and a method AMQP 0-9-1
does not define is FRAME_ERROR, in every state.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Generic, NoReturn, TypeVar

from pamqp import commands

from amqprouter.protocol import constants
from amqprouter.protocol.errors import FrameError, UnexpectedFrame
from amqprouter.protocol.events import PeerClosed
from amqprouter.protocol.frames import Frame, FrameReader, encode_method, is_known_method
from amqprouter.protocol.methods import peer_closed

__all__ = [
    "CLOSE_OK_FRAME",
    "HandshakeMachine",
    "Machine",
    "MethodId",
    "Transition",
    "peer_closed",
]

CLOSE_OK_FRAME = encode_method(commands.Connection.CloseOk())

MethodId = tuple[int, int]
StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT")


class Machine:
    """``receive_data(bytes)`` in, ``data_to_send() -> bytes`` out (h11's shape)."""

    def __init__(self, frame_max: int = constants.FRAME_MIN_SIZE) -> None:
        self._reader = FrameReader(frame_max)
        self._outgoing = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._reader.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out


class Transition(Generic[StateT, EventT]):
    """One row entry: ``on(machine, frame)`` handles the method (it may raise), then ``then``.

    ``on`` takes the machine as its first argument (an unbound method of the machine's
    class), so the table is built once per class, not once per connection. A plain
    class, not attrs: mypyc compiles this module in the optional compiled build, and
    cannot compile a generic attrs class.
    """

    __slots__ = ("on", "then")

    def __init__(self, on: Callable[[Any, Frame], EventT | None], then: StateT) -> None:
        self.on = on
        self.then = then


#: state -> method id -> transition. A state without a row reads no frames (it is
#: final, or, like the client's protocol header, read another way).
Table = Mapping[StateT, Mapping[MethodId, Transition[StateT, EventT]]]


class HandshakeMachine(Machine, Generic[StateT, EventT]):
    """The frame loop both handshakes share; subclasses give the table and refusals."""

    state: StateT

    def __init__(self, table: Table[StateT, EventT], state: StateT) -> None:
        super().__init__()
        self._table = table
        self.state = state

    def next_event(self) -> EventT | None:
        """Advance as far as the buffered bytes allow; None means "need more data"."""
        while (row := self._table.get(self.state)) is not None:
            self._before_frame()
            frame = self._reader.next_frame()
            if frame is None:
                return None
            if frame.frame_type == constants.FRAME_HEARTBEAT:
                continue  # nothing to relay it to yet: dropped
            if frame.frame_type != constants.FRAME_METHOD or frame.channel != 0:
                raise UnexpectedFrame(
                    f"UNEXPECTED_FRAME - {self._peer()}, while {self.state.value}: frame type "
                    f"{frame.frame_type} on channel {frame.channel}"
                )
            method_id = frame.method_id
            if method_id is None:
                raise FrameError("FRAME_ERROR - method frame too short for a method id")
            transition = row.get(method_id)
            if transition is None:
                if not is_known_method(method_id):
                    raise FrameError(f"FRAME_ERROR - {frame.name}")
                self._refuse(frame, row)
            event = transition.on(self, frame)
            self.state = transition.then
            if event is not None:
                return event
        return None

    def _on_close(self, frame: Frame) -> PeerClosed:
        """Connection.Close, accepted in every state: answer Close-Ok, report it.

        Read first: a malformed Close is a frame error (Close 501), and must not get a
        Close-Ok before that, as if it had been understood.
        """
        closed = peer_closed(frame)
        self._outgoing += CLOSE_OK_FRAME
        return closed

    def _before_frame(self) -> None:
        """A check on the raw bytes before each frame is read (none by default)."""

    def _peer(self) -> str:
        raise NotImplementedError

    def _refuse(self, frame: Frame, row: Mapping[MethodId, Transition[StateT, EventT]]) -> NoReturn:
        """Raise the machine's error for a method its current state does not accept."""
        raise NotImplementedError
