"""A whole configuration applied to a running controller, and the store's writes
against a private redis-server: a stale writer loses, the first seeder wins."""

from __future__ import annotations

import gc
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import coredis
import coredis.exceptions
import pytest
import trio

from amqprouter.control.controller import Controller
from amqprouter.fleet.config_store import REPAIR_INTERVAL, ConfigStore, open_client
from amqprouter.fleet.snapshot import SnapshotError, apply_snapshot
from amqprouter.fleet.store_address import parse_store_address
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from tests.redis_server import RedisServer, start_cluster, start_redis

BEFORE = [
    "BACKEND ADD b1 dc 127.0.0.1 5672",
    "FARM ADD f1 round-robin b1",
    "MAP FARM v1 f1",
]
AFTER = """\
LOG CONSOLE 0
BACKEND ADD b2 dc 127.0.0.2 5672
FARM ADD f1 round-robin b2
MAP FARM v2 f1
"""


@asynccontextmanager
async def controller_with(lines: list[str]) -> AsyncIterator[Controller]:
    server = Server(SessionSettings())
    controller = Controller(server, request_exit=lambda: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        for line in lines:
            assert (await controller.handle(line)).ok, line
        yield controller
        nursery.cancel_scope.cancel()


async def test_a_snapshot_replaces_the_whole_configuration() -> None:
    async with controller_with(BEFORE) as controller:
        async with controller.exclusive():
            changes = await apply_snapshot(controller, AFTER, source="test")
        # What the text does not name is gone; what it names is as it says.
        assert sorted(controller.config_text().splitlines()) == sorted(AFTER.splitlines())
        assert changes


async def test_a_snapshot_that_cannot_apply_leaves_the_routing_as_it_was() -> None:
    async with controller_with(BEFORE) as controller:
        before = controller.config_text()
        for bad in ("FARM ADD f9 round-robin nosuch\n", "EXIT\n", "NOT A COMMAND\n"):
            with pytest.raises(SnapshotError):
                async with controller.exclusive():
                    await apply_snapshot(controller, before + bad, source="test")
            assert controller.config_text() == before


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


async def test_a_stale_writer_loses_and_the_first_seeder_wins(redis: RedisServer) -> None:
    async with (
        controller_with(BEFORE) as first,
        controller_with(BEFORE[:1]) as second,
        coredis.Redis.from_url(redis.url, decode_responses=True) as client,
    ):
        one, two = ConfigStore(redis.url, first), ConfigStore(redis.url, second)
        await one.sync(client)  # an empty store: seeded with the first one's
        assert await client.hget("amqprouter:config", "version") == "1"
        await two.sync(client)  # then taken by the second
        assert second.config_text() == first.config_text()
        # A writer that believes version 0 is current loses against version 1.
        with pytest.raises(coredis.exceptions.WatchError):
            await two._write(client, "LOG CONSOLE 0\n", expected=0)
        assert await client.hget("amqprouter:config", "version") == "1"
        await one._write(client, first.config_text(), expected=1)
        assert await client.hget("amqprouter:config", "version") == "2"


@pytest.fixture
def cluster() -> Iterator[list[RedisServer]]:
    servers = start_cluster()
    yield servers
    # coredis 6.9's cluster layout never closes its error channel (an anyio memory
    # stream): collected here, inside the test, so the filter below can name it.
    gc.collect()
    for server in servers:
        server.stop()
    assert servers[0].directory is not None
    shutil.rmtree(servers[0].directory.parent, ignore_errors=True)


@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function MemoryObject:pytest.PytestUnraisableExceptionWarning"
)
async def test_two_routers_share_a_configuration_through_a_redis_cluster(
    cluster: list[RedisServer],
) -> None:
    """redis+cluster://: the seed, a change through one router reaching the other by the
    channel (before the repair read a second later could), a stale writer losing."""
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{server.port}" for server in cluster[:2])
    async with (
        controller_with(BEFORE) as first,
        controller_with(BEFORE[:1]) as second,
        trio.open_nursery() as nursery,
    ):
        one, two = ConfigStore(url, first), ConfigStore(url, second)
        await nursery.start(one.run)
        await nursery.start(two.run)
        assert one.problem is None and two.problem is None
        assert second.config_text() == first.config_text()  # seeded by one, taken by two
        version = two.version
        start = trio.current_time()
        reply = await one.handle("BACKEND ADD b9 dc 127.0.0.9 5672")
        assert reply.ok, reply.text
        with trio.fail_after(5):
            while "b9" not in second.config_text():
                await trio.sleep(0.01)
        assert trio.current_time() - start < REPAIR_INTERVAL
        assert two.version == version + 1
        # The WATCH/MULTI transaction holds on a cluster: a writer that believes the
        # previous version is current loses.
        async with open_client(parse_store_address(url)) as client:
            with pytest.raises(coredis.exceptions.WatchError):
                await two._write(client, "LOG CONSOLE 0\n", expected=version)
            assert await client.hget("amqprouter:config", "version") == str(version + 1)
        nursery.cancel_scope.cancel()
