#!/usr/bin/env bash
# The control-plane quick start against a local RabbitMQ: start amqprouter with nothing
# configured, configure it at runtime with amqprouter_ctl, send messages through it, then
# stop it with EXIT. Assumes RabbitMQ on localhost:5672 (guest/guest) and amqprouter
# installed (scripts/demo sets both up).
#
#   examples/quickstart.sh [LISTEN_PORT]
#
# Both backends are the local broker here; in production they would be two brokers
# (say `BACKEND ADD_DNS rabbit2 london-az2 rmq2.internal 5672`).
set -euo pipefail
port=${1:-5675}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}

# A private directory for the control socket and the log files (amqprouter's defaults
# are /run/amqprouter/control as root, else /tmp/amqprouter, and no log files).
workdir=$(mktemp -d "${TMPDIR:-/tmp}/amqprouter-quickstart.XXXXXX")
socket=$workdir/control

amqprouter --control-socket "$socket" --log-directory "$workdir/logs" -v 3 &
router=$!
trap 'kill -TERM $router 2>/dev/null || true; wait $router 2>/dev/null || true; rm -rf "$workdir"' EXIT

ctl() {
    echo "\$ amqprouter_ctl $socket $*"
    amqprouter_ctl "$socket" "$@"
}

# Wait (bounded) for the control socket to answer.
for _ in $(seq 50); do
    if amqprouter_ctl "$socket" DATACENTER PRINT >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done

ctl BACKEND ADD rabbit1 london-az1 localhost 5672       # resolved once, now
ctl BACKEND ADD_DNS rabbit2 london-az2 localhost 5672   # resolved at each connection
ctl FARM ADD shared round-robin rabbit1 rabbit2
ctl FARM PARTITION shared datacenter-affinity           # prefer this datacenter's backends
ctl DATACENTER SET london-az1
ctl MAP BACKEND vhost-example rabbit1
ctl MAP DEFAULT shared                                  # every other vhost
ctl LISTEN START "$port"
ctl MAP PRINT
ctl BACKEND PRINT
ctl FARM PRINT

# vhost "/" is not mapped, so it goes to the default farm.
"$python" "$here/publish_consume.py" --port "$port"

ctl EXIT
wait $router
