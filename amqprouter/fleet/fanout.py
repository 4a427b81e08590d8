"""Asking the workers: one command line to many workers, and their STAT LISTEN streams
interleaved (the supervisor decides whom to ask and merges the answers, merge.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Final

import structlog
import trio

from amqprouter.fleet.link import Answer, ask
from amqprouter.fleet.worker import Worker

log = structlog.get_logger("amqprouter.fleet")

#: STAT LISTEN's lines buffered between the workers' streams and the operator.
STAT_BUFFER: Final = 256
#: With --config-store, how long a command's reply waits for every worker to hold it.
STORE_STEP_TIMEOUT: Final = 3.0
STORE_STEP_POLL: Final = 0.2


async def ask_all(
    workers: Sequence[Worker], line: str, as_json: bool
) -> list[tuple[Worker, Answer]]:
    """``line`` sent to every worker side by side; the answers in ``workers``' order."""
    answers: dict[int, Answer] = {}

    async def one(worker: Worker) -> None:
        answers[worker.serial] = await ask(worker.role.control_socket, line, as_json=as_json)

    async with trio.open_nursery() as nursery:
        for worker in workers:
            nursery.start_soon(one, worker)
    return [(w, answers[w.serial]) for w in workers]


async def wait_in_step(live: list[Worker]) -> None:
    """Until every worker prints the same configuration (bounded): a reply then means
    that all of them hold what the canary wrote to the store."""
    with trio.move_on_after(STORE_STEP_TIMEOUT):
        while True:
            answers = await ask_all(live, "CONFIG PRINT", False)
            if len({a.text for _w, a in answers}) == 1:
                return
            await trio.sleep(STORE_STEP_POLL)  # each look is a CONFIG PRINT per worker
    log.warning("workers not in step with the store yet", timeout=STORE_STEP_TIMEOUT)


def stat_stream(nursery: trio.Nursery, line: str, live: list[Worker]) -> AsyncGenerator[str, None]:
    """STAT LISTEN of every worker, interleaved as the lines come, each line naming
    its worker (``worker 3: ...``; in JSON, a ``"worker": 3`` member first). The
    relays run in ``nursery`` and stop when the returned generator is closed."""
    send, receive = trio.open_memory_channel[str](STAT_BUFFER)
    scope = trio.CancelScope()

    async def relay(worker: Worker, out: trio.MemorySendChannel[str]) -> None:
        async with out:
            with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                stream = await trio.open_unix_socket(str(worker.role.control_socket))
                async with stream:
                    await stream.send_all((line.strip() + "\n").encode())
                    pending = ""
                    while data := await stream.receive_some(65536):
                        *complete, pending = (pending + data.decode("utf-8", "replace")).split("\n")
                        for text in complete:
                            await out.send(tagged(worker.serial, text) + "\n")

    async def run() -> None:
        with scope:
            async with send, trio.open_nursery() as relays:
                for worker in live:
                    relays.start_soon(relay, worker, send.clone())

    nursery.start_soon(run)

    async def lines() -> AsyncGenerator[str, None]:
        try:
            async with receive:
                async for text in receive:
                    yield text
        finally:
            scope.cancel()  # the operator left: the workers' streams are closed

    return lines()


def tagged(serial: int, line: str) -> str:
    """A worker's line named as its: ``worker 3: ...``, or ``{"worker": 3, ...}``."""
    if line.startswith("{"):
        return f'{{"worker": {serial}, ' + line[1:] if line != "{}" else f'{{"worker": {serial}}}'
    return f"worker {serial}: {line}"
