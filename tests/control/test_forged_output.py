"""A client cannot forge control output.

A client chooses its vhost and its connection name. A vhost holding a newline and
terminal escapes (``/x\\nid=999 vhost=evil\\x1b[31m``) used to be printed raw by
VHOST PRINT and CONN: a fake session line on the operator's screen, in red. Every
control reply now escapes client-chosen text as the log lines do
(``amqprouter.text.escape``), and the grammar refuses such words from the operator,
so MAP PRINT and the other listings of configured names cannot hold them either.

The end-to-end test runs the router as users do (``python -m amqprouter``) in front of
the machine's RabbitMQ, with pika clients and the real ``amqprouter_ctl``, and reads
the replies as bytes (no newline translation hides a ``\\r``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import pytest
import trio

from amqprouter.control.controller import Controller
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from amqprouter.text import escape, unsafe_character
from tests.brokers import SYSTEM_PORT, SystemBroker
from tests.router import RouterProcess, running_router

CTL = Path(sys.executable).parent / "amqprouter_ctl"
WAIT = 15.0
#: A vhost that once forged a line, word for word: the broker refuses it, VHOST PRINT records it.
FORGED = "/x\nid=999 vhost=evil\x1b[31m"
#: Connection names with a newline, a cursor-moving escape and a title-setting OSC.
NAMES = ("evil\nid=998 vhost=/\x1b[2J", "name\rid=997\x1b]0;pwned\x07\u2028\u202e")


def _ctl(socket_path: Path, *words: str) -> tuple[int, str]:
    result = subprocess.run(
        [str(CTL), str(socket_path), *words],
        capture_output=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode, result.stdout.decode("utf-8") + result.stderr.decode("utf-8")


def _assert_no_raw_control(text: str) -> list[str]:
    """``text``'s lines; no character in them a terminal would act on."""
    assert text.endswith("\n") or not text, repr(text)
    lines = text.split("\n")[:-1]
    for line in lines:
        assert unsafe_character(line) is None, repr(line)
    return lines


def _params(router: RouterProcess, vhost: str, name: str) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        router.port,
        virtual_host=vhost,
        client_properties={"connection_name": name},
        connection_attempts=1,
        socket_timeout=WAIT,
        blocked_connection_timeout=WAIT,
    )


CONN_LINE = re.compile(
    r"id=(\d+) vhost=(.*) disconnected=[YN] paused=[YN] authDenied=N ingressRemote=\S+ "
    r"ingressLocal=\S+ egressLocal=\S+ egressRemote=\S+ inBytes=\d+ inFrames=\d+ "
    r"inPackets=\d+ outBytes=\d+ outFrames=\d+ outPackets=\d+ \d+\.\d+:\d+\.\d+"
    # Ours after amqpprox's: where routing sent it (a mapping is a vhost or a pattern:
    # escaped like it, quoted if it holds a space), then who the client is, its words
    # quoted (a quote in them escaped).
    r' backend=\S+ mapping=(?:"(?:[^"\\]|\\.)*"|\S+) rule=(?:-|\d+)'
    r' user=(?:-|"[^"]*") connectionName=(-|"(?:[^"\\]|\\.)*") '
    r'product=(?:-|"[^"]*") version=(?:-|"[^"]*") platform=(?:-|"[^"]*") age=\d+ '
    r"inRate=\d+ outRate=\d+ inFrameRate=\d+ outFrameRate=\d+"
)


def test_client_chosen_vhosts_and_names_cannot_forge_control_output(
    system_broker: SystemBroker,
) -> None:
    # A vhost the broker really has, so that its session stays and CONN shows it.
    live_vhost = f"/amqprt-forged-{uuid.uuid4().hex[:8]}\nid=999 vhost=evil\x1b[31m\u2028\u202e"
    system_broker.add_vhost(live_vhost)
    try:
        with running_router(SYSTEM_PORT) as router:
            socket_path = router.stdout_path.parent / "control"
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                pika.BlockingConnection(_params(router, FORGED, NAMES[0]))
            connection = pika.BlockingConnection(_params(router, live_vhost, NAMES[1]))
            try:
                _check_conn(socket_path, live_vhost)
                _check_vhost_print(socket_path, live_vhost)
                _check_map(socket_path)
                _check_log_files(router)
            finally:
                connection.close()
    finally:
        # delete_vhost looks the name up first, and rabbitmqctl lists it mangled.
        system_broker.ctl("delete_vhost", live_vhost)


def _check_conn(socket_path: Path, live_vhost: str) -> None:
    code, text = _ctl(socket_path, "CONN")
    assert code == 0, text
    lines = _assert_no_raw_control(text)
    matches = [CONN_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    # One line per session: no line is the forged "id=999" one.
    assert all(m is not None and m.group(1) != "999" for m in matches)
    ours = [m for m in matches if m is not None and "amqprt-forged-" in m.group(2)]
    assert len(ours) == 1, lines
    assert ours[0].group(2) == escape(live_vhost)
    # The connection name is the client's too: escaped, and quoted as one field.
    assert ours[0].group(3) == f'"{escape(NAMES[1])}"'
    assert "\\nid=999 vhost=evil\\x1b[31m\\u2028\\u202e" in ours[0].group(2)


def _check_vhost_print(socket_path: Path, live_vhost: str) -> None:
    code, text = _ctl(socket_path, "VHOST", "PRINT")
    assert code == 0, text
    lines = _assert_no_raw_control(text)
    # One line per vhost seen: the refused one (recorded at Open) and the live one.
    assert sorted(lines) == sorted(
        [f"{escape(FORGED)} = UNPAUSED", f"{escape(live_vhost)} = UNPAUSED"]
    )
    assert "/x\\nid=999 vhost=evil\\x1b[31m = UNPAUSED" in lines


def _check_map(socket_path: Path) -> None:
    # The operator cannot put a forged vhost into the configuration either. (Not the
    # newline: amqprouter_ctl sends its words as one line, so a newline in an argument
    # ends the command there; the grammar tests cover the rest.)
    forged = "/x\x1b[31m\u2028id=999"
    for words in (("MAP", "BACKEND", forged, "default-backend"), ("VHOST", "PAUSE", forged)):
        code, text = _ctl(socket_path, *words)
        assert (code, text) == (
            1,
            "Word '/x\\x1b[31m\\u2028id=999' contains \\x1b: no word may contain a "
            "control character, a line separator or a bidi control.\n",
        )
    code, text = _ctl(socket_path, "MAP", "BACKEND", "/v\xa0é", "default-backend")
    assert (code, text) == (0, "")
    code, text = _ctl(socket_path, "MAP", "PRINT")
    assert code == 0
    assert _assert_no_raw_control(text) == [
        '"/v\xa0é" => Backend:default-backend',
        "(default) => Farm:default",
    ]


def _check_log_files(router: RouterProcess) -> None:
    """The log lines were already safe (structlog's repr): the same escapes as CONN's."""
    logs = router.stdout_path.parent / "logs"
    deadline = time.monotonic() + WAIT
    while True:
        text = "".join(path.read_text("utf-8") for path in sorted(logs.glob("*.log")))
        if escape(NAMES[1]) in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert escape(NAMES[0]) in text and escape(NAMES[1]) in text, text[-2000:]
    _assert_no_raw_control(text)


# --------------------------------------------------------------------------- #
# BACKEND PRINT: a down reason may quote a broker
# --------------------------------------------------------------------------- #


async def test_backend_print_escapes_a_down_reason() -> None:
    server = Server(SessionSettings(), RoutingTable.single(Backend("b1", "dc", "127.0.0.1", 1)))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        controller = Controller(server, request_exit=lambda: None)
        server.health.registry.connect_failed("b1", "127.0.0.1:1 said 'x\nb2 (dc): evil\x1b[31m'")
        text = (await controller.handle("BACKEND PRINT")).text
        nursery.cancel_scope.cancel()
    lines = _assert_no_raw_control(text)
    assert len(lines) == 1
    assert lines[0].startswith("b1 (dc): 127.0.0.1 :1 DOWN (connect failed: ")
    assert "said 'x\\nb2 (dc): evil\\x1b[31m'" in lines[0]
