"""A vhost cut-over drill: pause, remap, disconnect, unpause, and what happened.

    python examples/failover/drill.py SOCKET VHOST NEW_FARM [--force] [--hold SECONDS]

The steps (amqpprox's migration workflow, amqpprox#66/#75), each printed with the
commands sent and the sessions seen:

1. ``VHOST PAUSE``: the vhost's sessions stop forwarding client data (held, not
   lost; both peers kept alive by heartbeats), and new clients are held at
   Connection.Open.
2. ``MAP FARM VHOST NEW_FARM``: new connections will go to the new farm.
3. ``VHOST BACKEND_DISCONNECT`` (or ``--force``: ``VHOST FORCE_DISCONNECT``): the
   established sessions are closed; their clients reconnect and are held at Open.
4. Wait up to ``--hold`` seconds for the clients to come back (held sessions are
   shown). This is where an operator moves definitions or drains queues.
5. ``VHOST UNPAUSE``: held clients connect, to the new farm.
6. The vhost's sessions after the drill, with the broker each one reached.

Exits 0 when the drill ran, 1 if the router refused a command.
"""

from __future__ import annotations

import argparse
import time

from routerctl import CtlError, ctl, fail, held, sessions


def show(socket: str, vhost: str) -> list[dict[str, str]]:
    found = sessions(socket, vhost)
    for session in found:
        state = "held at Open" if held(session) else f"broker {session['egressRemote']}"
        paused = " (paused)" if session["paused"] == "Y" and not held(session) else ""
        print(f"    session {session['id']}: {state}{paused}")
    if not found:
        print("    (no sessions)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="the router's control socket (--control-socket)")
    parser.add_argument("vhost")
    parser.add_argument("farm", help="the farm the vhost moves to")
    parser.add_argument("--force", action="store_true", help="cut sessions instead of 320")
    parser.add_argument(
        "--hold", type=float, default=10.0, help="seconds to wait for clients to come back"
    )
    args = parser.parse_args()
    socket, vhost = args.socket, args.vhost
    try:
        print(f"0. before: sessions of vhost {vhost}")
        before = show(socket, vhost)
        print("1. pause the vhost")
        ctl(socket, "VHOST", "PAUSE", vhost)
        show(socket, vhost)
        print(f"2. map the vhost to farm {args.farm}")
        ctl(socket, "MAP", "FARM", vhost, args.farm)
        print("3. disconnect its sessions")
        ctl(socket, "VHOST", "FORCE_DISCONNECT" if args.force else "BACKEND_DISCONNECT", vhost)
        print(f"4. wait up to {args.hold:g}s for {len(before)} client(s) to come back, held")
        deadline = time.monotonic() + args.hold
        waiting = sessions(socket, vhost)
        while time.monotonic() < deadline:
            waiting = sessions(socket, vhost)
            if len([s for s in waiting if held(s)]) >= len(before):
                break
            time.sleep(0.2)
        show(socket, vhost)
        print("5. unpause the vhost")
        ctl(socket, "VHOST", "UNPAUSE", vhost)
        time.sleep(0.5)  # let held clients finish their handshake with the new farm
        print(f"6. after: sessions of vhost {vhost}")
        after = show(socket, vhost)
        print(
            f"drill done: {len(before)} session(s) before, {len(after)} after, "
            f"{len([s for s in after if held(s)])} still held"
        )
    except CtlError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
