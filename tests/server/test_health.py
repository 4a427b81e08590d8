"""Active checks and farm policies through the controller, on trio's virtual clock.

The probe is replaced by a scripted one (what each backend answers now), so fall and
rise are counted in virtual seconds: nothing here waits in real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog.testing
import trio
import trio.testing

from amqprouter.control.controller import Controller
from amqprouter.routing import Backend
from amqprouter.server import Server
from amqprouter.session import SessionSettings


class ScriptedProbe:
    """Answers what ``results`` says for each backend; records when it was asked."""

    def __init__(self) -> None:
        self.results: dict[str, str | None] = {}
        self.calls: list[tuple[str, float, float]] = []  # (backend, when, timeout)

    async def __call__(self, backend: Backend, timeout: float) -> str | None:
        self.calls.append((backend.name, trio.current_time(), timeout))
        return self.results.get(backend.name)

    def times(self, name: str) -> list[float]:
        return [when for backend, when, _ in self.calls if backend == name]


class Recorder:
    """Stands in for ``Server.disconnect_backend`` (the session-control work's)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, str]] = []

    def __call__(self, name: str, *, graceful: bool, reason: str) -> int:
        self.calls.append((name, graceful, reason))
        return 0


@asynccontextmanager
async def controlled(
    *lines: str, recorder: Recorder | None = None
) -> AsyncIterator[tuple[Controller, Server, ScriptedProbe]]:
    server = Server(SessionSettings())
    probe = ScriptedProbe()
    server.health.probe = probe
    if recorder is not None:
        server.disconnect_backend = recorder  # type: ignore[method-assign]
    controller = Controller(server, request_exit=lambda: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        for line in lines:
            reply = await controller.handle(line)
            assert reply.ok and reply.text == "", (line, reply)
        yield controller, server, probe
        nursery.cancel_scope.cancel()


SETUP = (
    "BACKEND ADD_DNS a dc1 127.0.0.1 5998",
    "BACKEND ADD_DNS b dc1 127.0.0.1 5999",
    "FARM ADD f round-robin a b",
)


async def text(controller: Controller, line: str) -> str:
    reply = await controller.handle(line)
    assert reply.ok, (line, reply)
    return reply.text


async def test_fall_failures_then_rise_passes_on_the_virtual_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with controlled(*SETUP, "BACKEND CHECK a ON 1000 3 2 300") as (ctl, server, probe):
        start = trio.current_time()
        probe.results["a"] = "connect refused 127.0.0.1:5998"
        # Probes at 0, 1 and 2 s: the third failure, at 2 s, marks it down.
        await trio.sleep_until(start + 1.5)
        assert await text(ctl, "BACKEND PRINT") == (
            "a (dc1): 127.0.0.1 :5998 UP\nb (dc1): 127.0.0.1 :5999\n"
        )
        await trio.sleep_until(start + 2.5)
        assert await text(ctl, "BACKEND PRINT") == (
            "a (dc1): 127.0.0.1 :5998 DOWN (connect refused 127.0.0.1:5998, 3 checks)\n"
            "b (dc1): 127.0.0.1 :5999\n"
        )
        assert server.health.registry.down() == {"a"}
        probe.results["a"] = None
        # Passes at 3 and 4 s: up at 4 s.
        await trio.sleep_until(start + 3.5)
        assert server.health.registry.down() == {"a"}
        await trio.sleep_until(start + 4.5)
        assert server.health.registry.down() == frozenset()
        assert [round(t - start, 6) for t in probe.times("a")] == [0, 1, 2, 3, 4]
        assert {timeout for _, _, timeout in probe.calls} == {0.3}
        assert probe.times("b") == []


async def test_check_off_stops_probing_and_lifts_the_check_mark(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with controlled(*SETUP, "BACKEND CHECK a ON 100 1 1") as (ctl, server, probe):
        probe.results["a"] = "refused"
        await trio.sleep(0.05)
        assert server.health.registry.down() == {"a"}
        assert await text(ctl, "BACKEND CHECK a OFF") == ""
        calls = len(probe.calls)
        await trio.sleep(1)
        assert len(probe.calls) == calls
        assert server.health.registry.down() == frozenset()
        assert "UP" not in await text(ctl, "BACKEND PRINT")
        # Turning off what is not on is harmless.
        assert await text(ctl, "BACKEND CHECK b OFF") == ""


async def test_check_on_again_replaces_the_check(autojump_clock: trio.testing.MockClock) -> None:
    async with controlled(*SETUP, "BACKEND CHECK a ON 1000") as (ctl, _server, probe):
        await trio.sleep(0.5)
        assert await text(ctl, "BACKEND CHECK a ON 200") == ""
        start = trio.current_time()
        await trio.sleep(1.05)
        # One task, probing at the new interval, from the new command on.
        assert [round(t - start, 6) for t in probe.times("a")][1:] == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


async def test_deleting_a_backend_stops_its_check(autojump_clock: trio.testing.MockClock) -> None:
    async with controlled("BACKEND ADD_DNS a dc1 127.0.0.1 5998", "BACKEND CHECK a ON 100 1") as (
        ctl,
        server,
        probe,
    ):
        probe.results["a"] = "refused"
        await trio.sleep(0.05)
        assert server.health.registry.down() == {"a"}
        assert await text(ctl, "BACKEND DELETE a") == ""
        calls = len(probe.calls)
        await trio.sleep(1)
        assert len(probe.calls) == calls
        assert server.health.checks == {}
        assert server.health.registry.get("a") is None


async def test_commands_on_what_does_not_exist_are_errors() -> None:
    async with controlled(*SETUP) as (ctl, _server, _probe):
        for line, expected in [
            ("BACKEND CHECK x ON", "Backend 'x' not found\n"),
            ("BACKEND CHECK x OFF", "Backend 'x' not found\n"),
            ("FARM ON_DOWN g DISCONNECT", "Farm 'g' not found\n"),
        ]:
            reply = await ctl.handle(line)
            assert (reply.text, reply.ok) == (expected, False)


async def test_backend_print_without_health_information_is_the_reference_line() -> None:
    async with controlled(*SETUP, "BACKEND ADD c dc2 127.0.0.1 5672") as (
        ctl,
        _server,
        _probe,
    ):
        assert await text(ctl, "BACKEND PRINT") == (
            "a (dc1): 127.0.0.1 :5998\n"
            "b (dc1): 127.0.0.1 :5999\n"
            "c (dc2): 127.0.0.1 127.0.0.1:5672\n"
        )


async def test_config_print_round_trips_checks_and_farm_policies() -> None:
    lines = (*SETUP, "BACKEND CHECK b ON 500 2 1 250", "FARM ON_DOWN f DISCONNECT")
    async with controlled(*lines) as (ctl, _server, _probe):
        config = await text(ctl, "CONFIG PRINT")
        assert config.splitlines()[-2:] == [
            "BACKEND CHECK b ON 500 2 1 250",
            "FARM ON_DOWN f DISCONNECT",
        ]
        # KEEP is the default and is not printed.
        assert await text(ctl, "FARM ON_DOWN f KEEP") == ""
        assert "ON_DOWN" not in await text(ctl, "CONFIG PRINT")
        await text(ctl, "FARM ON_DOWN f DISCONNECT")
    # LOG lines would reconfigure this process's logging: leave them out (they are
    # not health settings, and a later test's capture_logs needs structlog untouched).
    replay = tuple(line for line in config.splitlines() if not line.startswith("LOG "))
    async with controlled(*replay) as (again, _server, _probe):
        assert await text(again, "CONFIG PRINT") == config


async def test_deleting_a_farm_drops_its_policy_and_farm_add_keeps_it() -> None:
    async with controlled(*SETUP, "FARM ON_DOWN f DISCONNECT") as (ctl, server, _probe):
        await text(ctl, "FARM ADD f round-robin b a")
        assert server.health.disconnect_farms == {"f"}
        await text(ctl, "FARM DELETE f")
        assert server.health.disconnect_farms == set()
        await text(ctl, "FARM ADD f round-robin a b")
        assert "ON_DOWN" not in await text(ctl, "CONFIG PRINT")


# --------------------------------------------------------------------------- #
# FARM ON_DOWN
# --------------------------------------------------------------------------- #


async def test_disconnect_policy_asks_once_per_up_to_down_transition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    lines = (*SETUP, "FARM ADD g round-robin a", "FARM ON_DOWN f DISCONNECT")
    async with controlled(*lines, "FARM ON_DOWN g DISCONNECT", recorder=recorder) as (
        ctl,
        server,
        probe,
    ):
        await text(ctl, "BACKEND CHECK a ON 100 2 1")
        probe.results["a"] = "connect refused 127.0.0.1:5998"
        await trio.sleep(1)  # down at 0.1 s, and stays down for 9 more failures
        assert recorder.calls == [("a", True, "backend a is down: connect refused 127.0.0.1:5998")]
        probe.results["a"] = None
        await trio.sleep(0.15)
        assert server.health.registry.down() == frozenset()
        # A failed connect is a transition too.
        server.health.registry.connect_failed("a", "127.0.0.1:5998: Connection refused")
        assert len(recorder.calls) == 2
        assert recorder.calls[1][2].endswith("connect failed: 127.0.0.1:5998: Connection refused")


async def test_keep_policy_and_members_of_other_farms_are_left_alone() -> None:
    recorder = Recorder()
    lines = (*SETUP, "FARM ADD g round-robin b", "FARM ON_DOWN g DISCONNECT")
    async with controlled(*lines, recorder=recorder) as (_ctl, server, _probe):
        server.health.registry.connect_failed("a", "refused")  # a is only in f (KEEP)
        assert recorder.calls == []
        server.health.registry.connect_failed("b", "refused")
        assert [name for name, _, _ in recorder.calls] == ["b"]


async def test_a_long_reason_is_cut_to_fit_a_close_reply_text() -> None:
    recorder = Recorder()
    async with controlled(*SETUP, "FARM ON_DOWN f DISCONNECT", recorder=recorder) as (
        _ctl,
        server,
        _probe,
    ):
        server.health.registry.connect_failed("a", "x" * 400)
        reason = recorder.calls[0][2]
        assert len(reason) == 200 and reason.endswith("...")


async def test_a_failing_policy_does_not_stop_the_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken(name: str, *, graceful: bool, reason: str) -> int:
        raise RuntimeError("not today")

    async with controlled(*SETUP, "FARM ON_DOWN f DISCONNECT") as (ctl, server, probe):
        server.disconnect_backend = broken  # type: ignore[method-assign]
        await text(ctl, "BACKEND CHECK a ON 100 1 1")
        probe.results["a"] = "refused"
        with structlog.testing.capture_logs() as logs:
            await trio.sleep(0.05)
        assert server.health.registry.down() == {"a"}
        assert "cannot disconnect the sessions of a down backend" in [e["event"] for e in logs]
        calls = len(probe.calls)
        await trio.sleep(0.5)
        assert len(probe.calls) > calls


async def test_a_probe_that_raises_is_a_failed_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def broken(backend: Backend, timeout: float) -> str | None:
        raise RuntimeError("bug")

    async with controlled(*SETUP) as (ctl, server, _probe):
        server.health.probe = broken
        with structlog.testing.capture_logs() as logs:
            await text(ctl, "BACKEND CHECK a ON 100 2 1")
            await trio.sleep(0.15)
        assert await text(ctl, "BACKEND PRINT") == (
            "a (dc1): 127.0.0.1 :5998 DOWN (probe error: RuntimeError('bug'), 2 checks)\n"
            "b (dc1): 127.0.0.1 :5999\n"
        )
        assert "health check probe failed" in [entry["event"] for entry in logs]
