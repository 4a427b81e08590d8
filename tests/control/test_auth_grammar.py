"""AUTH: amqpprox's grammar and error texts, and the CONFIG PRINT round trip."""

from __future__ import annotations

import pytest

from amqprouter.control.commands import AuthAlwaysAllow, AuthPrint, AuthService
from amqprouter.control.grammar import ParseError, parse, to_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("AUTH SERVICE auth.example 8080 /auth", AuthService("auth.example", 8080, "/auth")),
        ("auth service 10.0.0.1 1 /", AuthService("10.0.0.1", 1, "/")),
        ("AUTH SERVICE ::1 65535 /a/b?x=1", AuthService("::1", 65535, "/a/b?x=1")),
        ("AUTH ALWAYS_ALLOW", AuthAlwaysAllow()),
        ("AUTH always_allow", AuthAlwaysAllow()),
        ("AUTH PRINT", AuthPrint()),
    ],
)
def test_auth_commands(line: str, expected: object) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("AUTH", "No subcommand provided; valid subcommands: SERVICE, ALWAYS_ALLOW, PRINT.\n"),
        (
            "AUTH NOPE",
            "Unknown subcommand: 'NOPE'; valid subcommands: SERVICE, ALWAYS_ALLOW, PRINT.\n",
        ),
        ("AUTH SERVICE", "No hostname specified.\n"),
        ("AUTH SERVICE host", "Invalid port provided.\n"),
        ("AUTH SERVICE host 0 /auth", "Invalid port provided.\n"),
        ("AUTH SERVICE host 65536 /auth", "Invalid port provided.\n"),
        ("AUTH SERVICE host 80x /auth", "Invalid port provided.\n"),
        ("AUTH SERVICE host 80", "No http target specified.\n"),
        ("AUTH SERVICE host 80 auth", "The http target must start with '/', e.g. /auth.\n"),
        *(
            (
                f"AUTH SERVICE {host} 80 /auth",
                "The hostname must be a host name or an IP address, without URL syntax.\n",
            )
            for host in ("evil.example/x?", "user@host", "[::1]", "h#x", "h%2f")
        ),
        (
            "AUTH SERVICE host 80 /auth extra",
            "Unexpected word 'extra': 'AUTH SERVICE host 80 /auth' takes no more words.\n",
        ),
        ("AUTH PRINT extra", "Unexpected word 'extra': 'AUTH PRINT' takes no more words.\n"),
    ],
)
def test_auth_errors(line: str, reply: str) -> None:
    assert parse(line) == ParseError(reply)


@pytest.mark.parametrize(
    "command", [AuthService("h", 8080, "/auth"), AuthAlwaysAllow(), AuthPrint()]
)
def test_round_trip(command: AuthService | AuthAlwaysAllow | AuthPrint) -> None:
    assert parse(to_line(command)) == command


def test_to_line_refuses_a_target_no_line_can_carry() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        to_line(AuthService("h", 8080, "no-slash"))
