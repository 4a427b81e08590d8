"""Sever sessions on demand: every session of one vhost, or of one backend.

    python examples/failover/sever.py SOCKET vhost NAME [--force]
    python examples/failover/sever.py SOCKET backend NAME [--force] [--keep-disabled]

Graceful (the default): each client gets ``Connection.Close 320 CONNECTION_FORCED``
with a text naming the command, the close handshake runs with both sides, and the
client library starts its recovery. ``--force`` cuts the TCP connections instead (the
client sees a reset), which tests the other recovery path.

For a vhost this sends ``SESSION <id> DISCONNECT_GRACEFUL`` (or ``VHOST
FORCE_DISCONNECT``); for a backend ``BACKEND DRAIN <name> [GRACEFUL|FORCE]``, then
``BACKEND ENABLE <name>`` again unless ``--keep-disabled``, so that reconnecting
clients may land on it again. Exits 0 on success, 1 if the router refused a command.
"""

from __future__ import annotations

import argparse

from routerctl import CtlError, ctl, fail, sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="the router's control socket (--control-socket)")
    parser.add_argument("kind", choices=("vhost", "backend"))
    parser.add_argument("name", help="the vhost or backend name")
    parser.add_argument("--force", action="store_true", help="cut instead of closing")
    parser.add_argument(
        "--keep-disabled", action="store_true", help="backend: leave it disabled afterwards"
    )
    args = parser.parse_args()
    try:
        if args.kind == "vhost":
            targets = sessions(args.socket, args.name)
            print(f"vhost {args.name}: {len(targets)} session(s)")
            if args.force:
                ctl(args.socket, "VHOST", "FORCE_DISCONNECT", args.name)
            else:
                for session in targets:
                    ctl(args.socket, "SESSION", session["id"], "DISCONNECT_GRACEFUL")
            print(f"severed {len(targets)} session(s) of vhost {args.name}")
        else:
            mode = "FORCE" if args.force else "GRACEFUL"
            reply = ctl(args.socket, "BACKEND", "DRAIN", args.name, mode)
            if not args.keep_disabled:
                ctl(args.socket, "BACKEND", "ENABLE", args.name)
            print(f"severed: {reply.strip()}")
    except CtlError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
