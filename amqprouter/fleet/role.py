"""What a worker process is told of its place in the fleet (the hidden ``--fleet-worker``).

The supervisor starts every worker with its own command line and environment plus
``--fleet-worker serial:workers:directory``. ``serial`` numbers the workers the
supervisor ever started (a replacement gets a new one), ``workers`` is how many
share the limits, ``directory`` the supervisor's private directory (mode 0700), where
each worker's control socket, its ready file and the configuration snapshot live.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Final

import attrs
import structlog
import trio

from amqprouter.control.config_file import ConfigFileError, read_lines
from amqprouter.observe import logging as router_logging
from amqprouter.server import Server
from amqprouter.session.state import number_sessions_from

log = structlog.get_logger("amqprouter.fleet")

#: A session id's worker: its serial number is the id's bits above these.
SESSION_ID_BITS: Final = 32
#: A retiring worker's sessions still open at its deadline are closed (a 320 each) and
#: given this long to finish their close handshakes before they are cut.
RETIRE_CLOSE_SECONDS: Final = 5.0
#: The file the supervisor keeps the fleet's configuration in (CONFIG PRINT's text),
#: which a worker started after the first ones applies instead of the flags' commands.
SNAPSHOT: Final = "config"


class BadWorkerSpec(ValueError):
    """``--fleet-worker`` is not ``serial:workers:directory``."""


@attrs.frozen
class WorkerRole:
    serial: int
    workers: int
    directory: Path

    @classmethod
    def parse(cls, spec: str) -> WorkerRole:
        serial, workers, directory = [*spec.split(":", 2), "", ""][:3]
        if not (serial.isdigit() and workers.isdigit() and directory):
            raise BadWorkerSpec(f"--fleet-worker must be serial:workers:directory, not {spec!r}")
        return cls(int(serial), max(1, int(workers)), Path(directory))

    def spec(self) -> str:
        return f"{self.serial}:{self.workers}:{self.directory}"

    @property
    def control_socket(self) -> Path:
        """The worker's own control socket, which only the supervisor talks to."""
        return self.directory / f"w{self.serial}.sock"

    @property
    def ready_file(self) -> Path:
        """Written once the worker's start-up commands are applied: its HTTP port."""
        return self.directory / f"w{self.serial}.ready"

    @property
    def snapshot(self) -> Path:
        return self.directory / SNAPSHOT

    @property
    def first_session_id(self) -> int:
        return self.serial << SESSION_ID_BITS


def announce_ready(role: WorkerRole, http_port: int) -> None:
    """Tell the supervisor this worker serves: its ready file, holding its HTTP port,
    written whole (renamed into place) so it is never read half-written."""
    partial = role.ready_file.with_suffix(".new")
    partial.write_text(f"{http_port}\n")
    partial.replace(role.ready_file)


def worker_of_session(session_id: int) -> int:
    """The serial number of the worker that holds session ``session_id``."""
    return session_id >> SESSION_ID_BITS


def become_worker(role: WorkerRole, server: Server) -> None:
    """Make this process ``role``'s worker: its listeners share their ports with its
    siblings', its session ids start at its own range, its aggregate limits are its
    share of the fleet's, and its log lines say which worker wrote them."""
    server.reuse_port = True
    server.limits.share = role.workers
    number_sessions_from(role.first_session_id)
    router_logging.tag_lines(worker=role.serial)


async def watch_supervisor(interval: float = 1.0) -> None:
    """Drain (SIGTERM to ourselves) once the supervisor is gone without stopping us: a
    worker runs in its own session, and nobody else would ever stop it. (Not
    PR_SET_PDEATHSIG: it follows the thread that started us, and trio starts
    processes from worker threads that come and go.)"""
    parent = os.getppid()
    while True:
        await trio.sleep(interval)
        if os.getppid() != parent:
            break
    log.warning("the supervisor is gone; draining")
    os.kill(os.getpid(), signal.SIGTERM)


def startup_lines(role: WorkerRole, setup: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The commands this worker starts with: the fleet's configuration snapshot once
    the supervisor has one (a worker started later joins the fleet as it is now, with
    every change made since start), else the flags' and the ``--config`` file's."""
    try:
        return read_lines(role.snapshot)
    except ConfigFileError:
        return setup


async def retire(server: Server, deadline: float) -> None:
    """A worker replaced by a restart (SIGUSR2): stop accepting at once (the new workers
    listen on the same ports), let the sessions go on and end by themselves for
    ``deadline`` seconds, then close the rest gracefully (320 to each client)."""
    server.stop_listening()
    log.info("retiring: not accepting; sessions continue", sessions=len(server.sessions))
    emptied = trio.Event()

    def ended(_session: object) -> None:
        if not server.sessions:
            emptied.set()

    server.session_ended.append(ended)
    if not server.sessions:
        emptied.set()
    with trio.move_on_after(deadline):
        await emptied.wait()
    await server.drain(RETIRE_CLOSE_SECONDS)
