#!/usr/bin/env bash
# Simple mode in front of a local RabbitMQ: start the router, send messages through it,
# stop it. Assumes RabbitMQ on localhost:5672 (guest/guest) and amqprouter installed
# (scripts/demo sets both up).
#
#   examples/simple_mode.sh [LISTEN_PORT]
set -euo pipefail
port=${1:-5673}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
logs=$(mktemp -d "${TMPDIR:-/tmp}/amqprouter-logs.XXXXXX")  # the log files

amqprouter --listen-port "$port" --destination-dns localhost --destination-port 5672 \
    --control-socket "/tmp/amqprouter-example-$port" --log-directory "$logs" -v 3 &
router=$!
trap 'kill -TERM $router 2>/dev/null; wait $router 2>/dev/null || true; rm -rf "$logs"' EXIT

# Wait (bounded) for the listener.
for _ in $(seq 50); do
    if "$python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

"$python" "$here/publish_consume.py" --port "$port"
