"""The server's registry of sessions: the end-of-session hook."""

from __future__ import annotations

import structlog.testing
from pamqp import commands

from amqprouter.session import Session
from tests.session.wire import (
    fake_broker,
    open_and_idle,
    open_client,
    router,
    wait_no_sessions,
)


async def test_a_failing_session_ended_callback_is_logged_and_serving_goes_on() -> None:
    ended: list[int] = []

    def broken(session: Session) -> None:
        raise RuntimeError("observer bug")

    async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
        server.session_ended += [broken, lambda session: ended.append(session.id)]
        with structlog.testing.capture_logs() as logs:
            client = await open_client(port)
            await client.send_method(
                commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
            )
            await client.aclose()
            await wait_no_sessions(server)
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "session-ended callback failed"
        ]
        assert len(ended) == 1, "the callbacks after the broken one still run"
        await open_client(port)  # and the server still serves
