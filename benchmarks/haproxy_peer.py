"""HAProxy as the benchmark's peer: what a user would run instead of amqprouter.

bench.py runs every workload direct, through HAProxy and through the router in one
interleaved run, so the router is judged against a real proxy on the same machine in the
same minutes rather than against an ideal. HAProxy runs in TCP mode (it forwards bytes and
knows nothing of AMQP), as its own foreground process with a config generated here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

#: sbin directories are often missing from a non-root PATH; Debian installs haproxy there.
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: HAProxy counts one client connection once; its file limit is about 2 per connection plus
#: some. Debian's 2.6 refuses to start when it cannot raise its file limit far enough, and
#: here it may not go past 20000 (DESIGN.md), so stay well below.
MAXCONN = 4000
START_TIMEOUT = 15.0


class PeerError(Exception):
    """HAProxy is missing, its config is refused, or it did not start."""


def find_haproxy() -> str | None:
    """Path of the haproxy binary, also looking in sbin directories."""
    path = os.pathsep.join(filter(None, [os.environ.get("PATH"), SEARCH_PATH]))
    return shutil.which("haproxy", path=path)


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def haproxy_version(binary: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "haproxy (version unknown)"
    return "haproxy (version unknown)"


@dataclass(frozen=True)
class Route:
    """One `listen` section: HAProxy accepts on `port` and forwards to host:target."""

    name: str
    port: int
    target: int
    host: str = "127.0.0.1"


def render_config(routes: list[Route]) -> str:
    """TCP mode, one `listen` per route with one `server`. Timeouts are long so idle benchmark
    connections are never cut; no health checks (one server, nothing to choose)."""
    lines = [
        "global",
        f"    maxconn {MAXCONN}",
        "defaults",
        "    mode tcp",
        "    timeout connect 10s",
        "    timeout client 1h",
        "    timeout server 1h",
    ]
    for r in routes:
        lines += [
            f"listen {r.name}",
            f"    bind {r.host}:{r.port}",
            f"    server {r.name}_server {r.host}:{r.target}",
        ]
    return "\n".join(lines) + "\n"


class HAProxy:
    """HAProxy as a subprocess: started ready (every port accepts), always stopped."""

    def __init__(self, binary: str, routes: list[Route]) -> None:
        self.binary = binary
        self.routes = routes
        self.tmp = tempfile.TemporaryDirectory(prefix="amqprouter-bench-haproxy-")
        self.config = Path(self.tmp.name) / "haproxy.cfg"
        self.log_path = Path(self.tmp.name) / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: Any = None

    def __enter__(self) -> HAProxy:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def port(self, name: str) -> int:
        return next(r.port for r in self.routes if r.name == name)

    def start(self) -> None:
        self.config.write_text(render_config(self.routes))
        check = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check.returncode != 0:
            raise PeerError(f"haproxy refused its config:\n{check.stdout}{check.stderr}")
        # -db: stay in the foreground, one process, so its pid is the one we stop and watch.
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)],
                cwd=self.tmp.name,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        for r in self.routes:
            while not port_accepts(r.port):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise PeerError(
                        f"haproxy not accepting on :{r.port} after "
                        f"{START_TIMEOUT:.0f}s\n{self.log()}"
                    )
                time.sleep(0.05)

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no haproxy output)"
        return "--- haproxy output ---\n" + text[-4000:] + "\n--- end of haproxy output ---"

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerError(f"haproxy exited with code {self.proc.returncode}\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # hard stop: closes every connection now
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.tmp.cleanup()
