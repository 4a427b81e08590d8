"""The daemon's command line as a user meets it: flags, messages, exit codes, signals."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import pika
import pytest

from amqprouter.cli import main as cli_main
from amqprouter.help_sections import SECTIONS
from tests.brokers import SYSTEM_PORT, SystemBroker, free_port, port_is_open, wait_for
from tests.proxy_clients import header_from, open_session, raw_client, read_all
from tests.router import REPO, router_command, running_router, start_router

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
    ("args", "missing"),
    [
        (["--listen-port", "5999"], "--destination-dns, --destination-port"),
        (["--destination-dns", "localhost", "--destination-port", "5672"], "--listen-port"),
        (["--listenPort", "5999", "--destinationDNS", "localhost"], "--destination-port"),
    ],
)
def test_incomplete_simple_mode_names_our_flags_and_what_is_missing(
    args: list[str], missing: str
) -> None:
    result = _run(*args)
    assert result.returncode == 2
    # The reference's first words, then this tool's own names (the camelCase ones work).
    assert result.stderr.strip() == (
        "If configuring in simple mode, --listen-port, --destination-port and "
        "--destination-dns (or AMQPROUTER_LISTEN_PORT, AMQPROUTER_DESTINATION_PORT and "
        f"AMQPROUTER_DESTINATION_DNS) must all be set; missing: {missing}"
    )


def test_an_unknown_variable_is_warned_about_with_the_closest_name(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AMQPROUTER_LISTEN_PROT": "5673",  # the typo
        "AMQPROUTER_DESTINATION_DNS": "localhost",
        "AMQPROUTER_DESTINATION_PORT": "5672",
        "AMQPROUTER_WHATEVER": "1",
    }
    result = subprocess.run(
        router_command("--check"), capture_output=True, text=True, timeout=30, env=env, cwd=REPO
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        "Warning: unknown environment variable AMQPROUTER_LISTEN_PROT ignored; did you mean "
        "AMQPROUTER_LISTEN_PORT?",
        "Warning: unknown environment variable AMQPROUTER_WHATEVER ignored; no flag reads it "
        "(amqprouter --help names each flag's variable)",
    ]
    assert lines[2].endswith("must all be set; missing: --listen-port")
    # A variable a flag reads, and the project's own others, are not warned about.
    env = {**os.environ, "AMQPROUTER_CONFIG": "", "AMQPROUTER_COMPILE": "1"}
    result = subprocess.run(
        router_command("--check"), capture_output=True, text=True, timeout=30, env=env, cwd=REPO
    )
    assert "Warning" not in result.stderr


def test_verbosity_out_of_range() -> None:
    result = _run("-v", "6")
    assert result.returncode == 3
    assert "Console log verbosity must be between 0 and 5" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_start_and_stop_lines_and_clean_exit(system_broker: SystemBroker, sig: int) -> None:
    logs = str(Path(tempfile.mkdtemp(prefix="amqprouter-logs-")) / "x")
    router = start_router(SYSTEM_PORT, extra=["--log-directory", logs])
    control = router.stdout.splitlines()[0].split("control using: ")[1]
    assert router.stop(sig) == 0
    assert router.stdout.splitlines() == [
        f"Starting amqprouter, logging to: '{logs}' control using: {control}",
        f"Listening for AMQP clients on port {router.port} (every address)",
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


def test_help_is_in_sections() -> None:
    result = subprocess.run(
        [str(BIN / "amqprouter"), "--help"], capture_output=True, text=True, timeout=30
    )
    headings = [line[:-1] for line in result.stdout.splitlines() if re.fullmatch(r"\S.*:", line)]
    assert headings == [*SECTIONS, "Other"]
    # Each option sits under its own section's heading.
    sections = re.split(r"^(\S.*):$", result.stdout, flags=re.MULTILINE)
    text_of = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert "--tls-ca FILE" in text_of["TLS"]
    assert "--shutdown-timeout FLOAT" in text_of["Timeouts"]
    assert "-v, --console-verbosity INTEGER" in text_of["Logging"]
    assert "--destination-dns TEXT" in text_of["Routing (simple mode)"]
    # amqpprox's spellings are named once, in the epilog, not on every option's line.
    assert "--listenPort" not in text_of["Listening"]
    assert "--listenPort" in text_of["Other"]


def test_every_flag_has_an_environment_variable_shown_and_documented() -> None:
    result = subprocess.run(
        [str(BIN / "amqprouter"), "--help"], capture_output=True, text=True, timeout=30
    )
    usage = (REPO / "docs" / "usage.md").read_text()
    flags = [p for p in cli_main.params if isinstance(p, click.Option) and p.expose_value]
    # --check alone has none: a variable left in an environment file would turn every
    # start into a check.
    (check,) = [flag for flag in flags if flag.name == "check"]
    assert check.envvar is None
    flags.remove(check)
    assert len(flags) > 30
    for flag in flags:
        long_name = next(name for name in flag.opts if name.startswith("--"))
        expected = "AMQPROUTER_" + long_name[2:].upper().replace("-", "_")
        assert flag.envvar == expected
        assert expected in result.stdout.replace("\n", " "), f"{expected} not in --help"
        assert f"`{expected}`" in usage, f"{expected} not in docs/usage.md"


def test_environment_variables_configure_it_and_flags_win(tmp_path: Path) -> None:
    # No broker needed: nobody connects; the listener and the control socket tell.
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AMQPROUTER_LISTEN_PORT": str(free_port()),  # overridden by the flag below
        "AMQPROUTER_DESTINATION_DNS": "127.0.0.1",
        "AMQPROUTER_DESTINATION_PORT": str(free_port()),
        "AMQPROUTER_CONTROL_SOCKET": str(tmp_path / "control"),
        "AMQPROUTER_LOG_DIRECTORY": str(tmp_path / "logs"),
        "AMQPROUTER_DESTINATION_TLS": "false",
    }
    process = subprocess.Popen(
        router_command("--listen-port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        wait_for(lambda: port_is_open(port), timeout=15, what="the router to listen")
        assert (tmp_path / "control").is_socket()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert stdout.splitlines()[:2] == [
        f"Starting amqprouter, logging to: '{tmp_path / 'logs'}' control using: "
        f"'{tmp_path / 'control'}'",
        f"Listening for AMQP clients on port {port} (every address)",
    ]
    assert [p.name[:11] for p in (tmp_path / "logs").iterdir()] == ["amqprouter_"]


def test_no_log_files_unless_asked_and_file_flags_need_a_directory(tmp_path: Path) -> None:
    # The README's command, in a working directory of its own: nothing is written there.
    port = free_port()
    process = subprocess.Popen(
        router_command(
            "--listen-port",
            str(port),
            "--destination-dns",
            "127.0.0.1",
            "--destination-port",
            str(free_port()),
            "--control-socket",
            str(tmp_path / "control"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(lambda: port_is_open(port), timeout=15, what="the router to listen")
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _stderr = process.communicate(timeout=10)
    assert stdout.startswith("Starting amqprouter, logging to: stderr control using: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no logs/, and the socket gone
    for args, env in (
        (["--log-file-max-bytes", "1000"], {}),
        ([], {"AMQPROUTER_LOG_DIRECTORY_MAX_BYTES": "1000"}),
        (["--log-directory", "", "--log-file-max-bytes", "1000"], {}),
    ):
        result = subprocess.run(
            router_command(*args),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            env={**os.environ, **env},
        )
        assert result.returncode == 2
        assert "applies to log files: give --log-directory too" in result.stderr


#: Simple mode's flags (nothing listens: the flags tested are refused before that).
SIMPLE = ["--listen-port", "5999", "--destination-dns", "localhost", "--destination-port", "5672"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--listen-allow", "10.0.0.0/8"],
            "--listen-allow (or AMQPROUTER_LISTEN_ALLOW) applies to the listeners of "
            "--listen-port and --listen-tls-port: give one (in a --config file, use LISTEN "
            "START port ALLOW cidr[,cidr...])",
        ),
        (
            ["--listen-accept-proxy", "10.0.1.5"],
            "--listen-accept-proxy (or AMQPROUTER_LISTEN_ACCEPT_PROXY) applies to the "
            "listeners of --listen-port and --listen-tls-port: give one (in a --config file, "
            "use LISTEN START port ACCEPT-PROXY FROM cidr[,cidr...])",
        ),
        (
            [*SIMPLE, "--listen-allow", "10.0.0.1/8"],
            "--listen-allow: ALLOW '10.0.0.1/8' is not a network (cidr): 10.0.0.1/8 has host "
            "bits set",
        ),
        (
            [*SIMPLE, "--listen-accept-proxy", "balancer.example"],
            "--listen-accept-proxy: FROM 'balancer.example' is not a network (cidr): "
            "'balancer.example' does not appear to be an IPv4 or IPv6 network",
        ),
    ],
)
def test_listener_address_flags_refuse_what_they_cannot_honour(args: list[str], says: str) -> None:
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == says


def test_listen_accept_proxy_and_allow_route_a_client(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    """Simple mode behind a balancer: the flags become the listener's ACCEPT-PROXY FROM
    and ALLOW (the environment variable spelling for one of them), CONFIG PRINT says
    so, only the balancer may send a header, and ALLOW checks the client it names."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AMQPROUTER_LISTEN_ALLOW": "10.0.0.0/8"}
    port = free_port()
    process = subprocess.Popen(
        router_command(
            "--listen-port",
            str(port),
            "--destination-dns",
            "127.0.0.1",
            "--destination-port",
            str(system_broker.port),
            "--listen-accept-proxy",
            "127.0.0.2",
            "--control-socket",
            str(tmp_path / "control"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,  # this checkout's amqprouter
        env=env,
    )
    try:
        wait_for(lambda: port_is_open(port), timeout=15, what="the router to listen")
        config = subprocess.run(
            [str(BIN / "amqprouter_ctl"), str(tmp_path / "control"), "CONFIG", "PRINT"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert f"LISTEN START {port} ACCEPT-PROXY FROM 127.0.0.2/32 ALLOW 10.0.0.0/8\n" in config
        # The balancer, for a client ALLOW admits: served through to the broker.
        with raw_client("127.0.0.2", port, header_from("10.1.2.3", port)) as served:
            open_session(served)
        # Not the balancer: closed at accept, whatever its header claims.
        with raw_client("127.0.0.1", port, header_from("10.1.2.3", port)) as direct:
            assert read_all(direct) == b""
        # The balancer, for a client outside ALLOW: closed after the header.
        with raw_client("127.0.0.2", port, header_from("192.168.1.1", port)) as outside:
            assert read_all(outside) == b""
    finally:
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_check_passes_a_good_file_and_lists_every_problem_of_a_broken_one(
    tmp_path: Path,
) -> None:
    port = free_port()
    good = tmp_path / "good.conf"
    good.write_text(
        "BACKEND ADD b1 dc 127.0.0.1 5672\nFARM ADD f round-robin b1\nMAP FARM v f\n"
        f"LISTEN START {port}\n"
    )
    env = {**os.environ, "AMQPROUTER_CONTROL_SOCKET": str(tmp_path / "control")}
    result = subprocess.run(
        router_command("--check", "--config", str(good)),
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=REPO,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"Configuration valid: {good}\n",
        "",
    )
    # A check starts nothing: no control socket, no listener, no log files.
    assert not (tmp_path / "control").exists()
    assert not port_is_open(port)

    broken = tmp_path / "broken.conf"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        broken.write_text(
            "# two mistakes and a port in use\n"
            "BACKEND ADD b1 dc 127.0.0.1 5672\n"
            "FARM ADD f round-robin b1 b2\n"
            "MAP BACKEND v nosuch\n"
            f"LISTEN START {taken}\n"
            f"TLS INGRESS CERT_CHAIN_FILE {tmp_path / 'missing.pem'}\n"
        )
        result = subprocess.run(
            router_command("--check", "--config", str(broken), "--log-directory", str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            cwd=REPO,
        )
    assert result.returncode == 6, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines[:-1]] == [
        [f"{broken}:3", "FARM ADD f round-robin b1 b2"],
        [f"{broken}:4", "MAP BACKEND v nosuch"],
        [f"{broken}:5", f"LISTEN START {taken}"],
        [f"{broken}:6", f"TLS INGRESS CERT_CHAIN_FILE {tmp_path / 'missing.pem'}"],
    ]
    assert "Backend 'b2' not found" in lines[0]
    assert f"Cannot listen on port {taken}: Address already in use" in lines[2]
    assert lines[-1] == "Configuration invalid: 4 problems"
    assert result.stdout == ""
    assert list(tmp_path.glob("amqprouter_*.log")) == []


def test_check_includes_the_flags_around_the_file(tmp_path: Path) -> None:
    # Simple mode's listener is checked like the file's: the port is in use here.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = _run(
            "--check",
            "--listen-port",
            str(taken),
            "--destination-dns",
            "localhost",
            "--destination-port",
            "5672",
        )
    assert result.returncode == 6
    assert result.stderr.splitlines() == [
        f"simple mode: LISTEN START {taken}: Cannot listen on port {taken}: Address already in use",
        "Configuration invalid: 1 problem",
    ]
