"""SIGHUP to a real ``amqprouter --config`` process: it stays up, applies the file's
changes (a new backend routes a real client to the machine's broker) and re-opens its
log file after logrotate's rename."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqprouter.observe.log_files import our_files
from tests.brokers import SYSTEM_PORT, SystemBroker, free_port, port_is_open
from tests.integration.test_log_files import command
from tests.router import START_TIMEOUT, RouterProcess, launch

pytestmark = pytest.mark.broker

WAIT = 10.0


@contextmanager
def router_with_config(config: Path) -> Iterator[RouterProcess]:
    """``amqprouter --config config`` (which listens on the port it names)."""
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-reload-"))
    port = int(config.read_text().split("LISTEN START ")[1].split()[0])
    args = ["--config", str(config), "--control-socket", str(workdir / "control")]
    args += ["--log-directory", str(workdir / "logs")]
    router = launch(port, args, workdir)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_is_open(port):
            assert router.process.poll() is None and time.monotonic() < deadline, router.stderr
            time.sleep(0.05)
        yield router
    finally:
        router.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def open_channel(port: int, vhost: str) -> None:
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, virtual_host=vhost, connection_attempts=1)
    )
    try:
        assert connection.channel().queue_declare("", exclusive=True).method.queue
    finally:
        connection.close()


def wait_for_line(path: Path, text: str) -> str:
    """The first line of ``path`` holding ``text``, once the writer has written it."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if text in line:
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no line with {text!r} in {path}")


def test_sighup_applies_the_file_and_reopens_the_log(
    system_broker: SystemBroker, system_vhost: str, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "router.conf"
    config.write_text(
        f"BACKEND ADD b1 dc 127.0.0.1 {SYSTEM_PORT}\nMAP BACKEND other b1\nLISTEN START {port}\n"
    )
    with router_with_config(config) as router:
        logs = router.stdout_path.parent / "logs"
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            open_channel(port, system_vhost)  # not mapped yet
        [log_file] = [file.path for file in our_files(logs)]
        wait_for_line(log_file, "event='listening'")

        config.write_text(
            config.read_text()
            + f"BACKEND ADD_DNS b2 dc localhost {SYSTEM_PORT}\nMAP BACKEND {system_vhost} b2\n"
        )
        moved = log_file.with_name("amqprouter.log.1")  # logrotate's rename
        log_file.rename(moved)
        router.process.send_signal(signal.SIGHUP)

        reloaded = wait_for_line(log_file, "event='config reloaded'")
        assert "source='SIGHUP'" in reloaded
        assert f"changes='Added backend b2; Added map {system_vhost} -> b2'" in reloaded
        assert router.process.poll() is None  # SIGHUP's default action would have killed it
        open_channel(port, system_vhost)
        assert "backend='b2'" in wait_for_line(log_file, "event='session open'")
        # Lines before the SIGHUP stayed in the renamed file; none came after it.
        assert "event='listening'" in moved.read_text()
        assert "config reloaded" not in moved.read_text()
        assert "Added backend b2" not in command(router, "CONFIG RELOAD")  # already applied
    assert router.process.returncode == 0


def test_sighup_without_a_config_file_keeps_the_router(system_broker: SystemBroker) -> None:
    port = free_port()
    args = ["--listen-port", str(port), "--destination-dns", "127.0.0.1"]
    args += ["--destination-port", str(SYSTEM_PORT)]
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-reload-"))
    args += ["--control-socket", str(workdir / "control"), "--log-directory", str(workdir)]
    router = launch(port, args, workdir)
    process = router.process
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_is_open(port):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGHUP)
        [log_file] = [file.path for file in our_files(workdir)]
        line = wait_for_line(log_file, "event='reloaded without a config file'")
        assert "source='SIGHUP'" in line and "log_files='re-opened'" in line
        assert process.poll() is None
        assert command(workdir / "control", "CONFIG RELOAD").startswith(
            "No configuration file to reload"
        )
        open_channel(port, "/")
    finally:
        assert router.stop() == 0
        shutil.rmtree(workdir, ignore_errors=True)
