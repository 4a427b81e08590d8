"""The supervisor's merging of its workers' answers, and a worker's role (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amqprouter.fleet import merge
from amqprouter.fleet.link import Answer
from amqprouter.fleet.role import BadWorkerSpec, WorkerRole, worker_of_session
from amqprouter.server.limits import Admitted, Limits, Refusal

PAGE = """\
# HELP amqprouter_sessions_opened_total Sessions opened.
# TYPE amqprouter_sessions_opened_total counter
amqprouter_sessions_opened_total 3
# HELP amqprouter_connect_seconds Connect time.
# TYPE amqprouter_connect_seconds histogram
amqprouter_connect_seconds_bucket{le="0.1"} 2
amqprouter_connect_seconds_count 2
"""


def test_metrics_label_every_sample_and_keep_each_family_together() -> None:
    text = merge.metrics([(1, PAGE), (2, PAGE.replace(" 3\n", " 5\n"))], extra="own 1\n")
    lines = text.splitlines()
    assert lines[0] == "own 1"
    # One HELP and TYPE per family, then every worker's samples of it, in order.
    assert lines[1:6] == [
        "# HELP amqprouter_sessions_opened_total Sessions opened.",
        "# TYPE amqprouter_sessions_opened_total counter",
        'amqprouter_sessions_opened_total{worker="1"} 3',
        'amqprouter_sessions_opened_total{worker="2"} 5',
        "# HELP amqprouter_connect_seconds Connect time.",
    ]
    assert 'amqprouter_connect_seconds_bucket{worker="2",le="0.1"} 2' in lines
    assert text.count("# TYPE amqprouter_connect_seconds histogram") == 1


def test_answers_merge_by_kind() -> None:
    a, b = Answer("x\ny\n", ok=True), Answer("y\nz\n", ok=True)
    assert merge.concatenated([a, b]) == Answer("x\ny\ny\nz\n", ok=True)
    assert merge.united([a, b]) == Answer("x\ny\nz\n", ok=True)
    assert merge.agreed([(1, a), (2, a)]) == a
    # A difference is shown worker by worker, never hidden behind the first answer.
    differing = merge.agreed([(1, a), (2, Answer("no\n", ok=False))])
    assert differing == Answer("worker 1: x\nworker 1: y\nworker 2: no\n", ok=False)


def test_conn_of_several_workers_is_one_listing_in_one_order() -> None:
    one = Answer(
        "id=4294967297 vhost=a inBytes=5 age=3\nid=4294967298 vhost=b inBytes=50 age=1\n", True
    )
    two = Answer("id=8589934593 vhost=c inBytes=20 age=9\n", True)
    by_id = merge.conn_lines([two, one], None).text.splitlines()
    assert [line.split()[0] for line in by_id] == [
        "id=4294967297",
        "id=4294967298",
        "id=8589934593",
    ]
    by_bytes = merge.conn_lines([one, two], "inBytes").text.splitlines()
    assert [line.split()[1] for line in by_bytes] == ["vhost=b", "vhost=c", "vhost=a"]
    as_json = [
        Answer('{"id": 2, "ageSeconds": 1.5}\n', True),
        Answer('{"id": 1, "ageSeconds": 7.0}\n', True),
    ]
    assert merge.conn_lines(as_json, "age").text.startswith('{"id": 1')


def test_a_worker_role_round_trips_and_names_its_sessions(tmp_path: Path) -> None:
    role = WorkerRole.parse(f"3:4:{tmp_path}")
    assert WorkerRole.parse(role.spec()) == role
    assert role.control_socket == tmp_path / "w3.sock"
    assert worker_of_session(role.first_session_id + 12345) == 3
    for bad in ("", "x:2:/d", "1:2:", "1"):
        with pytest.raises(BadWorkerSpec):
            WorkerRole.parse(bad)


def test_each_worker_enforces_its_share_of_an_aggregate_limit() -> None:
    limits = Limits(clock=lambda: 0.0)
    limits.share = 2
    limits.set("CONNECTIONS", "v", 3)  # 2 per worker: ceil(3 / 2)
    assert [type(limits.admit(i, "v")) for i in range(3)] == [Admitted, Admitted, Refusal]
    limits.set("CONN_RATE", "r", 4)  # 2 a second per worker
    assert [type(limits.admit(10 + i, "r")) for i in range(3)] == [Admitted, Admitted, Refusal]
