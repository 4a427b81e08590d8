"""Shell completion for amqprouter_ctl (click's mechanism) and amqprouter (click's own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amqprouter_ctl.completion import candidates

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
