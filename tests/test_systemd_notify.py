"""sd_notify: the datagrams systemd's Type=notify reads, from the module and from a real router."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from amqprouter.systemd_notify import notify, notify_socket_address
from tests.brokers import free_port, port_is_open
from tests.router import REPO, router_command


@contextmanager
def notify_listener(address: str) -> Iterator[socket.socket]:
    """A datagram socket bound where ``$NOTIFY_SOCKET`` will point, as systemd's is."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(10)
        yield sock


def test_a_path_socket_gets_the_assignments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    with notify_listener(path) as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1", "STATUS=listening on 1 port(s)")
        assert listener.recv(4096) == b"READY=1\nSTATUS=listening on 1 port(s)"


def test_an_abstract_socket_is_named_with_an_at_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"amqprouter-test-{os.getpid()}-{time.monotonic_ns()}"
    assert notify_socket_address(f"@{name}") == f"\0{name}"
    with notify_listener(f"\0{name}") as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        assert notify("STOPPING=1")
        assert listener.recv(4096) == b"STOPPING=1"


def test_reloading_carries_the_monotonic_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    with notify_listener(path) as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notify("RELOADING=1")
        reloading, stamp = listener.recv(4096).decode().split("\n")
    assert reloading == "RELOADING=1"
    key, value = stamp.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_without_a_manager_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert not notify("READY=1")


def test_a_manager_gone_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not notify("READY=1")
    assert f"sd_notify to {tmp_path / 'nobody-listens'} failed: No such file or directory" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not notify("READY=1")
    assert "NOTIFY_SOCKET='vsock:2:1234' is not a Unix socket path" in capsys.readouterr().err


def test_the_router_is_ready_once_serving_and_stopping_on_sigterm(tmp_path: Path) -> None:
    # No broker is needed: simple mode only names one, and nobody connects here.
    port, http_port = free_port(), free_port()
    control = tmp_path / "control"
    with notify_listener(str(tmp_path / "notify")) as listener:
        process = subprocess.Popen(
            router_command(
                "--listen-port",
                str(port),
                "--destination-dns",
                "127.0.0.1",
                "--destination-port",
                str(free_port()),
                "--control-socket",
                str(control),
                "--http-port",
                str(http_port),
                "--http-host",
                "127.0.0.1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "PYTHONUNBUFFERED": "1"},
        )
        try:
            ready = listener.recv(4096).decode()
            # READY comes only when everything it promises is up.
            assert port_is_open(port) and port_is_open(http_port) and control.is_socket()
            assert ready == "READY=1\nSTATUS=listening on 1 port(s)"
            process.send_signal(signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1"
            stdout, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr
    assert f"Listening for AMQP clients on port {port} (every address)" in stdout.splitlines()
