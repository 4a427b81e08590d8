#!/usr/bin/env python3
"""TLS on the hot path: trio.SSLStream against amqprouter's TLSTransport.

Moves ``--megabytes`` (default 200) one way over a loopback TLS connection, in
writes of 1 KiB and of 64 KiB, with both ends in this process, and prints the
CPU seconds per GB moved (both ends together: encrypt + decrypt + the Python
around them) and the wall time. Certificates are made with trustme.

    .venv/bin/python benchmarks/tls_transport.py [--megabytes N]

docs/tls.md ("Why a non-blocking SSLSocket") has the figures.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amqprouter.net import sockets
from amqprouter.net.tls_transport import TLSTransport, tls_handshake
from tests.tls_certs import TlsFiles, make_tls_files

READ_SIZE = 256 * 1024

Run = Callable[[TlsFiles, int, int], Awaitable[None]]


async def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = await sockets.connect(listener.getsockname(), socket.AF_INET)
        server, _ = listener.accept()
    sockets.tune_socket(server)
    return server, client


async def run_transport(files: TlsFiles, total: int, write_size: int) -> None:
    server_sock, client_sock = await _tcp_pair()
    transports: dict[str, TLSTransport] = {}

    async def handshake(name: str, sock: socket.socket, server_side: bool) -> None:
        context = files.server_context() if server_side else files.client_context()
        transports[name] = await tls_handshake(
            sock, context, server_side=server_side, server_hostname="localhost"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake, "server", server_sock, True)
        nursery.start_soon(handshake, "client", client_sock, False)
    sender, receiver = transports["client"], transports["server"]
    chunk = b"x" * write_size

    async def send() -> None:
        for count in range(total // write_size):
            await sender.send_all(chunk)
            if count % 64 == 0:
                await trio.lowlevel.checkpoint()

    async def receive() -> None:
        received = 0
        while received < total:
            try:
                data = receiver.recv(READ_SIZE)
            except BlockingIOError:
                await receiver.wait_readable()
                continue
            received += len(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
    sender.close()
    receiver.close()


async def run_ssl_stream(files: TlsFiles, total: int, write_size: int) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client_tcp = await trio.open_tcp_stream("127.0.0.1", port)
    server_tcp = await listeners[0].accept()
    server = trio.SSLStream(server_tcp, files.server_context(), server_side=True)
    client = trio.SSLStream(client_tcp, files.client_context(), server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    chunk = b"x" * write_size

    async def send() -> None:
        for _ in range(total // write_size):
            await client.send_all(chunk)

    async def receive() -> None:
        received = 0
        while received < total:
            received += len(await server.receive_some(READ_SIZE))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
    await trio.aclose_forcefully(client)
    await trio.aclose_forcefully(server)
    for listener in listeners:
        await listener.aclose()


def measure(run: Run, files: TlsFiles, total: int, write_size: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    trio.run(run, files, total, write_size)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    total = args.megabytes * 1024 * 1024
    print(f"Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}, trio {version('trio')}")
    print(f"{args.megabytes} MiB one way over loopback TLS 1.3, both ends in this process\n")
    print(f"{'implementation':<16} {'write':>7} {'CPU s/GB':>9} {'wall s':>7} {'MB/s':>7}")
    with tempfile.TemporaryDirectory() as directory:
        files = make_tls_files(Path(directory))
        for write_size in (1024, 64 * 1024):
            for name, run in (("trio.SSLStream", run_ssl_stream), ("TLSTransport", run_transport)):
                cpu, wall = measure(run, files, total, write_size)
                gigabytes = total / 1e9
                print(
                    f"{name:<16} {write_size // 1024:>5}Ki {cpu / gigabytes:>9.2f} "
                    f"{wall:>7.2f} {total / 1e6 / wall:>7.0f}"
                )


if __name__ == "__main__":
    main()
