"""A whole configuration applied to a running controller, and the store's writes
against a private redis-server: a stale writer loses, the first seeder wins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import coredis
import coredis.exceptions
import pytest
import trio

from amqprouter.control.controller import Controller
from amqprouter.fleet.config_store import ConfigStore
from amqprouter.fleet.snapshot import SnapshotError, apply_snapshot
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from tests.redis_server import RedisServer, start_redis

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
