"""The router as users run it: ``python -m amqprouter ...`` in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from tests.brokers import free_port, port_is_open

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parent.parent


@attrs.define
class RouterProcess:
    """A running amqprouter; ``stop()`` sends SIGTERM and returns its exit code."""

    port: int
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
                raise AssertionError(
                    f"router ignored signal {sig}; killed.\n{self.stderr}"
                ) from None
        return self.process.returncode


def router_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "amqprouter", *args]


def spawn(args: Sequence[str], stdout_path: Path, stderr_path: Path) -> subprocess.Popen[bytes]:
    """``amqprouter *args`` started from the checkout, its outputs written to the files."""
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        return subprocess.Popen(
            router_command(*args),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def launch(port: int, args: Sequence[str], workdir: Path) -> RouterProcess:
    """``amqprouter *args`` started (not yet listening), its outputs in ``workdir``."""
    stdout_path, stderr_path = workdir / "stdout", workdir / "stderr"
    return RouterProcess(port, spawn(args, stdout_path, stderr_path), stdout_path, stderr_path)


def start_router(
    broker_port: int,
    *,
    broker_host: str = "127.0.0.1",
    extra: Sequence[str] = (),
    verbosity: int = 3,
) -> RouterProcess:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-test-"))
    args = [
        "--listen-port",
        str(port),
        "--destination-dns",
        broker_host,
        "--destination-port",
        str(broker_port),
        "--control-socket",
        str(workdir / "control"),
        "-v",
        str(verbosity),
        # Log files beside the other outputs, not in the repository (extra may override).
        "--log-directory",
        str(workdir / "logs"),
        *extra,
    ]
    router = launch(port, args, workdir)
    deadline = time.monotonic() + START_TIMEOUT
    while not port_is_open(port):
        if router.process.poll() is not None or time.monotonic() > deadline:
            router.stop(signal.SIGKILL)
            raise AssertionError(
                f"router did not start listening on {port}:\n{router.stdout}\n{router.stderr}"
            )
        time.sleep(0.05)
    return router


@contextmanager
def running_router(broker_port: int, **kwargs: object) -> Iterator[RouterProcess]:
    router = start_router(broker_port, **kwargs)  # type: ignore[arg-type]
    try:
        yield router
    finally:
        router.stop()
        # Its output files and control socket directory go with it.
        shutil.rmtree(router.stdout_path.parent, ignore_errors=True)
