"""``--config-store redis://host:port/db``: one configuration for every router, in Redis.

The keys (``<prefix>`` is ``--config-prefix``, default ``amqprouter``; docs/fleet.md):

* ``<prefix>:config``, a hash: ``version`` (a counter, 1 and up), ``text`` (the whole
  configuration as CONFIG PRINT writes it: control commands, one a line), ``writer``
  (who wrote that version: ``host:pid``).
* ``<prefix>:changes``, a pub/sub channel: each new version's number, published in the
  same transaction that writes it.

A router applies the stored text whenever its version differs from the one it last
applied (a message on the channel, or the full read every ``REPAIR_INTERVAL`` that
repairs a missed message), always whole: ``snapshot.apply_snapshot`` applies the
difference with the reload's machinery, the routing in one table swap.

A configuration command on any router: the router catches up with the store, applies
the command locally (which validates it), and writes its new CONFIG PRINT as version+1
with WATCH/MULTI on the hash. Another router that wrote first makes the transaction
fail: the local change is replaced by the store's newer text and the command answers
that it was not applied. Redis unreachable: the command is refused (never a silent
local-only change), and the router keeps serving with the configuration it has, says so
in the log and in /readyz's body, and reconnects with back-off; on return it catches
up. A store found empty (Redis restarted without persistence, a FLUSHALL) is re-seeded
with this router's configuration at its version + 1; when several routers race, the
first transaction wins (WATCH on the key) and the others apply that copy.

Runtime state (sessions, pauses, backend health, statistics) never goes to the store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import coredis
import coredis.exceptions
import structlog
import trio
from coredis.connection import TCPLocation

from amqprouter.control import commands as c
from amqprouter.control.grammar import ParseError, parse
from amqprouter.control.socket_server import Reply
from amqprouter.fleet.snapshot import SnapshotError, SnapshotTarget, apply_snapshot
from amqprouter.fleet.store_address import StoreAddress, parse_store_address
from amqprouter.observe.stats import StoreState

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.fleet")

#: The full read that repairs a missed message (and notices an emptied store).
REPAIR_INTERVAL: Final = 1.0
#: One exchange with Redis; longer counts as Redis unreachable.
OPERATION_TIMEOUT: Final = 3.0
FIRST_RETRY: Final = 0.5
MAX_RETRY: Final = 10.0
DEFAULT_PREFIX: Final = "amqprouter"

#: Errors that mean "Redis is not there right now" (anything else is a bug: raised).
_UNREACHABLE = (
    coredis.exceptions.RedisError,
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class Controller(SnapshotTarget, Protocol):
    """What the store needs of the controller."""

    async def handle(self, line: str, *, as_json: bool = False) -> Reply: ...

    def exclusive(self) -> trio.Lock: ...


class ConfigStore:
    """This router's side of the shared configuration."""

    def __init__(
        self,
        url: str,
        controller: Controller,
        *,
        prefix: str = DEFAULT_PREFIX,
        connect: Callable[[str], Any] | None = None,
    ) -> None:
        self.url = url
        self.controller = controller
        self.key = f"{prefix}:config"
        self.channel = f"{prefix}:changes"
        self.writer = f"{socket.gethostname()}:{os.getpid()}"
        #: The stored version this router's configuration is; 0 before the first.
        self.version = 0
        #: Why Redis cannot be used now (None: connected and in step).
        self.problem: str | None = "not connected yet"
        #: trio.current_time() of the last successful read of the store (STAT).
        self.last_read: float | None = None
        self._client: coredis.Redis[str] | None = None
        self._connect = connect or (lambda url: open_client(parse_store_address(url)))
        # Commands and syncs one at a time: each reads the version it writes after.
        self._lock = trio.Lock()

    def status(self) -> str | None:
        """None while in step with the store; else what the operator should know."""
        if self.problem is None:
            return None
        return (
            f"configuration store {self.url} unreachable ({self.problem}): serving the "
            f"last configuration (version {self.version}); configuration commands are refused"
        )

    def state(self) -> StoreState:
        """The store's state for STAT: up, the version applied, seconds since a read."""
        since = None if self.last_read is None else trio.current_time() - self.last_read
        return StoreState(up=self.problem is None, version=self.version, since_read=since)

    def metrics(self) -> str:
        """Prometheus families of the store's state, for /metrics."""
        return (
            "# HELP amqprouter_config_store_up 1 while the configuration store is "
            "reachable and this router in step with it.\n"
            "# TYPE amqprouter_config_store_up gauge\n"
            f"amqprouter_config_store_up {int(self.problem is None)}\n"
            "# HELP amqprouter_config_store_version The stored configuration version this "
            "router applied last.\n"
            "# TYPE amqprouter_config_store_version gauge\n"
            f"amqprouter_config_store_version {self.version}\n"
        )

    # -- the connection ---------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, stay in step, reconnect with back-off, until cancelled.

        ``task_status.started()`` once the first attempt has ended either way: a router
        whose store is down still starts, with its own configuration.
        """
        delay = FIRST_RETRY
        started = False

        def now_started() -> None:
            nonlocal started, delay
            delay = FIRST_RETRY  # connected: the next outage starts its back-off afresh
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                async with self._connect(self.url) as client:
                    await self._session(client, now_started)
                # The subscription ended without an error: Redis closed it. Again.
                self._client = None
                self.problem = "the subscription was closed"
            except* _UNREACHABLE as group:
                self._client = None
                reason = _reason(group)
                if self.problem is None or not started:
                    log.warning(
                        "configuration store unreachable; serving the last configuration",
                        store=self.url,
                        error=reason,
                        version=self.version,
                    )
                else:
                    delay = min(delay * 2, MAX_RETRY)
                self.problem = reason
            now_started()
            await trio.sleep(delay)

    async def _session(self, client: Any, now_started: Callable[[], None]) -> None:
        with trio.fail_after(OPERATION_TIMEOUT):
            await self.sync(client)
        if self.problem is not None:
            log.info("configuration store connected", store=self.url, version=self.version)
        self.problem = None
        self._client = client
        now_started()
        async with client.pubsub(channels=[self.channel]) as messages, trio.open_nursery() as n:

            async def repair() -> None:
                while True:
                    await trio.sleep(REPAIR_INTERVAL)
                    with trio.fail_after(OPERATION_TIMEOUT):
                        await self.sync(client)

            n.start_soon(repair)
            async for message in messages:
                if message.get("type") == "message":
                    with trio.fail_after(OPERATION_TIMEOUT):
                        await self.sync(client)

    # -- reading and writing ------------------------------------------------------------

    async def _read(self, client: Any) -> tuple[int, str] | None:
        stored = await client.hgetall(self.key)
        self.last_read = trio.current_time()
        if not stored or "version" not in stored or "text" not in stored:
            return None
        return int(stored["version"]), str(stored["text"])

    async def sync(self, client: Any) -> None:
        """Apply the stored configuration if it is another version; seed an empty store."""
        async with self._lock:
            await self._sync_locked(client)

    async def _sync_locked(self, client: Any) -> None:
        stored = await self._read(client)
        if stored is None:
            await self._seed(client)
            return
        version, text = stored
        if version == self.version:
            return
        async with self.controller.exclusive():
            try:
                changes = await apply_snapshot(self.controller, text, source=self.key)
            except SnapshotError as exc:
                # Taken as applied anyway: trying it again every second changes nothing.
                log.error("stored configuration cannot be applied", version=version, error=str(exc))
                changes = ()
        log.info(
            "configuration applied from the store",
            version=version,
            changes="; ".join(changes) or "none",
        )
        self.version = version

    async def _seed(self, client: Any) -> None:
        """Write this router's configuration into an empty store (first writer wins)."""
        text = self.controller.config_text()
        try:
            await self._write(client, text, expected=None)
        except coredis.exceptions.WatchError:
            return  # another router seeded it first: the next sync applies its copy
        log.warning(
            "configuration store was empty; seeded it with this router's configuration",
            version=self.version,
        )

    async def _write(self, client: Any, text: str, *, expected: int | None) -> None:
        """Write ``text`` as the next version if the store still holds ``expected``
        (None: nothing). Raises WatchError when another writer came first."""
        async with client.pipeline(transaction=True) as pipe, pipe.watch(self.key):
            stored = await self._read(client)
            if (None if stored is None else stored[0]) != expected:
                raise coredis.exceptions.WatchError("the stored version changed")
            version = max(self.version, expected or 0) + 1
            pipe.hset(self.key, {"version": str(version), "text": text, "writer": self.writer})
            pipe.publish(self.channel, str(version))
        self.version = version

    # -- control commands ---------------------------------------------------------------------

    async def handle(self, line: str, *, as_json: bool = False) -> Reply:
        """The control socket's handler: a configuration command goes through the store."""
        command = parse(line)
        if isinstance(command, ParseError) or not isinstance(
            command, (c.MutatingCommand, c.BackendDrain, c.ConfigReload)
        ):
            return await self.controller.handle(line, as_json=as_json)
        async with self._lock:
            client = self._client
            if client is None or self.problem is not None:
                return Reply(f"Not applied: {self.status()}\n", ok=False)
            before: str | None = None
            try:
                with trio.fail_after(OPERATION_TIMEOUT):
                    await self._sync_locked(client)
                before = self.controller.config_text()
                reply = await self.controller.handle(line, as_json=as_json)
                after = self.controller.config_text()
                if after == before:
                    return reply  # failed, or changed nothing stored (a drain's sessions)
                try:
                    with trio.fail_after(OPERATION_TIMEOUT):
                        await self._write(client, after, expected=self.version)
                except coredis.exceptions.WatchError:
                    with trio.fail_after(OPERATION_TIMEOUT):
                        self.version = -1  # whatever is stored now replaces the local change
                        await self._sync_locked(client)
                    return Reply(
                        "Not applied: another router changed the configuration at the same "
                        "time; its change is in force here now. Try again.\n",
                        ok=False,
                    )
            except _UNREACHABLE as exc:
                self.problem = _reason(exc)
                await self._restore(before)
                return Reply(f"Not applied: {self.status()}\n", ok=False)
            return reply

    async def _restore(self, text: str | None) -> None:
        """Put the configuration back as it was before a command Redis did not take."""
        if text is None or text == self.controller.config_text():
            return
        async with self.controller.exclusive():
            try:
                await apply_snapshot(self.controller, text, source="before the command")
            except SnapshotError as exc:
                log.error("could not undo a change the store did not take", error=str(exc))


@asynccontextmanager
async def open_client(address: StoreAddress) -> AsyncIterator[Any]:
    """A client of the store at ``address``, for one connection's lifetime.

    Sentinel: the primary the Sentinels name now (asked again at each reconnect, so a
    failover is followed). Cluster: plain PUBLISH reaches every node's subscribers and
    a transaction on the one ``<prefix>:config`` key stays on its node; the repair read
    every second stays the backstop, as everywhere.
    """
    timeout = OPERATION_TIMEOUT
    if address.kind == "redis":
        async with coredis.Redis.from_url(
            address.url, decode_responses=True, connect_timeout=timeout
        ) as client:
            yield client
        return
    locations = [TCPLocation(host, port) for host, port in address.nodes]
    if address.kind == "sentinel":
        async with coredis.Sentinel(
            locations, decode_responses=True, connect_timeout=timeout
        ) as sentinel:
            primary = sentinel.primary_for(
                address.service,
                db=address.db,
                username=address.username,
                password=address.password,
            )
            async with primary as client:
                yield client
        return
    async with coredis.RedisCluster(
        startup_nodes=locations,
        decode_responses=True,
        connect_timeout=timeout,
        username=address.username,
        password=address.password,
    ) as cluster:
        yield cluster


def _reason(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_reason(e) for e in error.exceptions)
    if isinstance(error, trio.TooSlowError):
        return f"no answer within {OPERATION_TIMEOUT:g} s"
    return str(error) or type(error).__name__
