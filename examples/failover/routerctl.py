"""A thin wrapper over ``amqprouter_ctl`` for the failover scripts.

Runs the real ``amqprouter_ctl`` (found on PATH, as an operator would), echoes each
command it sends, and parses CONN lines into dicts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

#: Every amqprouter_ctl call is bounded; the router answers within its own timeouts.
CTL_TIMEOUT = 30.0
_FIELD = re.compile(r"(\w+)=(\S*)")


class CtlError(RuntimeError):
    """The router answered a command with an error (amqprouter_ctl exit code 1 or 2)."""


def ctl(socket_path: str, *words: str | int, echo: bool = True) -> str:
    """Send one command; its reply. CtlError when the router refuses it."""
    program = shutil.which("amqprouter_ctl") or "amqprouter_ctl"
    line = " ".join(map(str, words))
    if echo:
        print(f"  $ amqprouter_ctl {socket_path} {line}", flush=True)
    result = subprocess.run(
        [program, socket_path, *map(str, words)],
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise CtlError(f"{line}: {(result.stdout + result.stderr).strip()}")
    if echo and result.stdout:
        for reply in result.stdout.rstrip("\n").splitlines():
            print(f"    {reply}", flush=True)
    return result.stdout


def sessions(socket_path: str, vhost: str | None = None) -> list[dict[str, str]]:
    """CONN, one dict per session (``id``, ``vhost``, ``paused``, ``egressRemote``, ...)."""
    found = []
    for line in ctl(socket_path, "CONN", echo=False).splitlines():
        fields = dict(_FIELD.findall(line))
        if "id" in fields and (vhost is None or fields.get("vhost") == vhost):
            found.append(fields)
    return found


def held(session: dict[str, str]) -> bool:
    """A session held at Connection.Open: paused, and no broker connection yet."""
    return session.get("paused") == "Y" and session.get("egressRemote") == "0.0.0.0:0"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
