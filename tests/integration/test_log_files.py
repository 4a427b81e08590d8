"""The log files of a real router, with real clients through it to the machine's broker."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika

from amqprouter.cli.command import EXIT_LOG_DIRECTORY_FAILED
from amqprouter.control.grammar import help_text
from amqprouter.observe.log_files import FILE_PATTERN, our_files
from tests.brokers import SYSTEM_PORT, SystemBroker, free_port, port_is_open, unique_name
from tests.router import START_TIMEOUT, STOP_TIMEOUT, RouterProcess, router_command, start_router

#: Bound for one control command's reply.
WAIT = 15.0
#: Control commands sent while nobody reads the router's stderr.
COMMANDS = 150


@contextmanager
def router_logging_to(directory: Path, *args: str, verbosity: int = 0) -> Iterator[RouterProcess]:
    """A router in simple mode in front of the machine's broker, logging to ``directory``."""
    router = start_router(
        SYSTEM_PORT, extra=["--log-directory", str(directory), *args], verbosity=verbosity
    )
    try:
        yield router
    finally:
        router.stop()
        shutil.rmtree(router.stdout_path.parent, ignore_errors=True)


def command(router: RouterProcess | Path, line: str) -> str:
    """Send one control command, as amqprouter_ctl does; the reply."""
    path = router if isinstance(router, Path) else router.stdout_path.parent / "control"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply.decode()


def connect_once(router: RouterProcess | int, vhost: str, name: str) -> None:
    """A pika client named ``name`` opens a channel through the router, then leaves."""
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            router if isinstance(router, int) else router.port,
            virtual_host=vhost,
            client_properties={"connection_name": name},
        )
    )
    assert connection.channel().queue_declare("", exclusive=True).method.queue
    connection.close()


def file_lines(directory: Path) -> list[str]:
    return [line for file in our_files(directory) for line in file.path.read_text().splitlines()]


def test_session_lines_levels_and_audit_in_the_file(system_vhost: str, tmp_path: Path) -> None:
    logs = tmp_path / "new" / "logs"  # created by the router
    seen, unseen = unique_name("app"), unique_name("quiet-app")
    with router_logging_to(logs) as router:  # console at 0 (FATAL), file at 3 (INFO)
        connect_once(router, system_vhost, seen)
        assert command(router, "LOG FILE 1") == ""  # ERROR: sessions log nothing there
        connect_once(router, system_vhost, unseen)
        assert command(router, "LOG FILE 3") == ""
        backends = command(router, "BACKEND PRINT")
        assert command(router, "EXIT") == "Exiting.\n"
        # The writer empties its queue before the process ends: EXIT's own line is in.
        assert router.process.wait(STOP_TIMEOUT) == 0
        console = router.stderr
    lines = file_lines(logs)
    [opened] = [line for line in lines if "event='session open'" in line]
    assert f"connection_name='{seen}'" in opened
    assert f"vhost='{system_vhost}'" in opened
    assert " backend='default-backend' " in opened
    assert " client='127.0.0.1:" in opened
    assert " session=" in opened
    assert not [line for line in lines if unseen in line]
    # The audit lines: one per command, reply included (LOG FILE 1 answered at ERROR).
    audits = [line for line in lines if "event='control'" in line]
    assert [line.split("command=")[1].split("'")[1] for line in audits] == [
        "LOG FILE 3",
        "BACKEND PRINT",
        "EXIT",
    ]
    assert f"reply={backends!r} ok=True" in audits[1]
    # The console, at FATAL, got none of it.
    assert "event=" not in console


def test_json_lines_rotated_and_bounded(system_vhost: str, tmp_path: Path) -> None:
    name = unique_name("json-app")
    args = ["--log-format", "json", "--log-file-max-bytes", "400"]
    args += ["--log-directory-max-bytes", "2000"]
    with router_logging_to(tmp_path, *args, verbosity=3) as router:
        connect_once(router, system_vhost, name)
        for number in range(20):
            assert command(router, f"MAP BACKEND vhost-{number} default-backend") == ""
        assert router.stop() == 0
        stderr = router.stderr
    files = our_files(tmp_path)
    assert len(files) >= 3
    assert sum(file.size for file in files) <= 2000
    # Consecutive numbers: only the oldest went.
    numbers = [file.number for file in files]
    assert numbers == list(range(numbers[0], numbers[0] + len(files)))
    assert numbers[0] > 0
    events = [json.loads(line) for line in file_lines(tmp_path)]
    commands = [event["command"] for event in events if event["event"] == "control"]
    assert commands[-1] == "MAP BACKEND vhost-19 default-backend"
    assert "MAP BACKEND vhost-0 default-backend" not in commands
    # The console had every line, as JSON too, including the session's.
    console = [json.loads(line) for line in stderr.splitlines()]
    [opened] = [event for event in console if event["event"] == "session open"]
    assert opened["connection_name"] == name
    assert opened["vhost"] == system_vhost
    assert opened["backend"] == "default-backend"
    assert opened["client"].startswith("127.0.0.1:")
    assert isinstance(opened["session"], int)


def test_an_unusable_log_directory_is_a_clear_error(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    result = subprocess.run(
        router_command(
            "--log-directory",
            str(tmp_path / "file"),
            "--control-socket",
            str(tmp_path / "control"),
        ),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == EXIT_LOG_DIRECTORY_FAILED
    assert result.stderr == f"Cannot write log files in: '{tmp_path / 'file'}': Not a directory\n"
    assert not any(FILE_PATTERN.fullmatch(path.name) for path in tmp_path.iterdir())


def test_a_stderr_nobody_reads_holds_up_nothing(system_vhost: str, tmp_path: Path) -> None:
    """Console lines are dropped, not waited for; the files still get every line."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe: full at once
    port, control = free_port(), tmp_path / "control"
    args = ["--listen-port", str(port), "--destination-dns", "127.0.0.1"]
    args += ["--destination-port", str(SYSTEM_PORT), "--control-socket", str(control)]
    args += ["--log-directory", str(tmp_path / "logs"), "-v", "3", "--log-queue-lines", "100"]
    process = subprocess.Popen(
        router_command(*args), stdout=subprocess.DEVNULL, stderr=write_end, stdin=subprocess.DEVNULL
    )
    os.close(write_end)
    console = bytearray()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_is_open(port):
            assert process.poll() is None and time.monotonic() < deadline, "router did not start"
            time.sleep(0.05)
        # ~900-byte audit lines: 4 KiB of pipe and 100 queued lines are full after ~105.
        # (100, not less: the file writer on a busy machine must keep up with no drops.)
        for _number in range(COMMANDS):
            assert command(control, "HELP") == help_text()
        connect_once(port, system_vhost, "while-stderr-is-full")
        # Now read the console: the writer gets going again, and the router stops.
        reader = threading.Thread(target=lambda: _read_all(read_end, console), daemon=True)
        reader.start()
        process.send_signal(15)
        assert process.wait(STOP_TIMEOUT) == 0
        reader.join(STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)
    lines = console.decode().splitlines()
    [notice] = [line for line in lines if "event='log lines dropped'" in line]
    dropped = int(notice.split("dropped=")[1])
    assert dropped > 0
    # The file sink has a thread and queue of its own: it has every line, the same
    # lines (both at INFO), so the console's and its drops add up to them.
    in_file = file_lines(tmp_path / "logs")
    assert len([line for line in in_file if "event='control'" in line]) == COMMANDS, in_file[-1]
    assert "event='session open'" in "\n".join(in_file)
    assert len(lines) - 1 + dropped == len(in_file)
    assert set(lines) - {notice} <= set(in_file)


def _read_all(fd: int, into: bytearray) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            into += chunk
