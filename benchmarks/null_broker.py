#!/usr/bin/env python3
"""A null broker for bench.py's ``--only null``: answers an AMQP handshake, drops publishes.

RabbitMQ parses every publish and so caps what a proxy in front of it can be shown to
forward (about 250,000 1 KiB messages a second here). This broker takes the handshake
(Start, Tune, Open, Channel.Open), then reads and discards, looking only for the two
methods bench.py's publish workload waits on: Basic.Qos (its ``sync``: answered with
QosOk once every byte before it has been read) and Connection.Close (CloseOk). It finds
them at the end of what it has received (bench.py waits for the answer to each), so its
own cost per message is a share of one ``recv_into`` of 1 MiB, not a frame walk in
Python.

    python benchmarks/null_broker.py PORT    # serves until killed; one thread per connection
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading

from pamqp import frame, header
from pamqp.commands import Basic, Channel, Connection

READ = 1 << 20
_HDR = struct.Struct(">BHI")


def _encode(channel: int, method: object) -> bytes:
    return frame.marshal(method, channel)  # type: ignore[arg-type]


START = _encode(
    0,
    Connection.Start(
        server_properties={"product": "null-broker"}, mechanisms="PLAIN", locales="en_US"
    ),
)
TUNE = _encode(0, Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=0))
OPEN_OK = _encode(0, Connection.OpenOk())
CHANNEL_OPEN_OK = _encode(1, Channel.OpenOk())
QOS = _encode(1, Basic.Qos(prefetch_count=0))
QOS_OK = _encode(1, Basic.QosOk())
CLOSE_OK = _encode(0, Connection.CloseOk())
#: Connection.Close's class and method ids, after a 7-byte frame header on channel 0.
_CLOSE_METHOD = struct.pack(">HH", 10, 50)
#: The end of the stream looked at: a Close with the longest reply text fits.
KEEP = 7 + 4 + 2 + 256 + 4 + 1


def _frames(sock: socket.socket, buf: bytearray) -> tuple[int, int, bytes]:
    """The next whole frame during the handshake: (type, channel, payload)."""
    while True:
        if len(buf) >= 7:
            ftype, channel, size = _HDR.unpack_from(buf)
            if len(buf) >= size + 8:
                payload = bytes(buf[7 : 7 + size])
                del buf[: size + 8]
                return ftype, channel, payload
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed during the handshake")
        buf += data


def serve(sock: socket.socket) -> None:
    """One connection: the handshake, then discard until Close (answering each Qos)."""
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        while len(buf) < 8:
            data = sock.recv(8)
            if not data:
                return
            buf += data
        if bytes(buf[:8]) != header.ProtocolHeader().marshal():
            return
        del buf[:8]
        sock.sendall(START)
        opened = False
        while not opened:  # StartOk, TuneOk, Open, Channel.Open in any packing
            _ftype, channel, payload = _frames(sock, buf)
            method = payload[:4]
            if method == struct.pack(">HH", 10, 11):  # StartOk
                sock.sendall(TUNE)
            elif method == struct.pack(">HH", 10, 40):  # Open
                sock.sendall(OPEN_OK)
            elif method == struct.pack(">HH", 20, 10):  # Channel.Open
                sock.sendall(CHANNEL_OPEN_OK)
                opened = channel == 1
            elif method == _CLOSE_METHOD:
                sock.sendall(CLOSE_OK)
                return
        _discard(sock, bytes(buf))


def _discard(sock: socket.socket, first: bytes) -> None:
    """Read and drop; answer each Qos, and the Close. The client sends nothing after
    either until it has the answer, so each is the last bytes received when it comes:
    only the end of the stream (``window``: the last ``KEEP`` bytes) is looked at, and
    the cost per byte is ``recv_into``'s alone."""
    chunk = bytearray(READ)
    view = memoryview(chunk)
    window = first[-KEEP:]
    while not _react(sock, window):
        n = sock.recv_into(view)
        if not n:
            return
        window = (window + bytes(view[max(0, n - KEEP) : n]))[-KEEP:]


def _react(sock: socket.socket, window: bytes) -> bool:
    """Answer a Qos or a Close that ends ``window``; True once a Close was answered."""
    if window.endswith(QOS):
        sock.sendall(QOS_OK)
        return False
    at = window.rfind(_CLOSE_METHOD) - 7
    if at >= 0 and window[at : at + 3] == b"\x01\x00\x00":  # a method frame on channel 0
        size = int.from_bytes(window[at + 3 : at + 7], "big")
        if at + 8 + size == len(window):
            sock.sendall(CLOSE_OK)
            return True
    return False


def _serve_quietly(sock: socket.socket) -> None:
    # Probes (HAProxy's, the router's health checks) connect and reset: not an error here.
    with contextlib.suppress(OSError):
        serve(sock)


def main(argv: list[str]) -> int:
    port = int(argv[1])
    listener = socket.create_server(("127.0.0.1", port), backlog=512)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_quietly, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
