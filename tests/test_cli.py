"""The daemon's command line as a user meets it: flags, messages, exit codes, signals."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pika
import pytest

from amqprouter.cli import main as cli_main
from tests.brokers import SYSTEM_PORT, SystemBroker, free_port
from tests.router import router_command, running_router, start_router

BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # Log files (if it gets that far) in a directory of their own, not the repository.
    with tempfile.TemporaryDirectory() as logs:
        return subprocess.run(
            router_command("--log-directory", logs, *args),
            capture_output=True,
            text=True,
            timeout=30,
        )


def test_help_explains_every_flag() -> None:
    result = subprocess.run(
        [str(BIN / "amqprouter"), "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for parameter in cli_main.params:
        for name in parameter.opts:
            assert name in result.stdout, f"{name} missing from --help"
        assert getattr(parameter, "help", None), f"{parameter.name} has no help text"


@pytest.mark.parametrize(
    "args",
    [
        ["--listen-port", "5999"],
        ["--destination-dns", "localhost", "--destination-port", "5672"],
        ["--listenPort", "5999", "--destinationDNS", "localhost"],
    ],
)
def test_incomplete_simple_mode_is_the_reference_error(args: list[str]) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "If configuring in simple mode, the --listenPort, --destinationPort and "
        "--destinationDNS must all be set"
    )


def test_verbosity_out_of_range() -> None:
    result = _run("-v", "6")
    assert result.returncode == 3
    assert "Console log verbosity must be between 0 and 5" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_start_and_stop_lines_and_clean_exit(system_broker: SystemBroker, sig: int) -> None:
    logs = str(Path(tempfile.mkdtemp(prefix="amqprouter-logs-")) / "x")
    router = start_router(SYSTEM_PORT, extra=["--log-directory", logs])
    control = router.stdout.split("control using: ")[1].strip()
    assert router.stop(sig) == 0
    assert router.stdout.splitlines() == [
        f"Starting amqprouter, logging to: '{logs}' control using: {control}",
        f"Stopping amqprouter, instance: {control}",
    ]
    assert "Traceback" not in router.stderr
    shutil.rmtree(router.stdout_path.parent, ignore_errors=True)
    shutil.rmtree(Path(logs).parent, ignore_errors=True)


def test_amqpprox_spellings_work(system_broker: SystemBroker, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        router_command(
            "--listenPort",
            str(port),
            "--destinationDNS",
            "localhost",
            "--destinationPort",
            str(SYSTEM_PORT),
            "--controlSocket",
            str(tmp_path / "ctl"),
            "--logDirectory",
            str(tmp_path),
            "--cleanupIntervalMs",
            "500",
            "--consoleVerbosity",
            "2",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        connection = None
        for _attempt in range(100):
            try:
                connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
                break
            except pika.exceptions.AMQPConnectionError:
                if process.poll() is not None:
                    break
                time.sleep(0.1)
        assert connection is not None, "router with camelCase flags did not serve"
        assert connection.channel().queue_declare("", exclusive=True).method.queue
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert f"control using: '{tmp_path / 'ctl'}'" in stdout


def test_port_in_use_is_a_clear_error(system_broker: SystemBroker) -> None:
    with running_router(SYSTEM_PORT) as first:
        result = _run(
            "--listen-port",
            str(first.port),
            "--destination-dns",
            "localhost",
            "--destination-port",
            str(SYSTEM_PORT),
        )
    assert result.returncode == 4
    assert f"Cannot listen on port {first.port}: Address already in use" in result.stderr


def test_ctl_stub_prints_usage() -> None:
    result = subprocess.run(
        [str(BIN / "amqprouter_ctl")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "Usage: amqprouter_ctl [--json] [--allow-owner USER] [<control_socket>] ARGS"
    )
