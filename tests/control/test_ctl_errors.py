"""amqprouter_ctl's errors when no router answers: each says why, and what to try."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from amqprouter_ctl import cli

NOBODY = 65534


def _run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.run(str(path), "MAP PRINT")
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def test_missing_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(tmp_path / "nothing-here", capsys)
    assert code == cli.EXIT_UNREACHABLE
    assert err.startswith(
        f"amqprouter_ctl: cannot reach a router at {tmp_path / 'nothing-here'}: "
        "No such file or directory (no router has its control socket there: is amqprouter "
        "running, and with this --control-socket? Give the socket as the first argument or "
        "in $AMQPROUTER_CONTROL_SOCKET)"
    )


@pytest.mark.parametrize(("make", "kind"), [("file", "a regular file"), ("dir", "a directory")])
def test_not_a_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str, kind: str
) -> None:
    path = tmp_path / "ctl"
    if make == "file":
        path.write_text("not a socket")
    else:
        path.mkdir()
    code, err = _run(path, capsys)
    assert code == cli.EXIT_UNREACHABLE
    # Not "Connection refused", which reads as a router that stopped.
    assert err == (
        f"amqprouter_ctl: cannot reach a router at {path}: not a socket but {kind}; the "
        "router's control socket is elsewhere (see --control-socket), or something else "
        "took this path\n"
    )


def test_stale_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ctl"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: what a dead router leaves
        code, err = _run(path, capsys)
    assert code == cli.EXIT_UNREACHABLE
    assert ": Connection refused (a socket file that no router listens on, left by a " in err


@contextmanager
def _as_nobody() -> Iterator[None]:
    """Run as ``nobody`` (effective uid) for a moment: root passes every permission check."""
    if os.geteuid() != 0:
        pytest.fail("these tests play a second user: run them as root (as CI does)")
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_permission_denied_on_the_socket(capsys: pytest.CaptureFixture[str]) -> None:
    directory = Path(tempfile.mkdtemp(prefix="amqprouter-ctl-"))
    try:
        directory.chmod(0o755)  # others may look in, as in /run/amqprouter
        path = directory / "control"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as router:
            router.bind(str(path))
            path.chmod(0o600)
            router.listen()
            with _as_nobody():
                code, err = _run(path, capsys)
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    assert code == cli.EXIT_UNREACHABLE
    assert err == (
        f"amqprouter_ctl: cannot reach a router at {path}: Permission denied (the socket is "
        "mode 0600, owned by root (uid 0): run this as that user, or start the router with "
        "--control-socket-mode 0660 and join its group)\n"
    )


def test_permission_denied_on_the_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    path = private / "control"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as router:
        router.bind(str(path))
        router.listen()
        with _as_nobody():
            code, err = _run(path, capsys)
    assert code == cli.EXIT_UNREACHABLE
    assert err.endswith(
        ": Permission denied (a directory on the way to it cannot be searched by you)\n"
    )
