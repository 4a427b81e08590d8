"""Publish messages through amqprouter and read them back, with publisher confirms.

    python examples/publish_consume.py --port 5673 [--vhost /] [--count 5]

Exits 0 when every message came back in order, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import pika


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5673)
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--count", type=int, default=5)
    args = parser.parse_args()

    parameters = pika.ConnectionParameters(
        args.host,
        args.port,
        virtual_host=args.vhost,
        client_properties={"connection_name": "amqprouter-example"},
    )
    connection = pika.BlockingConnection(parameters)
    print(f"connected to {args.host}:{args.port} vhost {args.vhost!r}")
    print(f"server says it is: {connection._impl.server_properties['product']}")
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    sent = [f"hello {number} through amqprouter".encode() for number in range(args.count)]
    for body in sent:
        channel.basic_publish("", queue, body)  # returns once the broker confirmed it
    print(f"published {len(sent)} messages, all confirmed by the broker")
    received = []
    for _ in sent:
        _method, _properties, body = channel.basic_get(queue, auto_ack=True)
        received.append(body)
        print(f"received: {body.decode() if body else body!r}")
    connection.close()
    if received != sent:
        print("messages did not come back in order", file=sys.stderr)
        return 1
    print("ok: every message came back, in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
