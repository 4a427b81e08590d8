"""CONFIG RELOAD on a real control socket, in front of an in-process server: a changed
file changes backends and maps, a bad one changes nothing, TLS files are re-read."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
from pamqp import commands

from amqprouter.control.config_file import read_lines
from amqprouter.control.controller import Controller
from amqprouter.control.reload import Reloader
from amqprouter.control.socket_server import serve_control
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from tests.session.wire import fake_broker, open_and_idle, open_client, router
from tests.tls_certs import TlsFiles

CONFIG = """\
# the farm and its backends
BACKEND ADD b1 dc 127.0.0.1 5672
BACKEND ADD_DNS b2 dc localhost 5672
FARM ADD farm1 round-robin b1 b2
MAP BACKEND vhost1 b1
"""


@asynccontextmanager
async def router_with(path: Path | None, socket: Path) -> AsyncIterator[Controller]:
    """A server configured as ``amqprouter --config path`` starts (running: it can
    listen), its control socket at ``socket``."""
    server = Server(SessionSettings())
    controller = Controller(server, request_exit=lambda: None)
    setup = read_lines(path) if path is not None else []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        for _where, line in setup:
            assert (await controller.handle(line)).ok, line
        controller.reloader = Reloader(path, setup)
        controller.reloader.started(server.tls)
        await nursery.start(partial(serve_control, socket, controller.handle))
        yield controller
        nursery.cancel_scope.cancel()


async def ask(socket: Path, line: str) -> str:
    stream = await trio.open_unix_socket(str(socket))
    async with stream:
        await stream.send_all(line.encode() + b"\n")
        await stream.send_eof()
        reply = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                reply += chunk
    return reply.decode()


async def test_a_changed_file_changes_backends_and_maps(tmp_path: Path) -> None:
    config, socket = tmp_path / "router.conf", tmp_path / "ctl"
    config.write_text(CONFIG)
    async with router_with(config, socket) as controller:
        assert await ask(socket, "CONFIG RELOAD") == "No changes\n"
        # An operator's own backend, which the file never names: left alone.
        assert await ask(socket, "BACKEND ADD_DNS mine dc localhost 5672") == ""
        config.write_text(
            CONFIG.replace("MAP BACKEND vhost1 b1", "MAP FARM vhost1 farm2").replace(
                "BACKEND ADD_DNS b2 dc localhost 5672", "BACKEND ADD_DNS b2 dc localhost 5674"
            )
            + "BACKEND ADD b3 dc 127.0.0.1 5672\nFARM ADD farm2 round-robin b3\n"
        )
        assert await ask(socket, "CONFIG RELOAD") == (
            "Added backend b3\n"
            "Added farm farm2\n"
            "Replaced backend b2\n"
            "Replaced map vhost1 -> farm2\n"
            "Re-added farm farm1 (with replaced backend b2)\n"
        )
        assert await ask(socket, "MAP PRINT") == '"vhost1" => Farm:farm2\n'
        assert await ask(socket, "FARM PRINT") == "farm1: b1 b2 \nfarm2: b3 \n"
        routing = controller.server.routing
        assert sorted(routing.backends) == ["b1", "b2", "b3", "mine"]
        assert routing.backends["b2"].port == 5674
        assert routing.backends["b3"].ip == "127.0.0.1"

        config.write_text("BACKEND ADD b3 dc 127.0.0.1 5672\n")
        assert await ask(socket, "CONFIG RELOAD") == (
            "Removed backend b1\n"
            "Removed backend b2\n"
            "Removed farm farm1\n"
            "Removed map vhost1\n"
            "Removed farm farm2\n"
        )
        assert sorted(controller.server.routing.backends) == ["b3", "mine"]
        assert await ask(socket, "MAP PRINT") == ""


async def test_a_bad_file_changes_nothing_and_says_where(tmp_path: Path) -> None:
    config, socket = tmp_path / "router.conf", tmp_path / "ctl"
    config.write_text(CONFIG)
    async with router_with(config, socket) as controller:
        before = controller.server.routing
        config.write_text(CONFIG + "BACKEND ADD b3 dc 127.0.0.1 5672\nMAP BACKEND v b3 extra\n")
        assert await ask(socket, "CONFIG RELOAD") == (
            f"Config reload failed: {config}:7: Unexpected word 'extra': 'MAP BACKEND v b3' "
            "takes no more words.\n"
        )
        assert controller.server.routing is before
        # A line that parses but fails when applied: the routing is swapped whole or not.
        config.write_text(CONFIG + "BACKEND ADD b3 dc 127.0.0.1 5672\nFARM ADD f x b3\n")
        assert await ask(socket, "CONFIG RELOAD") == (
            f"Config reload failed: {config}:7: FARM ADD f x b3: Selector 'x' not found\n"
        )
        assert controller.server.routing is before
        config.write_text(CONFIG + "EXIT\n")
        assert await ask(socket, "CONFIG RELOAD") == (
            f"Config reload failed: {config}:6: 'EXIT' is an action, not configuration: a "
            "reload does not run it\n"
        )
        config.unlink()
        assert await ask(socket, "CONFIG RELOAD") == (
            f"Config reload failed: Cannot read {config}: No such file or directory\n"
        )
        assert controller.server.routing is before
        # Fixed, the same change applies in full.
        config.write_text(CONFIG + "BACKEND ADD b3 dc 127.0.0.1 5672\n")
        assert await ask(socket, "CONFIG RELOAD") == "Added backend b3\n"


async def test_flags_keep_their_place_around_the_file(tmp_path: Path) -> None:
    config = tmp_path / "router.conf"
    config.write_text("LOG CONSOLE 4\nMAP DEFAULT mine\n")
    server = Server(SessionSettings())
    controller = Controller(server, request_exit=lambda: None)
    # As cli.py orders them: -v, the file, then simple mode's commands.
    setup = [("--console-verbosity", "LOG CONSOLE 1"), *read_lines(config)]
    setup += [("simple mode", "MAP DEFAULT default")]
    for _where, line in setup:
        assert (await controller.handle(line)).ok, line
    controller.reloader = Reloader(config, setup)
    config.write_text("MAP DEFAULT other\n")
    reply = await controller.handle("CONFIG RELOAD")
    # -v's level comes back; simple mode's default farm still wins over the file's.
    assert (reply.text, reply.ok) == ("Replaced LOG CONSOLE 1\n", True)
    assert controller.console_verbosity == 1
    assert server.routing.default_farm == "default"


async def test_without_a_config_file_the_reply_says_so(tmp_path: Path) -> None:
    async with router_with(None, tmp_path / "ctl") as controller:
        reply = await controller.handle("CONFIG RELOAD")
        assert not reply.ok
        assert reply.text == (
            "No configuration file to reload: amqprouter was started without --config "
            "(log files re-opened, TLS files re-read).\n"
        )


async def test_tls_files_are_read_again(tmp_path: Path, tls_files: TlsFiles) -> None:
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    shutil.copy(tls_files.server.chain, chain)
    shutil.copy(tls_files.server.key, key)
    config, socket = tmp_path / "router.conf", tmp_path / "ctl"
    config.write_text(f"TLS INGRESS CERT_CHAIN_FILE {chain}\nTLS INGRESS KEY_FILE {key}\n")
    async with router_with(config, socket) as controller:
        first = controller.tls.context("INGRESS")
        assert await ask(socket, "CONFIG RELOAD") == "No changes\n"
        # Rotated in place (docs/tls.md): both files replaced, then a reload.
        shutil.copy(tls_files.client.chain, chain)
        shutil.copy(tls_files.client.key, key)
        assert await ask(socket, "CONFIG RELOAD") == (
            "Reloaded TLS INGRESS files (changed on disk)\n"
        )
        second = controller.tls.context("INGRESS")
        assert second is not None and second is not first
        assert "subject=CN=client" in await ask(socket, "TLS INGRESS PRINT")
        # A key that no longer matches: the error, and the context in force stays.
        shutil.copy(tls_files.server.key, key)
        reply = await controller.handle("CONFIG RELOAD")
        assert not reply.ok
        assert reply.text.startswith("Reloaded TLS INGRESS files (changed on disk)\nTLS INGRESS: ")
        assert reply.text.endswith(" (the previous files stay in force)\n")
        assert controller.tls.context("INGRESS") is second


async def test_a_replaced_backend_keeps_its_sessions(tmp_path: Path) -> None:
    config = tmp_path / "router.conf"
    lines = "BACKEND ADD b dc 127.0.0.1 {}\nFARM ADD f round-robin b\nMAP DEFAULT f\n"
    async with (
        fake_broker(open_and_idle) as old,
        fake_broker(open_and_idle) as new,
        router(None) as (server, port),
    ):
        config.write_text(lines.format(old.port))
        controller = Controller(server, request_exit=lambda: None)
        setup = read_lines(config)
        for _where, line in setup:
            assert (await controller.handle(line)).ok, line
        controller.reloader = Reloader(config, setup)
        before = await open_client(port)

        config.write_text(lines.format(new.port))
        reply = await controller.handle("CONFIG RELOAD")
        assert reply.text == "Replaced backend b\nRe-added farm f (with replaced backend b)\n"
        # The session routed before goes on with the broker it has...
        await before.send_method(commands.Channel.Open(), channel=1)
        assert isinstance(await old.accepted[0].read_method(), commands.Channel.Open)
        assert len(server.sessions) == 1
        # ...and a new one goes to the new address.
        await open_client(port)
        assert (len(old.accepted), len(new.accepted)) == (1, 1)
