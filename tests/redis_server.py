"""A private ``redis-server`` (Debian's package) for the tests of ``--config-store``.

Started on a free port without persistence (``--save '' --appendonly no``), so a stop
and a start give an empty store, as a Redis restarted without persistence does.
``start_cluster``: three of them made one Redis Cluster (no replicas), on loopback.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import attrs

from tests.brokers import free_port, port_is_open

START_TIMEOUT = 10.0


@attrs.define
class RedisServer:
    port: int
    process: subprocess.Popen[bytes] | None = None
    #: More redis-server flags, and its working directory (a cluster node's nodes.conf).
    flags: tuple[str, ...] = ()
    directory: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: scripts/setup.sh installs it"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                *self.flags,
            ],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_is_open(self.port):
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(START_TIMEOUT)
        self.process = None

    def cli(self, *words: str) -> str:
        binary = shutil.which("redis-cli")
        assert binary
        return subprocess.run(
            [binary, "-p", str(self.port), *words],
            capture_output=True,
            text=True,
            check=True,
            timeout=START_TIMEOUT,
        ).stdout


def start_redis() -> RedisServer:
    server = RedisServer(free_port())
    server.start()
    return server


def start_cluster(nodes: int = 3) -> list[RedisServer]:
    """``nodes`` redis-servers made one Redis Cluster, every slot covered; stop each."""
    directory = Path(tempfile.mkdtemp(prefix="amqprouter-cluster-"))
    servers = []
    for _ in range(nodes):
        server = RedisServer(free_port(), flags=("--cluster-enabled", "yes"))
        server.directory = directory / str(server.port)
        server.directory.mkdir()
        server.start()
        servers.append(server)
    addresses = [f"127.0.0.1:{server.port}" for server in servers]
    servers[0].cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
    deadline = time.monotonic() + START_TIMEOUT
    while any("cluster_state:ok" not in server.cli("CLUSTER", "INFO") for server in servers):
        assert time.monotonic() < deadline, "the cluster did not form"
        time.sleep(0.1)
    return servers
