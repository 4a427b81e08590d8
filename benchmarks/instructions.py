"""Instructions per confirmed round trip and per handshake, router and HAProxy (callgrind).

    .venv/bin/python benchmarks/instructions.py [--compiled] [--round-trips N]
                                                [--handshakes N] [--primed N]

Timings on a shared 2-core machine move by 10-30% from run to run; instruction counts
do not (the same figure to within 0.2% run after run). So a change to the hot path or
the handshake is measured here, and bench.py says what it gives in time. The figures
are user-space instructions of the proxy process alone (valgrind's callgrind): the
kernel's work for the same system calls is not counted, and is about the same for any
proxy.

Each proxy runs under ``valgrind --tool=callgrind`` in front of the machine's RabbitMQ
(127.0.0.1:5672). After a warm-up, the counters are zeroed (``callgrind_control -z``),
one connection makes ``--round-trips`` confirmed 1 KiB publishes one after another
(each crosses the proxy twice: the publish in, the ack out), the counters are dumped,
zeroed again, ``--handshakes`` connections are opened and closed one after another
(header, StartOk, TuneOk and Open, Close), and dumped again. The router runs in simple
mode, with ``--primed-connections`` as given (default 0: the primed pool's work is
counted by a separate run with ``--primed 8``); HAProxy in TCP mode as bench.py runs it.

Needs valgrind (``apt-get install valgrind``); HAProxy is measured when installed
(scripts/bench-setup). Docs: docs/benchmark.md, "Instructions per round trip and per
handshake".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import (
    BenchError,
    amqp_session,
    build_compiled,
    encode,
    encode_publish,
    free_port,
    one_handshake,
    port_accepts,
    router_env,
    router_version,
)
from haproxy_peer import Route, find_haproxy, render_config
from pamqp.commands import Basic, Confirm

BROKER_PORT = 5672
#: valgrind makes a process 20-50 times slower: Python's start-up alone takes a while.
START_TIMEOUT = 180.0
WARM_UP = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compiled", action="store_true", help="the compiled frame scanner")
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--handshakes", type=int, default=300)
    parser.add_argument("--primed", type=int, default=0, help="--primed-connections (0)")
    parser.add_argument("--forwarding", choices=("engine", "tasks"), help="--forwarding")
    parser.add_argument("--skip-haproxy", action="store_true", help="the router only")
    args = parser.parse_args(argv)
    if args.forwarding:
        os.environ["AMQPROUTER_FORWARDING"] = args.forwarding  # router_env passes it on
    try:
        for tool in ("valgrind", "callgrind_control"):
            if shutil.which(tool) is None:
                raise BenchError(f"{tool} not found: apt-get install valgrind")
        with tempfile.TemporaryDirectory(prefix="amqprouter-instructions-") as scratch:
            work = Path(scratch)
            if args.compiled:
                build_compiled(work / "site")
            print(
                f"router: {router_version()}, --primed-connections {args.primed},"
                f" forwarding {os.environ.get('AMQPROUTER_FORWARDING', 'default')}"
            )
            rows = [("router", measure_router(work, args))]
            haproxy = None if args.skip_haproxy else find_haproxy()
            if haproxy is not None:
                rows.append(("haproxy", measure_haproxy(work, haproxy, args)))
            elif not args.skip_haproxy:
                print("haproxy: not installed (scripts/bench-setup), not measured")
    except BenchError as exc:
        print(f"instructions: error: {exc}", file=sys.stderr)
        return 1
    print(f"\n{'proxy':<10}{'per round trip':>16}{'per handshake':>16}")
    for name, (round_trip, handshake) in rows:
        print(f"{name:<10}{round_trip:>16,.0f}{handshake:>16,.0f}")
    return 0


def measure_router(work: Path, args: argparse.Namespace) -> tuple[float, float]:
    port = free_port()
    command = [sys.executable, "-m", "amqprouter", "--listen-port", str(port)]
    command += ["--destination-dns", "127.0.0.1", "--destination-port", str(BROKER_PORT)]
    command += ["--primed-connections", str(args.primed)]
    out = work / "router"
    out.mkdir()
    with under_callgrind(command, out, cwd=work) as pid:  # not the checkout: see bench.py
        wait_listening(port)
        return drive(port, pid, out, args)


def measure_haproxy(work: Path, binary: str, args: argparse.Namespace) -> tuple[float, float]:
    port = free_port()
    config = work / "haproxy.cfg"
    config.write_text(render_config([Route("amqp", port, BROKER_PORT)]))
    out = work / "haproxy"
    out.mkdir()
    with under_callgrind([binary, "-db", "-f", str(config)], out, cwd=work) as pid:
        wait_listening(port)
        return drive(port, pid, out, args)


@contextlib.contextmanager
def under_callgrind(command: list[str], out: Path, cwd: Path) -> Iterator[int]:
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p"]
    with open(out / "output.log", "wb") as log:
        proc = subprocess.Popen(
            valgrind + command, cwd=cwd, env=router_env(), stdout=log, stderr=log
        )
    try:
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not port_accepts(port):
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listening on :{port} after {START_TIMEOUT:.0f}s")
        time.sleep(0.5)


def drive(port: int, pid: int, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(instructions per confirmed round trip, per handshake) of the process ``pid``."""
    with amqp_session(port, "callgrind") as client:
        client.send(encode(1, Confirm.Select()))
        client.wait_method(Confirm.SelectOk)
        message = encode_publish(client.frame_max, 1024)
        for _ in range(WARM_UP):
            client.send(message)
            client.wait_method(Basic.Ack)
        control(pid, "-z")
        for _ in range(args.round_trips):
            client.send(message)
            client.wait_method(Basic.Ack)
        round_trips = dumped(pid, out)
    for _ in range(30):  # warm-up: the handshake's code paths, the primed pool if any
        one_handshake(port, "callgrind")
    control(pid, "-z")
    for _ in range(args.handshakes):
        one_handshake(port, "callgrind")
    handshakes = dumped(pid, out)
    return round_trips / args.round_trips, handshakes / args.handshakes


def control(pid: int, option: str) -> None:
    done = subprocess.run(
        ["callgrind_control", option, str(pid)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {option} {pid}: {done.stdout}{done.stderr}")


def dumped(pid: int, out: Path) -> int:
    """Dump the counters; the instructions counted since they were last zeroed."""
    before = set(out.glob("callgrind.*"))
    control(pid, "-d")
    new = sorted(set(out.glob("callgrind.*")) - before)
    if len(new) != 1:
        raise BenchError(f"expected one new callgrind dump in {out}, found {new}")
    totals = re.search(r"^(?:summary|totals): (\d+)", new[0].read_text(), re.MULTILINE)
    if totals is None:
        raise BenchError(f"no totals in {new[0]}")
    return int(totals.group(1))


if __name__ == "__main__":
    sys.exit(main())
