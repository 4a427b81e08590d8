"""amqprouter_ctl --json and --version, the real command against an in-process router."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

import amqprouter
from amqprouter.control.controller import Controller
from amqprouter.control.socket_server import serve_control
from tests.session.wire import router

CTL = Path(sys.executable).parent / "amqprouter_ctl"


async def _ctl(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process([str(CTL), *args], capture_stdout=True, check=False)


async def test_json_and_text_from_one_router(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    exits: list[None] = []
    async with router(None) as (server, _port), trio.open_nursery() as nursery:
        controller = Controller(server, request_exit=lambda: exits.append(None))
        await nursery.start(partial(serve_control, path, controller.handle))
        assert (
            await _ctl(str(path), "BACKEND", "ADD_DNS", "b1", "dc1", "localhost", "5672")
        ).returncode == 0
        assert (await _ctl(str(path), "MAP", "BACKEND", "/", "b1")).returncode == 0

        printed = await _ctl("--json", str(path), "MAP", "PRINT")
        assert printed.returncode == 0
        assert [json.loads(line) for line in printed.stdout.decode().splitlines()] == [
            {
                "vhost": "/",
                "default": False,
                "pattern": False,
                "type": "backend",
                "name": "b1",
                "brokerVhost": None,
                "pool": None,
            }
        ]
        text = await _ctl(str(path), "MAP", "PRINT")
        assert (text.returncode, text.stdout) == (0, b'"/" => Backend:b1\n')

        refused = await _ctl("--json", str(path), "EXIT")
        assert refused.returncode == 1
        assert refused.stdout.startswith(b"EXIT has no JSON form; --json works with CONN, ")
        assert exits == []  # refused, not run

        unknown = await _ctl("--json", str(path), "BACKEND", "LIST")
        assert unknown.returncode == 1
        assert unknown.stdout.startswith(b"Subcommand 'LIST' not recognized; valid subcommands: ")
        nursery.cancel_scope.cancel()


async def test_version() -> None:
    version = await _ctl("--version")
    assert (version.returncode, version.stdout.decode()) == (
        0,
        f"amqprouter_ctl, version {amqprouter.__version__}\n",
    )
