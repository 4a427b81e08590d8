"""Streaming replies on the real control socket, and amqprouter_ctl printing them."""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from functools import partial
from pathlib import Path

import trio

from amqprouter.control.socket_server import STATUS_HELLO, Reply, serve_control

CTL = Path(sys.executable).parent / "amqprouter_ctl"
WAIT = 10.0


class Streams:
    """A handler whose replies stream ``count`` chunks (forever if None) and record their end."""

    def __init__(self, count: int | None) -> None:
        self.count = count
        self.finished = trio.Event()
        self.produced = 0

    async def chunks(self) -> AsyncGenerator[str, None]:
        try:
            while self.count is None or self.produced < self.count:
                self.produced += 1
                yield f"chunk {self.produced}\n"
                await trio.sleep(0.01)
        finally:
            self.finished.set()

    async def handle(self, line: str, *, as_json: bool = False) -> Reply:
        if line == "PLAIN":
            return Reply("plain\n")
        return Reply("head\n", stream=self.chunks())


async def test_stream_chunks_follow_the_streaming_status_and_eof_stops_it(
    tmp_path: Path,
) -> None:
    path, streams = tmp_path / "ctl", Streams(None)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, path, streams.handle))
        stream = await trio.open_unix_socket(str(path))
        await stream.send_all(STATUS_HELLO.encode() + b"\nSTAT LISTEN json\n")
        received = b""
        with trio.fail_after(WAIT):
            while b"chunk 3\n" not in received:
                received += await stream.receive_some(65536)
        assert received.startswith(b"head\n\0Schunk 1\nchunk 2\nchunk 3\n")
        await stream.aclose()
        with trio.fail_after(WAIT):
            await streams.finished.wait()  # the listener is noticed gone and closed
        nursery.cancel_scope.cancel()


async def test_plain_clients_get_only_the_chunks(tmp_path: Path) -> None:
    path, streams = tmp_path / "ctl", Streams(2)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, path, streams.handle))
        async with await trio.open_unix_socket(str(path)) as stream:
            await stream.send_all(b"STAT LISTEN json\n")
            received = b""
            with trio.fail_after(WAIT):
                while data := await stream.receive_some(65536):
                    received += data
        assert received == b"head\nchunk 1\nchunk 2\n"
        nursery.cancel_scope.cancel()


async def test_amqprouter_ctl_prints_a_stream_and_exits_0_at_its_end(tmp_path: Path) -> None:
    path, streams = tmp_path / "ctl", Streams(3)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, path, streams.handle))
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                [str(CTL), str(path), "STAT", "LISTEN", "json"], capture_stdout=True
            )
            plain = await trio.run_process([str(CTL), str(path), "PLAIN"], capture_stdout=True)
        assert (result.returncode, result.stdout) == (0, b"head\nchunk 1\nchunk 2\nchunk 3\n")
        assert (plain.returncode, plain.stdout) == (0, b"plain\n")
        nursery.cancel_scope.cancel()
