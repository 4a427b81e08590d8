"""Real RabbitMQ brokers for the test suite.

Two kinds of broker handles live here:

* :class:`SystemBroker` -- the machine's RabbitMQ (Debian ``rabbitmq-server``
  package) listening on 127.0.0.1:5672.  Shared by everything on the machine:
  never stop or kill it from a test, and use unique vhost names (see
  :func:`unique_name`) so parallel runs do not clash.
* :class:`RabbitNode` -- a private RabbitMQ node started by the test run, with
  its own node name (``amqprt-<pid>-<n>@localhost``), AMQP port, distribution
  port and data directory (under ``<repo>/.test-brokers/``).  Tests may
  :meth:`~RabbitNode.kill` (SIGKILL, clients see the TCP connection drop),
  :meth:`~RabbitNode.stop` and :meth:`~RabbitNode.restart` it; a restart keeps
  the same port and data directory, so durable queues survive.

Nodes are created through :class:`RabbitNodeFactory`, which tears all of its
nodes down on :meth:`~RabbitNodeFactory.close` (the pytest fixtures in
``conftest.py`` do that).  As a safety net, nodes still running when the
Python process exits are killed by an ``atexit`` hook, and nodes left behind
by a dead test run (e.g. SIGKILLed pytest) are reaped by the next run.

Everything here is synchronous (subprocess + sockets) and every wait is
bounded.  From trio code, call the slow methods through
``trio.to_thread.run_sync`` if blocking the event loop for a few seconds
matters; in plain sync fixtures just call them.

Privileges: when running as root, broker processes and ``rabbitmqctl`` run as
the ``rabbitmq`` user with ``HOME=/var/lib/rabbitmq`` (so every node shares the
machine's Erlang cookie); when not root they run as the current user.

Set ``AMQPROUTER_KEEP_BROKER_DATA=1`` to keep private nodes' data and log
directories after the run (for post-mortems).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import attrs
import psutil

__all__ = [
    "HOST",
    "SYSTEM_PORT",
    "BrokerError",
    "NodeTls",
    "RabbitNode",
    "RabbitNodeFactory",
    "SystemBroker",
    "amqp_handshake_ok",
    "broker_data_root",
    "free_port",
    "port_is_open",
    "private_node",
    "unique_name",
    "wait_for",
]

HOST: Final = "127.0.0.1"
SYSTEM_PORT: Final = 5672
GUEST: Final = "guest"

#: Default bound for booting a node / waiting for the system broker.
START_TIMEOUT: Final = 60.0
#: Default bound for one ``rabbitmqctl`` invocation.
CTL_TIMEOUT: Final = 30.0

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT: Final = REPO_ROOT / ".test-brokers"

_RABBIT_USER: Final = "rabbitmq"
_RABBIT_BIN_DIR: Final = Path("/usr/lib/rabbitmq/bin")
_SYSTEM_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ERL_FLAGS: Final = "-kernel inet_dist_use_interface {127,0,0,1}"
_NODE_PREFIX: Final = "amqprt"
_NODE_DIR_RE: Final = re.compile(rf"^{_NODE_PREFIX}-(\d+)-(\d+)$")
_KEEP_ENV: Final = "AMQPROUTER_KEEP_BROKER_DATA"

# Ports free_port() never hands out: the system broker's AMQP / dist /
# management ports, epmd, and the rabbitmqctl distribution port range.
_RESERVED_PORTS: Final = frozenset({4369, 5672, 15672, 25672, *range(35672, 35683)})


class BrokerError(RuntimeError):
    """A broker could not be started/stopped or a rabbitmqctl call failed."""


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #

_name_counter = itertools.count(1)


def unique_name(prefix: str = "t") -> str:
    """A name unique to this process and call (e.g. for vhosts, queues)."""
    return f"{prefix}-{os.getpid()}-{next(_name_counter)}-{random.randrange(16**6):06x}"


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


#: Ports free_port returned lately (this process): never returned twice in a row.
_HANDED_OUT_KEPT = 1024
_HANDED_OUT: set[int] = set()
_HANDED_ORDER: deque[int] = deque()


def free_port(host: str = HOST) -> int:
    """Return a TCP port on *host* that is currently free.

    Ports are picked *below* the kernel's ephemeral range (20000..32767 by
    default), so an outgoing client connection can never grab a port that a
    killed broker will want back on restart, and away from RabbitMQ's
    well-known ports.  Still inherently racy (someone may bind it before you
    do); good enough for tests.
    """
    lo_eph, _ = _ephemeral_range()
    lo, hi = 20000, min(lo_eph, 65536) - 1
    if hi - lo < 1000:  # odd ephemeral range: fall back to asking the kernel
        lo, hi = 0, 0
    for _ in range(200):
        candidate = random.randint(lo, hi) if hi else 0
        if candidate in _RESERVED_PORTS or candidate in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            port: int = s.getsockname()[1]
        if port not in _RESERVED_PORTS and port not in _HANDED_OUT:
            # Not handed out again by this process for a while: two picks in a row
            # (a router's plain and TLS ports, say) are both free until one is bound,
            # and once drew the same number.
            _HANDED_OUT.add(port)
            _HANDED_ORDER.append(port)
            if len(_HANDED_ORDER) > _HANDED_OUT_KEPT:
                _HANDED_OUT.discard(_HANDED_ORDER.popleft())
            return port
    raise BrokerError(f"could not find a free TCP port on {host}")


def _can_bind(port: int, host: str = HOST) -> bool:
    """True when a listener could bind host:port now (SO_REUSEADDR, as Erlang sets it,
    so a closed connection's TIME_WAIT does not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_is_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_handshake_ok(port: int, host: str = HOST, timeout: float = 3.0) -> bool:
    """True when host:port answers an AMQP 0-9-1 protocol header with Connection.Start."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            buf = b""
            deadline = time.monotonic() + timeout
            while len(buf) < 11 and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return False
    if len(buf) < 11:
        return False
    frame_type, channel, _size, class_id, method_id = struct.unpack("!BHIHH", buf[:11])
    return (frame_type, channel, class_id, method_id) == (1, 0, 10, 10)


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> None:
    """Poll *predicate* until it is true; raise :class:`BrokerError` after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise BrokerError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _epmd_has_name(short_name: str, timeout: float = 1.0) -> bool:
    """Ask the local epmd whether *short_name* (the part before '@') is registered."""
    name = short_name.encode()
    try:
        with socket.create_connection((HOST, 4369), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack("!HB", len(name) + 1, 122) + name)  # PORT_PLEASE2_REQ
            reply = s.recv(2)
    except OSError:
        return False  # no epmd -> nothing registered
    return len(reply) == 2 and reply[0] == 119 and reply[1] == 0


def _rabbit_tool(name: str) -> str:
    """Path of a RabbitMQ CLI script, bypassing Debian's /usr/sbin `su` wrappers.

    The /usr/sbin wrappers re-quote arguments through a shell (so vhost names
    containing ``$`` or backquotes would be mangled); the real scripts in
    /usr/lib/rabbitmq/bin are called directly, as the right user, instead.
    """
    direct = _RABBIT_BIN_DIR / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SYSTEM_PATH)
    if found is None:
        raise BrokerError(
            f"{name} not found: install RabbitMQ "
            "(Debian/Ubuntu: apt-get install -y rabbitmq-server)"
        )
    return found


def rabbitmq_installed() -> bool:
    try:
        _rabbit_tool("rabbitmq-server")
    except BrokerError:
        return False
    return True


@attrs.frozen
class _RunAs:
    """How to run RabbitMQ processes: as which user, with which HOME."""

    user: str | None
    home: str
    uid: int

    @classmethod
    def detect(cls) -> _RunAs:
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(_RABBIT_USER)
            except KeyError as exc:
                raise BrokerError(
                    f"running as root but there is no {_RABBIT_USER!r} user; "
                    "install the rabbitmq-server package"
                ) from exc
            return cls(user=_RABBIT_USER, home=pw.pw_dir, uid=pw.pw_uid)
        return cls(
            user=None,
            home=os.environ.get("HOME", pwd.getpwuid(os.getuid()).pw_dir),
            uid=os.getuid(),
        )

    def popen_kwargs(self) -> dict[str, Any]:
        if self.user is None:
            return {"cwd": self.home if os.path.isdir(self.home) else None}
        return {
            "user": self.user,
            "group": self.user,
            "extra_groups": [],
            "cwd": self.home,
        }

    def base_env(self) -> dict[str, str]:
        return {
            "PATH": _SYSTEM_PATH,
            "HOME": self.home,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_ADDRESS": HOST,
            "ERL_FLAGS": _ERL_FLAGS,
        }

    def chown(self, path: Path) -> None:
        if self.user is None:
            return
        shutil.chown(path, self.user, self.user)
        for dirpath, dirnames, filenames in os.walk(path):
            for entry in (*dirnames, *filenames):
                shutil.chown(os.path.join(dirpath, entry), self.user, self.user)


# --------------------------------------------------------------------------- #
# rabbitmqctl-based helpers shared by the system broker and private nodes
# --------------------------------------------------------------------------- #


def _decode_amqp_table(raw: Any) -> Any:
    """rabbitmqctl's JSON for an AMQP table is ``[[key, type, value], ...]``; make it a dict."""
    if not isinstance(raw, list) or not all(
        isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) for item in raw
    ):
        return raw
    out: dict[str, Any] = {}
    for key, typ, value in raw:
        out[key] = _decode_amqp_table(value) if typ == "table" else value
    return out


def _normalise_connection(raw: dict[str, Any]) -> dict[str, Any]:
    conn = dict(raw)
    if "client_properties" in conn:
        properties = _decode_amqp_table(conn["client_properties"])
        # A connection still in its handshake (a router's primed connection, waiting
        # with Start read) has none yet: rabbitmqctl prints an empty string.
        conn["client_properties"] = properties if isinstance(properties, dict) else {}
    host = conn.get("peer_host")
    if isinstance(host, list) and len(host) == 4 and all(isinstance(b, int) for b in host):
        conn["peer_host"] = ".".join(str(b) for b in host)
    return conn


class _CtlBroker:
    """Mixin: management helpers built on ``rabbitmqctl``."""

    host: str
    port: int

    # Subclasses say how to run rabbitmqctl for their node.
    def _ctl_env(self) -> dict[str, str]:
        raise NotImplementedError

    def _ctl_node_args(self) -> list[str]:
        raise NotImplementedError

    def _run_as(self) -> _RunAs:
        raise NotImplementedError

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT, check: bool = True) -> str:
        """Run ``rabbitmqctl <node args> <args>`` and return its stdout.

        Raises :class:`BrokerError` (with stdout/stderr) on a non-zero exit when
        *check* is true, or when the call exceeds *timeout* seconds.
        """
        run_as = self._run_as()
        cmd = [_rabbit_tool("rabbitmqctl"), *self._ctl_node_args(), *args]
        try:
            proc = subprocess.run(
                cmd,
                env=self._ctl_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                **run_as.popen_kwargs(),
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"{' '.join(cmd)} timed out after {timeout}s") from exc
        if check and proc.returncode != 0:
            raise BrokerError(
                f"{' '.join(cmd)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
            )
        stdout: str = proc.stdout
        return stdout

    def ctl_json(self, *args: str, timeout: float = CTL_TIMEOUT) -> Any:
        """``ctl(*args, "--formatter", "json", "-q")`` parsed as JSON."""
        out = self.ctl(*args, "--formatter", "json", "-q", timeout=timeout)
        try:
            return json.loads(out) if out.strip() else []
        except json.JSONDecodeError as exc:
            raise BrokerError(f"rabbitmqctl {' '.join(args)}: bad JSON output: {out!r}") from exc

    def amqp_url(self, vhost: str = "/", user: str = GUEST, password: str = GUEST) -> str:
        """``amqp://guest:guest@127.0.0.1:<port>/<vhost>`` (vhost percent-encoded)."""
        return f"amqp://{user}:{password}@{self.host}:{self.port}/{quote(vhost, safe='')}"

    def add_vhost(self, name: str, user: str = GUEST) -> None:
        """Create vhost *name* (idempotent) and grant *user* full permissions on it."""
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")

    def delete_vhost(self, name: str, missing_ok: bool = True) -> None:
        """Delete vhost *name* (closing its connections)."""
        if missing_ok and name not in self.list_vhosts():
            return
        self.ctl("delete_vhost", name)

    def list_vhosts(self) -> list[str]:
        return [str(v["name"]) for v in self.ctl_json("list_vhosts", "name")]

    def list_connections(self) -> list[dict[str, Any]]:
        """Client connections as dicts with keys:

        ``name`` ("127.0.0.1:51426 -> 127.0.0.1:5672"), ``user``, ``vhost``,
        ``peer_host`` ("127.0.0.1"), ``peer_port`` (int), ``port`` (the
        broker's port), ``state`` ("running", ...), ``client_properties``.

        ``client_properties`` is decoded into a dict (nested tables too), e.g.
        ``{"product": "Pika Python Client Library", "connection_name": ...,
        "capabilities": {"publisher_confirms": True, ...}}``.  Caveat:
        RabbitMQ 3.10's JSON formatter renders AMQP *arrays* lossily (as a
        ``{type: value}`` object, dropping elements of repeated types), so
        only rely on scalar and table values there.

        Connections show up once the AMQP handshake finished (and only then),
        and may linger briefly after the client closed: poll with
        :func:`wait_for` rather than asserting once.
        """
        raw = self.ctl_json(
            "list_connections",
            "name",
            "user",
            "vhost",
            "peer_host",
            "peer_port",
            "port",
            "state",
            "client_properties",
        )
        return [_normalise_connection(c) for c in raw]

    def close_all_connections(self, reason: str = "closed by test") -> None:
        """Close every client connection on the node (all vhosts)."""
        self.ctl("close_all_connections", "--global", reason)

    def list_queues(self, vhost: str = "/") -> list[dict[str, Any]]:
        """Queues in *vhost*: dicts with ``name``, ``durable``, ``messages``, ``consumers``."""
        result: list[dict[str, Any]] = self.ctl_json(
            "list_queues", "-p", vhost, "name", "durable", "messages", "consumers"
        )
        return result


# --------------------------------------------------------------------------- #
# the machine's broker
# --------------------------------------------------------------------------- #


_background_procs: list[subprocess.Popen[bytes]] = []


@attrs.define(eq=False)
class SystemBroker(_CtlBroker):
    """The machine's RabbitMQ on 127.0.0.1:5672 (Debian package, default node).

    ``rabbitmqctl`` is called without ``-n``, so it targets whatever node the
    package's ``/etc/rabbitmq/rabbitmq-env.conf`` names (``rabbit@localhost``
    here, ``rabbit@<hostname>`` on a stock install).
    """

    host: str = HOST
    port: int = SYSTEM_PORT

    def _run_as(self) -> _RunAs:
        return _RunAs.detect()

    def _ctl_env(self) -> dict[str, str]:
        return self._run_as().base_env()

    def _ctl_node_args(self) -> list[str]:
        return []

    @property
    def name(self) -> str:
        """The Erlang node name, e.g. ``rabbit@localhost`` (asks the broker)."""
        return self.ctl("eval", "node().").strip().strip("'")

    def is_running(self) -> bool:
        return amqp_handshake_ok(self.port, self.host)

    def ensure_running(self, timeout: float = START_TIMEOUT) -> None:
        """Make sure the broker answers AMQP; start the system service if not.

        Tries, in order: ``systemctl start`` (systemd hosts), ``service``
        (SysV init script, also fine in containers without systemd), and
        finally ``rabbitmq-server`` in the background (as root only).  Raises
        :class:`BrokerError` explaining what is wrong if it still does not
        answer within *timeout* seconds.
        """
        if self.is_running():
            return
        if not rabbitmq_installed():
            raise BrokerError(
                "RabbitMQ is not installed; run `apt-get install -y rabbitmq-server` "
                "(or ./scripts/test as root, which does it)"
            )
        if os.geteuid() != 0:
            raise BrokerError(
                f"nothing answers AMQP on {self.host}:{self.port} and we are not root, "
                "so we cannot start it: run `sudo service rabbitmq-server start`"
            )
        attempts: list[str] = []
        deadline = time.monotonic() + timeout
        for cmd in self._start_commands():
            attempts.append(" ".join(cmd))
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=max(5.0, deadline - time.monotonic()),
                    check=False,
                )
            with contextlib.suppress(BrokerError):
                wait_for(
                    self.is_running,
                    timeout=min(20.0, max(1.0, deadline - time.monotonic())),
                    what="system broker",
                    interval=0.5,
                )
                return
            if time.monotonic() >= deadline:
                break
        # The last resort: run the server in the background ourselves.
        attempts.append("rabbitmq-server (background)")
        log = Path(tempfile.gettempdir()) / "amqprouter-system-rabbitmq.log"
        with log.open("ab") as out:
            # Keep a reference: a collected, still-running Popen warns (and
            # warnings are errors in this test suite).
            proc = subprocess.Popen(
                ["/usr/sbin/rabbitmq-server"]
                if Path("/usr/sbin/rabbitmq-server").exists()
                else [_rabbit_tool("rabbitmq-server")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _background_procs.append(proc)
        try:
            wait_for(
                self.is_running,
                timeout=max(10.0, deadline - time.monotonic()),
                what="system broker",
                interval=0.5,
            )
        except BrokerError as exc:
            raise BrokerError(
                f"the machine's RabbitMQ does not answer AMQP on {self.host}:{self.port} "
                f"and could not be started (tried: {'; '.join(attempts)}). "
                f"See /var/log/rabbitmq/ and {log}."
            ) from exc

    @staticmethod
    def _start_commands() -> list[list[str]]:
        cmds: list[list[str]] = []
        if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
            cmds.append(["systemctl", "start", "rabbitmq-server"])
        if (
            shutil.which("service", path=_SYSTEM_PATH)
            and Path("/etc/init.d/rabbitmq-server").exists()
        ):
            cmds.append(["service", "rabbitmq-server", "start"])
        return cmds


# --------------------------------------------------------------------------- #
# private nodes
# --------------------------------------------------------------------------- #

_live_nodes: set[RabbitNode] = set()
_live_lock = threading.Lock()


@attrs.frozen
class NodeTls:
    """A TLS listener for a private node: RabbitMQ's ``listeners.ssl.default`` and
    ``ssl_options.*`` (PEM files; copied into the node's directory at start so the
    broker's user can read them)."""

    cacertfile: Path
    certfile: Path
    keyfile: Path
    verify: bool = False  # ssl_options.verify = verify_peer (else verify_none)
    fail_if_no_peer_cert: bool = False
    port: int = attrs.field(factory=free_port)

    def config(self, host: str, directory: Path) -> str:
        """The rabbitmq.conf lines; copies the files into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        names = {"cacertfile": self.cacertfile, "certfile": self.certfile, "keyfile": self.keyfile}
        lines = [f"listeners.ssl.default = {host}:{self.port}\n"]
        for option, source in names.items():
            target = directory / f"{option}.pem"
            shutil.copyfile(source, target)
            lines.append(f"ssl_options.{option} = {target}\n")
        lines.append(f"ssl_options.verify = {'verify_peer' if self.verify else 'verify_none'}\n")
        lines.append(
            f"ssl_options.fail_if_no_peer_cert = {str(self.fail_if_no_peer_cert).lower()}\n"
        )
        return "".join(lines)


@attrs.define(eq=False)
class RabbitNode(_CtlBroker):
    """A private RabbitMQ node owned by the test run.

    Create with :meth:`RabbitNodeFactory.create` (or the ``rabbit_node``
    fixtures) rather than directly.  ``port`` stays fixed for the node's
    lifetime, across :meth:`kill`/:meth:`restart`; ``dist_port`` too, unless
    another process took it while the node was down.
    """

    name: str  # Erlang node name, "amqprt-<pid>-<n>@localhost"
    data_dir: Path
    port: int = attrs.field(factory=free_port)  # AMQP port
    dist_port: int = attrs.field(factory=free_port)  # Erlang distribution port
    host: str = HOST
    #: A TLS listener besides the plain one (RabbitNodeFactory.create_tls).
    tls: NodeTls | None = None
    #: More rabbitmq.conf lines ("proxy_protocol = true\n"): RabbitNodeFactory.create_configured.
    extra_config: str = ""
    _proc: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False, repr=False)
    _run_as_cache: _RunAs | None = attrs.field(default=None, init=False, repr=False)

    # -- paths ------------------------------------------------------------

    @property
    def short_name(self) -> str:
        return self.name.partition("@")[0]

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log" / f"{self.name}.log"

    @property
    def console_log(self) -> Path:
        return self.data_dir / "console.log"

    @property
    def pid(self) -> int | None:
        """OS pid of the ``rabbitmq-server`` wrapper script (parent of beam.smp)."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the node's OS process is alive (not necessarily booted)."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return (
            f"--- {self.console_log} ---\n{_tail(self.console_log, lines)}\n"
            f"--- {self.log_file} ---\n{_tail(self.log_file, lines)}"
        )

    # -- rabbitmqctl plumbing ---------------------------------------------

    def _run_as(self) -> _RunAs:
        if self._run_as_cache is None:
            self._run_as_cache = _RunAs.detect()
        return self._run_as_cache

    def _env(self) -> dict[str, str]:
        d = self.data_dir
        env = self._run_as().base_env()
        env.update(
            {
                "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_IP_ADDRESS": self.host,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                # Keep the machine's /etc/rabbitmq files out of the way.
                "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                "RABBITMQ_CONFIG_FILES": str(d / "conf.d"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
                "RABBITMQ_FEATURE_FLAGS_FILE": str(d / "feature_flags"),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_PID_FILE": str(d / "pid"),
            }
        )
        return env

    def _ctl_env(self) -> dict[str, str]:
        return self._env()

    def _ctl_node_args(self) -> list[str]:
        return ["-n", self.name]

    def _write_config(self) -> None:
        d = self.data_dir
        for sub in ("conf.d", "log", "mnesia", "plugins-expand"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq-env.conf").write_text("# private test node: see tests/brokers.py\n")
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {self.host}:{self.port}\n"
            "log.console = false\n"
            "log.file.level = info\n"
            # Do not block publishers on a nearly full CI disk.
            "disk_free_limit.absolute = 1MB\n"
            + ("" if self.tls is None else self.tls.config(self.host, d / "tls"))
            + self.extra_config
        )
        (d / "enabled_plugins").write_text("[].\n")
        self._run_as().chown(d)

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Boot the node; return once AMQP accepts connections and the node is booted.

        Raises :class:`BrokerError` with the tail of the node's logs if it
        exits or is not up within *timeout* seconds (the node is killed then).
        """
        if self.is_running():
            raise BrokerError(f"{self.name} is already running (pid {self.pid})")
        deadline = time.monotonic() + timeout
        # After a kill/stop the old OS process may still be unregistering.
        wait_for(
            lambda: not _epmd_has_name(self.short_name) and not port_is_open(self.port),
            timeout=min(15.0, timeout),
            what=f"{self.name}'s epmd name and port {self.port} to be released",
        )
        if not _can_bind(self.dist_port, self.host):
            # Another process took the distribution port while the node was down (the
            # node would exit at boot with dist_port_already_used): nothing outside the
            # node knows that port, so a restart may take another.
            self.dist_port = free_port()
        self._write_config()
        with _live_lock:
            _live_nodes.add(self)
        with self.console_log.open("ab") as console:
            self._proc = subprocess.Popen(
                [_rabbit_tool("rabbitmq-server")],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group; Ctrl-C does not reach it
                close_fds=True,
                **self._run_as().popen_kwargs(),
            )
        try:
            wait_for(
                lambda: self._exited() or port_is_open(self.port, self.host),
                timeout=max(0.0, deadline - time.monotonic()),
                what=f"{self.name} to listen on {self.host}:{self.port}",
            )
            if self._exited():
                raise BrokerError(f"exited with code {self._proc.returncode} during boot")
            remaining = max(1.0, deadline - time.monotonic())
            self.ctl(
                "await_startup",
                "--timeout",
                str(int(remaining)),
                timeout=remaining + 10.0,
            )
        except BrokerError as exc:
            self.kill()
            raise BrokerError(
                f"RabbitMQ node {self.name} (port {self.port}) failed to start: {exc}\n"
                f"{self.log_tail()}"
            ) from exc

    def _exited(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def _process_tree(self) -> list[Any]:
        """psutil.Process objects of the wrapper script, beam.smp and their children."""
        procs: list[Any] = []
        roots: list[int] = []
        if self._proc is not None:
            roots.append(self._proc.pid)
        with contextlib.suppress(OSError, ValueError):
            roots.append(int((self.data_dir / "pid").read_text().strip()))
        seen: set[int] = set()
        for pid in roots:
            try:
                root = psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in family:
                if p.pid in seen:
                    continue
                seen.add(p.pid)
                with contextlib.suppress(psutil.Error):
                    if p.name() == "epmd":  # shared with every node on the machine
                        continue
                procs.append(p)
        return procs

    def kill(self, timeout: float = 15.0) -> None:
        """SIGKILL the node's whole process tree; return once its AMQP port is closed.

        Clients see their TCP connections reset/closed.  No-op if not running.
        Like a real crash, this loses whatever RabbitMQ had not flushed yet:
        e.g. a durable queue declared just before the kill may be gone after
        :meth:`restart` (seen under load).  For durability checks use
        :meth:`stop` / ``restart()``, which shut down cleanly.
        """
        procs = self._process_tree()
        wrapper = self._proc.pid if self._proc is not None else None
        # beam.smp and its helpers first; the wrapper script then exits by
        # itself (and reaps beam, instead of leaving a zombie for PID 1).
        for p in procs:
            if p.pid != wrapper:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGKILL)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap(procs, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM -> rabbit stops cleanly); kill() if it takes too long."""
        if self._exited():
            self._reap(self._process_tree(), timeout)
            return
        procs = self._process_tree()
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)  # the wrapper script forwards it to beam
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._reap(procs, timeout)

    def _reap(self, procs: Sequence[Any], timeout: float) -> None:
        # A killed beam.smp is reparented to PID 1 (its wrapper script died
        # too), which may be slow to reap it: count zombies as gone.
        def dead(p: Any) -> bool:
            try:
                return bool(p.status() == psutil.STATUS_ZOMBIE)
            except psutil.NoSuchProcess:
                return True
            except psutil.Error:
                return False

        deadline = time.monotonic() + timeout
        alive = [p for p in procs if not dead(p)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = [p for p in alive if not dead(p)]
        if self._proc is not None:
            try:
                self._proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired as exc:
                raise BrokerError(f"{self.name}: pid {self._proc.pid} did not exit") from exc
        if alive:
            raise BrokerError(f"{self.name}: processes did not exit: {[p.pid for p in alive]}")
        wait_for(
            lambda: not port_is_open(self.port, self.host, timeout=0.2),
            timeout=timeout,
            what=f"{self.name}'s port {self.port} to close",
        )
        with contextlib.suppress(OSError):
            (self.data_dir / "pid").unlink()
        with _live_lock:
            _live_nodes.discard(self)

    def restart(self, timeout: float = START_TIMEOUT, graceful: bool = True) -> None:
        """(Stop or kill if running, then) start again on the same ports and data dir."""
        if self.is_running():
            if graceful:
                self.stop()
            else:
                self.kill()
        self.start(timeout=timeout)

    def destroy(self) -> None:
        """Kill the node and remove its data directory (unless AMQPROUTER_KEEP_BROKER_DATA)."""
        try:
            self.kill()
        finally:
            if not os.environ.get(_KEEP_ENV):
                shutil.rmtree(self.data_dir, ignore_errors=True)


def _data_root_usable(root: Path, run_as: _RunAs) -> bool:
    """Can the broker user reach directories under *root*? (All ancestors searchable.)"""
    if run_as.user is None:
        return True
    p = root if root.exists() else root.parent
    for ancestor in (p, *p.parents):
        try:
            st = ancestor.stat()
        except OSError:
            return False
        if not (st.st_mode & 0o001 or (st.st_uid == run_as.uid and st.st_mode & 0o100)):
            return False
    return True


def reap_stale_nodes(root: Path) -> None:
    """Kill and delete private nodes left behind under *root* by dead test runs."""
    if not root.is_dir():
        return
    for d in root.iterdir():
        m = _NODE_DIR_RE.match(d.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        owner = int(m.group(1))
        if psutil.pid_exists(owner):
            with contextlib.suppress(psutil.Error):
                if "python" in psutil.Process(owner).name().lower() or "pytest" in " ".join(
                    psutil.Process(owner).cmdline()
                ):
                    continue  # a concurrent test run owns it
        for p in psutil.process_iter(["name", "environ"]):
            with contextlib.suppress(psutil.Error, TypeError):
                env = p.info["environ"] or {}
                if env.get("RABBITMQ_MNESIA_BASE") == str(d / "mnesia"):
                    p.kill()
        shutil.rmtree(d, ignore_errors=True)


_data_root_lock = threading.Lock()
_data_root: Path | None = None
_tmp_data_root: Path | None = None


def broker_data_root() -> Path:
    """Where private nodes keep their data: ``<repo>/.test-brokers`` (gitignored).

    Falls back to a fresh temp dir if the ``rabbitmq`` user cannot reach the
    repo (e.g. a checkout under /root).  The first call also reaps nodes left
    behind there by dead test runs.
    """
    global _data_root, _tmp_data_root
    with _data_root_lock:
        if _data_root is None:
            if _data_root_usable(DEFAULT_DATA_ROOT, _RunAs.detect()):
                root = DEFAULT_DATA_ROOT
                root.mkdir(parents=True, exist_ok=True)
            else:
                root = _tmp_data_root = Path(tempfile.mkdtemp(prefix="amqprouter-test-brokers-"))
                root.chmod(0o755)
            reap_stale_nodes(root)
            _data_root = root
        return _data_root


@attrs.define(eq=False)
class RabbitNodeFactory:
    """Creates private nodes and tears all of them down on :meth:`close`.

    Use as a context manager, or through the ``rabbit_node_factory`` /
    ``session_rabbit_node_factory`` fixtures.  ``factory()`` is
    ``factory.create()``.
    """

    data_root: Path | None = None  # default: broker_data_root()
    nodes: list[RabbitNode] = attrs.field(factory=list)

    def create(self, start: bool = True, timeout: float = START_TIMEOUT) -> RabbitNode:
        """A new private node (booted unless start=False)."""
        short = f"{_NODE_PREFIX}-{os.getpid()}-{next(_name_counter)}"
        root = self.data_root or broker_data_root()
        node = RabbitNode(name=f"{short}@localhost", data_dir=root / short)
        self.nodes.append(node)
        if start:
            node.start(timeout=timeout)
        return node

    __call__ = create

    def create_tls(self, tls: NodeTls, timeout: float = START_TIMEOUT) -> RabbitNode:
        """A new private node that also serves AMQP over TLS on ``tls.port``."""
        node = self.create(start=False)
        node.tls = tls
        node.start(timeout=timeout)
        wait_for(
            lambda: port_is_open(tls.port, node.host),
            timeout=timeout,
            what=f"{node.name} to listen for TLS on {node.host}:{tls.port}",
        )
        return node

    def create_configured(self, extra_config: str, timeout: float = START_TIMEOUT) -> RabbitNode:
        """A new private node with ``extra_config`` appended to its rabbitmq.conf."""
        node = self.create(start=False)
        node.extra_config = extra_config
        node.start(timeout=timeout)
        return node

    def close(self) -> None:
        """Kill every node created here and delete their data (errors collected, raised last)."""
        errors: list[str] = []
        while self.nodes:
            node = self.nodes.pop()
            try:
                node.destroy()
            except Exception as exc:  # keep tearing down the others
                errors.append(f"{node.name}: {exc}")
        if errors:
            raise BrokerError("teardown of private RabbitMQ nodes failed:\n" + "\n".join(errors))

    def __enter__(self) -> RabbitNodeFactory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def private_node(timeout: float = START_TIMEOUT) -> Iterator[RabbitNode]:
    """``with private_node() as node:`` -- one node, destroyed on exit."""
    with RabbitNodeFactory() as factory:
        yield factory.create(timeout=timeout)


@atexit.register
def _kill_leftover_nodes() -> None:
    with _live_lock:
        leftovers = list(_live_nodes)
    for node in leftovers:
        with contextlib.suppress(Exception):
            node.kill(timeout=5.0)
    if _tmp_data_root is not None and not os.environ.get(_KEEP_ENV):
        shutil.rmtree(_tmp_data_root, ignore_errors=True)
