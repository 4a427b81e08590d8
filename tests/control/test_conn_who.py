"""CONN says who each client is and how much it sends now, and sorts by it.

Unit checks of the grammar and the line format, then the router as users run it
(``python -m amqprouter`` before the machine's RabbitMQ) with real pika clients and the
real ``amqprouter_ctl``: CONN shows pika's product and version, the SASL user, the
backend, the connection name; ``CONN SORT inRate`` puts the client that publishes now
first; ``--json`` carries the same fields.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika
import pytest

from amqprouter.control import conn
from amqprouter.control.commands import CONN_SORT_FIELDS, Conn
from amqprouter.control.grammar import ParseError, parse, to_line
from amqprouter.observe.stats import SessionRates
from amqprouter.text import unsafe_character
from tests.brokers import SYSTEM_PORT, SystemBroker
from tests.router import RouterProcess, running_router

CTL = Path(sys.executable).parent / "amqprouter_ctl"
WAIT = 20.0


# --------------------------------------------------------------------------- #
# Grammar
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("field", CONN_SORT_FIELDS)
def test_conn_sort_parses_each_field_in_any_case_and_writes_it_back(field: str) -> None:
    assert parse(f"CONN SORT {field}") == Conn(field)
    assert parse(f"conn sort {field.upper()}") == Conn(field)
    assert to_line(Conn(field)) == f"CONN SORT {field}"
    assert to_line(Conn()) == "CONN"


def test_every_sort_field_has_a_key() -> None:
    assert set(conn.SORT_KEYS) == set(CONN_SORT_FIELDS)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("CONN SORT", "CONN SORT needs a field; valid fields: " + ", ".join(CONN_SORT_FIELDS)),
        (
            "CONN SORT speed",
            "Unknown CONN SORT field: 'speed'; valid fields: " + ", ".join(CONN_SORT_FIELDS),
        ),
        ("CONN ORDER inBytes", "Subcommand not recognised: 'ORDER'; valid subcommands: SORT"),
        ("CONN SORT age 10", "Unexpected word '10': 'CONN SORT age' takes no more words"),
    ],
)
def test_conn_sort_errors_say_what_is_valid(line: str, reply: str) -> None:
    assert parse(line) == ParseError(reply + ".\n")


# --------------------------------------------------------------------------- #
# The line and the JSON object
# --------------------------------------------------------------------------- #


def _record(**fields: object) -> conn.ConnRecord:
    base: dict[str, object] = {
        "id": 7,
        "vhost": "/",
        "disconnected": False,
        "paused": False,
        "auth_denied": False,
        "ingress_remote": ("127.0.0.1", 50000),
        "ingress_local": "127.0.0.1",
        "egress_local": ("127.0.0.1", 50001),
        "egress_remote": ("127.0.0.1", 5672),
        "in_bytes": 10,
        "in_frames": 1,
        "in_packets": 1,
        "out_bytes": 20,
        "out_frames": 2,
        "out_packets": 2,
        "idle_in": 0.5,
        "idle_out": 0.25,
    }
    return conn.ConnRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_the_new_fields_come_after_amqpprox_s_and_quote_what_a_client_chose() -> None:
    record = _record(
        backend="rabbit1",
        user='al"ice',
        connection_name='orders inBytes=0 x="y"\nid=1\x1b[2J',
        product="Pika",
        version="1.3.2",
        platform=None,
        age=12.4,
        rates=SessionRates(1500.4, 20.0, 3.0, 1.0),
    )
    line = conn.conn_line(record)
    assert unsafe_character(line) is None
    assert line.startswith(
        "id=7 vhost=/ disconnected=N paused=N authDenied=N ingressRemote=127.0.0.1:50000 "
        "ingressLocal=127.0.0.1 egressLocal=127.0.0.1:50001 egressRemote=127.0.0.1:5672 "
        "inBytes=10 inFrames=1 inPackets=1 outBytes=20 outFrames=2 outPackets=2 0.500:0.250 "
    )
    assert line.endswith(
        ' backend=rabbit1 mapping=- rule=- user="al\\"ice"'
        ' connectionName="orders inBytes=0 x=\\"y\\"\\nid=1\\x1b[2J"'
        ' product="Pika" version="1.3.2" platform=- age=12'
        " inRate=1500 outRate=20 inFrameRate=3 outFrameRate=1"
    )
    # Each quoted value is one field: splitting at quoted strings finds no forged one.
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
    assert unquoted.count("inBytes=") == 1 and "id=1" not in unquoted
    # A backend name with a space (a quoted control word) is quoted too.
    spaced = conn.conn_line(_record(backend="rabbit 2 inBytes=1"))
    assert ' backend="rabbit 2 inBytes=1" mapping=- rule=- user=- ' in spaced
    as_json = conn.conn_json(record)
    assert as_json["connectionName"] == 'orders inBytes=0 x="y"\nid=1\x1b[2J'
    assert as_json["platform"] is None
    assert (as_json["inRate"], as_json["outFrameRate"], as_json["ageSeconds"]) == (
        1500.4,
        1.0,
        12.4,
    )


def test_sorting_puts_the_largest_first_and_breaks_ties_by_id() -> None:
    records = [
        _record(id=1, in_bytes=5, age=3.0, rates=SessionRates(in_bytes=10.0)),
        _record(id=2, in_bytes=50, age=9.0, rates=SessionRates(in_bytes=1.0, out_bytes=100.0)),
        _record(id=3, in_bytes=50, age=1.0),
    ]
    ids = {
        field: [r.id for r in conn.sorted_records(records, field)]
        for field in ("inBytes", "inRate", "outRate", "rate", "age")
    }
    assert ids == {
        "inBytes": [2, 3, 1],
        "inRate": [1, 2, 3],
        "outRate": [2, 1, 3],
        "rate": [2, 1, 3],
        "age": [2, 1, 3],
    }
    assert [r.id for r in conn.sorted_records(reversed(records), None)] == [1, 2, 3]


# --------------------------------------------------------------------------- #
# End to end: pika clients, the real amqprouter_ctl
# --------------------------------------------------------------------------- #


def _ctl(socket_path: Path, *words: str) -> str:
    result = subprocess.run(
        [str(CTL), *words[:1], str(socket_path), *words[1:]]
        if words[:1] == ("--json",)
        else [str(CTL), str(socket_path), *words],
        capture_output=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.decode("utf-8")


def _connect(router: RouterProcess, name: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            router.port,
            credentials=pika.PlainCredentials("guest", "guest"),
            client_properties={"connection_name": name},
            connection_attempts=1,
            socket_timeout=WAIT,
        )
    )


def _publish_until(
    router: RouterProcess, stop: threading.Event, failed: list[BaseException]
) -> None:
    """A client that publishes 1 KiB messages until ``stop``, on its own connection."""
    try:
        connection = _connect(router, "busy publisher")
        channel = connection.channel()
        while not stop.is_set():
            for _ in range(20):
                channel.basic_publish("", "amqprt-nowhere", b"p" * 1024)
            connection.process_data_events(0.01)
        connection.close()
    except BaseException as exc:  # reported by the test's thread
        failed.append(exc)


def test_conn_names_each_client_and_sorts_the_busy_one_first(
    system_broker: SystemBroker,
) -> None:
    with running_router(SYSTEM_PORT, extra=["--cleanup-interval-ms", "200"]) as router:
        socket_path = router.stdout_path.parent / "control"
        quiet = _connect(router, "quiet consumer")
        stop, failed = threading.Event(), list[BaseException]()
        publisher = threading.Thread(target=_publish_until, args=(router, stop, failed))
        publisher.start()
        try:
            deadline = time.monotonic() + WAIT
            while True:
                lines = _ctl(socket_path, "CONN", "SORT", "inRate").splitlines()
                if len(lines) == 2 and 'connectionName="busy publisher"' in lines[0]:
                    rate = int(re.search(r" inRate=(\d+)", lines[0]).group(1))  # type: ignore[union-attr]
                    if rate > 0:
                        break
                assert time.monotonic() < deadline and not failed, (lines, failed)
                time.sleep(0.1)
            busy, calm = lines
            for line in lines:
                assert re.search(
                    r" backend=default-backend mapping=\(default\) rule=- "
                    r'user="guest" connectionName="[a-z ]+" '
                    r'product="Pika Python Client Library" '
                    rf'version="{re.escape(pika.__version__)}" platform="Python [^"]+" '
                    r"age=\d+ inRate=\d+ outRate=\d+ inFrameRate=\d+ outFrameRate=\d+$",
                    line,
                ), line
            assert 'connectionName="quiet consumer"' in calm
            # (Idle but for a heartbeat now and then: far below the publisher.)
            assert int(re.search(r" inRate=(\d+)", calm).group(1)) < rate  # type: ignore[union-attr]
            assert int(re.search(r" inFrameRate=(\d+)", busy).group(1)) > 0  # type: ignore[union-attr]
            # CONN SORT age: the quiet client connected first.
            by_age = _ctl(socket_path, "CONN", "SORT", "age").splitlines()
            assert 'connectionName="quiet consumer"' in by_age[0]
            # --json: the same fields, typed.
            objects = [
                json.loads(line)
                for line in _ctl(socket_path, "--json", "CONN", "SORT", "inRate").splitlines()
            ]
            assert [o["connectionName"] for o in objects] == ["busy publisher", "quiet consumer"]
            first = objects[0]
            assert (first["user"], first["backend"], first["product"]) == (
                "guest",
                "default-backend",
                "Pika Python Client Library",
            )
            assert first["version"] == pika.__version__
            assert first["platform"].startswith("Python ")
            assert isinstance(first["inRate"], float) and first["ageSeconds"] >= 0
        finally:
            stop.set()
            publisher.join(WAIT)
            quiet.close()
        assert not failed, failed
