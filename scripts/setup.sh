# Shared set-up for scripts/test and scripts/demo (sourced, not run):
# RabbitMQ installed and answering on 127.0.0.1:5672, and .venv with the project
# and its test extras (pika is what the demo's client uses).
# Each step prints one "==> [n/N] ..." line; re-runs skip work already done.
# The caller sets `total` (the number of steps it prints in all), and
# `with_browser=1` to also have Debian's chromium (the status page's browser test).

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

step() { printf '==> %s\n' "$*"; }
die() { printf 'scripts/test: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# True when 127.0.0.1:5672 answers the AMQP protocol header with a method
# frame (Connection.Start).
amqp_up() {
    timeout 5 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/5672 || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        [ "$(head -c 1 <&3 | od -An -tx1 | tr -d " \n")" = 01 ]
    ' 2>/dev/null
}

# --------------------------------------------------------------------------- #
step "[1/$total] RabbitMQ installed"
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    is_root || die "RabbitMQ is not installed. Install it first: sudo apt-get install -y rabbitmq-server"
    # Fresh install: preseed a loopback-only configuration (kept by dpkg).
    mkdir -p /etc/rabbitmq
    if [ ! -e /etc/rabbitmq/rabbitmq-env.conf ]; then
        cat >/etc/rabbitmq/rabbitmq-env.conf <<'EOF'
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    fi
    if [ ! -e /etc/rabbitmq/rabbitmq.conf ]; then
        echo 'listeners.tcp.local = 127.0.0.1:5672' >/etc/rabbitmq/rabbitmq.conf
    fi
    echo "    installing rabbitmq-server with apt-get"
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        rabbitmq-server >/dev/null
fi
# The --config-store tests start private redis-server processes (tests/redis_server.py);
# the package's own service is not needed, only the binaries.
if ! command -v redis-server >/dev/null 2>&1; then
    if is_root; then
        echo "    installing redis-server with apt-get"
        apt-get update -qq
        apt-get install -y -qq redis-server >/dev/null
    else
        echo "    note: redis-server is missing (apt-get install -y redis-server); the --config-store tests will fail"
    fi
fi
# The SESSION CAPTURE tests read the router's pcap files with Debian's tshark
# (tests/integration/test_tracing.py); they fail, never skip, without it.
if ! command -v tshark >/dev/null 2>&1; then
    if is_root; then
        echo "    installing tshark with apt-get"
        # Wireshark's "may non-root users capture?" question: no (nothing here captures).
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
        apt-get update -qq
        apt-get install -y -qq tshark >/dev/null
    else
        echo "    note: tshark is missing (apt-get install -y tshark); the capture tests will fail"
    fi
fi
# systemd-analyze checks packaging/amqprouter.service (tests/test_packaging_service.py);
# Debian's systemd package brings it, and installing it does not start it here.
if [ ! -x /usr/bin/systemd-analyze ]; then
    if is_root; then
        echo "    installing systemd (for systemd-analyze) with apt-get"
        apt-get update -qq
        apt-get install -y -qq systemd >/dev/null
    else
        echo "    note: /usr/bin/systemd-analyze is missing (apt-get install -y systemd); the unit's tests will fail"
    fi
fi

# --------------------------------------------------------------------------- #
step "[2/$total] RabbitMQ broker on 127.0.0.1:5672"
if ! amqp_up; then
    is_root || die "nothing answers AMQP on 127.0.0.1:5672. Start it: sudo service rabbitmq-server start"
    echo "    starting rabbitmq-server"
    if [ -d /run/systemd/system ]; then
        timeout 90 systemctl start rabbitmq-server || true
    elif [ -x /etc/init.d/rabbitmq-server ]; then
        timeout 90 service rabbitmq-server start >/dev/null 2>&1 || true
    fi
    if ! amqp_up; then
        # No usable init system: run it in the background ourselves (the
        # Debian wrapper drops to the rabbitmq user; -detached does not work
        # everywhere).
        mkdir -p /var/log/rabbitmq
        setsid /usr/sbin/rabbitmq-server </dev/null >>/var/log/rabbitmq/scripts-test-start.log 2>&1 &
    fi
    for _ in $(seq 60); do
        amqp_up && break
        sleep 1
    done
    amqp_up || die "RabbitMQ did not come up on 127.0.0.1:5672 within 60 s; see /var/log/rabbitmq/"
fi

# --------------------------------------------------------------------------- #
step "[3/$total] Python virtualenv (.venv) with the project and its test extras"
if [ ! -x .venv/bin/python ]; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found: install Python >= 3.11 (apt-get install -y python3 python3-venv)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "Python >= 3.11 is required, but python3 is $(python3 -V 2>&1); install a newer python3"
    if ! python3 -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        is_root || die "python3 -m venv failed: install the venv module (apt-get install -y python3-venv)"
        apt-get update -qq
        apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
    fi
fi
.venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die ".venv uses $(.venv/bin/python -V 2>&1) but Python >= 3.11 is required: rm -rf .venv and install a newer python3"
stamp=.venv/.scripts-test-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -V 2>&1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # Quiet unless it fails (setuptools is chatty about editable installs).
    if ! pip_log=$(.venv/bin/python -m pip install -q -e '.[test]' 2>&1); then
        printf '%s\n' "$pip_log" >&2
        die "pip install -e '.[test]' failed"
    fi
    printf '%s\n' "$want" >"$stamp"
fi


# --------------------------------------------------------------------------- #
if [ "${with_browser:-0}" = 1 ]; then
    step "[4/$total] Chromium (headless, for the status page's browser test)"
    if ! command -v chromium >/dev/null 2>&1; then
        is_root || die "chromium is not installed. Install it first: sudo apt-get install -y chromium"
        echo "    installing chromium with apt-get"
        apt-get update -qq
        apt-get install -y -qq chromium >/dev/null
        command -v chromium >/dev/null 2>&1 || die "apt-get installed no chromium command"
    fi
fi
