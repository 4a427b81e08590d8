"""Raw clients of an ACCEPT-PROXY listener: a socket bound to a chosen loopback source
that sends a PROXY v1 header, then speaks AMQP with pamqp frames."""

from __future__ import annotations

import contextlib
import socket

import pamqp.commands
import pamqp.exceptions
import pamqp.frame

from amqprouter.protocol.constants import PROTOCOL_HEADER

WAIT = 15.0


def raw_client(source: str, port: int, first: bytes) -> socket.socket:
    """A socket bound to ``source`` (loopback aliases need no setup on Linux) that
    connected to the router and sent ``first``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))
    sock.sendall(first)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Every byte until the router closes (or ``WAIT`` passes)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def read_method(sock: socket.socket, buffer: bytearray) -> object:
    """The next method frame the router sends (read into ``buffer``)."""
    while True:
        with contextlib.suppress(pamqp.exceptions.UnmarshalingException):
            consumed, _channel, method = pamqp.frame.unmarshal(bytes(buffer))
            if consumed:
                del buffer[:consumed]
                return method
        chunk = sock.recv(65536)
        assert chunk, f"closed; had {bytes(buffer)!r}"
        buffer += chunk


def open_session(sock: socket.socket) -> None:
    """The client's side after its protocol header, up to Open-Ok, through to the broker."""
    buffer = bytearray()
    assert isinstance(read_method(sock, buffer), pamqp.commands.Connection.Start)
    response = "\0guest\0guest"
    start_ok = pamqp.commands.Connection.StartOk(mechanism="PLAIN", response=response)
    sock.sendall(pamqp.frame.marshal(start_ok, 0))
    tune = read_method(sock, buffer)
    assert isinstance(tune, pamqp.commands.Connection.Tune)
    tune_ok = pamqp.commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0)
    sock.sendall(pamqp.frame.marshal(tune_ok, 0))
    sock.sendall(pamqp.frame.marshal(pamqp.commands.Connection.Open(virtual_host="/"), 0))
    assert isinstance(read_method(sock, buffer), pamqp.commands.Connection.OpenOk)


def header_from(source: str, router_port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 {router_port}\r\n".encode() + PROTOCOL_HEADER
