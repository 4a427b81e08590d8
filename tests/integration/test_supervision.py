"""A frozen broker (SIGSTOP: no FIN, no RST) is noticed by its silence.

A private RabbitMQ node is frozen under a pika client that negotiated a 2 s heartbeat:
the router must turn two silent heartbeat intervals into a 320 for the client (pika's
own check would only fire after 7 s), then the node is thawed and must be left clean.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator

import pika
import pika.exceptions
import psutil
import pytest

from tests.brokers import RabbitNode, wait_for
from tests.router import running_router

HEARTBEAT = 2


@contextlib.contextmanager
def frozen(node: RabbitNode) -> Iterator[None]:
    """SIGSTOP every process of ``node`` (not the shared epmd); SIGCONT on the way out."""
    processes = node._process_tree()
    assert processes, f"{node.name} has no processes to freeze"
    try:
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        yield
    finally:
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGCONT)


def test_frozen_broker_becomes_a_320_within_two_heartbeat_intervals(
    rabbit_node: RabbitNode,
) -> None:
    with running_router(rabbit_node.port) as router:
        params = pika.ConnectionParameters("127.0.0.1", router.port, heartbeat=HEARTBEAT)
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.queue_declare("", exclusive=True)
        with frozen(rabbit_node):
            frozen_at = time.monotonic()
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
                while time.monotonic() - frozen_at < 15:
                    connection.process_data_events(time_limit=0.05)
            elapsed = time.monotonic() - frozen_at
        assert elapsed < 2 * HEARTBEAT + 1, f"the client learnt of it after {elapsed:.2f}s"
        assert caught.value.reply_code == 320
        text = caught.value.reply_text
        assert text.startswith("CONNECTION_FORCED - broker default-backend"), text
        assert text.endswith(f"sent nothing for {2 * HEARTBEAT}s (heartbeat {HEARTBEAT}s)")

        # Thawed, the node sees the router's closed leg and drops it; the router serves on.
        wait_for(
            lambda: not rabbit_node.list_connections(),
            timeout=30,
            what="the frozen session's broker connection to go",
        )
        again = pika.BlockingConnection(params)
        try:
            again.channel().queue_declare("", exclusive=True)
        finally:
            again.close()
