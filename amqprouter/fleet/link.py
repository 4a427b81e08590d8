"""The supervisor's two ways of asking a worker: its control socket, and its HTTP port.

The wire format to a worker is the control socket's own (docs/control.md): one command
line after ``AMQPROUTER_CTL STATUS`` (and ``AMQPROUTER_CTL JSON`` for a JSON reply), the
reply text to EOF, then a NUL and the status, as ``amqprouter_ctl`` reads it. So a
worker is an ordinary router to talk to, and an operator can ask one directly.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Final

import attrs
import trio

from amqprouter.control.socket_server import (
    JSON_HELLO,
    STATUS_HELLO,
    STATUS_SEPARATOR,
    STATUS_STREAMING,
)

#: A worker that does not answer a command within this is counted as failing it.
ASK_TIMEOUT: Final = 30.0
#: /metrics or a probe from a worker's HTTP port.
HTTP_TIMEOUT: Final = 5.0
MAX_HTTP_REPLY: Final = 64 << 20


@attrs.frozen
class Answer:
    """A worker's reply to one command: its text and whether it succeeded."""

    text: str
    ok: bool


async def ask(path: Path, line: str, *, as_json: bool = False) -> Answer:
    """Send ``line`` to the control socket at ``path``; its reply.

    A worker that cannot be reached or does not answer in ``ASK_TIMEOUT`` gives a
    failed answer saying so (never an exception: the caller merges answers).
    """
    hello = STATUS_HELLO + "\n" + (JSON_HELLO + "\n" if as_json else "")
    chunks: list[bytes] = []
    with trio.move_on_after(ASK_TIMEOUT) as scope:
        try:
            stream = await trio.open_unix_socket(str(path))
        except OSError as exc:
            return Answer(f"worker unreachable: {exc.strerror or exc}\n", ok=False)
        async with stream:
            await stream.send_all((hello + line + "\n").encode())
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
    if scope.cancelled_caught:
        return Answer(f"worker did not answer within {ASK_TIMEOUT:g} s\n", ok=False)
    data = b"".join(chunks)
    text, separator, status = data.rpartition(STATUS_SEPARATOR)
    if not separator:
        return Answer(data.decode("utf-8", "replace"), ok=False)
    return Answer(text.decode("utf-8", "replace"), ok=status.strip() == b"0")


async def ask_streaming(
    path: Path, line: str, *, as_json: bool = False
) -> tuple[Answer, AsyncGenerator[str, None] | None]:
    """``ask``, for a command whose reply may be a stream (SESSION TRACE): the answer,
    and when the worker streams, the rest of its reply as it comes (closing the
    generator closes the worker's connection, which ends its stream)."""
    hello = STATUS_HELLO + "\n" + (JSON_HELLO + "\n" if as_json else "")
    data = b""
    with trio.move_on_after(ASK_TIMEOUT) as scope:
        try:
            stream = await trio.open_unix_socket(str(path))
        except OSError as exc:
            return Answer(f"worker unreachable: {exc.strerror or exc}\n", ok=False), None
        try:
            await stream.send_all((hello + line + "\n").encode())
            while STATUS_SEPARATOR not in data and (chunk := await stream.receive_some(65536)):
                data += chunk
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    if scope.cancelled_caught:
        await trio.aclose_forcefully(stream)
        return Answer(f"worker did not answer within {ASK_TIMEOUT:g} s\n", ok=False), None
    text, separator, rest = data.partition(STATUS_SEPARATOR)
    if not separator or not rest.startswith(STATUS_STREAMING):
        # A plain reply: its status follows the NUL, up to EOF.
        with trio.move_on_after(ASK_TIMEOUT):
            while chunk := await stream.receive_some(65536):
                rest += chunk
        await stream.aclose()
        if not separator:
            return Answer(data.decode("utf-8", "replace"), ok=False), None
        return Answer(text.decode("utf-8", "replace"), ok=rest.strip() == b"0"), None

    async def chunks() -> AsyncGenerator[str, None]:
        async with stream:
            if len(rest) > 1:
                yield rest[1:].decode("utf-8", "replace")
            try:
                while chunk := await stream.receive_some(65536):
                    yield chunk.decode("utf-8", "replace")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    return Answer(text.decode("utf-8", "replace"), ok=True), chunks()


async def http_get(port: int, path: str) -> tuple[int, str]:
    """``GET path`` from a worker's HTTP port on the loopback: (status, body); status 0
    and why when it cannot be asked."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    data = b""
    with trio.move_on_after(HTTP_TIMEOUT) as scope:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError as exc:
            return 0, f"worker HTTP unreachable: {exc.strerror or exc}"
        async with stream:
            await stream.send_all(request.encode())
            while len(data) < MAX_HTTP_REPLY and (chunk := await stream.receive_some(65536)):
                data += chunk
    if scope.cancelled_caught:
        return 0, "worker HTTP did not answer in time"
    head, _, body = data.partition(b"\r\n\r\n")
    words = head.split(b" ", 2)
    if len(words) < 2 or not words[1].isdigit():
        return 0, "worker HTTP answered no status"
    return int(words[1]), body.decode("utf-8", "replace")
