"""A client that keeps working through a drill: publishes and consumes, reconnecting.

    python examples/failover/steady_client.py --port 5673 [--vhost /] [--seconds 20]
        [--stop-file PATH]

An aio-pika ``connect_robust`` connection publishes a numbered message (with
publisher confirms) every 50 ms to a queue of its own and consumes it back. When the
router disconnects it (sever.py, drill.py, a drain), aio-pika reconnects and the
client goes on. At the end it checks that every message the broker confirmed came
back, and prints how many reconnections it went through. It stops after
``--seconds``, or as soon as ``--stop-file`` exists (for scripts that run a drill
meanwhile). The same broker (or the queue shovelled across) must be behind both ends
of a migration for that check.

Exits 0 when every confirmed message came back, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

import aio_pika
import aio_pika.abc
import aiormq.exceptions

#: Bound for one publish confirm or one reconnection.
STEP_TIMEOUT = 15.0


def stopped(stop_file: Path | None) -> bool:
    return stop_file is not None and stop_file.exists()


async def run(url: str, seconds: float, queue_name: str, stop_file: Path | None) -> int:
    connection = await aio_pika.connect_robust(url, timeout=STEP_TIMEOUT, reconnect_interval=0.2)
    reconnections = 0

    def reconnected(*_args: object) -> None:
        nonlocal reconnections
        reconnections += 1
        print(f"reconnected ({reconnections})", flush=True)

    connection.reconnect_callbacks.add(reconnected)
    confirmed: set[int] = set()
    received: set[int] = set()
    publishing = True
    caught_up = asyncio.Event()  # set once everything confirmed has come back
    async with connection:
        # After a reconnect a publish can beat the queue's re-declaration: RabbitMQ then
        # returns it unroutable and still acks it. Raising makes it "not confirmed".
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.purge()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                received.add(int(message.body))
            if not publishing and confirmed <= received:
                caught_up.set()

        await queue.consume(on_message)
        number = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stopped(stop_file):
            try:
                await asyncio.wait_for(
                    channel.default_exchange.publish(
                        aio_pika.Message(str(number).encode(), delivery_mode=2),
                        routing_key=queue_name,
                    ),
                    STEP_TIMEOUT,
                )
                confirmed.add(number)
            except (
                TimeoutError,
                ConnectionError,
                aiormq.exceptions.AMQPError,
                aiormq.exceptions.ChannelInvalidStateError,  # closed while reconnecting
            ) as exc:
                print(f"publish {number} not confirmed ({type(exc).__name__}); going on")
            number += 1
            await asyncio.sleep(0.05)
        publishing = False
        if confirmed <= received:
            caught_up.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caught_up.wait(), STEP_TIMEOUT)
        await queue.delete(if_unused=False, if_empty=False)
    missing = sorted(confirmed - received)
    print(
        f"published {number}, confirmed {len(confirmed)}, received {len(received)}, "
        f"reconnections {reconnections}"
    )
    if missing:
        print(f"missing confirmed messages: {missing[:20]}", file=sys.stderr)
        return 1
    print("ok: every confirmed message came back")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5673)
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--queue", default="amqprouter-steady-client")
    parser.add_argument("--stop-file", type=Path, help="stop once this file exists")
    args = parser.parse_args()
    vhost = "%2F" if args.vhost == "/" else args.vhost
    url = f"amqp://guest:guest@{args.host}:{args.port}/{vhost}"
    sys.exit(asyncio.run(run(url, args.seconds, args.queue, args.stop_file)))


if __name__ == "__main__":
    main()
