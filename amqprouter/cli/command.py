"""``amqprouter``: the daemon's command line."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import click
import trio

from amqprouter import __version__
from amqprouter.app import (
    EXIT_CONFIG_FAILED,
    Observe,
    serve,
)
from amqprouter.cli.help_sections import (
    ENV_PREFIX,
    SectionedCommand,
    SectionOption,
    envvar_for,
    option,
)
from amqprouter.control.config_check import check_lines, verdict
from amqprouter.control.config_file import ConfigFileError, read_lines
from amqprouter.control.grammar import ParseError, parse
from amqprouter.control.reload import BELOW_FILE
from amqprouter.control.socket_server import (
    DEFAULT_MODE,
    default_control_socket,
)
from amqprouter.fleet.role import BadWorkerSpec, WorkerRole
from amqprouter.fleet.supervisor import run_supervisor
from amqprouter.observe import log_files, log_queue
from amqprouter.observe import logging as router_logging
from amqprouter.observe.render import DEFAULT_PREFIX
from amqprouter.protocol import TuneParams
from amqprouter.protocol.frames import COMPILED
from amqprouter.routing import health
from amqprouter.routing.rate_window import BURST_SECONDS
from amqprouter.server import Server
from amqprouter.server import sticky_file as sticky_file_io
from amqprouter.server.server import PRIMED_PER_BACKEND, SHUTDOWN_TIMEOUT, Forwarding
from amqprouter.session import SessionSettings, Timeouts
from amqprouter.session import pool as pool_defaults
from amqprouter.session import settings as defaults
from amqprouter.session.pool import PoolLimits
from amqprouter.text import escape

#: --config-prefix when --config-store is given without one (docs/fleet.md).
DEFAULT_CONFIG_PREFIX: Final = "amqprouter"

#: amqpprox's first words (scripts may match them), then this tool's own flag names.
SIMPLE_MODE_INCOMPLETE = (
    "If configuring in simple mode, --listen-port, --destination-port and "
    "--destination-dns (or AMQPROUTER_LISTEN_PORT, AMQPROUTER_DESTINATION_PORT and "
    "AMQPROUTER_DESTINATION_DNS) must all be set; missing: {missing}"
)
#: AMQPROUTER_* variables that are this project's without being a flag's: the build's
#: (AMQPROUTER_COMPILE), amqprouter_ctl's, the test suite's. Not warned about.
OTHER_VARIABLES: Final = (
    "AMQPROUTER_COMPILE",
    "AMQPROUTER_CTL_ALLOW_OWNER",
    "AMQPROUTER_EXPECT_COMPILED",
    "AMQPROUTER_KEEP_BROKER_DATA",
)
DESTINATION_TLS_NEEDS_SIMPLE_MODE = (
    "--destination-tls applies to simple mode's broker: give --listen-port, "
    "--destination-dns and --destination-port too (in a --config file, use BACKEND ... TLS)"
)
#: What --version says runs the frame reader and scanner (the hot path).
SCANNER = "compiled with mypyc" if COMPILED else "pure Python"

# Exit codes of a start that fails here; those of a start that fails once running
# (4 listen, 5 control socket, 6 a start-up command, 7 HTTP) are app.py's.
EXIT_SIMPLE_MODE_INCOMPLETE = 2
EXIT_USAGE = 2  # click's code for a bad flag value
EXIT_BAD_VERBOSITY = 3
EXIT_LOG_DIRECTORY_FAILED = 8
#: --workers above this is a typo, not a machine.
MAX_WORKERS = 256

_seconds = click.FloatRange(min=0.001)


@click.command(
    cls=SectionedCommand,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "Simple mode (all three --listen-port, --destination-dns, --destination-port) "
        "sends every vhost to one broker. The camelCase spellings of amqpprox "
        "(--listenPort, --destinationDNS, --destinationPort, --controlSocket, "
        "--logDirectory, --cleanupIntervalMs, --consoleVerbosity) are accepted as aliases. "
        "Every flag can also be set by the AMQPROUTER_* environment variable shown beside it "
        "(a flag on the command line wins; an AMQPROUTER_* variable no flag reads is "
        "warned about, with the closest name). "
        "SIGTERM (and EXIT GRACEFUL) stops listening, closes every session gracefully and "
        "exits once they are gone or --shutdown-timeout has passed; SIGINT (and EXIT) "
        "stops the router at once. SIGHUP (and CONFIG RELOAD) re-reads the --config file "
        "and applies what changed in it, re-opens the log file and re-reads the TLS files."
    ),
)
@option(
    "Listening",
    "--listen-port",
    "listen_port",
    aliases=("--listenPort",),
    type=click.IntRange(1, 65535),
    help="Simple mode: port to accept AMQP clients on (all addresses, IPv6 and IPv4).",
)
@option(
    "Listening",
    "--listen-tls-port",
    type=click.IntRange(1, 65535),
    help="Also accept TLS clients on this port (LISTEN START_SECURE), with "
    "--tls-cert-chain and --tls-key (docs/tls.md).",
)
@option(
    "Listening",
    "--listen-accept-proxy",
    metavar="CIDRS",
    help="The balancers (cidr[,cidr...]) allowed to send a PROXY protocol header on the "
    "--listen-port and --listen-tls-port listeners; given, every connection there must "
    "start with one, and any other peer is closed at accept. The header's source is then "
    "the client (LISTEN ... ACCEPT-PROXY FROM, docs/edge.md).",
)
@option(
    "Listening",
    "--listen-allow",
    metavar="CIDRS",
    help="Admit only clients in these networks (cidr[,cidr...]) on the --listen-port and "
    "--listen-tls-port listeners: the TCP peer, or with --listen-accept-proxy the "
    "header's source (LISTEN ... ALLOW, docs/edge.md).",
)
@option(
    "Listening",
    "--max-connections",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Connections each listener serves at once; beyond that the oldest connection "
    "still in its handshake is cut to make room, or, if every one is past it, new ones "
    "wait in the kernel's backlog. 0 = (RLIMIT_NOFILE - 128) / 2, which leaves two "
    "descriptors per session and room for the control socket; all listeners together "
    "never exceed that either (docs/operations.md).",
)
@option(
    "Listening",
    "--channel-max",
    type=click.IntRange(0, 65535),
    default=TuneParams().channel_max,
    show_default=True,
    help="channel_max offered to clients in Connection.Tune (0 = no limit).",
)
@option(
    "Listening",
    "--frame-max",
    type=click.IntRange(4096, 2**31 - 1),
    default=TuneParams().frame_max,
    show_default=True,
    help="frame_max offered to clients in Connection.Tune, in bytes.",
)
@option(
    "Listening",
    "--heartbeat",
    type=click.IntRange(0, 65535),
    default=TuneParams().heartbeat,
    show_default=True,
    help="Heartbeat interval offered to clients in Connection.Tune, in seconds (0 = off).",
)
@option(
    "Listening",
    "--data-rate-burst",
    type=click.FloatRange(min=0.001, max=10.0),
    default=BURST_SECONDS,
    show_default=True,
    help="Seconds of a LIMIT DATA_RATE that may pass at once after a quiet spell (the "
    "token bucket's size): in any span of T seconds at most rate x (T + this) bytes are "
    "read from a client (docs/edge.md).",
)
@option(
    "Routing (simple mode)",
    "--destination-dns",
    "destination_dns",
    aliases=("--destinationDNS",),
    help="Simple mode: broker host name or address, resolved at each new connection; "
    "every address it resolves to is tried in order.",
)
@option(
    "Routing (simple mode)",
    "--destination-port",
    "destination_port",
    aliases=("--destinationPort",),
    type=click.IntRange(1, 65535),
    help="Simple mode: broker port.",
)
@option(
    "Routing (simple mode)",
    "--destination-tls",
    is_flag=True,
    default=False,
    help="Simple mode: reach the broker over TLS (BACKEND ADD_DNS ... TLS); without "
    "--tls-ca its certificate is not checked.",
)
@option(
    "TLS",
    "--tls-cert-chain",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM certificate chain served to TLS clients (TLS INGRESS CERT_CHAIN_FILE).",
)
@option(
    "TLS",
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key of --tls-cert-chain (TLS INGRESS KEY_FILE).",
)
@option(
    "TLS",
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM CA file the broker's certificate and host name are checked against with "
    "--destination-tls (TLS EGRESS CA_CERT_FILE, VERIFY_MODE PEER).",
)
@option(
    "Timeouts",
    "--client-handshake-timeout",
    type=_seconds,
    default=defaults.CLIENT_HANDSHAKE_TIMEOUT,
    show_default=True,
    help="Seconds a client may take from TCP accept to Connection.Open.",
)
@option(
    "Timeouts",
    "--connect-timeout",
    type=_seconds,
    default=defaults.CONNECT_TIMEOUT,
    show_default=True,
    help="Seconds for one TCP connect to one broker address before trying the next.",
)
@option(
    "Timeouts",
    "--broker-handshake-timeout",
    type=_seconds,
    default=defaults.BROKER_HANDSHAKE_TIMEOUT,
    show_default=True,
    help="Seconds the broker may take from TCP connect to Connection.OpenOk.",
)
@option(
    "Timeouts",
    "--auth-timeout",
    type=_seconds,
    default=defaults.AUTH_TIMEOUT,
    show_default=True,
    help="Seconds the auth service (AUTH SERVICE) may take to answer for one client; "
    "no answer in time denies the client.",
)
@option(
    "Timeouts",
    "--close-timeout",
    type=_seconds,
    default=defaults.CLOSE_TIMEOUT,
    show_default=True,
    help="Seconds to wait for Connection.CloseOk before closing a socket anyway.",
)
@option(
    "Timeouts",
    "--write-timeout",
    type=_seconds,
    default=None,
    help="Seconds a write to a client or broker may stay unfinished (the peer stopped "
    "reading) before the session is ended with a 320 to the client and the broker side "
    "closed. Default: two heartbeat intervals of the session's negotiated heartbeat, "
    f"or {defaults.WRITE_TIMEOUT_WITHOUT_HEARTBEAT:g} s when heartbeats are off.",
)
@option(
    "Timeouts",
    "--backend-down-seconds",
    type=_seconds,
    default=health.DOWN_SECONDS,
    show_default=True,
    help="Seconds a backend that refused or timed out a connect is tried only after the "
    "healthy members of its farm (and only when they all fail).",
)
@option(
    "Broker connections",
    "--primed-connections",
    type=click.IntRange(0, 64),
    default=PRIMED_PER_BACKEND,
    show_default=True,
    help="Broker connections per backend in use that are connected, greeted (protocol "
    "header sent, Connection.Start read) and TLS-ready before a client asks, sized from "
    "the recent connection rate (docs/usage.md#primed-broker-connections); 0 turns "
    "them off. Worth 8 with a broker a network round trip away; with one on the same "
    "host they cost more router CPU than they save.",
)
@option(
    "Broker connections",
    "--sticky-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Keep the sticky clients of FARM STICKY in this file: read at start, rewritten "
    "atomically (temporary file, fsync, rename) within a second of a change and at exit "
    "(docs/routing.md#sticky-clients).",
)
@option(
    "Broker connections",
    "--forwarding",
    type=click.Choice(["engine", "tasks"]),
    default="engine",
    show_default=True,
    help="How established sessions (plain TCP or TLS) are forwarded: 'engine' moves them "
    "all in one forwarding thread with its own epoll loop, without a task switch per "
    "read; 'tasks' gives each session its own trio pump tasks (the fallback). Sessions "
    "behind a PROXY header use tasks, and paused, rate-limited or traced ones while they "
    "are (docs/usage.md#forwarding-engine-or-tasks).",
)
@option(
    "Broker connections",
    "--pool",
    is_flag=True,
    default=False,
    help="Pooling mode for every vhost (MAP POOL vhost ON|OFF sets it per vhost): broker "
    "connections are kept after their client leaves and shared by the clients with the "
    "same backend, vhost and credentials, their channels remapped; for short-lived "
    "clients such as PHP or cron jobs (docs/pooling.md).",
)
@option(
    "Broker connections",
    "--pool-idle-timeout",
    type=_seconds,
    default=pool_defaults.IDLE_TIMEOUT,
    show_default=True,
    help="Seconds a pooled broker connection with no client stays open.",
)
@option(
    "Broker connections",
    "--pool-max-channels",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Broker channels a pooled broker connection may open (0: the broker's channel_max).",
)
@option(
    "Broker connections",
    "--pool-max-connections",
    type=click.IntRange(0, 100000),
    default=0,
    show_default=True,
    help="Pooled broker connections per backend, vhost and credentials (0: no limit); a "
    "client finding them all full gets Connection.Close 506.",
)
@option(
    "Timeouts",
    "--disconnect-timeout",
    type=_seconds,
    default=defaults.DISCONNECT_TIMEOUT,
    show_default=True,
    help="Seconds a client may take to answer the Connection.Close of a graceful "
    "disconnect (SESSION/VHOST/BACKEND commands, drains, shutdown) before it is cut.",
)
@option(
    "Timeouts",
    "--max-pause-seconds",
    type=_seconds,
    default=defaults.MAX_PAUSE,
    show_default=True,
    help="A session paused (SESSION/VHOST PAUSE) for longer than this is disconnected gracefully.",
)
@option(
    "Timeouts",
    "--shutdown-timeout",
    type=_seconds,
    default=SHUTDOWN_TIMEOUT,
    show_default=True,
    help="On SIGTERM or EXIT GRACEFUL: seconds to wait for sessions to close gracefully "
    "before the rest are cut and the router exits.",
)
@option(
    "Logging",
    "-v",
    "--console-verbosity",
    "verbosity",
    aliases=("--consoleVerbosity",),
    type=int,
    default=0,
    show_default=True,
    help="Console (stderr) log verbosity: 0 FATAL, 1 ERROR, 2 WARN, 3 INFO, 4 DEBUG, 5 TRACE.",
)
@option(
    "Logging",
    "--log-directory",
    "log_directory",
    aliases=("--logDirectory",),
    default=None,
    help="Also write log files amqprouter_YYYYMMDD_NNNNN.log in this directory (created if "
    "missing), at verbosity 3 (INFO) until LOG FILE n changes it. Default: no log files "
    "(an empty value too); the console alone, for a service manager or container to collect.",
)
@option(
    "Logging",
    "--log-file-max-bytes",
    type=click.IntRange(min=1),
    default=log_files.DEFAULT_MAX_FILE_BYTES,
    show_default=True,
    help="With --log-directory: a log file reaching this size is closed and the next one "
    "started (files are also started anew at midnight UTC).",
)
@option(
    "Logging",
    "--log-directory-max-bytes",
    type=click.IntRange(min=1),
    default=log_files.DEFAULT_MAX_DIRECTORY_BYTES,
    show_default=True,
    help="With --log-directory: bound on the total size of our log files there; the oldest "
    "are deleted first (other files are never touched).",
)
@option(
    "Logging",
    "--log-format",
    type=click.Choice(router_logging.FORMATS),
    default="kv",
    show_default=True,
    help="Log line format on the console and in the files: key=value pairs, or one JSON "
    "object per line.",
)
@option(
    "Logging",
    "--log-queue-lines",
    type=click.IntRange(min=1),
    default=log_queue.DEFAULT_MAX_QUEUED,
    show_default=True,
    help="Log lines waiting per sink (console, files) for its writer thread; beyond that "
    "new lines are dropped and counted, never waited for.",
)
@option(
    "Statistics and HTTP",
    "--cleanup-interval-ms",
    "cleanup_interval_ms",
    aliases=("--cleanupIntervalMs",),
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Interval of statistics (STAT LISTEN chunks, STAT SEND datagrams), in milliseconds.",
)
@option(
    "Statistics and HTTP",
    "--statsd-prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="First component of every StatsD metric name sent by STAT SEND.",
)
@option(
    "Statistics and HTTP",
    "--http-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus /metrics and the probes over HTTP on this port (default: off).",
)
@option(
    "Statistics and HTTP",
    "--http-host",
    default=None,
    help="Address the --http-port server binds to (default: every address).",
)
@option(
    "Control",
    "--control-socket",
    "control_socket",
    aliases=("--controlSocket",),
    default=None,
    help="Path of the Unix control socket that amqprouter_ctl talks to (default: "
    "/run/amqprouter/control when /run/amqprouter exists and is writable, or can be created "
    "as root; otherwise /tmp/amqprouter). A stale socket file is replaced; one a running "
    "router answers on is not. Its directory must not be writable by other users unless "
    "sticky (like /tmp).",
)
@option(
    "Control",
    "--control-socket-mode",
    type=str,
    default=f"{DEFAULT_MODE:04o}",
    show_default=True,
    help="Permissions of the control socket file, in octal (0660 lets a group run amqprouter_ctl).",
)
@option(
    "Control",
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of control commands applied at start, one per line (blank lines and # "
    "comments allowed); `amqprouter_ctl <socket> CONFIG PRINT` writes one. SIGHUP or "
    "CONFIG RELOAD applies what changed in it since.",
)
@option(
    "Fleet",
    "--workers",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Worker processes, each listening on the client ports (SO_REUSEPORT) and "
    "forwarding on its own, under a supervisor that owns the control socket and the HTTP "
    "port (docs/fleet.md); auto: one per CPU core. 1 runs one process, as always. "
    "SIGUSR2 to the supervisor restarts the workers with the code installed now, "
    "without dropping a client.",
)
@option(
    "Fleet",
    "--worker-max-rss",
    type=click.IntRange(min=1),
    default=None,
    metavar="MB",
    help="With --workers: a worker whose resident memory passes this many MB is replaced: "
    "a new worker starts, then the old one stops accepting and drains its sessions.",
)
@option(
    "Fleet",
    "--config-store",
    default=None,
    metavar="URL",
    help="Share the configuration (what CONFIG PRINT prints) with every router using "
    "this Redis (redis://HOST:PORT/DB, rediss://..., "
    "redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE[/DB], "
    "redis+cluster://HOST:PORT[,HOST:PORT]): a configuration command on any of them "
    "reaches all within a second; "
    "Redis away, each keeps serving with what it has and refuses configuration commands "
    "(docs/fleet.md). Needs the extra: pip install 'amqprouter[fleet]'.",
)
@option(
    "Fleet",
    "--config-prefix",
    default=None,
    show_default=DEFAULT_CONFIG_PREFIX,
    metavar="NAME",
    help="With --config-store: the keys are NAME:config and NAME:changes, so several "
    "fleets can share one Redis.",
)
@click.option(
    "--fleet-worker",
    default=None,
    hidden=True,  # no variable either: a worker's environment is its supervisor's
    help="Internal: the supervisor starts its workers with it (amqprouter/fleet/).",
)
@click.option(
    "--check",
    is_flag=True,
    default=False,
    cls=SectionOption,
    section="Control",
    # No AMQPROUTER_CHECK: a variable left in an environment file would turn every
    # start of the service into a check that exits.
    help="Check the configuration (the --config file with the other flags around it, as a "
    "start applies them) without starting: every problem is printed with its line, and "
    "the exit code is 0 when it would start, 6 when not. The unit runs it before every "
    "start and reload.",
)
@click.version_option(
    __version__,
    prog_name="amqprouter",
    # Which frames module this install runs (AMQPROUTER_COMPILE=1 at build compiles it).
    message=f"%(prog)s, version %(version)s (frame scanner: {SCANNER})",
)
def main(
    listen_port: int | None,
    destination_dns: str | None,
    destination_port: int | None,
    listen_tls_port: int | None,
    listen_accept_proxy: str | None,
    listen_allow: str | None,
    tls_cert_chain: Path | None,
    tls_key: Path | None,
    destination_tls: bool,
    tls_ca: Path | None,
    control_socket: str | None,
    control_socket_mode: str,
    config_file: Path | None,
    log_directory: str | None,
    log_file_max_bytes: int,
    log_directory_max_bytes: int,
    log_format: router_logging.Format,
    log_queue_lines: int,
    cleanup_interval_ms: int,
    verbosity: int,
    client_handshake_timeout: float,
    connect_timeout: float,
    broker_handshake_timeout: float,
    auth_timeout: float,
    close_timeout: float,
    write_timeout: float | None,
    backend_down_seconds: float,
    primed_connections: int,
    sticky_file: str | None,
    forwarding: Forwarding,
    pool: bool,
    pool_idle_timeout: float,
    pool_max_channels: int,
    pool_max_connections: int,
    max_connections: int,
    data_rate_burst: float,
    disconnect_timeout: float,
    max_pause_seconds: float,
    shutdown_timeout: float,
    channel_max: int,
    frame_max: int,
    heartbeat: int,
    statsd_prefix: str,
    http_port: int | None,
    http_host: str | None,
    workers: str,
    worker_max_rss: int | None,
    fleet_worker: str | None,
    config_store: str | None,
    config_prefix: str | None,
    check: bool,
) -> None:
    """An AMQP 0.9.1 router: clients connect to it as to RabbitMQ, and each
    connection is sent to a broker chosen by its vhost."""
    for warning in unknown_variables(os.environ, click.get_current_context().command.params):
        click.echo(warning, err=True)
    simple = (listen_port, destination_dns, destination_port)
    if any(value is not None for value in simple) and not all(simple):
        missing = [
            flag
            for flag, value in zip(
                ("--listen-port", "--destination-dns", "--destination-port"), simple, strict=True
            )
            if value is None
        ]
        click.echo(SIMPLE_MODE_INCOMPLETE.format(missing=", ".join(missing)), err=True)
        sys.exit(EXIT_SIMPLE_MODE_INCOMPLETE)
    if not 0 <= verbosity <= router_logging.MAX_VERBOSITY:
        click.echo("Console log verbosity must be between 0 and 5", err=True)
        sys.exit(EXIT_BAD_VERBOSITY)
    directory = Path(log_directory) if log_directory else None
    if directory is None:
        _refuse_file_flags_without_directory()
    role = _worker_role(fleet_worker)
    worker_count = 1 if role is not None else _worker_count(workers, directory, worker_max_rss)
    store = _config_store(config_store, config_prefix)
    if worker_count > 1 and sticky_file:
        # N workers rewriting one file would each erase the others' clients.
        click.echo(
            "--sticky-file is not available with --workers above 1: each worker keeps its "
            "own sticky clients (docs/fleet.md)",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    try:
        router_logging.configure(
            verbosity,
            log_format=log_format,
            directory=None if check else directory,  # a check opens no log file
            max_file_bytes=log_file_max_bytes,
            max_directory_bytes=log_directory_max_bytes,
            max_queued=log_queue_lines,
        )
    except OSError as exc:
        click.echo(f"Cannot write log files in: '{log_directory}': {exc.strerror or exc}", err=True)
        sys.exit(EXIT_LOG_DIRECTORY_FAILED)
    settings = SessionSettings(
        tune=TuneParams(channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat),
        timeouts=Timeouts(
            client_handshake=client_handshake_timeout,
            connect=connect_timeout,
            broker_handshake=broker_handshake_timeout,
            auth=auth_timeout,
            close=close_timeout,
            disconnect=disconnect_timeout,
            max_pause=max_pause_seconds,
            write=write_timeout,
        ),
    )
    try:
        mode = int(control_socket_mode, 8)
    except ValueError:
        click.echo(
            f"--control-socket-mode must be octal, like 0600: {control_socket_mode}", err=True
        )
        sys.exit(EXIT_USAGE)
    # Before the file's lines: a file's LOG CONSOLE wins over -v (control/reload.py).
    setup: list[tuple[str, str]] = [(BELOW_FILE, f"LOG CONSOLE {verbosity}")]
    if config_file is not None:
        setup += _config_lines(config_file)
    # The TLS flags are TLS commands too, so CONFIG PRINT writes them back.
    for flag, value, lines in (
        ("--tls-cert-chain", tls_cert_chain, ["TLS INGRESS CERT_CHAIN_FILE {}"]),
        ("--tls-key", tls_key, ["TLS INGRESS KEY_FILE {}"]),
        ("--tls-ca", tls_ca, ["TLS EGRESS CA_CERT_FILE {}", "TLS EGRESS VERIFY_MODE PEER"]),
    ):
        if value is not None:
            setup += [(flag, line.format(value)) for line in lines]
    if destination_tls and destination_dns is None:
        click.echo(DESTINATION_TLS_NEEDS_SIMPLE_MODE, err=True)
        sys.exit(EXIT_SIMPLE_MODE_INCOMPLETE)
    listen_options = _listen_options(
        listen_accept_proxy, listen_allow, has_listener=listen_tls_port is not None or all(simple)
    )
    if destination_dns is not None and destination_port is not None:
        # Simple mode is exactly amqpprox's: these four control commands (the listener's
        # options are ours).
        tls_flag = " TLS" if destination_tls else ""
        setup += [
            (
                "simple mode",
                f"BACKEND ADD_DNS default-backend none {destination_dns} {destination_port}"
                + tls_flag,
            ),
            ("simple mode", "FARM ADD default round-robin default-backend"),
            ("simple mode", "MAP DEFAULT default"),
            ("simple mode", f"LISTEN START {listen_port}{listen_options}"),
        ]
    if listen_tls_port is not None:
        setup.append(
            ("--listen-tls-port", f"LISTEN START_SECURE {listen_tls_port}{listen_options}")
        )
    if check:
        sys.exit(_check(setup, config_file, log_files=directory is not None))
    socket_path = Path(control_socket) if control_socket else default_control_socket()
    if role is not None:
        # Asked by the supervisor alone: its own socket, HTTP on the loopback.
        socket_path, mode, http_port, http_host = role.control_socket, 0o600, 0, "127.0.0.1"
    logging_to = f"'{directory}'" if directory is not None else "stderr"
    click.echo(f"Starting amqprouter, logging to: {logging_to} control using: '{socket_path}'")
    if worker_count > 1:
        try:
            code = run_supervisor(
                worker_count,
                argv=sys.argv[1:],
                control_socket=socket_path,
                mode=mode,
                http_port=http_port,
                http_host=http_host,
                max_rss_mb=worker_max_rss,
                shutdown_timeout=shutdown_timeout,
                shared_store=store is not None,
            )
        finally:
            router_logging.shutdown()
        click.echo(f"Stopping amqprouter, instance: '{socket_path}'")
        sys.exit(code)
    observe = Observe(cleanup_interval_ms / 1000, statsd_prefix, http_port, http_host)
    server = Server(
        settings,
        backend_down_seconds=backend_down_seconds,
        primed_per_backend=primed_connections,
        max_connections=max_connections,
        data_rate_burst=data_rate_burst,
        forwarding=forwarding,
        pool=pool,
        pool_limits=PoolLimits(
            idle_timeout=pool_idle_timeout,
            max_channels=pool_max_channels,
            max_connections=pool_max_connections,
        ),
    )
    sticky_path = _load_sticky(server, sticky_file)
    try:
        code = trio.run(
            partial(
                serve,
                shutdown_timeout=shutdown_timeout,
                config_file=config_file,
                worker=role,
                config_store=store,
                sticky_file=sticky_path,
            ),
            server,
            socket_path,
            mode,
            setup,
            observe,
        )
    finally:
        router_logging.shutdown()  # the last lines reach the files before we go
    click.echo(f"Stopping amqprouter, instance: '{socket_path}'")
    sys.exit(code)


def _worker_role(spec: str | None) -> WorkerRole | None:
    """The hidden --fleet-worker's role (a supervisor started this process), or exit 2."""
    if spec is None:
        return None
    try:
        return WorkerRole.parse(spec)
    except BadWorkerSpec as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)


def _config_store(url: str | None, prefix: str | None) -> tuple[str, str] | None:
    """--config-store and --config-prefix, checked; or exit 2."""
    if not url:
        if prefix is not None:  # a prefix alone would be silently ignored: refused
            click.echo("--config-prefix applies to --config-store", err=True)
            sys.exit(EXIT_USAGE)
        return None
    if prefix is None:
        prefix = DEFAULT_CONFIG_PREFIX
    # Imported here: the fleet's modules are only for routers that use them.
    from amqprouter.fleet.store_address import StoreAddressError, parse_store_address

    problem = None
    try:
        parse_store_address(url)
    except StoreAddressError as exc:
        problem = str(exc)
    if problem is None and (not prefix or any(ch.isspace() for ch in prefix)):
        problem = "--config-prefix must be a name without spaces"
    elif problem is None:
        try:
            import coredis  # noqa: F401 - only to say clearly that the extra is missing
        except ImportError:
            problem = "--config-store needs coredis: pip install 'amqprouter[fleet]'"
    if problem is not None:
        click.echo(problem, err=True)
        sys.exit(EXIT_USAGE)
    return url, prefix


def _worker_count(value: str, log_directory: Path | None, max_rss: int | None) -> int:
    """--workers as a number (auto: the cores this process may run on), or exit 2."""
    word = value.strip().lower()
    if word == "auto":
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        count = count or os.cpu_count() or 1
    elif word.isdigit() and 1 <= int(word) <= MAX_WORKERS:
        count = int(word)
    else:
        click.echo(
            f"--workers (or {envvar_for('--workers')}) must be a number from 1 to "
            f"{MAX_WORKERS} or auto, not {value!r}",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    if count > 1 and log_directory is not None:
        # Several processes cannot share one rotating set of files; refused, not half done.
        click.echo(
            "--log-directory is not available with --workers above 1: the workers log to "
            "stderr (the journal, the container's log); see docs/fleet.md",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    if count == 1 and max_rss is not None:
        click.echo("--worker-max-rss applies to --workers above 1", err=True)
        sys.exit(EXIT_USAGE)
    return count


def _check(setup: list[tuple[str, str]], config_file: Path | None, *, log_files: bool) -> int:
    """``--check``: every problem of the start-up lines on stderr; the exit code."""
    problems = check_lines(setup, log_files=log_files)
    router_logging.shutdown()  # any line it logged is written before the verdict
    checked = str(config_file) if config_file is not None else "the flags (no --config file)"
    text = verdict(problems, checked)
    click.echo(text.rstrip("\n"), err=bool(problems))
    return EXIT_CONFIG_FAILED if problems else 0


def unknown_variables(environ: Mapping[str, str], params: Sequence[click.Parameter]) -> list[str]:
    """One warning for each ``AMQPROUTER_*`` variable that no flag reads (a typo: it
    would be ignored without a word), naming the closest one that is read."""
    known = {param.envvar for param in params if isinstance(param.envvar, str)}
    known.update(OTHER_VARIABLES)
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "no flag reads it (amqprouter --help names each flag's variable)"
        )
        warnings.append(f"Warning: unknown environment variable {escape(name)} ignored; {hint}")
    return warnings


def _listen_options(accept_proxy: str | None, allow: str | None, *, has_listener: bool) -> str:
    """The LISTEN options (with a leading space) of ``--listen-accept-proxy`` and
    ``--listen-allow``, checked here so that a bad list is a usage error; or exit 2."""
    words = ""
    for flag, value, keywords in (
        ("--listen-accept-proxy", accept_proxy, "ACCEPT-PROXY FROM"),
        ("--listen-allow", allow, "ALLOW"),
    ):
        if value is None:
            continue
        if not has_listener:
            click.echo(
                f"{flag} (or {envvar_for(flag)}) applies to the listeners of --listen-port "
                "and --listen-tls-port: give one (in a --config file, use LISTEN START port "
                f"{keywords} cidr[,cidr...])",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        # "10.0.0.0/8, 10.1.0.0/16" in a variable is one list: a control word has no space.
        networks = "".join(value.split())
        parsed = parse(f"LISTEN START 1 {keywords} {networks}")
        if isinstance(parsed, ParseError):
            click.echo(f"{flag}: {parsed.reply.rstrip()}", err=True)
            sys.exit(EXIT_USAGE)
        words += f" {keywords} {networks}"
    return words


def _load_sticky(server: Server, sticky_file: str | None) -> Path | None:
    """``--sticky-file``'s path, its entries loaded into the routing table; exit 2 when
    its directory does not exist. A file that cannot be read as one is reported and
    replaced at the first change: stickiness is an optimisation, not configuration."""
    if sticky_file is None:
        return None
    path = Path(sticky_file)
    if not path.parent.is_dir():
        click.echo(f"--sticky-file: directory {path.parent} does not exist", err=True)
        sys.exit(EXIT_USAGE)
    try:
        count = sticky_file_io.load(path, server.routing.sticky)
    except sticky_file_io.StickyFileError as exc:
        click.echo(f"--sticky-file: {exc}; starting without sticky clients", err=True)
    else:
        click.echo(f"Sticky clients loaded from '{path}': {count}")
    return path


def _refuse_file_flags_without_directory() -> None:
    """Exit if a log file flag was given without a log directory: it would do nothing."""
    context = click.get_current_context()
    for name, flag in (
        ("log_file_max_bytes", "--log-file-max-bytes"),
        ("log_directory_max_bytes", "--log-directory-max-bytes"),
    ):
        source = context.get_parameter_source(name)
        if source in (
            click.core.ParameterSource.COMMANDLINE,
            click.core.ParameterSource.ENVIRONMENT,
        ):
            click.echo(
                f"{flag} (or {envvar_for(flag)}) applies to log files: give --log-directory too",
                err=True,
            )
            sys.exit(EXIT_USAGE)


def _config_lines(path: Path) -> list[tuple[str, str]]:
    """The commands of a ``--config`` file with where each came from, or exit 6."""
    try:
        return read_lines(path)
    except ConfigFileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG_FAILED)
