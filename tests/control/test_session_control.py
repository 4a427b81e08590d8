"""SESSION, VHOST and BACKEND DRAIN through the controller, against an in-process server."""

from __future__ import annotations

import trio
import trio.testing
from pamqp import commands

from amqprouter.control.controller import Controller
from amqprouter.session import End
from tests.session.test_pause import SLOW, Recorder
from tests.session.wire import client_handshake, fake_broker, open_client, router, wait_no_sessions


async def test_session_verbs_and_their_errors(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        controller = Controller(server, request_exit=lambda: None)
        client = await open_client(port)
        [session] = server.sessions.values()
        sid = session.id

        assert (await controller.handle("SESSION 999999 PAUSE")).text == "Session not found.\n"
        bad = await controller.handle(f"SESSION {sid} FROB")
        actions = "PAUSE, UNPAUSE, DISCONNECT_GRACEFUL, FORCE_DISCONNECT, TRACE, CAPTURE"
        assert (bad.text, bad.ok) == (
            f"Session subcommand not found: 'FROB'; valid subcommands: {actions}.\n",
            False,
        )
        assert (await controller.handle(f"SESSION {sid}")).text == (
            f"Session subcommand not found; valid subcommands: {actions}.\n"
        )

        assert (await controller.handle(f"SESSION {sid} PAUSE")).text == ""
        assert " paused=Y " in (await controller.handle("CONN")).text
        assert (await controller.handle(f"session {sid} unpause")).text == ""
        assert " paused=N " in (await controller.handle("CONN")).text

        assert (await controller.handle(f"SESSION {sid} DISCONNECT_GRACEFUL")).text == ""
        close = await client.read_method()
        assert close.reply_text == (
            f"CONNECTION_FORCED - disconnected by operator (SESSION {sid} DISCONNECT_GRACEFUL)"
        )
        await client.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)
        assert session.ended is End.OPERATOR


async def test_vhost_verbs(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        controller = Controller(server, request_exit=lambda: None)
        first = await open_client(port)
        other = await client_handshake(port, "other")
        assert isinstance(await other.read_method(), commands.Connection.OpenOk)
        assert (await controller.handle("VHOST PRINT")).text == "/ = UNPAUSED\nother = UNPAUSED\n"

        assert (await controller.handle("VHOST PAUSE /")).text == ""
        assert (await controller.handle("VHOST PRINT")).text == "/ = PAUSED\nother = UNPAUSED\n"
        paused = {s.vhost: s.paused for s in server.sessions.values()}
        assert paused == {"/": True, "other": False}
        # A new client of the paused vhost is held at Open.
        held = await client_handshake(port)
        await trio.sleep(5)
        assert len(broker.accepted) == 2

        assert (await controller.handle("VHOST UNPAUSE /")).text == ""
        assert isinstance(await held.read_method(), commands.Connection.OpenOk)
        assert not any(s.paused for s in server.sessions.values())
        assert len(broker.accepted) == 3

        assert (await controller.handle("VHOST FORCE_DISCONNECT /")).text == ""
        assert await first.at_eof() and await held.at_eof()
        with trio.fail_after(5):
            while len(server.sessions) > 1:
                await trio.sleep(0.01)

        assert (await controller.handle("VHOST BACKEND_DISCONNECT other")).text == ""
        close = await other.read_method()
        assert close.reply_code == 320
        assert "(VHOST other BACKEND_DISCONNECT)" in close.reply_text
        await other.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)

        missing = await controller.handle("VHOST PAUSE")
        assert (missing.text, missing.ok) == (
            "Session not found. VHOST PAUSE needs a vhost.\n",
            False,
        )


async def test_backend_disable_enable_drain(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        controller = Controller(server, request_exit=lambda: None)
        client = await open_client(port)
        unknown = await controller.handle("BACKEND DRAIN nosuch")
        assert (unknown.text, unknown.ok) == ("Backend 'nosuch' not found\n", False)
        assert (await controller.handle("BACKEND DISABLE fake")).text == ""
        assert (await controller.handle("BACKEND PRINT")).text.endswith(" DISABLED\n")
        assert "BACKEND DISABLE fake\n" in (await controller.handle("CONFIG PRINT")).text
        # Disabled: the open session stays, a new one is refused clearly.
        refused = await client_handshake(port)
        close = await refused.read_method()
        assert (close.reply_code, close.reply_text) == (
            506,
            "No enabled broker for vhost /: its backends are disabled",
        )
        assert (await controller.handle("BACKEND ENABLE fake")).text == ""
        assert "DISABLED" not in (await controller.handle("BACKEND PRINT")).text

        drained = await controller.handle("BACKEND DRAIN fake")
        assert drained.text == "Backend 'fake' disabled; disconnecting 1 session(s) gracefully.\n"
        close = await client.read_method()
        assert close.reply_text == (
            "CONNECTION_FORCED - disconnected by operator (BACKEND DRAIN fake GRACEFUL)"
        )
        await client.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)
        assert server.routing.disabled == {"fake"}


async def test_exit_graceful_asks_for_a_drain() -> None:
    asked: list[float | None] = []
    async with router(None) as (server, _port):
        controller = Controller(server, request_exit=lambda: None, request_drain=asked.append)
        for line in ("EXIT GRACEFUL", "EXIT GRACEFUL 2.5"):
            reply = await controller.handle(line)
            assert reply.text == "Exiting.\n" and reply.after is not None
            reply.after()
        assert asked == [None, 2.5]
