"""The statistics loop: collect every interval, then feed STAT LISTEN streams and StatsD.

Nothing here waits on a consumer: a STAT LISTEN stream that has not taken the
previous snapshot yet misses this one (its writer is slow or stuck; the control
socket drops it after its write timeout), and a StatsD datagram that cannot be sent
at once is dropped. The collector never stalls behind a listener.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from amqprouter.observe.render import DEFAULT_PREFIX, Output, render, statsd_lines
from amqprouter.observe.session_metrics import SessionMetrics
from amqprouter.observe.stats import StatsCollector, StatsSnapshot, StoreState
from amqprouter.session.pool import PoolFigures

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.stats")

#: Snapshots a STAT LISTEN stream may have waiting; more are dropped, not queued.
LISTENER_BACKLOG: Final = 1


class StatsdPublisher:
    """Sends each interval's StatsD lines, one datagram each, to one UDP endpoint."""

    def __init__(
        self, family: socket.AddressFamily, address: tuple[str, int], target: tuple[str, int]
    ) -> None:
        self.address = address
        #: The host and port as the operator typed them (STAT SEND, CONFIG PRINT).
        self.target = target
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def publish(self, lines: list[str]) -> None:
        send = self._sock.sendto
        address = self.address
        for line in lines:
            # A full buffer or an ICMP port-unreachable from the previous datagram:
            # statistics are best effort and never break anything.
            with contextlib.suppress(OSError):
                send(line.encode(), address)

    def close(self) -> None:
        self._sock.close()


class StatsService:
    """Runs ``collector`` every ``collector.interval`` seconds and hands the snapshot on."""

    def __init__(self, collector: StatsCollector, *, statsd_prefix: str = DEFAULT_PREFIX) -> None:
        self.collector = collector
        self.statsd_prefix = statsd_prefix
        self.publishers: list[StatsdPublisher] = []
        #: Session events counted as they happen (/metrics' alerting figures).
        self.events = SessionMetrics()
        self._listeners: list[trio.MemorySendChannel[StatsSnapshot]] = []
        #: The configuration store's state at each snapshot (``--config-store``; set by
        #: the application, which owns the store: the store lives above this layer).
        self.store_state: Callable[[], StoreState | None] | None = None
        #: Pooling mode's figures at each snapshot (set by the application).
        self.pool_state: Callable[[], PoolFigures | None] | None = None

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Collect and publish until cancelled, on a fixed schedule (no drift)."""
        interval = self.collector.interval
        task_status.started()
        tick = trio.current_time()
        try:
            while True:
                tick += interval
                # After a stall, skip the missed ticks rather than collect in a burst.
                tick = max(tick, trio.current_time())
                await trio.sleep_until(tick)
                self.tick()
        finally:
            self.stop_sending()
            for channel in self._listeners:
                channel.close()

    def tick(self) -> StatsSnapshot:
        """One collection, published to every listener and StatsD endpoint."""
        snapshot = self.collector.collect()
        if self.store_state is not None:
            snapshot = attrs.evolve(snapshot, store=self.store_state())
        if self.pool_state is not None:
            snapshot = attrs.evolve(snapshot, pool=self.pool_state())
        for channel in list(self._listeners):
            try:
                channel.send_nowait(snapshot)
            except trio.WouldBlock:
                pass  # still writing the previous one: this one is skipped
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._listeners.remove(channel)
        if self.publishers:
            lines = statsd_lines(snapshot, self.statsd_prefix)
            for publisher in self.publishers:
                publisher.publish(lines)
        return snapshot

    async def listen(self, output: Output, kind: str, value: str = "") -> AsyncGenerator[str, None]:
        """STAT LISTEN: one rendered chunk per interval, until the consumer closes this."""
        send, receive = trio.open_memory_channel[StatsSnapshot](LISTENER_BACKLOG)
        self._listeners.append(send)
        log.info("begin stat listening", output=output, filter=kind, value=value)
        try:
            async with receive:
                async for snapshot in receive:
                    yield render(snapshot, output, kind, value)
        finally:
            with contextlib.suppress(ValueError):
                self._listeners.remove(send)
            send.close()
            log.info("stopping stat listening", output=output, filter=kind, value=value)

    def send_to(
        self, family: socket.AddressFamily, address: tuple[str, int], target: tuple[str, int]
    ) -> None:
        """STAT SEND ``target``, resolved to ``address``: one more StatsD endpoint (they
        accumulate)."""
        self.publishers.append(StatsdPublisher(family, address, target))

    def stop_sending(self) -> None:
        """STAT STOP SEND: every StatsD publisher stops; listeners go on."""
        for publisher in self.publishers:
            publisher.close()
        self.publishers.clear()
