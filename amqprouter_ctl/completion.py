"""Shell completion for amqprouter_ctl, by click's protocol (as for ``amqprouter``).

``_AMQPROUTER_CTL_COMPLETE=bash_source amqprouter_ctl`` prints the bash script
(``zsh_source``, ``fish_source`` the others; click writes them, once per shell start);
the script then runs amqprouter_ctl with ``bash_complete`` and the words typed so far,
at every Tab, and this module answers that without click or the daemon's grammar: it
asks the router, with one ``COMPLETE words...`` line on its control socket and a short
timeout, for the keywords that may come next and the live backend, farm and vhost
names (``amqprouter.control.completion``). Only when no router answers (none runs, or
not there) does it import the grammar to offer the keywords alone.

A first word with a ``/`` completes as a file name (the socket). The socket is the one
named on the line, else the default (``cli.default_socket``), and is trusted as
``amqprouter_ctl`` trusts one (its owner and the answering process: you, root, or
``AMQPROUTER_CTL_ALLOW_OWNER`` and ``--allow-owner`` on the line).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import socket
import stat
import struct
import sys
from typing import Final

from amqprouter_ctl.cli import (
    ALLOW_OWNER_ENV,
    STATUS_HELLO,
    command_line,
    default_socket,
)

COMPLETE_VAR: Final = "_AMQPROUTER_CTL_COMPLETE"
#: A Tab must not hang on a router that does not answer.
QUERY_TIMEOUT: Final = 0.5
_OPTIONS_WITH_VALUE: Final = ("--allow-owner",)


def _split(text: str) -> list[str]:
    """Words as the shell split them, an unfinished quote or escape kept (click's way)."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    try:
        words.extend(lexer)
    except ValueError:
        words.append(lexer.token)
    return words


def completion_args(shell: str) -> tuple[list[str], str]:
    """The words before the one being completed, and what is typed of that one."""
    words = _split(os.environ.get("COMP_WORDS", ""))
    if shell == "fish":
        incomplete = os.environ.get("COMP_CWORD", "")
        incomplete = _split(incomplete)[0] if incomplete else ""
        args = words[1:]
        if incomplete and args and args[-1] == incomplete:
            args.pop()
        return args, incomplete
    cword = int(os.environ.get("COMP_CWORD", "0") or 0)
    args = words[1:cword]
    return args, words[cword] if cword < len(words) else ""


def _command_words(args: list[str]) -> tuple[str | None, list[str], list[str]]:
    """The socket named on the line (or None), the command's words, the --allow-owner
    users named."""
    owners: list[str] = []
    path: str | None = None
    words: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if not words and word.startswith("-"):
            if word in _OPTIONS_WITH_VALUE and index + 1 < len(args):
                owners.append(args[index + 1])
                index += 1
            elif word.startswith("--allow-owner="):
                owners.append(word.partition("=")[2])
        elif not words and path is None and "/" in word:
            path = word
        else:
            words.append(word)
        index += 1
    return path, words, owners


def _trusted(owners: list[str]) -> set[int]:
    trusted = {os.getuid(), os.geteuid(), 0}
    for owner in owners + [o for o in os.environ.get(ALLOW_OWNER_ENV, "").split(",") if o]:
        if owner.isdigit():
            trusted.add(int(owner))
            continue
        with contextlib.suppress(KeyError):  # an unknown user trusts nobody more
            trusted.add(pwd.getpwnam(owner).pw_uid)
    return trusted


def ask_router(path: str, words: list[str], trusted: set[int]) -> list[str] | None:
    """The router's ``COMPLETE`` answer for ``words``; None when no trusted router
    answers in time, or it answers an error."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid not in trusted:
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(QUERY_TIMEOUT)
    try:
        client.connect(path)
        credentials = client.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
        if struct.unpack("3i", credentials)[1] not in trusted:
            return None
        client.sendall(STATUS_HELLO + command_line(["COMPLETE", *words]).encode() + b"\n")
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
    except OSError:  # refused, timed out...
        return None
    finally:
        client.close()
    text, _, status = reply.partition(b"\0")
    if status != b"0":
        return None
    return text.decode("utf-8", "replace").splitlines()


def _matches(word: str, typed: str) -> bool:
    """Whether candidate ``word`` starts with what is typed (in any case; a quoted name by
    what is inside its quotes)."""
    word, typed = word.lower(), typed.lower()
    return word.startswith(typed) or (word[:1] in "'\"" and word[1:].startswith(typed))


def candidates(
    words: list[str], incomplete: str, path: str | None = None, owners: list[str] | None = None
) -> list[str]:
    """What may follow ``words`` and starts with ``incomplete``: the answer of the router
    at ``path``, or without one the grammar's keywords."""
    answer = ask_router(path, words, _trusted(owners or [])) if path is not None else None
    if answer is None:
        # No router: the grammar, imported only now (the slow path).
        from amqprouter.control.completion import keywords

        answer = keywords(words)
    return [word for word in answer if _matches(word, incomplete)]


def _items(args: list[str], incomplete: str) -> list[tuple[str, str]]:
    """(type, value) pairs, as click's CompletionItem."""
    path, words, owners = _command_words(args)
    if path is None and not words and "/" in incomplete:
        return [("file", incomplete)]
    if not words and incomplete.startswith("-"):
        options = ["--json", "--allow-owner", "--version", "--help"]
        return [("plain", option) for option in options if option.startswith(incomplete)]
    target = path if path is not None else default_socket()
    return [("plain", word) for word in candidates(words, incomplete, target, owners)]


def _format(shell: str, items: list[tuple[str, str]]) -> str:
    if shell == "zsh":
        return "\n".join(f"{kind}\n{value}\n_" for kind, value in items)
    return "\n".join(f"{kind},{value}" for kind, value in items)  # bash, fish


def complete() -> int:
    """Answer the shell: a Tab here, without click; a ``*_source`` script from click."""
    shell, _, action = os.environ.get(COMPLETE_VAR, "").partition("_")
    if action == "complete" and shell in ("bash", "zsh", "fish"):
        text = _format(shell, _items(*completion_args(shell)))
        if text:
            sys.stdout.write(text + "\n")
        return 0
    return _click_complete()


def _click_complete() -> int:
    """The scripts (``bash_source``...) and any other shell: click's own answer."""
    import click

    command = click.Command(
        "amqprouter_ctl",
        params=[
            click.Option(["--json"], is_flag=True),
            click.Option(["--version"], is_flag=True),
            click.Option(["--allow-owner"], multiple=True),
            click.Argument(["args"], nargs=-1),
        ],
    )
    command.main(prog_name="amqprouter_ctl", complete_var=COMPLETE_VAR)
    return 0  # pragma: no cover - click exits after completing
