"""Failures of either peer, with a private RabbitMQ node that may be killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pika
import pika.exceptions
import pytest

from tests.brokers import RabbitNode, unique_name, wait_for
from tests.router import running_router


def test_broker_killed_mid_session_client_told_within_two_seconds(
    rabbit_node: RabbitNode,
) -> None:
    with running_router(rabbit_node.port) as router:
        connection = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", router.port, heartbeat=0)
        )
        channel = connection.channel()
        channel.queue_declare("", exclusive=True)
        rabbit_node.kill()
        killed = time.monotonic()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
            while time.monotonic() - killed < 5:
                connection.process_data_events(time_limit=0.05)
        elapsed = time.monotonic() - killed
        assert elapsed < 2.0, f"client learnt of the dead broker after {elapsed:.2f}s"
        assert caught.value.reply_code == 320
        assert "CONNECTION_FORCED - broker default-backend" in caught.value.reply_text
        assert "closed the connection" in caught.value.reply_text


def test_client_killed_broker_connection_gone(rabbit_node: RabbitNode) -> None:
    vhost = unique_name("killed")
    rabbit_node.add_vhost(vhost)
    with running_router(rabbit_node.port) as router:
        script = textwrap.dedent(
            f"""
            import pika, sys, time
            params = pika.ConnectionParameters(
                "127.0.0.1", {router.port}, virtual_host={vhost!r}, heartbeat=0,
                client_properties={{"connection_name": "doomed"}})
            connection = pika.BlockingConnection(params)
            print("connected", flush=True)
            time.sleep(60)
            """
        )
        client = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        try:
            assert client.stdout is not None
            assert client.stdout.readline().strip() == b"connected"

            def connections() -> list[object]:
                return [c for c in rabbit_node.list_connections() if c.get("vhost") == vhost]

            wait_for(lambda: len(connections()) == 1, timeout=10, what="the client's connection")
            client.send_signal(signal.SIGKILL)
            client.wait(5)
            wait_for(lambda: not connections(), timeout=10, what="the broker connection to go")
        finally:
            client.kill()
            client.wait(5)
            if client.stdout is not None:
                client.stdout.close()

        # The router closed its broker leg with a Close handshake, so RabbitMQ logs a
        # clean close rather than "client unexpectedly closed TCP connection". Wait for
        # the broker's closing line of this connection first: checking only for the
        # absence of the bad text would pass if the broker merely wrote it late. The
        # reason is part of the same log event (RabbitMQ writes it on the next line).
        def closing_event() -> str | None:
            log = rabbit_node.log_file.read_text(errors="replace")
            start = log.find(f"- doomed, vhost: '{vhost}'")
            if start < 0 or "closing AMQP connection" not in log[log.rfind("\n", 0, start) :]:
                return None
            return log[start : log.find("\n", log.find("\n", start) + 1)]

        wait_for(lambda: closing_event() is not None, timeout=10, what="the broker's close line")
        event = closing_event()
        assert event is not None
        assert "client unexpectedly closed TCP connection" not in event
