"""amqprouter_ctl's argument rules and default socket, without a router."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from amqprouter.control import socket_server
from amqprouter_ctl import cli


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.SOCKET_ENV, raising=False)
    monkeypatch.delenv(cli.ALLOW_OWNER_ENV, raising=False)


def test_defaults_match_the_router() -> None:
    assert str(socket_server.RUN_SOCKET) == cli.RUN_SOCKET
    assert str(socket_server.FALLBACK_SOCKET) == cli.FALLBACK_SOCKET
    assert socket_server.STATUS_HELLO.encode() + b"\n" == cli.STATUS_HELLO


def test_a_first_word_with_a_slash_is_the_socket() -> None:
    assert cli.parse(["/tmp/amqprouter", "MAP", "PRINT"])[:2] == (
        "/tmp/amqprouter",
        ["MAP", "PRINT"],
    )
    assert cli.parse(["./ctl", "HELP"])[:2] == ("./ctl", ["HELP"])


def test_without_a_socket_the_default_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_socket = tmp_path / "control"
    monkeypatch.setattr(cli, "RUN_SOCKET", str(run_socket))
    assert cli.parse(["MAP", "PRINT"])[:2] == (cli.FALLBACK_SOCKET, ["MAP", "PRINT"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(run_socket))
        assert cli.parse(["MAP", "PRINT"])[0] == str(run_socket)
    monkeypatch.setenv(cli.SOCKET_ENV, "/elsewhere/ctl")
    assert cli.parse(["MAP", "PRINT"])[0] == "/elsewhere/ctl"


def test_a_bare_name_is_the_socket_only_when_it_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "HELP").write_text("a file, not a socket")
    assert cli.parse(["HELP"])[:2] == (cli.FALLBACK_SOCKET, ["HELP"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind("ctl")
        assert cli.parse(["ctl", "MAP", "PRINT"])[:2] == ("ctl", ["MAP", "PRINT"])


def test_trusted_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.parse(["HELP"])[2] == {os.getuid(), os.geteuid(), 0}
    trusted = cli.parse(["--allow-owner", "nobody", "--allow-owner=4242", "HELP"])[2]
    assert {65534, 4242} <= trusted
    monkeypatch.setenv(cli.ALLOW_OWNER_ENV, "nobody,77")
    assert {65534, 77} <= cli.parse(["HELP"])[2]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], ""),
        (["/tmp/amqprouter"], ""),
        (["--allow-owner"], "--allow-owner needs a user name or uid"),
        (["--allow-owner", "no-such-user-here", "HELP"], "no such user 'no-such-user-here'"),
        (["--frobnicate", "HELP"], "unknown option --frobnicate"),
        (["/tmp/x", "--jsn", "HELP"], "unknown option --jsn (did you mean --json?)"),
    ],
)
def test_usage_errors(argv: list[str], says: str) -> None:
    with pytest.raises(cli.UsageError) as caught:
        cli.parse(argv)
    assert says in str(caught.value)


def test_help_is_none() -> None:
    assert cli.parse(["--help"])[0] is None
    assert cli.parse(["-h", "MAP"])[0] is None


def test_json_and_version() -> None:
    assert cli.parse(["--json", "CONN"]).json
    assert cli.parse(["--allow-owner", "0", "--json", "/tmp/x", "MAP", "PRINT"]).json
    assert not cli.parse(["CONN"]).json
    # After the socket, before the command: options still.
    after = cli.parse(["/tmp/x", "--json", "--allow-owner", "4242", "MAP", "PRINT"])
    assert (after.path, after.words, after.json) == ("/tmp/x", ["MAP", "PRINT"], True)
    assert 4242 in after.trusted
    assert cli.parse(["--", "/tmp/x", "MAP", "PRINT"])[:2] == ("/tmp/x", ["MAP", "PRINT"])
    # After the first word, --json is a word of the command, as any other.
    assert cli.parse(["/tmp/x", "MAP", "--json"])[1] == ["MAP", "--json"]
    assert cli.parse(["--version"]).version
    assert cli.parse(["--version"]).path is None


@pytest.mark.parametrize("word", ["b1\nEXIT", "v\r", "\n"])
def test_an_argument_with_a_line_break_is_refused(word: str) -> None:
    # One command is one line: the rest of the line would be lost, or run as another.
    with pytest.raises(cli.UsageError, match="line break"):
        cli.parse(["/tmp/amqprouter", "MAP", "BACKEND", word, "b"])
