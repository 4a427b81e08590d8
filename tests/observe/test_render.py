"""The json, human and StatsD texts of a snapshot, exactly (reference/amqpprox.md 4.4-4.6)."""

from __future__ import annotations

import json
from os import times_result as os_times

import attrs
import pytest

from amqprouter.observe.process import ProcessSampler, ProcessStats, current_rss_kb
from amqprouter.observe.render import human_bytes, render, statsd_lines
from amqprouter.observe.stats import BufferStats, ConnectionStats, StatsSnapshot, StoreState

STATS = ConnectionStats(
    paused=1,
    active=2,
    removed_graceful=3,
    removed_broker=4,
    removed_client=5,
    packets_received=6,
    packets_sent=7,
    frames_received=8,
    frames_sent=9,
    bytes_received=1536,
    bytes_sent=10,
)
STATS_JSON = (
    '{"pausedConnectionCount": 1, "activeConnectionCount": 2, "authDeniedConnectionCount": 0, '
    '"limitedConnectionCount": 0, "removedConnectionGraceful": 3, '
    '"removedConnectionBrokerSnapped": 4, "removedConnectionClientSnapped": 5, '
    '"packetsReceived": 6, "packetsSent": 7, "framesReceived": 8, "framesSent": 9, '
    '"bytesReceived": 1536, "bytesSent": 10, "alarmedConnectionCount": 0}'
)
STATS_HUMAN = (
    "Paused: 1 Active: 2 Auth denied: 0 Limited connections: 0 Removed(Clean): 3 "
    "Removed(Broker): 4 Removed(Client): 5 IN: 1.5 KB/s 6 pkt/s 8 frames/s "
    "OUT: 10 B/s 7 pkt/s 9 frames/s"
)
ZERO_JSON = json.dumps({key: 0 for key, _name in ConnectionStats.FIELDS})
PROCESS = ProcessStats(12, 10, 2, 2048)
POOL = BufferStats(bytes_current=100, bytes_highest=4096, buffers_current=1, buffers_highest=3)


def snapshot(interval: float = 1.0) -> StatsSnapshot:
    return StatsSnapshot(
        overall=STATS,
        vhosts={"/": STATS, 'odd"vhost': ConnectionStats(active=1)},
        backends={"127.0.0.1_5672": STATS},
        sources={"10.0.0.1": STATS},
        process=PROCESS,
        bufferpool=POOL,
        interval=interval,
    )


def test_connection_stats_json_and_human() -> None:
    assert render(snapshot(), "json", "overall") == STATS_JSON + "\n"
    assert render(snapshot(), "human", "overall") == STATS_HUMAN + "\n"


def test_human_rates_are_per_second_whatever_the_interval() -> None:
    text = render(snapshot(interval=2.0), "human", "backend", "127.0.0.1_5672")
    assert "IN: 768 B/s 3 pkt/s 4 frames/s OUT: 5 B/s 4 pkt/s 4 frames/s" in text


def test_axis_filters_and_a_missing_key_gives_zeros() -> None:
    assert render(snapshot(), "json", "vhost", "/") == STATS_JSON + "\n"
    assert render(snapshot(), "json", "source", "10.0.0.1") == STATS_JSON + "\n"
    assert render(snapshot(), "json", "vhost", "nope") == ZERO_JSON + "\n"


def test_process_and_bufferpool() -> None:
    assert render(snapshot(), "json", "process") == (
        '{"cpu_percent_overall": 12, "cpu_percent_user": 10, "cpu_percent_system": 2, '
        '"mem_rss_kb": 2048}\n'
    )
    assert render(snapshot(), "human", "process") == "CPU%: 12 USR%: 10 SYS%: 2 RSS: 2 MB\n"
    assert render(snapshot(), "json", "bufferpool") == (
        '{"spill_to_heap_count": 0, "pools": {"bytes": {"current": 100, "highest": 4096}, '
        '"buffers": {"current": 1, "highest": 3}}}\n'
    )
    assert render(snapshot(), "human", "bufferpool") == (
        "Spilt to heap: 0, Pools (Current/Peak): bytes=100/4096, buffers=1/3\n"
    )


def test_all_json_is_valid_in_reference_order_with_escaped_keys() -> None:
    text = render(snapshot(), "json", "all")
    assert text.endswith("}\n") and text.count("\n") == 1
    parsed = json.loads(text)
    assert list(parsed) == ["overall", "process", "bufferpool", "vhosts", "sources", "backends"]
    assert parsed["vhosts"]['odd"vhost']["activeConnectionCount"] == 1
    assert text.startswith('{"overall": ' + STATS_JSON + ', "process": {"cpu_percent_overall"')
    without = json.loads(render(snapshot(), "json", "all-except-per-source"))
    assert list(without) == ["overall", "process", "bufferpool", "vhosts", "backends"]


def test_all_human() -> None:
    odd = render(snapshot(), "human", "vhost", 'odd"vhost').rstrip("\n")
    assert render(snapshot(), "human", "all") == (
        f"Overall:\n{STATS_HUMAN}\n"
        "Process:\nCPU%: 12 USR%: 10 SYS%: 2 RSS: 2 MB\n"
        "BufferPool:\nSpilt to heap: 0, Pools (Current/Peak): bytes=100/4096, buffers=1/3\n"
        f'Vhosts:\n/: {STATS_HUMAN}\nodd"vhost: {odd}\n'
        f"Sources:\n10.0.0.1: {STATS_HUMAN}\n"
        f"Backends:\n127.0.0.1_5672: {STATS_HUMAN}\n"
        "\n"
    )
    assert "Sources:" not in render(snapshot(), "human", "all-except-per-source")


def test_the_config_store_state_ends_the_whole_views_only_with_a_store() -> None:
    up = attrs.evolve(snapshot(), store=StoreState(up=True, version=7, since_read=0.43))
    parsed = json.loads(render(up, "json", "all"))
    assert list(parsed)[-1] == "configStore"
    assert parsed["configStore"] == {"up": True, "version": 7, "secondsSinceRead": 0.4}
    assert "configStore" in json.loads(render(up, "json", "all-except-per-source"))
    assert render(up, "human", "all").endswith(
        "ConfigStore:\nUp: yes Version: 7 Since last read: 0.4 s\n\n"
    )
    never = attrs.evolve(snapshot(), store=StoreState(up=False, version=0, since_read=None))
    assert json.loads(render(never, "json", "all"))["configStore"] == {
        "up": False,
        "version": 0,
        "secondsSinceRead": None,
    }
    assert "Up: no Version: 0 Since last read: never\n" in render(never, "human", "all")
    # Without --config-store: absent, and the filtered views never carry it.
    assert "configStore" not in render(snapshot(), "json", "all")
    assert "ConfigStore" not in render(snapshot(), "human", "all")
    assert "configStore" not in render(up, "json", "overall")


FORGED = "/x\nid=999 vhost=evil\x1b[31m\x7f\u2028"


def forged_snapshot() -> StatsSnapshot:
    zero = ConnectionStats()
    return StatsSnapshot(
        overall=zero,
        vhosts={FORGED: zero},
        backends={},
        sources={},
        process=PROCESS,
        bufferpool=POOL,
        interval=1.0,
    )


def test_human_escapes_a_client_chosen_vhost_one_line_each() -> None:
    # A vhost with a newline and escapes printed a fake line, in red.
    text = render(forged_snapshot(), "human", "all")
    vhosts = text.split("Vhosts:\n")[1].split("Sources:\n")[0]
    zero = render(forged_snapshot(), "human", "overall").rstrip("\n")
    assert vhosts == f"/x\\nid=999 vhost=evil\\x1b[31m\\x7f\\u2028: {zero}\n"
    assert text.count("\n") == 11  # ten lines and the chunk's blank line
    assert not any(ch in text.replace("\n", "") for ch in "\x1b\x7f\u2028")


def test_json_writes_no_control_character_raw() -> None:
    # json.dumps escapes C0 and non-ASCII (U+2028 included) but would write DEL raw.
    text = render(forged_snapshot(), "json", "all")
    assert text.count("\n") == 1 and "\x1b" not in text and "\x7f" not in text
    assert '"/x\\nid=999 vhost=evil\\u001b[31m\\u007f\\u2028": {' in text
    assert list(json.loads(text)["vhosts"]) == [FORGED]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KB"),
        (1536, "1.5 KB"),
        (1 << 20, "1 MB"),
        (123456789, "117.738 MB"),
        (5 << 30, "5 GB"),
        (1 << 40, "1099511627776 B"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


def test_statsd_lines_names_tags_and_types() -> None:
    lines = statsd_lines(snapshot(), "amqprouter")
    assert lines[:13] == [
        "amqprouter.pausedConnectionCount,rmqEndpointType=overall:1|g",
        "amqprouter.activeConnectionCount,rmqEndpointType=overall:2|g",
        "amqprouter.authDeniedConnectionCount,rmqEndpointType=overall:0|g",
        "amqprouter.limitedConnectionCount,rmqEndpointType=overall:0|g",
        "amqprouter.removedConnectionGraceful,rmqEndpointType=overall:3|c",
        "amqprouter.removedConnectionBrokerSnapped,rmqEndpointType=overall:4|c",
        "amqprouter.removedConnectionClientSnapped,rmqEndpointType=overall:5|c",
        "amqprouter.packetsReceived,rmqEndpointType=overall:6|c",
        "amqprouter.packetsSent,rmqEndpointType=overall:7|c",
        "amqprouter.framesReceived,rmqEndpointType=overall:8|c",
        "amqprouter.framesSent,rmqEndpointType=overall:9|c",
        "amqprouter.bytesReceived,rmqEndpointType=overall:1536|c",
        "amqprouter.bytesSent,rmqEndpointType=overall:10|c",
    ]
    assert "amqprouter.activeConnectionCount,rmqEndpointType=vhost,rmqVhostName=/:2|g" in lines
    # A tag value cannot end the tag: '"' is harmless, ',' ':' '=' are replaced.
    assert 'amqprouter.activeConnectionCount,rmqEndpointType=vhost,rmqVhostName=odd"vhost:1|g' in (
        lines
    )
    assert "amqprouter.bytesSent,rmqEndpointType=sources,rmqEndpointHostname=10.0.0.1:10|c" in lines
    assert (
        "amqprouter.bytesSent,rmqEndpointType=backends,rmqEndpointHostname=127.0.0.1_5672:10|c"
        in lines
    )
    assert lines[-9:] == [
        "amqprouter.cpu_percent_overall:12|g",
        "amqprouter.cpu_percent_user:10|g",
        "amqprouter.cpu_percent_system:2|g",
        "amqprouter.mem_rss_kb:2048|g",
        "amqprouter.spill_to_heap_count:0|g",
        "amqprouter.pools_bytes_current:100|g",
        "amqprouter.pools_bytes_highest:4096|g",
        "amqprouter.pools_buffers_current:1|g",
        "amqprouter.pools_buffers_highest:3|g",
    ]
    assert len(lines) == 14 * 5 + 9  # amqpprox's 13 fields and ours, alarmedConnectionCount


def test_statsd_empty_vhost_is_skipped_and_unsafe_tag_characters_replaced() -> None:
    shot = StatsSnapshot(
        ConnectionStats(),
        {"": ConnectionStats(), "a,b:c=d e": ConnectionStats()},
        {},
        {"::1": ConnectionStats()},
        ProcessStats(),
        BufferStats(),
        interval=1.0,
    )
    lines = statsd_lines(shot, "p")
    assert not any("rmqVhostName=," in line or "rmqVhostName=:" in line for line in lines)
    assert "p.bytesSent,rmqEndpointType=vhost,rmqVhostName=a_b_c_d_e:0|c" in lines
    assert "p.bytesSent,rmqEndpointType=sources,rmqEndpointHostname=__1:0|c" in lines


def test_process_sampler_percentages_over_the_interval() -> None:
    clock = iter([100.0, 102.0])
    cpu = iter([(1.0, 0.5), (1.5, 0.6)])

    def times() -> os_times:
        user, system = next(cpu)
        return os_times((user, system, 0.0, 0.0, 0.0))

    sampler = ProcessSampler(clock=lambda: next(clock), times=times, rss_kb=lambda: 777)
    assert sampler.sample() == ProcessStats(0, 0, 0, 777)
    assert sampler.sample() == ProcessStats(30, 25, 5, 777)


def test_rss_is_current_not_peak() -> None:
    with open("/proc/self/status") as status:
        vm_rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    assert abs(current_rss_kb() - vm_rss) < 4096
    blob = b"x" * (64 << 20)  # touches 64 MiB: the peak grows ...
    grown = current_rss_kb()
    del blob  # ... and the current RSS goes back down
    assert current_rss_kb() < grown - 32 * 1024
