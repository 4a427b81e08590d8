"""One worker process of ``--workers N``, as the supervisor holds it."""

from __future__ import annotations

from typing import Final

import attrs
import trio

from amqprouter.fleet.role import WorkerRole

#: The supervisor's exit code when its workers cannot be started.
EXIT_WORKERS_FAILED: Final = 9


class WorkerStartFailed(Exception):
    """A worker exited, or did not become ready, during its start; ``code`` its exit."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@attrs.define(eq=False)
class Worker:
    role: WorkerRole
    slot: int
    process: trio.Process
    started: float
    http_port: int = 0
    ready: bool = False
    #: Stopping accepting and draining: it is no longer asked anything.
    retiring: bool = False

    @property
    def serial(self) -> int:
        return self.role.serial

    def rss_bytes(self) -> int | None:
        """The worker's resident set size now, from /proc; None when it cannot be read."""
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None
