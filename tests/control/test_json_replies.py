"""The JSON form of the listing commands (``--json``), against an in-process router."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from amqprouter.control.controller import Controller
from tests.session.wire import client_handshake, fake_broker, open_and_idle, open_client, router


def objects(text: str) -> list[dict[str, Any]]:
    """One JSON object a line, every line ending in a newline, nothing else."""
    assert text == "" or text.endswith("\n")
    parsed = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(value, dict) for value in parsed)
    return parsed


async def test_configuration_listings() -> None:
    async with router(None) as (server, _port):
        controller = Controller(server, request_exit=lambda: None)
        for line in [
            "BACKEND ADD b1 dc1 127.0.0.1 5672 SEND-PROXY-V2",
            "BACKEND ADD_DNS b2 dc2 localhost 5671 TLS",
            "BACKEND DISABLE b2",
            "FARM ADD shared round-robin b2 b1",
            "FARM PARTITION shared datacenter-affinity",
            "MAP BACKEND 'we\"ird' b1 AS 'my vhost'",  # JSON cannot misread a quote or a space
            "MAP FARM / shared",
            "MAP DEFAULT shared",
            "LIMIT CONN_RATE DEFAULT 10",
            "LIMIT DATA_RATE_ALARM VHOST / 2048",
        ]:
            assert (await controller.handle(line)).ok, line
        server.health.registry.connect_failed("b1", "connection refused")

        async def as_json(line: str) -> list[dict[str, Any]]:
            reply = await controller.handle(line, as_json=True)
            assert reply.ok, reply.text
            return objects(reply.text)

        assert await as_json("BACKEND PRINT") == [
            {
                "name": "b1",
                "datacenter": "dc1",
                "host": "127.0.0.1",
                "ip": "127.0.0.1",
                "port": 5672,
                "dns": False,
                "proxyProtocol": 2,
                "tls": False,
                "disabled": False,
                "health": {
                    "up": False,
                    "reason": "connect failed: connection refused",
                    "checked": False,
                },
            },
            {
                "name": "b2",
                "datacenter": "dc2",
                "host": "localhost",
                "ip": None,
                "port": 5671,
                "dns": True,
                "proxyProtocol": 0,
                "tls": True,
                "disabled": True,
                "health": None,
            },
        ]
        assert await as_json("farm print") == [
            {
                "name": "shared",
                "selector": "round-robin",
                "members": ["b2", "b1"],
                "weights": [1, 1],
                "policies": ["datacenter-affinity"],
                "stickySeconds": None,
            }
        ]
        assert await as_json("MAP PRINT") == [
            {
                "vhost": "/",
                "default": False,
                "pattern": False,
                "type": "farm",
                "name": "shared",
                "brokerVhost": None,
                "pool": None,
            },
            {
                "vhost": 'we"ird',
                "default": False,
                "pattern": False,
                "type": "backend",
                "name": "b1",
                "brokerVhost": "my vhost",
                "pool": None,
            },
            {
                "vhost": None,
                "default": True,
                "pattern": False,
                "type": "farm",
                "name": "shared",
                "brokerVhost": None,
                "pool": None,
            },
        ]
        default_rate = {
            "limit": "CONN_RATE",
            "value": 10,
            "unit": "connections/s",
            "alarmOnly": False,
            "default": True,
        }
        own_alarm = {
            "vhost": "/",
            "limit": "DATA_RATE_ALARM",
            "value": 2048,
            "unit": "bytes/s",
            "alarmOnly": True,
            "default": False,
        }
        # Every limit in force: the DEFAULT's, then each vhost's own.
        assert await as_json("LIMIT PRINT") == [{"vhost": None, **default_rate}, own_alarm]
        assert await as_json("LIMIT PRINT /") == [{"vhost": "/", **default_rate}, own_alarm]
        assert await as_json("VHOST PRINT") == []
        assert (await controller.handle("VHOST PAUSE /")).ok
        assert await as_json("VHOST PRINT") == [{"vhost": "/", "paused": True}]
        # The text replies are unchanged by all this.
        assert (await controller.handle("MAP PRINT")).text == (
            '"/" => Farm:shared\n"we"ird" => Backend:b1 AS \'my vhost\'\n(default) => Farm:shared\n'
        )


async def test_conn_as_json_matches_the_line() -> None:
    async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
        controller = Controller(server, request_exit=lambda: None)
        client = await open_client(port)
        # A vhost with a newline and an escape: one line in the text, exact in JSON.
        odd = await client_handshake(port, "a\nb\x1b[31m")
        with trio.fail_after(5):
            while len(server.sessions) < 2 or any(
                s.vhost is None for s in server.sessions.values()
            ):
                await trio.sleep(0.01)
        text = (await controller.handle("CONN")).text
        records = objects((await controller.handle("CONN", as_json=True)).text)
        assert len(text.splitlines()) == len(records) == 2
        by_vhost = {record["vhost"]: record for record in records}
        assert set(by_vhost) == {"/", "a\nb\x1b[31m"}
        plain = by_vhost["/"]
        line = next(line for line in text.splitlines() if " vhost=/ " in line)
        assert line.startswith(f"id={plain['id']} vhost=/ disconnected=N paused=N ")
        assert plain["ingressRemote"]["host"] == "127.0.0.1"
        assert f"ingressRemote=127.0.0.1:{plain['ingressRemote']['port']} " in line
        assert plain["egressRemote"] == {"host": "127.0.0.1", "port": broker.port}
        assert f" outFrames={plain['outFrames']} " in line and plain["outFrames"] >= 1
        assert (plain["tls"], plain["clientCert"], plain["authDenied"]) == (None, None, False)
        # Where routing sent it: the same in both forms.
        assert (plain["backend"], plain["mapping"], plain["rule"]) == ("fake", "(default)", None)
        assert " backend=fake mapping=(default) rule=- " in line
        assert 0 <= plain["idleInSeconds"] < 5
        # No raw control character reaches the operator's terminal either way.
        raw = (await controller.handle("CONN", as_json=True)).text
        assert "\x1b" not in raw and "\x1b" not in text
        await client.aclose()
        await odd.aclose()


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("EXIT", "EXIT"),
        ("BACKEND DELETE b1", "BACKEND DELETE"),
        ("HELP", "HELP"),
        ("CONFIG PRINT", "CONFIG PRINT"),
        ("STAT LISTEN human overall", "STAT LISTEN human"),
        ("DATACENTER PRINT", "DATACENTER PRINT"),
    ],
)
async def test_commands_without_a_json_form_are_refused_and_not_run(line: str, shown: str) -> None:
    exits: list[None] = []
    async with router(None) as (server, _port):
        controller = Controller(server, request_exit=lambda: exits.append(None))
        assert (await controller.handle("BACKEND ADD_DNS b1 dc1 localhost 5672")).ok
        reply = await controller.handle(line, as_json=True)
        assert (reply.text, reply.ok) == (
            f"{shown} has no JSON form; --json works with CONN, BACKEND PRINT, FARM PRINT, "
            "MAP PRINT, RULE PRINT, VHOST PRINT, LIMIT PRINT, SESSION TRACE, SESSION CAPTURE, "
            "VHOST TRACE and STAT LISTEN json.\n",
            False,
        )
        assert reply.after is None and exits == []
        assert "b1" in server.routing.backends
        # A mistake is still answered as one.
        wrong = await controller.handle("MAP FROB", as_json=True)
        assert not wrong.ok and wrong.text.startswith("Unrecognized subcommand: 'FROB'")
