"""``amqprouter_ctl <control_socket> ARGS...``: send one command to a running amqprouter.

The arguments are joined with single spaces into one line, sent to the router's
control socket, and the reply is printed as it arrives.

Exit codes: 0 the command succeeded, 1 the router answered with an error,
2 the router could not be reached (the message says why). A streaming reply
(``STAT LISTEN``) is printed until the router closes it or Ctrl-C; both exit 0.
"""

from __future__ import annotations

import socket
import sys
from typing import Final

USAGE: Final = "Usage: amqprouter_ctl <control_socket> ARGS"
HELP: Final = f"""{USAGE}

Sends ARGS, joined with spaces, as one command line to the amqprouter listening on the
Unix socket <control_socket> (amqprouter's --control-socket, default /tmp/amqprouter),
and prints the reply. `amqprouter_ctl /tmp/amqprouter HELP` lists the commands.

Exit codes: 0 success, 1 the router answered with an error, 2 the router could not be
reached.
"""
#: Must match amqprouter.control.socket_server.STATUS_HELLO (kept literal so that the
#: client stays importable without the daemon's dependencies).
STATUS_HELLO: Final = b"AMQPROUTER_CTL STATUS\n"
#: The status of a streaming reply (amqprouter.control.socket_server.STATUS_STREAMING).
STREAMING: Final = b"S"
CONNECT_TIMEOUT: Final = 5.0
#: The router answers every command within its own timeouts; this is a last resort.
READ_TIMEOUT: Final = 60.0

EXIT_OK, EXIT_COMMAND_FAILED, EXIT_UNREACHABLE = 0, 1, 2


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(HELP, end="")
        sys.exit(EXIT_OK)
    if len(args) < 2:
        print(USAGE, file=sys.stderr)
        sys.exit(EXIT_COMMAND_FAILED)
    path, words = args[0], args[1:]
    sys.exit(run(path, " ".join(words)))


def run(path: str, line: str) -> int:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(CONNECT_TIMEOUT)
    try:
        client.connect(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"amqprouter_ctl: cannot reach a router at {path}: {reason}", file=sys.stderr)
        client.close()
        return EXIT_UNREACHABLE
    status = b""
    try:
        client.settimeout(READ_TIMEOUT)
        client.sendall(STATUS_HELLO + line.encode() + b"\n")
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
