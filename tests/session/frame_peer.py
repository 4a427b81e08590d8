"""What the test peers share, whatever carries their bytes: reading whole frames, the
client's and the broker's side of the handshake (wire.py over loopback TCP, memory.py
over memory transports)."""

from __future__ import annotations

from typing import Any

import trio
from pamqp import base, commands, frame

from amqprouter.protocol import Frame, FrameReader, constants

WAIT = 5.0  # every test wait is bounded; a hang fails instead of stalling the suite


class FramePeer:
    """One end of a connection that reads whole AMQP frames; a subclass says how bytes
    are sent and received (``send``, ``_receive``: b"" at end of stream)."""

    #: How long a read waits by default (a subclass on trio's mock clock waits longer).
    wait = WAIT

    def __init__(self) -> None:
        self.reader = FrameReader(frame_max=1 << 20)

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def _receive(self) -> bytes:
        raise NotImplementedError

    async def send_method(self, method: base.Frame, channel: int = 0) -> None:
        await self.send(frame.marshal(method, channel))

    async def read_frame(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None at end of stream."""
        with trio.fail_after(self.wait if timeout is None else timeout):
            while (item := self.reader.next_frame()) is None:
                data = await self._receive()
                if not data:
                    return None
                self.reader.feed(data)
            return item

    async def read_method(self, timeout: float | None = None) -> Any:
        """The next method frame decoded (heartbeats skipped); None at end of stream."""
        while True:
            item = await self.read_frame(timeout)
            if item is None:
                return None
            if item.frame_type == constants.FRAME_METHOD:
                return item.decode()

    async def read_raw(self, size: int, timeout: float | None = None) -> bytes:
        """Exactly ``size`` bytes as they arrive (fewer only at end of stream); what
        came beyond them stays buffered for the next read."""
        data = bytearray(self.reader.drain())
        with trio.fail_after(self.wait if timeout is None else timeout):
            while len(data) < size:
                chunk = await self._receive()
                if not chunk:
                    break
                data += chunk
        self.reader.feed(bytes(data[size:]))
        return bytes(data[:size])

    async def at_eof(self, timeout: float | None = None) -> bool:
        """True once the other side has closed (anything unread is discarded)."""
        with trio.fail_after(self.wait if timeout is None else timeout):
            while await self._receive():
                self.reader.drain()
        return True


async def play_client_handshake(
    peer: FramePeer, *, name: str, vhost: str = "/", frame_max: int = 131072, heartbeat: int = 0
) -> None:
    """The client's side up to its Open (not the Open-Ok)."""
    await peer.send(constants.PROTOCOL_HEADER)
    assert isinstance(await peer.read_method(), commands.Connection.Start)
    await peer.send_method(
        commands.Connection.StartOk(
            client_properties={"connection_name": name},
            mechanism="PLAIN",
            response="\0guest\0guest",
        )
    )
    assert isinstance(await peer.read_method(), commands.Connection.Tune)
    await peer.send_method(
        commands.Connection.TuneOk(channel_max=2047, frame_max=frame_max, heartbeat=heartbeat)
    )
    await peer.send_method(commands.Connection.Open(virtual_host=vhost))


async def play_broker_handshake(
    peer: FramePeer, tune: commands.Connection.Tune
) -> commands.Connection.StartOk:
    """RabbitMQ's side of the handshake (the router pipelines its side): its StartOk."""
    assert await peer.read_raw(8) == constants.PROTOCOL_HEADER
    await peer.send_method(
        commands.Connection.Start(server_properties={"product": "fake"}, mechanisms="PLAIN")
    )
    start_ok = await peer.read_method()
    assert isinstance(start_ok, commands.Connection.StartOk)
    await peer.send_method(tune)
    assert isinstance(await peer.read_method(), commands.Connection.TuneOk)
    assert isinstance(await peer.read_method(), commands.Connection.Open)
    await peer.send_method(commands.Connection.OpenOk())
    return start_ok
