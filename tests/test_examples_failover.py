"""The failover kit in examples/failover/ runs as documented, against the local broker.

A router with two farms (both the local broker, reached two ways), a steady client
publishing and consuming through it, and the operator scripts: sever one vhost's
sessions, sever one backend's sessions by force, then the full cut-over drill. The
client must come through all three with every confirmed message back.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import SystemBroker, free_port, wait_for
from tests.test_examples_control import ENV, EXAMPLES

KIT = EXAMPLES / "failover"
WAIT = 30.0


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amqprouter-fo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def script(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(KIT / name), *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ctl(socket_path: Path, *words: str) -> str:
    result = subprocess.run(
        ["amqprouter_ctl", str(socket_path), *words],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=ENV,
        check=False,
    )
    assert result.returncode == 0, result
    return result.stdout


def session_ids(socket_path: Path, vhost: str) -> set[str]:
    return set(re.findall(rf"^id=(\d+) vhost={re.escape(vhost)} ", ctl(socket_path, "CONN"), re.M))


def test_failover_kit(system_broker: SystemBroker, system_vhost: str, workdir: Path) -> None:
    socket_path = workdir / "control"
    stderr = (workdir / "router.err").open("wb")
    router = subprocess.Popen(
        [
            "amqprouter",
            "--control-socket",
            str(socket_path),
            "--log-directory",
            str(workdir / "logs"),
            "-v",
            "3",
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )
    client: subprocess.Popen[str] | None = None
    try:
        wait_for(socket_path.exists, WAIT, "the control socket")
        port = free_port()
        for command in (
            "BACKEND ADD blue-1 dc1 127.0.0.1 5672",
            "BACKEND ADD_DNS green-1 dc1 localhost 5672",
            "FARM ADD blue round-robin blue-1",
            "FARM ADD green round-robin green-1",
            f"MAP FARM {system_vhost} blue",
            f"LISTEN START {port}",
        ):
            ctl(socket_path, *command.split())
        stop = workdir / "stop"
        client = subprocess.Popen(
            [
                sys.executable,
                str(KIT / "steady_client.py"),
                "--port",
                str(port),
                "--vhost",
                system_vhost,
                "--seconds",
                "120",
                "--stop-file",
                str(stop),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        seen: set[str] = set()

        def new_session() -> bool:
            current = session_ids(socket_path, system_vhost)
            fresh = current - seen
            seen.update(current)
            return len(current) == 1 and bool(fresh)

        wait_for(new_session, WAIT, "the steady client's session")

        out = script("sever.py", str(socket_path), "vhost", system_vhost)
        assert f"severed 1 session(s) of vhost {system_vhost}" in out
        wait_for(new_session, WAIT, "the client back after a graceful sever")

        out = script("sever.py", str(socket_path), "backend", "blue-1", "--force")
        assert "Backend 'blue-1' disabled; disconnecting 1 session(s) by force." in out
        assert "BACKEND ENABLE blue-1" in out
        wait_for(new_session, WAIT, "the client back after a forced sever")

        out = script("drill.py", str(socket_path), system_vhost, "green", "--hold", "20")
        assert "1. pause the vhost" in out and "5. unpause the vhost" in out
        assert "held at Open" in out  # step 4 saw the client come back and wait
        assert "drill done: 1 session(s) before, 1 after, 0 still held" in out
        assert f'"{system_vhost}" => Farm:green' in ctl(socket_path, "MAP", "PRINT")

        time.sleep(0.5)  # a few messages through the new farm
        stop.touch()
        output, _ = client.communicate(timeout=WAIT)
        assert client.returncode == 0, output
        assert "ok: every confirmed message came back" in output
        match = re.search(r"reconnections (\d+)", output)
        assert match is not None and int(match.group(1)) >= 3, output
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(WAIT)
        router.send_signal(signal.SIGINT)
        router.wait(WAIT)
        stderr.close()
