"""The control socket over a real Unix socket, with a stand-in command handler."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import structlog.testing
import trio
import trio.testing

from amqprouter.control import socket_server
from amqprouter.control.socket_server import (
    ControlSocketInUse,
    Reply,
    UnsafeControlDirectory,
    serve_control,
)


async def _echo(line: str, *, as_json: bool = False) -> Reply:
    if line.startswith("FAIL"):
        return Reply("it failed\n", ok=False)
    return Reply(f"got {line!r}{' as json' if as_json else ''}\n")


@asynccontextmanager
async def control(path: Path, mode: int = 0o600) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, path, _echo, mode=mode))
        yield
        nursery.cancel_scope.cancel()


async def _ask(path: Path, data: bytes, *, half_close: bool = True) -> bytes:
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await stream.send_all(data)
        if half_close:
            await stream.send_eof()
        reply = bytearray()
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                reply += chunk
        return bytes(reply)


async def test_one_line_one_reply_then_close(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    async with control(path):
        assert await _ask(path, b"MAP PRINT\n") == b"got 'MAP PRINT'\n"
        assert await _ask(path, b"MAP PRINT\r\nIGNORED\n") == b"got 'MAP PRINT'\n"
    assert not path.exists(), "the socket file is removed on exit"


async def test_status_trailer_only_for_clients_that_ask(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    hello = socket_server.STATUS_HELLO.encode() + b"\n"
    async with control(path):
        assert await _ask(path, hello + b"X\n") == b"got 'X'\n\x000"
        assert await _ask(path, hello + b"FAIL\n") == b"it failed\n\x001"
        assert await _ask(path, b"FAIL\n") == b"it failed\n"


async def test_json_is_asked_for_by_a_line_before_the_command(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    status = socket_server.STATUS_HELLO.encode() + b"\n"
    as_json = socket_server.JSON_HELLO.encode() + b"\n"
    async with control(path):
        assert await _ask(path, as_json + b"CONN\n") == b"got 'CONN' as json\n"
        # In either order with the status line; each is taken once, then it is a command.
        assert await _ask(path, as_json + status + b"CONN\n") == b"got 'CONN' as json\n\x000"
        assert await _ask(path, status + as_json + b"CONN\n") == b"got 'CONN' as json\n\x000"
        assert await _ask(path, as_json + as_json + b"X\n") == (
            b"got 'AMQPROUTER_CTL JSON' as json\n"
        )
        assert await _ask(path, b"CONN\n") == b"got 'CONN'\n"


async def test_created_private_and_mode_can_be_widened(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    async with control(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with control(path, mode=0o660):
        assert stat.S_IMODE(path.stat().st_mode) == 0o660


async def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a crashed router leaves
    async with control(path):
        assert await _ask(path, b"HELLO\n") == b"got 'HELLO'\n"


async def test_live_socket_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    async with control(path):
        with pytest.raises(ControlSocketInUse) as caught:
            socket_server.prepare_path(path)
        assert "is the control socket of a running router" in str(caught.value)
        assert await _ask(path, b"STILL\n") == b"got 'STILL'\n"


def test_a_regular_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    path.write_text("precious")
    with pytest.raises(ControlSocketInUse):
        socket_server.prepare_path(path)
    assert path.read_text() == "precious"


async def test_overlong_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    async with control(path):
        assert await _ask(path, b"X" * 10_000) == b"Command line too long.\n"
        assert await _ask(path, b"X" * 5000 + b"\n") == b"Command line too long.\n"


async def test_unfinished_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    async with control(path):
        assert await _ask(path, b"MAP PRINT") == b"Command line must end with a newline.\n"


async def test_silent_client_times_out_and_control_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket_server, "READ_TIMEOUT", 0.3)
    path = tmp_path / "ctl"
    async with control(path):
        silent = await trio.open_unix_socket(str(path))
        async with silent:
            with trio.fail_after(5):
                data = await silent.receive_some(1024)
            assert data == b"No command line within 0.3s.\n"
        assert await _ask(path, b"NEXT\n") == b"got 'NEXT'\n"


async def test_many_concurrent_clients(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    replies: list[bytes] = []

    async def one(number: int) -> None:
        replies.append(await _ask(path, f"C{number}\n".encode()))

    async with control(path), trio.open_nursery() as nursery:
        for number in range(100):
            nursery.start_soon(one, number)
    assert sorted(replies) == sorted(f"got 'C{n}'\n".encode() for n in range(100))


async def test_after_action_runs_once_the_reply_is_written(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    ran = trio.Event()

    async def exiting(line: str, *, as_json: bool = False) -> Reply:
        return Reply("Exiting.\n", after=ran.set)

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, path, exiting))
        assert not ran.is_set()
        assert await _ask(path, b"EXIT\n") == b"Exiting.\n"
        with trio.fail_after(5):
            await ran.wait()
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- #
# the mode, the directory, the default path
# --------------------------------------------------------------------------- #


async def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    previous = os.umask(0o077)  # would strip the group bits from a plain bind
    try:
        async with control(path, mode=0o660):
            assert stat.S_IMODE(path.lstat().st_mode) == 0o660
            assert await _ask(path, b"X\n") == b"got 'X'\n"
            # The private directory it was bound in is gone.
            assert os.listdir(tmp_path) == ["ctl"]
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    tmp_path.chmod(mode)
    with pytest.raises(UnsafeControlDirectory) as caught:
        socket_server.bind_control_socket(tmp_path / "ctl")
    assert f"{tmp_path} is writable by other users (mode {mode:04o}) and not sticky" in str(
        caught.value
    )
    assert list(tmp_path.iterdir()) == []


def test_a_sticky_directory_is_accepted(tmp_path: Path) -> None:
    tmp_path.chmod(0o1777)
    bound = socket_server.bind_control_socket(tmp_path / "ctl")
    bound.sock.close()
    assert bound.is_at(tmp_path / "ctl")


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test gives a directory to another user: run it as root (as CI does)")
    os.chown(tmp_path, 65534, -1)
    tmp_path.chmod(0o755)
    with pytest.raises(UnsafeControlDirectory, match=r"belongs to .*uid 65534"):
        socket_server.bind_control_socket(tmp_path / "ctl")


def test_default_path_is_under_run_when_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run" / "amqprouter"
    monkeypatch.setattr(socket_server, "RUN_DIRECTORY", run)
    monkeypatch.setattr(socket_server, "RUN_SOCKET", run / "control")
    # No parent to create it in: the old default.
    assert socket_server.default_control_socket() == socket_server.FALLBACK_SOCKET
    (tmp_path / "run").mkdir()
    previous = os.umask(0o077)
    try:
        if os.geteuid() == 0:  # root creates it, 0755 whatever the umask
            assert socket_server.default_control_socket() == run / "control"
            assert stat.S_IMODE(run.stat().st_mode) == 0o755
    finally:
        os.umask(previous)
    run.mkdir(exist_ok=True)
    assert socket_server.default_control_socket() == run / "control"


# --------------------------------------------------------------------------- #
# a socket file deleted or replaced under a running router
# --------------------------------------------------------------------------- #


async def test_deleted_socket_is_recreated_with_one_warning(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "ctl"
    with structlog.testing.capture_logs() as logs:
        async with control(path, mode=0o640):
            path.unlink()
            await trio.sleep(socket_server.WATCH_INTERVAL * 3)
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.lstat().st_mode) == 0o640
            assert await _ask(path, b"BACK\n") == b"got 'BACK'\n"
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [(w["event"], w["path"]) for w in warnings] == [
        ("control socket file was removed; recreated it", str(path))
    ]
    assert not path.exists()


async def test_a_file_put_in_its_place_is_left_alone_then_the_socket_returns(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "ctl"
    with structlog.testing.capture_logs() as logs:
        async with control(path):
            path.unlink()
            path.write_text("someone's file")
            await trio.sleep(socket_server.WATCH_INTERVAL * 5)
            assert path.read_text() == "someone's file"
            path.unlink()
            await trio.sleep(socket_server.WATCH_INTERVAL * 2)
            assert await _ask(path, b"BACK\n") == b"got 'BACK'\n"
            path.unlink()
            path.write_text("again")
            await trio.sleep(socket_server.WATCH_INTERVAL * 2)
        # The router's exit removes only its own socket file, never what replaced it.
        assert path.read_text() == "again"
    events = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert events == [
        "control socket file was replaced; cannot recreate it",  # once, not per interval
        "control socket file was removed; recreated it",
        "control socket file was replaced; cannot recreate it",
    ]
