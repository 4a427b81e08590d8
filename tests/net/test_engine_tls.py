"""The forwarding engine over TLS on both sides (real loopback TLS, no session).

The router's ends are ``TLSTransport``s (a non-blocking ``ssl.SSLSocket`` each), as a
session has them after its TLS handshakes; the engine reads them through the
transport's ``recv`` (records up to a read's size) and writes their ``SSLSocket``. The
tests play a TLS client and a TLS broker: 5 MiB of frames each way at once arrive byte
for byte, frame for frame, with small socket buffers so that TLS writes meet a full
socket (``SSLWantWriteError``, retried with the same bytes on ``EPOLLOUT``); a client
that closes ends the link; and an eviction hands the link back, the task path's
``TLSTransport`` then reading on where the engine stopped.
"""

from __future__ import annotations

import random
import socket

import trio
import trio.testing as trio_testing

from amqprouter.net.engine import Link, Outcome
from amqprouter.net.tls_context import build_context
from amqprouter.net.tls_transport import TLSTransport
from amqprouter.protocol.frames import FrameScanner
from tests.net.test_engine import FRAME_MAX, Owner, frame, run_link, running_engine
from tests.net.test_tls_transport import (
    client_settings,
    connect_pair,
    read_exactly,
    server_settings,
)
from tests.tls_certs import TlsFiles


class TlsPair:
    """A link over TLS: the test holds ``client`` (a TLS client of the router) and
    ``broker`` (a TLS server the router is a client of)."""

    def __init__(
        self, router_client: TLSTransport, client: TLSTransport,
        router_broker: TLSTransport, broker: TLSTransport,
    ) -> None:  # fmt: skip
        self.client, self.broker = client, broker
        self.router_ends = (router_client, router_broker)
        self.owner = Owner()
        self.writing: set[object] = set()
        self.ingress = FrameScanner(FRAME_MAX)
        self.egress = FrameScanner(FRAME_MAX)
        self.link = Link(
            self.owner,
            (router_client.sock, router_client, self.ingress),
            (router_broker.sock, router_broker, self.egress),
            self.writing,
            self.owner.on_channel_zero,
        )

    def close(self) -> None:
        for transport in (self.client, self.broker, *self.router_ends):
            transport.close()


async def tls_pair(files: TlsFiles, buffer: int | None = None) -> TlsPair:
    server = build_context(server_settings(files))
    client = build_context(client_settings(files))
    router_client, test_client = await connect_pair(server, client)
    test_broker, router_broker = await connect_pair(server, client)
    if buffer is not None:
        for transport in (router_client, test_client, router_broker, test_broker):
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                transport.sock.setsockopt(socket.SOL_SOCKET, option, buffer)
    return TlsPair(router_client, test_client, router_broker, test_broker)


def frames(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    return [frame(3, 1, rng.randbytes(rng.randrange(1, 120_000))) for _ in range(count)]


async def test_five_mebibytes_each_way_over_tls(tls_files: TlsFiles) -> None:
    pair = await tls_pair(tls_files, buffer=64 * 1024)
    up, down = frames(1, 110), frames(2, 110)
    up_bytes, down_bytes = b"".join(up), b"".join(down)
    assert len(up_bytes) > 5_000_000 and len(down_bytes) > 5_000_000
    got: dict[str, bytes] = {}

    async def read(name: str, transport: TLSTransport, size: int) -> None:
        got[name] = await read_exactly(transport, size)

    async with running_engine() as engine, trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        with trio.fail_after(60):
            async with trio.open_nursery() as traffic:
                traffic.start_soon(pair.client.send_all, up_bytes)
                traffic.start_soon(pair.broker.send_all, down_bytes)
                traffic.start_soon(read, "broker", pair.broker, len(up_bytes))
                traffic.start_soon(read, "client", pair.client, len(down_bytes))
        assert got["broker"] == up_bytes
        assert got["client"] == down_bytes
        assert outcomes == []  # still in the engine: it carried every byte
        assert pair.ingress.frames == len(up) and pair.egress.frames == len(down)
        assert engine.reads > 0
        pair.client.close()  # the client goes: the link ends
        with trio.fail_after(10):
            while not outcomes:
                await trio.sleep(0.01)
        assert outcomes == [Outcome.CLIENT_GONE]
    pair.close()


async def test_an_evicted_tls_link_reads_on_from_where_the_engine_stopped(
    tls_files: TlsFiles,
) -> None:
    pair = await tls_pair(tls_files)
    first, second = frame(3, 1, b"a" * 5000), frame(3, 1, b"b" * 5000)
    async with running_engine() as engine, trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        await pair.client.send_all(first + second[:100])  # a frame cut in two
        assert await read_exactly(pair.broker, len(first)) == first
        engine.evict(pair.link)
        await trio_testing.wait_all_tasks_blocked()
        assert outcomes == [Outcome.LEFT]
        assert pair.ingress.pending == 100  # the scanner holds the cut frame's start
        # The task path takes the TLS transport over: the rest arrives there.
        await pair.client.send_all(second[100:])
        router_client = pair.router_ends[0]
        rest = await read_exactly(router_client, len(second) - 100)
        assert rest == second[100:]
    pair.close()
