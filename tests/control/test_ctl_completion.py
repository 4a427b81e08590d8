"""Shell completion for amqprouter_ctl (click's mechanism) and amqprouter (click's own)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amqprouter_ctl.completion import candidates
from tests.brokers import free_port
from tests.router import REPO, running_router

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("words", "incomplete", "expected"),
    [
        ([], "BA", ["BACKEND"]),
        ([], "ma", ["MAP", "MAPHOSTNAME"]),
        (
            ["BACKEND"],
            "",
            ["ADD", "ADD_DNS", "CHECK", "DELETE", "DISABLE", "DRAIN", "ENABLE", "PRINT"],
        ),
        (["BACKEND", "DELETE"], "", []),  # any name goes there
        (["BACKEND", "ADD", "b", "dc", "h", "5672"], "", ["SEND-PROXY", "SEND-PROXY-V2", "TLS"]),
        (["LOG"], "", ["CONSOLE", "FILE"]),
        (["STAT", "LISTEN"], "", ["human", "json"]),
        (
            ["STAT", "LISTEN", "json"],
            "",
            ["all", "all-except-per-source", "bufferpool", "overall", "process"],
        ),
        (["TLS", "EGRESS"], "min", ["MIN_VERSION"]),
        (["LIMIT", "CONN_RATE"], "", ["DEFAULT", "VHOST"]),
    ],
)
def test_candidates_follow_the_grammar(
    words: list[str], incomplete: str, expected: list[str]
) -> None:
    assert candidates(words, incomplete) == expected


def _complete(program: str, variable: str, words: str, cword: int) -> str:
    env = {**os.environ, variable: "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run(
        [str(BIN / program)], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_ctl_answers_bash() -> None:
    words = "amqprouter_ctl /tmp/amqprouter BACKEND D"
    assert _complete("amqprouter_ctl", "_AMQPROUTER_CTL_COMPLETE", words, 3) == (
        "plain,DELETE\nplain,DISABLE\nplain,DRAIN\n"
    )
    # The socket: a file name, completed by the shell.
    assert _complete("amqprouter_ctl", "_AMQPROUTER_CTL_COMPLETE", "x /tm", 1) == "file,/tm\n"


def test_amqprouter_answers_bash() -> None:
    out = _complete("amqprouter", "_AMQPROUTER_COMPLETE", "amqprouter --control-socket-m", 1)
    assert out == "plain,--control-socket-mode\n"


@pytest.mark.parametrize(
    ("program", "variable"),
    [("amqprouter_ctl", "_AMQPROUTER_CTL_COMPLETE"), ("amqprouter", "_AMQPROUTER_COMPLETE")],
)
def test_the_documented_bash_line_registers_a_completion(program: str, variable: str) -> None:
    # What docs/usage.md tells a user to put in ~/.bashrc, run by a real bash.
    script = f'eval "$({variable}=bash_source {BIN / program})"; complete -p {program}'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"_{program}_completion" in done.stdout


# --------------------------------------------------------------------------- #
# Live names, from the router, fast


async def test_the_router_offers_keywords_and_live_names() -> None:
    from amqprouter.control.controller import Controller
    from tests.session.wire import router

    async with router(None) as (server, _port):
        controller = Controller(server, request_exit=lambda: None)
        for line in (
            "BACKEND ADD_DNS rabbit1 dc localhost 5672",
            "BACKEND ADD_DNS rabbit2 dc localhost 5672",
            "FARM ADD farm1 round-robin rabbit1",
            "MAP BACKEND 'my vhost' rabbit1",
            "MAP FARM orders farm1",
        ):
            assert (await controller.handle(line)).ok, line

        async def complete(line: str) -> list[str]:
            reply = await controller.handle(line)
            assert reply.ok
            return reply.text.splitlines()

        assert await complete("COMPLETE BACKEND DELETE") == ["rabbit1", "rabbit2"]
        assert await complete("COMPLETE MAP FARM v") == ["farm1"]
        assert await complete("COMPLETE MAP UNMAP") == ["'my vhost'", "orders"]
        assert await complete("COMPLETE FARM ADD f round-robin rabbit1") == ["rabbit1", "rabbit2"]
        assert "ADD" in await complete("COMPLETE BACKEND")
        assert "MAP" in await complete("COMPLETE")


def _complete_at(socket_path: Path, words: str) -> tuple[list[str], float]:
    """amqprouter_ctl's answer to a Tab after ``words`` (bash), and how long it took."""
    line = f"amqprouter_ctl {socket_path} {words}"
    cword = len(line.split()) if line.endswith(" ") else len(line.split()) - 1
    env = {
        **os.environ,
        "_AMQPROUTER_CTL_COMPLETE": "bash_complete",
        "COMP_WORDS": line,
        "COMP_CWORD": str(cword),
        "PYTHONPATH": str(REPO),
        # Which modules the Tab imported (the heavy ones must not be).
        "PYTHONPROFILEIMPORTTIME": "1",
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "amqprouter_ctl")], env=env, capture_output=True, text=True, timeout=30
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    for heavy in ("click", "trio", "amqprouter.control", "attrs"):
        assert heavy not in imported, f"the Tab imported {heavy}"
    return [line.partition(",")[2] for line in done.stdout.splitlines()], elapsed


def test_a_tab_asks_the_running_router_for_live_names(tmp_path: Path) -> None:
    with running_router(free_port(), extra=["--control-socket", str(tmp_path / "control")]) as r:
        socket_path = tmp_path / "control"
        for words in (
            ["BACKEND", "ADD", "rabbit1", "dc", "127.0.0.1", "5672"],
            ["MAP", "BACKEND", "my vhost", "rabbit1"],
            ["FARM", "ADD", "farm1", "round-robin", "rabbit1"],
        ):
            assert (
                subprocess.run(
                    [str(BIN / "amqprouter_ctl"), str(socket_path), *words],
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                    timeout=15,
                ).returncode
                == 0
            )
        assert r.process.poll() is None
        names, _ = _complete_at(socket_path, "BACKEND DELETE ")
        assert names == ["default-backend", "rabbit1"]  # simple mode's and ours
        names, _ = _complete_at(socket_path, "MAP UNMAP ")
        assert names == ["'my vhost'"]
        names, _ = _complete_at(socket_path, "--json MAP FARM v f")
        assert names == ["farm1"]
        names, _ = _complete_at(socket_path, "BACKEND D")
        assert names == ["DELETE", "DISABLE", "DRAIN"]
        # Fast: no heavy import (checked above), one small query. Compared with the
        # way every Tab went before (loading the grammar: what is left without a
        # router), on the same machine at the same moment, so load does not decide.
        asked = sorted(_complete_at(socket_path, "BACKEND D")[1] for _ in range(5))
        loaded = sorted(_slow_tab(tmp_path / "none") for _ in range(3))
        assert asked[2] < loaded[1] / 2, (asked, loaded)


def _slow_tab(socket_path: Path) -> float:
    """A Tab with no router to ask: the grammar is loaded (as every Tab did before)."""
    env = {
        **os.environ,
        "_AMQPROUTER_CTL_COMPLETE": "bash_complete",
        "COMP_WORDS": f"amqprouter_ctl {socket_path} BACKEND D",
        "COMP_CWORD": "3",
        "PYTHONPATH": str(REPO),
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "amqprouter_ctl")], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.stdout == "plain,DELETE\nplain,DISABLE\nplain,DRAIN\n", done.stderr
    return time.monotonic() - started
