"""``amqprouter_ctl <control_socket> ARGS...``.

The control socket server arrives with the control-plane work; until then this
client only explains its usage, so that the installed command is not a surprise.
"""

from __future__ import annotations

import sys

USAGE = "Usage: amqprouter_ctl <control_socket> ARGS"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]) or len(args) < 2:
        print(USAGE, file=sys.stderr)
        print(
            "Sends one command line to a running amqprouter's control socket and prints "
            "the reply. The control socket is not implemented yet in this version.",
            file=sys.stderr,
        )
        sys.exit(0 if args[:1] in (["-h"], ["--help"]) else 1)
    print(
        f"amqprouter_ctl: cannot reach {args[0]}: control socket not implemented yet",
        file=sys.stderr,
    )
    sys.exit(2)
