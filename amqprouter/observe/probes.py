"""The HTTP probes: /livez (the process serves), /readyz and /healthz (it can route).

**Liveness** is about the event loop. Everything the router does, the HTTP server
included, runs on one trio loop, so a loop stuck in a blocking call answers nothing at
all: the probe's own timeout sees that. ``LoopHeartbeat`` covers the moment after a
stall, when the loop runs again but was stuck for seconds: its task stamps the time
every ``BEAT`` seconds, and /livez answers 503 when the last stamp is older than
``STALE``. A broker outage never makes the router "not live" (restarting it would not
bring the broker back), so a Kubernetes liveness probe belongs on /livez.

**Readiness** (``prometheus.ready_reason``) is about serving clients: a listener open and
at least one enabled backend up. /healthz is the same check, under the name it has
always had.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

#: The heartbeat's period.
BEAT: Final = 0.5
#: /livez fails once the heartbeat is this old: ten missed beats. One collection over
#: 5,000 sessions takes about 7 ms and a full GC pass well under a second, so only a
#: loop that is really stuck (a blocking call, a busy loop) gets this far.
STALE: Final = 5.0


class LoopHeartbeat:
    """The time of the last beat of a task on the event loop (``clock``: trio's)."""

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self.stamp = clock()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat every ``BEAT`` seconds until cancelled."""
        task_status.started()
        while True:
            self.stamp = self._clock()
            await trio.sleep(BEAT)

    def stalled(self) -> str | None:
        """Why the process is not live (the loop went without a beat too long), or None."""
        age = self._clock() - self.stamp
        if age > STALE:
            return f"event loop stalled: no heartbeat for {age:.1f}s"
        return None
