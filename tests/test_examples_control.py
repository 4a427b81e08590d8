"""The control-plane examples in examples/ run as documented, against the local broker."""

from __future__ import annotations

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

import pytest

from tests.brokers import SystemBroker, free_port, port_is_open

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLES = REPO / "examples"
WAIT = 15.0
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    "PYTHON": sys.executable,
    "PYTHONUNBUFFERED": "1",
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amqprouter-ex-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_quickstart_example(system_broker: SystemBroker) -> None:
    result = subprocess.run(
        [str(EXAMPLES / "quickstart.sh"), str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert '"vhost-example" => Backend:rabbit1\n(default) => Farm:shared\n' in output
    assert (
        "rabbit1 (london-az1): localhost 127.0.0.1:5672\nrabbit2 (london-az2): localhost :5672\n"
    ) in output
    assert "shared: rabbit1 rabbit2 \n" in output
    assert "server says it is: amqprouter" in output
    assert "ok: every message came back, in order" in output
    assert "Exiting.\n" in output
    assert "Stopping amqprouter" in output
    # The router logged the client's session through the default farm's rabbit1.
    assert "event='session open'" in result.stderr
    assert "backend='rabbit1'" in result.stderr


def _ctl(socket_path: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "amqprouter_ctl"), str(socket_path), *words],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_router_conf_example(system_broker: SystemBroker, workdir: Path) -> None:
    example = (EXAMPLES / "router.conf").read_text()
    commands = [
        line.strip()
        for line in example.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    (listen,) = (line for line in commands if line.startswith("LISTEN START "))
    # The example listens on 5673; run a copy on a free port so nothing here clashes.
    port = free_port()
    config = workdir / "router.conf"
    config.write_text(re.sub(r"^LISTEN START \d+$", f"LISTEN START {port}", example, flags=re.M))
    socket_path = workdir / "control"
    stdout, stderr = workdir / "stdout", workdir / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        router = subprocess.Popen(
            [
                str(BIN / "amqprouter"),
                "--config",
                str(config),
                "--control-socket",
                str(socket_path),
                "--log-directory",
                str(workdir / "logs"),
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=ENV,
        )
    try:
        deadline = time.monotonic() + WAIT
        while not port_is_open(port):
            assert router.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, f"router did not listen on {port}"
            time.sleep(0.05)

        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "publish_consume.py"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert "ok: every message came back, in order" in client.stdout

        mappings = _ctl(socket_path, "MAP", "PRINT")
        assert (mappings.returncode, mappings.stdout) == (
            0,
            '"vhost-example" => Backend:rabbit1\n(default) => Farm:shared\n',
        )
        # The file is what CONFIG PRINT writes back (bar the listen port).
        printed = _ctl(socket_path, "CONFIG", "PRINT").stdout.splitlines()
        for command in commands:
            assert (command if command != listen else f"LISTEN START {port}") in printed
        # As its comment says: reloaded unchanged, it changes nothing.
        reloaded = _ctl(socket_path, "CONFIG", "RELOAD")
        assert (reloaded.returncode, reloaded.stdout) == (0, "No changes\n")
    finally:
        if router.poll() is None:
            router.send_signal(signal.SIGTERM)
        try:
            router.wait(WAIT)
        except subprocess.TimeoutExpired:
            router.kill()
            router.wait(WAIT)
    assert router.returncode == 0, stderr.read_text()
