"""CONFIG PRINT is a faithful round trip: its text, read back as a ``--config`` file,
rebuilds a router whose CONFIG PRINT is the same text (hypothesis).

A configuration is built by sending random commands, as an operator would, to a
controller over an in-process server (routing, health checks and farm policies,
statistics targets, log levels); names are drawn from text that holds the
characters that broke the round trip before (NBSP, ideographic and zero-width
spaces, ``#``, quotes, backslashes, astral characters). Commands that fail (an
unknown backend, say) just leave the configuration as it was. The CONFIG PRINT text
is written to a file, read with the ``--config`` reader (``cli.command._config_lines``) and
sent to a second, empty controller: every line must be accepted, and that second
CONFIG PRINT must equal the first. LISTEN START is left out (it binds ports); its
lines are one number each.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from amqprouter.app import start_stats
from amqprouter.cli import command as cli
from amqprouter.control import commands as c
from amqprouter.control.controller import Controller
from amqprouter.control.grammar import WHITESPACE, ParseError, parse, to_line
from amqprouter.routing import Backend
from amqprouter.server import Server
from amqprouter.server.limits import LIMIT_KINDS
from amqprouter.session import SessionSettings
from amqprouter.text import unsafe_character
from tests import hypothesis_profiles

#: Printable characters that are not the grammar's whitespace, and awkward ones among them.
_name_characters = st.one_of(
    st.sampled_from("\xa0\u3000\u200b\u2007#'\"\\=:/.-_\U0001f407\u00e9\u017f"),
    st.characters(
        codec="utf-8",
        exclude_characters=WHITESPACE,
        exclude_categories=("Cc", "Cs", "Zl", "Zp"),
    ).filter(lambda ch: unsafe_character(ch) is None),
)
#: A few fixed names (so commands meet each other: a farm of known backends, a map to
#: an existing farm) and random ones.
names = st.one_of(
    st.sampled_from(("b1", "b2", "b\xa0", "f1", "f#", "/", "v")),
    st.text(_name_characters, min_size=1, max_size=8),
)
ports = st.integers(1, 65535)


async def _passing_probe(backend: Backend, timeout: float) -> str | None:
    return None  # health checks are configuration here; nothing is probed


def commands_strategy() -> st.SearchStrategy[c.Command]:
    check_numbers = st.tuples(
        st.integers(10, 3_600_000),
        st.integers(1, 1000),
        st.integers(1, 1000),
        st.integers(10, 3_600_000),
    )
    return st.one_of(
        st.builds(c.DatacenterSet, names),
        st.builds(
            c.BackendAdd,
            names,
            names,
            st.sampled_from(("127.0.0.1", "127.0.0.2", "::1", "0127.0.0.1")),
            ports,
        ),
        st.builds(c.BackendAddDns, names, names, names, ports, st.integers(0, 2), st.booleans()),
        st.builds(c.BackendDelete, names),
        st.builds(c.BackendDisable, names),
        st.builds(c.BackendEnable, names),
        st.builds(c.FarmAdd, names, st.sampled_from(("round-robin", "random")), st.tuples(names)),
        st.builds(c.FarmAdd, names, st.just("round-robin"), st.lists(names).map(tuple)),
        st.lists(st.tuples(names, st.integers(0, 256)), max_size=4).flatmap(
            lambda members: st.builds(
                c.FarmAdd,
                names,
                st.sampled_from(("weighted-round-robin", "least-connections")),
                st.just(tuple(m for m, _w in members)),
                st.just(tuple(w for _m, w in members) if members else ()),
            )
        ),
        st.builds(c.FarmWeight, names, names, st.integers(0, 256)),
        st.builds(c.FarmPartition, names, st.just("datacenter-affinity")),
        st.builds(c.FarmDelete, names),
        st.builds(c.FarmOnDown, names, st.booleans()),
        st.builds(c.MapBackend, names, names, st.none() | names),
        st.builds(c.MapFarm, names, names, st.none() | names),
        # Patterns, some of which tie (same literal count, one *): their order must survive.
        st.builds(c.MapFarm, st.sampled_from(("*", "a*", "b*", "*a", "x*y", "*.eu")), names),
        st.builds(c.MapUnmap, names),
        st.builds(
            c.RuleAdd,
            st.integers(0, 30),
            st.lists(
                st.sampled_from(("10.0.0.0/8", "10.1.0.0/16", "::1/128", "2001:db8::/32")),
                min_size=1,
                max_size=3,
                unique=True,
            ).map(tuple),
            st.sampled_from(("farm", "backend")),
            names,
            st.sampled_from(("BREAK", "CONTINUE")),
        ),
        st.builds(c.RuleDelete, st.integers(0, 30)),
        st.builds(c.MapDefault, names),
        st.just(c.MapRemoveDefault()),
        check_numbers.flatmap(lambda n: st.builds(c.BackendCheckOn, names, *map(st.just, n))),
        st.builds(c.BackendCheckOff, names),
        st.builds(c.LogConsole, st.integers(0, 5)),
        st.builds(c.LogFile, st.integers(0, 5)),
        st.builds(c.StatSend, st.sampled_from(("127.0.0.1", "::1")), ports),
        st.builds(c.StatPerSource, st.booleans()),
        st.builds(
            c.LimitSet,
            st.sampled_from(LIMIT_KINDS),
            st.one_of(st.none(), names),
            st.integers(1, 999_999_999),
        ),
        st.builds(c.LimitDisable, st.sampled_from(LIMIT_KINDS), st.one_of(st.none(), names)),
        st.builds(c.AuthService, names, ports, names.map(lambda name: "/" + name)),
        st.just(c.AuthAlwaysAllow()),
    )


async def _config_print_after(lines: Sequence[str]) -> tuple[str, list[tuple[str, bool, str]]]:
    """CONFIG PRINT of a fresh router after ``lines``, and each line's (line, ok, reply)."""
    server = Server(SessionSettings())
    server.health.probe = _passing_probe
    replies = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        stats = await start_stats(nursery, server, interval=3600)
        controller = Controller(server, request_exit=lambda: None, stats=stats)
        for line in lines:
            reply = await controller.handle(line)
            replies.append((line, reply.ok, reply.text))
        text = (await controller.handle("CONFIG PRINT")).text
        nursery.cancel_scope.cancel()
    return text, replies


def _read_back(text: str) -> list[str]:
    """``text`` written to a file and read as ``--config`` reads it."""
    with tempfile.TemporaryDirectory(prefix="amqprouter-config-") as directory:
        path = Path(directory) / "router.conf"
        path.write_bytes(text.encode("utf-8"))
        return [line for _where, line in cli._config_lines(path)]


def _assert_round_trip(lines: Sequence[str]) -> str:
    printed, _replies = trio.run(_config_print_after, lines)
    # Every line of it is one line to any reader, and each is one command.
    assert printed.endswith("\n")
    assert printed.splitlines() == printed.split("\n")[:-1]
    assert unsafe_character(printed.replace("\n", "")) is None
    read = _read_back(printed)
    assert read == printed.split("\n")[:-1]
    again, replies = trio.run(_config_print_after, read)
    refused = [(line, text) for line, ok, text in replies if not ok]
    assert not refused, refused
    assert again == printed
    return printed


@settings(max_examples=hypothesis_profiles.examples(0.25))
@given(st.lists(commands_strategy(), max_size=25))
def test_config_print_read_back_as_a_config_file_rebuilds_the_same_config(
    commands: list[c.Command],
) -> None:
    lines = []
    for command in commands:
        try:
            lines.append(to_line(command))
        except ValueError:
            # A value no line can carry (an empty datacenter name, a name that is only
            # NBSP on a line the grammar strips...): the operator could not send it.
            continue
    _assert_round_trip(lines)


# --------------------------------------------------------------------------- #
# inputs that once broke the round trip, kept as regression cases
# --------------------------------------------------------------------------- #


def test_names_with_nbsp_and_unicode_spaces_survive_the_round_trip() -> None:
    printed = _assert_round_trip(
        [
            "BACKEND ADD_DNS b\xa0 dc\u3000 host\u200b 5672",
            "FARM ADD \xa0f round-robin b\xa0",
            "MAP FARM \xa0v\xa0 \xa0f",
            "MAP BACKEND #v b\xa0",
        ]
    )
    assert "MAP FARM \xa0v\xa0 \xa0f\n" in printed
    assert "MAP BACKEND #v b\xa0\n" in printed


def test_the_config_reader_splits_on_newline_only_and_strips_only_grammar_whitespace(
    tmp_path: Path,
) -> None:
    path = tmp_path / "router.conf"
    path.write_bytes(
        "# a comment\r\n"
        "  MAP BACKEND v b1\u2028EXIT  \r\n"
        "\v\f\tMAP BACKEND w\x85x b\xa0\r\n"
        "\n"
        "MAP BACKEND y\x1cz b\x1d\x1e\n"
        "MAP BACKEND \xa0 b".encode()
    )
    assert cli._config_lines(path) == [
        (f"{path}:2", "MAP BACKEND v b1\u2028EXIT"),
        (f"{path}:3", "MAP BACKEND w\x85x b\xa0"),
        (f"{path}:5", "MAP BACKEND y\x1cz b\x1d\x1e"),
        (f"{path}:6", "MAP BACKEND \xa0 b"),
    ]
    # And the grammar refuses the lines that hold a separator, naming the word escaped.
    refusals = [parse(line) for _where, line in cli._config_lines(path)[:3]]
    assert refusals == [
        ParseError(
            f"Word '{word}' contains {character}: no word may contain a control character, "
            "a line separator or a bidi control.\n"
        )
        for word, character in (
            ("b1\\u2028EXIT", "\\u2028"),
            ("w\\x85x", "\\x85"),
            ("y\\x1cz", "\\x1c"),
        )
    ]
