"""The control socket answers when the process is out of file descriptors: it accepts
with the descriptors held in reserve, which client listeners never take."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import trio

from amqprouter.control.socket_server import Reply, serve_control
from amqprouter.server.capacity import DescriptorReserve

#: Without the reserve the accept retries every 0.1 s for as long as descriptors lack.
WAIT = 2.0


async def _answer(line: str, *, as_json: bool = False) -> Reply:
    return Reply(f"answered {line}\n")


@contextmanager
def out_of_descriptors() -> Iterator[None]:
    """Every descriptor this process may open taken (under a lowered soft limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 64, hard))
    filler: list[int] = []
    try:
        while True:
            try:
                filler.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _ask(path: Path, client: socket.socket) -> bytes:
    client.connect(str(path))  # a Unix connect takes no new descriptor
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(client))
    await stream.send_all(b"CONN\n")
    received = b""
    with trio.fail_after(WAIT):
        while chunk := await stream.receive_some(4096):
            received += chunk
    return received


async def test_the_control_socket_answers_with_no_descriptor_left(tmp_path: Path) -> None:
    path, reserve = tmp_path / "ctl", DescriptorReserve(4)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, path, _answer, reserve=reserve))
        assert reserve.refill()
        try:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with out_of_descriptors():
                assert await _ask(path, client) == b"answered CONN\n"
                # What the connection did not use was taken back at once.
                assert reserve.held == reserve.size - 1
        finally:
            client.close()
            reserve.release()
        nursery.cancel_scope.cancel()
