"""The control plane end to end: routers configured with ``amqprouter_ctl``, real brokers.

Two private RabbitMQ nodes stand behind the router; where a connection landed is
proved from the broker side (``rabbitmqctl list_connections``, matched by the
client's ``connection_name``), never from the router's own account. The router runs
as users run it (``python -m amqprouter --control-socket ...``, no simple mode) and
is configured with the real ``amqprouter_ctl`` command. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pika
import pika.exceptions
import pytest
from pamqp import commands, frame

from amqprouter.observe.log_queue import FLUSH_INTERVAL
from amqprouter.protocol import FrameReader, constants
from tests.brokers import (
    BrokerError,
    RabbitNode,
    RabbitNodeFactory,
    free_port,
    port_is_open,
    wait_for,
)
from tests.router import spawn

CTL = Path(sys.executable).parent / "amqprouter_ctl"
#: Bound for one router start, one amqprouter_ctl call, one client connect, one poll.
WAIT = 15.0
#: The vhosts the tests use; each exists on both nodes (guest has full rights).
VHOSTS = ("A", "B", "C", "D", "E")


# --------------------------------------------------------------------------- #
# a router started without simple mode, driven by amqprouter_ctl
# --------------------------------------------------------------------------- #


@attrs.frozen
class CtlResult:
    code: int
    out: str
    err: str


def ctl(socket_path: Path, *words: str | int) -> CtlResult:
    """Run ``amqprouter_ctl <socket_path> WORDS...``."""
    result = subprocess.run(
        [str(CTL), str(socket_path), *map(str, words)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return CtlResult(result.returncode, result.stdout, result.stderr)


@attrs.define
class ControlledRouter:
    """An amqprouter process with a control socket of its own (in a private temp dir)."""

    socket: Path
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    port: int = 0  # the client port, once ``listen`` was called

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ctl(self, *words: str | int) -> CtlResult:
        return ctl(self.socket, *words)

    def must(self, *words: str | int) -> str:
        """Run a command that must succeed; its output."""
        result = self.ctl(*words)
        assert result.code == 0, f"{' '.join(map(str, words))}: {result}\n{self.stderr}"
        return result.out

    def listen(self) -> int:
        self.port = free_port()
        self.must("LISTEN START", self.port)
        return self.port

    def wait(self, timeout: float = WAIT) -> int:
        """The exit code, once the process ended by itself (killed if it does not)."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
            raise AssertionError(f"router did not exit within {timeout}s\n{self.stderr}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait()


def control_answers(path: Path) -> bool:
    """True when a router answers a command on the control socket at ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            probe.connect(str(path))
            probe.sendall(b"DATACENTER PRINT\n")
            while probe.recv(4096):
                pass
    except OSError:
        return False
    return True


def launch_router(socket_path: Path, *args: str, logdir: Path | None = None) -> ControlledRouter:
    """Start ``amqprouter --control-socket socket_path -v 3 ARGS`` without waiting for it.

    Its stdout and stderr go to files in ``logdir`` (default: the socket's directory).
    """
    workdir = socket_path.parent if logdir is None else logdir
    stdout_path = workdir / f"stdout-{time.monotonic_ns()}"
    stderr_path = stdout_path.with_name(stdout_path.name.replace("stdout", "stderr"))
    args = (
        "--control-socket",
        str(socket_path),
        "-v",
        "3",
        "--log-directory",
        str(workdir / "logs"),
        *args,
    )
    process = spawn(args, stdout_path, stderr_path)
    return ControlledRouter(socket_path, process, stdout_path, stderr_path)


def start_router(socket_path: Path, *args: str) -> ControlledRouter:
    """``launch_router``, then wait (bounded) until its control socket answers."""
    router = launch_router(socket_path, *args)
    deadline = time.monotonic() + WAIT
    while not control_answers(socket_path):
        if router.process.poll() is not None or time.monotonic() > deadline:
            router.stop(signal.SIGKILL)
            raise AssertionError(
                f"router did not answer on {socket_path}:\n{router.stdout}\n{router.stderr}"
            )
        time.sleep(0.05)
    return router


@contextlib.contextmanager
def running_router(socket_path: Path, *args: str) -> Iterator[ControlledRouter]:
    router = start_router(socket_path, *args)
    try:
        yield router
    finally:
        router.stop()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory (a Unix socket path must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="amqprouter-cp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- #
# brokers and clients
# --------------------------------------------------------------------------- #


def _add_vhosts(node: RabbitNode, definitions: Path) -> None:
    node.ctl("import_definitions", str(definitions))
    # The import finishes asynchronously: wait until guest can open every vhost.
    for vhost in VHOSTS:
        wait_for(partial(_can_open, node.port, vhost), WAIT, f"vhost {vhost} on {node.name}")


def _can_open(port: int, vhost: str) -> bool:
    try:
        client(port, vhost, "probe").close()
    except pika.exceptions.AMQPError:
        return False
    return True


@pytest.fixture(scope="module")
def nodes(session_rabbit_node_factory: RabbitNodeFactory) -> Iterator[tuple[RabbitNode, ...]]:
    """Two private nodes, booted side by side, each with every vhost in VHOSTS."""
    factory = session_rabbit_node_factory
    pair = (factory.create(start=False), factory.create(start=False))
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-cp-defs-"))
    workdir.chmod(0o755)  # rabbitmqctl runs as the rabbitmq user and reads the file
    definitions = workdir / "definitions.json"
    definitions.write_text(
        json.dumps(
            {
                "vhosts": [{"name": vhost} for vhost in VHOSTS],
                "permissions": [
                    {"user": "guest", "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                    for v in VHOSTS
                ],
            }
        )
    )
    definitions.chmod(0o644)
    try:
        with ThreadPoolExecutor(len(pair)) as pool:
            list(pool.map(lambda node: node.start(), pair))
            list(pool.map(lambda node: _add_vhosts(node, definitions), pair))
        yield pair
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        # Free the memory now rather than at the end of the session.
        for node in pair:
            node.destroy()
            factory.nodes.remove(node)


@pytest.fixture(scope="module")
def router(nodes: tuple[RabbitNode, ...]) -> Iterator[ControlledRouter]:
    """One router shared by the routing tests: backends n1 and n2, a listener, no mappings.

    Each test adds its own farms and mappings (on its own vhosts and names); none sets
    a default farm, so an unmapped vhost stays unmapped.
    """
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-cp-"))
    try:
        with running_router(workdir / "control") as started:
            started.must("BACKEND ADD n1 dc1 127.0.0.1", nodes[0].port)
            started.must("BACKEND ADD n2 dc2 127.0.0.1", nodes[1].port)
            started.listen()
            yield started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def client(port: int, vhost: str, name: str) -> pika.BlockingConnection:
    """A pika connection named ``name`` (the broker lists it under that connection_name)."""
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            port,
            virtual_host=vhost,
            client_properties={"connection_name": name},
            heartbeat=0,
            connection_attempts=1,
            socket_timeout=5,
            stack_timeout=WAIT,
            blocked_connection_timeout=WAIT,
        )
    )


@contextlib.contextmanager
def clients(port: int, vhost: str, names: Iterable[str]) -> Iterator[list[pika.BlockingConnection]]:
    """Connections opened one after the other (each open before the next), then closed."""
    with contextlib.ExitStack() as stack:
        opened = []
        for name in names:
            connection = client(port, vhost, name)
            stack.callback(_close_quietly, connection)
            opened.append(connection)
        yield opened


def _close_quietly(connection: pika.BlockingConnection) -> None:
    with contextlib.suppress(pika.exceptions.AMQPError):
        if connection.is_open:
            connection.close()


@attrs.frozen
class Landing:
    node: int  # index in ``nodes``
    connection: dict[str, Any]  # as RabbitNode.list_connections() shows it


def landings(nodes: Sequence[RabbitNode], names: Iterable[str]) -> dict[str, Landing]:
    """Where each named connection is, according to the brokers themselves."""
    wanted = set(names)
    found: dict[str, Landing] = {}

    def look() -> bool:
        found.clear()
        for index, node in enumerate(nodes):
            for connection in node.list_connections():
                name = connection["client_properties"].get("connection_name")
                if name in wanted:
                    assert name not in found, f"{name} is on two nodes"
                    found[name] = Landing(index, connection)
        return set(found) == wanted

    wait_for(look, WAIT, f"connections {sorted(wanted)} to be listed by the brokers")
    return dict(found)


def assert_round_trip(connection: pika.BlockingConnection, body: bytes) -> None:
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, body)
    for _ in range(50):  # bounded: basic_get may run ahead of the publish
        _method, _properties, received = channel.basic_get(queue, auto_ack=True)
        if received is not None:
            break
        time.sleep(0.02)
    assert received == body
    channel.close()


def refusal(caught: pytest.ExceptionInfo[pika.exceptions.AMQPConnectionError]) -> tuple[int, str]:
    """(reply code, reply text) of the Connection.Close that refused a pika connection.

    pika raises ProbableAccessDeniedError for a Close in answer to Connection.Open,
    wrapping the ConnectionClosedByBroker it got as a string.
    """
    match = re.search(r"\((\d+)\) '(.*)'", str(caught.value))
    assert match, str(caught.value)
    return int(match.group(1)), match.group(2)


def raw_open(
    port: int, vhost: str, client_properties: dict[str, Any] | None = None
) -> tuple[str, Any]:
    """A hand-made AMQP client up to Connection.Open: (its address "host:port", the
    method the router answered Open with; None if it closed without a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        host, local_port = sock.getsockname()[:2]
        reader = FrameReader(frame_max=1 << 20)

        def next_method() -> Any:
            while (item := reader.next_frame()) is None:
                data = sock.recv(65536)
                if not data:
                    return None
                reader.feed(data)
            return item.decode()

        sock.sendall(constants.PROTOCOL_HEADER)
        assert isinstance(next_method(), commands.Connection.Start)
        start_ok = commands.Connection.StartOk(
            client_properties=client_properties or {"connection_name": "raw"},
            mechanism="PLAIN",
            response="\0guest\0guest",
        )
        sock.sendall(frame.marshal(start_ok, 0))
        assert isinstance(next_method(), commands.Connection.Tune)
        tune_ok = commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0)
        sock.sendall(frame.marshal(tune_ok, 0) + frame.marshal(commands.Connection.Open(vhost), 0))
        return f"{host}:{local_port}", next_method()


def log_lines(router: ControlledRouter, *needles: str, expect: bool = True) -> list[str]:
    """The router's log lines holding every needle.

    The router writes its log a flush interval at a time (observe.log_queue), so a line
    may reach stderr a little after the event: when lines are expected, wait for the
    first (up to WAIT); when none are (``expect=False``), give them time to show up.
    """

    def matching() -> list[str]:
        return [line for line in router.stderr.splitlines() if all(n in line for n in needles)]

    if expect:
        with contextlib.suppress(BrokerError):  # the caller's assertion says what is missing
            wait_for(lambda: bool(matching()), WAIT, f"a log line with {needles}")
    else:
        time.sleep(3 * FLUSH_INTERVAL)
    return matching()


# --------------------------------------------------------------------------- #
# routing
# --------------------------------------------------------------------------- #


def test_each_vhost_lands_on_its_mapped_backend(
    router: ControlledRouter, nodes: tuple[RabbitNode, ...]
) -> None:
    router.must("MAP BACKEND A n1")
    router.must("MAP BACKEND B n2")
    assert '"A" => Backend:n1\n"B" => Backend:n2\n' in router.must("MAP PRINT")
    with clients(router.port, "A", ["to-A"]), clients(router.port, "B", ["to-B"]):
        where = landings(nodes, ["to-A", "to-B"])
    assert (where["to-A"].node, where["to-A"].connection["vhost"]) == (0, "A")
    assert (where["to-B"].node, where["to-B"].connection["vhost"]) == (1, "B")
    for landing in where.values():
        # The router tells the broker who the real client is.
        client_properties = landing.connection["client_properties"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", client_properties["amqprouter_client"])


def test_farm_spreads_connections_round_robin(
    router: ControlledRouter, nodes: tuple[RabbitNode, ...]
) -> None:
    router.must("FARM ADD spread round-robin n1 n2")
    router.must("MAP FARM C spread")
    names = [f"spread-{number}" for number in range(4)]
    with clients(router.port, "C", names):
        where = landings(nodes, names)
    assert [where[name].node for name in names] == [0, 1, 0, 1]
    assert all(where[name].connection["vhost"] == "C" for name in names)


def test_farm_with_a_dead_member_serves_every_connection(
    router: ControlledRouter, nodes: tuple[RabbitNode, ...]
) -> None:
    dead_port = free_port()  # nobody listens there: connects are refused
    router.must("BACKEND ADD ghost dc1 127.0.0.1", dead_port)
    router.must("FARM ADD patchy round-robin ghost n1 n2")
    router.must("MAP FARM E patchy")
    names = [f"patchy-{number}" for number in range(4)]
    with clients(router.port, "E", names) as opened:
        for connection in opened:
            assert_round_trip(connection, b"through a farm with a dead member")
        where = landings(nodes, names)
    # The first connection tries ghost (refused), then n1. Ghost is then marked down
    # (passive health) and tried last, so n1 and n2 share the rotation: n2, n1, n2.
    assert [where[name].node for name in names] == [0, 1, 0, 1]
    refused = log_lines(router, "broker connect failed", f"address='127.0.0.1:{dead_port}'")
    assert len(refused) == 1, router.stderr


def test_farm_with_only_dead_members_closes_the_client_clearly(router: ControlledRouter) -> None:
    dead_port = free_port()
    router.must("BACKEND ADD ghost2 dc1 127.0.0.1", dead_port)
    router.must("FARM ADD gone round-robin ghost2")
    router.must("MAP FARM nobody-home gone")
    started = time.monotonic()
    with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
        client(router.port, "nobody-home", "doomed")
    assert time.monotonic() - started < 5.0
    assert refusal(caught) == (
        320,
        "CONNECTION_FORCED - no broker reachable for vhost nobody-home "
        f"(tried ghost2 (127.0.0.1:{dead_port})): 127.0.0.1:{dead_port}: Connection refused",
    )


def test_map_change_applies_to_new_connections_only(
    router: ControlledRouter, nodes: tuple[RabbitNode, ...]
) -> None:
    router.must("MAP BACKEND D n1")
    with clients(router.port, "D", ["before-remap"]) as (before,):
        assert landings(nodes, ["before-remap"])["before-remap"].node == 0
        router.must("MAP BACKEND D n2")
        with clients(router.port, "D", ["after-remap"]):
            # The existing session still works, on node 1; the new one is on node 2.
            assert_round_trip(before, b"still on node 1")
            where = landings(nodes, ["before-remap", "after-remap"])
    assert where["before-remap"].node == 0
    assert where["after-remap"].node == 1


def test_unmapped_vhost_gets_506_and_an_error_line(router: ControlledRouter) -> None:
    with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
        client(router.port, "unmapped", "lost")
    assert refusal(caught) == (506, "No known broker mapping for vhost unmapped")

    address, answer = raw_open(router.port, "unmapped-too")
    assert isinstance(answer, commands.Connection.Close)
    assert (answer.reply_code, answer.reply_text) == (
        506,
        "No known broker mapping for vhost unmapped-too",
    )
    wait_for(
        lambda: bool(log_lines(router, "level='error'", f"'{address}'", "unmapped-too")),
        WAIT,
        "the router's ERROR line naming the client",
    )
    (line,) = log_lines(router, "level='error'", f"'{address}'", "unmapped-too")
    assert "no mapping for vhost" in line


# --------------------------------------------------------------------------- #
# amqprouter_ctl
# --------------------------------------------------------------------------- #


def test_ctl_exit_codes(router: ControlledRouter, workdir: Path) -> None:
    assert router.ctl("MAP PRINT").code == 0

    deleted = router.ctl("BACKEND DELETE nosuch")
    assert deleted.code == 1
    assert deleted.out.strip() == "Delete failed to remove 'nosuch', rcode 1"

    router.must("FARM ADD keeper round-robin n1")
    in_use = router.ctl("BACKEND DELETE n1")
    assert in_use.code == 1
    assert in_use.out.startswith("Backend 'n1' is used by farm(s) ")
    assert "keeper" in in_use.out
    assert "n1 (dc1)" in router.must("BACKEND PRINT")

    help_text = router.must("HELP")
    assert "BACKEND (ADD" in help_text and "MAP " in help_text
    unknown = router.ctl("FROBNICATE", "now")
    assert (unknown.code, unknown.out) == (
        1,
        "Unknown command 'FROBNICATE'. Send HELP for the list of commands.\n",
    )

    nowhere = workdir / "no-router-here"
    unreachable = ctl(nowhere, "MAP PRINT")
    assert (unreachable.code, unreachable.out) == (2, "")
    assert f"cannot reach a router at {nowhere}: No such file or directory" in unreachable.err

    stale = workdir / "stale"  # a socket file nobody listens on
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))
    refused = ctl(stale, "MAP PRINT")
    assert refused.code == 2
    assert f"cannot reach a router at {stale}: Connection refused" in refused.err


def test_what_is_not_honoured_is_refused_and_changes_nothing(router: ControlledRouter) -> None:
    def backend_names() -> list[str]:
        return [line.split()[0] for line in router.must("BACKEND PRINT").splitlines()]

    backends, port = backend_names(), free_port()
    for line, says in [
        ("BACKEND ADD_DNS px dc1 localhost 5672 SEND-PROXY SEND-PROXY-V2", "SEND-PROXY and"),
        (f"LISTEN START {port} ACCEPT-PROXY ALLOW 10.0.0.0/8", "ACCEPT-PROXY needs FROM"),
        (f"LISTEN START {port} ALLOW 10.0.0.1/8", "ALLOW '10.0.0.1/8' is not a"),
        (f"LISTEN START_SECURE {port}", f"Cannot listen on port {port}: TLS INGRESS needs"),
        # The TLS verb works; a bad file is refused and changes nothing.
        ("TLS INGRESS KEY_FILE /nonexistent.pem", "Error: /nonexistent.pem: no such file."),
        ("AUTH SERVICE 127.0.0.1 1", "No http target specified."),
        ("MAP UNMAP v extra", "Unexpected word 'extra'"),
    ]:
        refused = router.ctl(*line.split())
        assert refused.code == 1, line
        assert refused.out.startswith(says), (line, refused.out)
    assert backend_names() == backends
    assert not port_is_open(port)


def test_control_socket_is_private(router: ControlledRouter) -> None:
    mode = router.socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


# --------------------------------------------------------------------------- #
# --config FILE and CONFIG PRINT
# --------------------------------------------------------------------------- #


def test_config_file_starts_a_working_router(nodes: tuple[RabbitNode, ...], workdir: Path) -> None:
    port = free_port()
    config = workdir / "router.conf"
    config.write_text(
        "# vhost A goes to node 2 here\n"
        "\n"
        f"BACKEND ADD second dc2 127.0.0.1 {nodes[1].port}\n"
        "   # indented comment\n"
        "MAP BACKEND A second\n"
        "\n"
        f"LISTEN START {port}\n"
    )
    with running_router(workdir / "control", "--config", str(config)) as router:
        assert port_is_open(port)
        assert router.must("MAP PRINT") == '"A" => Backend:second\n'
        with clients(port, "A", ["from-config"]) as (connection,):
            assert_round_trip(connection, b"configured from a file")
            assert landings(nodes, ["from-config"])["from-config"].node == 1


def test_config_file_error_stops_start_up(workdir: Path) -> None:
    port = free_port()
    config = workdir / "broken.conf"
    config.write_text(
        "# a farm over a backend nobody added\n"
        f"LISTEN START {port}\n"
        "BACKEND ADD_DNS real dc1 localhost 5672\n"
        "FARM ADD f round-robin real missing\n"
        "MAP DEFAULT f\n"
    )
    router = launch_router(workdir / "control", "--config", str(config))
    assert router.wait() == 6
    assert (
        f"{config}:4: FARM ADD f round-robin real missing: Backend 'missing' not found\n"
        "Farm not inserted due to at least one missing Backend\n"
    ) in router.stderr
    assert not (workdir / "control").exists()
    assert not port_is_open(port)


def test_config_print_round_trip(workdir: Path) -> None:
    sock = workdir / "control"
    prints = ("MAP PRINT", "BACKEND PRINT", "FARM PRINT", "DATACENTER PRINT", "CONFIG PRINT")
    commands_ = [
        "DATACENTER SET london-az1",
        "BACKEND ADD rabbit1 london-az1 127.0.0.1 5672",
        "BACKEND ADD_DNS rabbit2 london-az2 localhost 5672",
        "BACKEND ADD_DNS rabbit3 paris localhost 5673",
        "BACKEND ADD_DNS rabbit4 paris localhost 5674",
        "FARM ADD shared round-robin rabbit2 rabbit1 rabbit3",
        "FARM PARTITION shared datacenter-affinity",
        "FARM ADD empty round-robin",
        "MAP BACKEND vhost-example rabbit1",
        "MAP FARM other shared",
        "MAP FARM later not-yet-a-farm",
        "MAP DEFAULT shared",
        f"LISTEN START {free_port()}",
    ]
    with running_router(sock) as first:
        for command in commands_:
            first.must(command)
        before = {command: first.must(command) for command in prints}
    config = workdir / "saved.conf"
    config.write_text(before["CONFIG PRINT"])
    assert first.process.returncode == 0
    with running_router(sock, "--config", str(config)) as second:
        after = {command: second.must(command) for command in prints}
    assert after == before
    assert '"later" => Farm:not-yet-a-farm\n' in before["MAP PRINT"]
    assert "(default) => Farm:shared\n" in before["MAP PRINT"]


# --------------------------------------------------------------------------- #
# one router per control socket
# --------------------------------------------------------------------------- #


def test_live_control_socket_is_not_stolen_but_a_stale_one_is_replaced(
    nodes: tuple[RabbitNode, ...], workdir: Path
) -> None:
    sock = workdir / "control"
    first = start_router(sock)
    try:
        first.must("BACKEND ADD n1 dc1 127.0.0.1", nodes[0].port)
        first.must("MAP BACKEND A n1")
        first.listen()

        second = launch_router(sock)
        assert second.wait() == 5
        assert f"{sock} is the control socket of a running router" in second.stderr
        # The refused router left the first one's socket alone.
        assert first.must("MAP PRINT") == '"A" => Backend:n1\n'
        with clients(first.port, "A", ["first-still-works"]) as (connection,):
            assert_round_trip(connection, b"first router")
    finally:
        first.stop(signal.SIGKILL)
    assert first.process.returncode == -signal.SIGKILL
    assert stat.S_ISSOCK(sock.lstat().st_mode)  # left behind by the killed router

    third = start_router(sock, "--control-socket-mode", "0660")
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        assert third.must("MAP PRINT") == ""  # a fresh router: nothing configured
        assert third.must("EXIT") == "Exiting.\n"
        assert third.wait() == 0
    finally:
        third.stop(signal.SIGKILL)
    assert not sock.exists()


# --------------------------------------------------------------------------- #
# start-up errors about the control socket
# --------------------------------------------------------------------------- #


def test_unusable_control_socket_path_is_a_clear_error(workdir: Path) -> None:
    sock = workdir / "no-such-directory" / "control"
    router = launch_router(sock, logdir=workdir)
    code = router.wait()
    assert code != 0
    assert "Traceback" not in router.stderr
    assert f"Cannot use the control socket: {sock}" in router.stderr


def test_bad_control_socket_mode_is_reported_on_stderr(workdir: Path) -> None:
    router = launch_router(workdir / "control", "--control-socket-mode", "rw-------")
    assert router.wait() != 0
    assert "--control-socket-mode must be octal" in router.stderr
    assert "--control-socket-mode must be octal" not in router.stdout


# --------------------------------------------------------------------------- #
# vhost migration: pause, remap, disconnect, unpause
# --------------------------------------------------------------------------- #


def test_vhost_migration_moves_clients_to_the_new_farm(
    nodes: tuple[RabbitNode, ...], workdir: Path
) -> None:
    """The cut-over amqpprox documents (#66, #75), with the brokers as witnesses."""
    with running_router(workdir / "control") as router:
        router.must("BACKEND ADD n1 dc1 127.0.0.1", nodes[0].port)
        router.must("BACKEND ADD n2 dc2 127.0.0.1", nodes[1].port)
        router.must("FARM ADD blue round-robin n1")
        router.must("FARM ADD green round-robin n2")
        router.must("MAP FARM B blue")
        port = router.listen()
        names = ["migrating-1", "migrating-2"]
        before = [client(port, "B", name) for name in names]
        assert {landing.node for landing in landings(nodes, names).values()} == {0}

        router.must("VHOST PAUSE B")
        assert "B = PAUSED\n" in router.must("VHOST PRINT")
        router.must("MAP FARM B green")
        router.must("VHOST BACKEND_DISCONNECT B")
        for connection in before:
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
                connection.process_data_events(time_limit=5)
            assert caught.value.reply_code == 320
            assert "disconnected by the router (VHOST B BACKEND_DISCONNECT)" in (
                caught.value.reply_text
            )
        # The clients reconnect at once and are held at Open: no broker has them.
        with ThreadPoolExecutor(len(names)) as pool:
            reconnecting = [pool.submit(client, port, "B", name) for name in names]
            wait_for(
                lambda: router.must("CONN").count(" vhost=B disconnected=N paused=Y ") == 2,
                WAIT,
                "both clients held at Open",
            )
            assert not any(future.done() for future in reconnecting)
            router.must("VHOST UNPAUSE B")
            after = [future.result(timeout=WAIT) for future in reconnecting]
        try:
            assert {landing.node for landing in landings(nodes, names).values()} == {1}
            for connection in after:
                assert_round_trip(connection, b"on the green farm")
        finally:
            for connection in after:
                _close_quietly(connection)
