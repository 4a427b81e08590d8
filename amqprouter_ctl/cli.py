"""``amqprouter_ctl [--json] [--allow-owner USER] [<control_socket>] ARGS...``: one command.

The arguments are joined with single spaces into one line, each quoted as the control
grammar reads it back when it needs to be (``MAP BACKEND 'my vhost' rabbit1`` from the
shell's ``MAP BACKEND 'my vhost' rabbit1``: the argument ``my vhost`` arrives whole),
sent to the router's control socket, and the reply is printed as it arrives. The first
argument is sent as it is: a verb never needs quotes, and a first argument holding
spaces is a whole command line (``amqprouter_ctl "MAP PRINT"``), as it always was.
``--json`` asks the router for the command's JSON form (one object a line), which the
router builds from its own records: nothing here reads the reply's text.

Before sending, the socket's owner is checked, and again the user of the process
that answers (SO_PEERCRED): a socket held by someone other than the caller or root
may be an impostor (anyone can create a socket in /tmp), so it is refused unless
``--allow-owner`` (or AMQPROUTER_CTL_ALLOW_OWNER) names that user.

Exit codes: 0 the command succeeded, 1 the router answered with an error (or a usage
error), 2 the router could not be reached or was refused (the message says why, and
what to try). A streaming reply (``STAT LISTEN``) is printed until the router closes
it or Ctrl-C; both exit 0.

Shell completion (``_AMQPROUTER_CTL_COMPLETE=bash_source amqprouter_ctl``, as click
does it for ``amqprouter``) lives in ``amqprouter_ctl.completion``, imported only then.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import struct
import sys
from collections.abc import Collection
from typing import Final, NamedTuple

from amqprouter import __version__

USAGE: Final = "Usage: amqprouter_ctl [--json] [--allow-owner USER] [<control_socket>] ARGS"
#: The options may also come after <control_socket>, before ARGS.
#: Must match amqprouter.control.socket_server.RUN_SOCKET and FALLBACK_SOCKET (kept
#: literal so that the client stays importable without the daemon's dependencies).
RUN_SOCKET: Final = "/run/amqprouter/control"
FALLBACK_SOCKET: Final = "/tmp/amqprouter"
SOCKET_ENV: Final = "AMQPROUTER_CONTROL_SOCKET"
ALLOW_OWNER_ENV: Final = "AMQPROUTER_CTL_ALLOW_OWNER"
HELP: Final = f"""{USAGE}

Sends ARGS, joined with spaces, as one command line to the amqprouter listening on the
Unix socket <control_socket>, and prints the reply. `amqprouter_ctl HELP` lists the
commands. An argument holding spaces or quotes arrives as one word (it is quoted for
the router): amqprouter_ctl MAP BACKEND 'my vhost' rabbit1.

The options may come before or after <control_socket> (amqprouter_ctl SOCKET --json
MAP PRINT), never after the command's first word. <control_socket> may be left out when
the first word has no `/` and is not a socket file: then ${SOCKET_ENV} is used if set,
else {RUN_SOCKET} if it exists, else {FALLBACK_SOCKET} (where amqprouter
puts its socket by default).

--json asks for the reply as JSON, one object a line: CONN, BACKEND PRINT, FARM PRINT,
MAP PRINT, VHOST PRINT, LIMIT PRINT, SESSION TRACE, SESSION CAPTURE, VHOST TRACE and
STAT LISTEN json have a JSON form; any other command is refused (exit 1) and not run.

The socket must belong to you or root, and the router answering on it must run as
you or root: a socket anyone else holds is refused (exit 2), since in a directory
like /tmp anybody can create one. --allow-owner USER (a name or uid; repeatable, or
a comma-separated list in ${ALLOW_OWNER_ENV}) trusts that user
too, such as the service user a router runs as.

Exit codes: 0 success, 1 the router answered with an error (or bad usage), 2 the router
could not be reached or was refused.

--version prints the version. Shell completion: eval "$(_AMQPROUTER_CTL_COMPLETE=bash_source
amqprouter_ctl)" in ~/.bashrc (zsh: zsh_source in ~/.zshrc).
"""
#: Must match amqprouter.control.socket_server.STATUS_HELLO and JSON_HELLO.
STATUS_HELLO: Final = b"AMQPROUTER_CTL STATUS\n"
JSON_HELLO: Final = b"AMQPROUTER_CTL JSON\n"
#: The status of a streaming reply (amqprouter.control.socket_server.STATUS_STREAMING).
STREAMING: Final = b"S"
CONNECT_TIMEOUT: Final = 5.0
#: The router answers every command within its own timeouts; this is a last resort.
READ_TIMEOUT: Final = 60.0

EXIT_OK, EXIT_COMMAND_FAILED, EXIT_UNREACHABLE = 0, 1, 2


class UsageError(Exception):
    pass


class Invocation(NamedTuple):
    """What the command line asks for; ``path`` is None for --help and --version."""

    path: str | None
    words: list[str]
    trusted: set[int]
    json: bool = False
    version: bool = False


def main(argv: list[str] | None = None) -> None:
    if os.environ.get("_AMQPROUTER_CTL_COMPLETE"):
        # Only a shell asking for completions gets here; it needs click and the grammar.
        from amqprouter_ctl import completion

        sys.exit(completion.complete())
    args = sys.argv[1:] if argv is None else argv
    try:
        invocation = parse(args)
    except UsageError as exc:
        print(f"{USAGE}\n{exc}" if str(exc) else USAGE, file=sys.stderr)
        sys.exit(EXIT_COMMAND_FAILED)
    if invocation.version:
        print(f"amqprouter_ctl, version {__version__}")
        sys.exit(EXIT_OK)
    if invocation.path is None:  # --help
        print(HELP, end="")
        sys.exit(EXIT_OK)
    line = command_line(invocation.words)
    sys.exit(run(invocation.path, line, invocation.trusted, as_json=invocation.json))


def parse(args: list[str]) -> Invocation:
    """What ``args`` (argv without the program) ask for."""
    args = list(args)
    owners = [name for name in os.environ.get(ALLOW_OWNER_ENV, "").split(",") if name]
    as_json = False
    path: str | None = None
    # Options go before the command's first word: before the socket or after it (no
    # verb starts with "-"; "--" ends them).
    while args:
        if args[0].startswith("-"):
            option = args.pop(0)
            if option in ("-h", "--help"):
                return Invocation(None, [], set())
            if option == "--version":
                return Invocation(None, [], set(), version=True)
            if option == "--json":
                as_json = True
            elif option == "--allow-owner":
                if not args:
                    raise UsageError("--allow-owner needs a user name or uid")
                owners.append(args.pop(0))
            elif option.startswith("--allow-owner="):
                owners.append(option.partition("=")[2])
            elif option == "--":
                break
            else:
                raise UsageError(f"unknown option {option}{_did_you_mean(option, _OPTIONS)}")
        elif path is None and _names_a_socket(args[0]):
            path = args.pop(0)
        else:
            break
    if path is None and args and _names_a_socket(args[0]):
        path = args.pop(0)  # after "--"
    if path is None:
        path = default_socket()
    if not args:
        raise UsageError("")
    for word in args:
        if "\n" in word or "\r" in word:
            # The command goes out as one line: a newline would end it there and the
            # rest would never be sent (or be read as a second line by a plain client).
            raise UsageError(f"an argument holds a line break: {word!r}")
    trusted = {os.getuid(), os.geteuid(), 0} | {_uid(owner) for owner in owners}
    return Invocation(path, args, trusted, json=as_json)


#: What makes an argument need quoting (amqprouter.control.grammar.words._NEEDS_QUOTES:
#: the grammar's whitespace, quotes and the backslash), kept here so that the client
#: imports nothing of the daemon.
_NEEDS_QUOTES: Final = frozenset(" \t\n\v\f\r'\"\\")


def quote(word: str) -> str:
    """``word`` as the control grammar reads it back as one word (its ``quote``)."""
    if word and not _NEEDS_QUOTES.intersection(word):
        return word
    if "'" not in word:
        return f"'{word}'"
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(words: list[str]) -> str:
    """The control line of ``words``: the first as it is, the others quoted as needed."""
    return " ".join(words[:1] + [quote(word) for word in words[1:]])


_OPTIONS: Final = ("--json", "--allow-owner", "--version", "--help")


def _did_you_mean(word: str, choices: Collection[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or nothing."""
    import difflib  # only on this error's path

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _names_a_socket(word: str) -> bool:
    if "/" in word:
        return True
    try:
        return stat.S_ISSOCK(os.stat(word).st_mode)
    except OSError:
        return False


def default_socket() -> str:
    from_env = os.environ.get(SOCKET_ENV)
    if from_env:
        return from_env
    return RUN_SOCKET if os.path.lexists(RUN_SOCKET) else FALLBACK_SOCKET


def _uid(owner: str) -> int:
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise UsageError(f"--allow-owner: no such user {owner!r}") from None


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _refuse_owner(path: str, what: str, uid: int) -> int:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    print(
        f"amqprouter_ctl: refusing {path}: {what} {_user(uid)}, not you or root, so it may "
        f"not be your router; if it is, pass --allow-owner {name} (or set "
        f"{ALLOW_OWNER_ENV}={name})",
        file=sys.stderr,
    )
    return EXIT_UNREACHABLE


def _unreachable(path: str, why: str) -> int:
    print(f"amqprouter_ctl: cannot reach a router at {path}: {why}", file=sys.stderr)
    return EXIT_UNREACHABLE


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a file of another kind"


def _why_not(exc: OSError, st: os.stat_result | None) -> str:
    """What an operator should know about a failed connect(): the reason, then what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        return (
            f"{reason} (no router has its control socket there: is amqprouter running, "
            "and with this --control-socket? Give the socket as the first argument or in "
            f"${SOCKET_ENV})"
        )
    if exc.errno == errno.ECONNREFUSED:
        return (
            f"{reason} (a socket file that no router listens on, left by a router that "
            "stopped; a router started there replaces it)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        if st is None:
            return f"{reason} (a directory on the way to it cannot be searched by you)"
        return (
            f"{reason} (the socket is mode {stat.S_IMODE(st.st_mode):04o}, owned by "
            f"{_user(st.st_uid)}: run this as that user, or start the router with "
            "--control-socket-mode 0660 and join its group)"
        )
    return reason


def run(path: str, line: str, trusted: Collection[int] = (), *, as_json: bool = False) -> int:
    """Send ``line`` to the router at ``path``; the exit code.

    Only a socket owned by, and a router running as, a user in ``trusted`` (the
    caller and root are always added) is sent anything. ``as_json`` asks for the
    reply's JSON form.
    """
    trusted = {os.getuid(), os.geteuid(), 0, *trusted}
    st: os.stat_result | None = None
    try:
        st = os.stat(path)
    except OSError:
        pass  # connect() below says why, in the words users know
    else:
        if not stat.S_ISSOCK(st.st_mode):
            # connect() would say "Connection refused", as if a router had stopped.
            return _unreachable(
                path,
                f"not a socket but {_kind(st.st_mode)}; the router's control socket is "
                "elsewhere (see --control-socket), or something else took this path",
            )
        if st.st_uid not in trusted:
            return _refuse_owner(path, "the socket file belongs to", st.st_uid)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(CONNECT_TIMEOUT)
    try:
        client.connect(path)
    except OSError as exc:
        client.close()
        return _unreachable(path, _why_not(exc, st))
    # The file may have been swapped since it was checked: the kernel's word on who
    # listens is what counts.
    _pid, peer_uid, _gid = struct.unpack(
        "3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    )
    if peer_uid not in trusted:
        client.close()
        return _refuse_owner(path, "the process answering on it runs as", peer_uid)
    status = b""
    try:
        client.settimeout(READ_TIMEOUT)
        client.sendall(STATUS_HELLO + (JSON_HELLO if as_json else b"") + line.encode() + b"\n")
        out = sys.stdout.buffer
        trailer = False
        while chunk := client.recv(65536):
            # The reply streams as it arrives; everything after the NUL is the status.
            if not trailer and (cut := chunk.find(b"\0")) >= 0:
                trailer = True
                status, chunk = chunk[cut + 1 :], chunk[:cut]
                if status.startswith(STREAMING):
                    # A stream (STAT LISTEN): the rest is output, until EOF or Ctrl-C.
                    chunk += status[1:]
                    client.settimeout(None)
            elif trailer and not status.startswith(STREAMING):
                status, chunk = status + chunk, b""
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        if status.startswith(STREAMING):
            return EXIT_OK  # how a STAT LISTEN is meant to end
        raise
    except OSError as exc:
        print(f"amqprouter_ctl: connection to {path} failed: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        client.close()
    if status.startswith(b"0") or status.startswith(STREAMING):
        return EXIT_OK
    if status.startswith(b"1"):
        return EXIT_COMMAND_FAILED
    print("amqprouter_ctl: the router closed the connection without a status", file=sys.stderr)
    return EXIT_UNREACHABLE
