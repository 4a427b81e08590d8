"""A stats snapshot as STAT LISTEN's json and human text, and as StatsD lines.

The texts are amqpprox's (reference/amqpprox.md sections 4.4-4.6) with these fixes:
JSON keys are escaped (a vhost named ``a"b`` stays valid JSON, and no control
character, DEL included, is written raw); human keys are escaped as every control
reply escapes client-chosen text (``amqprouter.text``: a vhost cannot forge a line
or a terminal escape); human rates are per second whatever the interval; StatsD tag
values are sanitised, and process and buffer figures are gauges (``|g``), not
counters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal

from amqprouter.observe.process import ProcessStats
from amqprouter.observe.stats import BufferStats, ConnectionStats, StatsSnapshot, StoreState
from amqprouter.session.pool import PoolFigures
from amqprouter.text import escape

Output = Literal["json", "human"]
#: STAT LISTEN filters: a whole-snapshot view, or one key of an axis.
WHOLE_FILTERS: Final = ("all", "all-except-per-source", "overall", "process", "bufferpool")
AXIS_FILTERS: Final = ("vhost", "backend", "source")

# --------------------------------------------------------------------------- #
# json
# --------------------------------------------------------------------------- #


def _json_key(key: str) -> str:
    # json.dumps escapes C0 and (ensure_ascii) everything past ASCII, but writes DEL raw.
    return json.dumps(key).replace("\x7f", "\\u007f")


def _json_object(items: Iterable[tuple[str, object]]) -> str:
    """``{"k": v, ...}`` with amqpprox's spacing; keys escaped, values already JSON."""
    return "{" + ", ".join(f"{_json_key(key)}: {value}" for key, value in items) + "}"


def stats_json(stats: ConnectionStats) -> str:
    return _json_object(stats.items())


def process_json(process: ProcessStats) -> str:
    return _json_object(process.items())


def buffers_json(buffers: BufferStats) -> str:
    pools = _json_object(
        (name, _json_object((("current", current), ("highest", highest))))
        for name, current, highest in buffers.pools()
    )
    return _json_object((("spill_to_heap_count", buffers.spill_to_heap_count), ("pools", pools)))


def _since_read(store: StoreState) -> float | None:
    # Tenths: the reads are a second apart, finer would be noise.
    return None if store.since_read is None else round(store.since_read, 1)


def store_json(store: StoreState) -> str:
    return _json_object(
        (
            ("up", json.dumps(store.up)),
            ("version", store.version),
            ("secondsSinceRead", json.dumps(_since_read(store))),
        )
    )


def pool_json(pool: PoolFigures) -> str:
    return _json_object(
        (
            ("links", pool.links),
            ("clients", pool.clients),
            ("channels", pool.channels),
            ("idleChannels", pool.idle_channels),
            ("linksOpened", pool.links_opened),
            ("clientsServed", pool.clients_served),
            ("channelsReused", pool.channels_reused),
        )
    )


def pool_human(pool: PoolFigures) -> str:
    return (
        f"Broker connections: {pool.links} Clients: {pool.clients} Channels: {pool.channels} "
        f"Idle channels: {pool.idle_channels} Opened: {pool.links_opened} "
        f"Clients served: {pool.clients_served} Channels reused: {pool.channels_reused}"
    )


def store_human(store: StoreState) -> str:
    since = _since_read(store)
    return (
        f"Up: {'yes' if store.up else 'no'} Version: {store.version} "
        f"Since last read: {'never' if since is None else f'{since:g} s'}"
    )


def _axis_json(axis: Mapping[str, ConnectionStats]) -> str:
    return _json_object((key, stats_json(stats)) for key, stats in axis.items())


def snapshot_json(snapshot: StatsSnapshot, *, sources: bool = True) -> str:
    parts: list[tuple[str, object]] = [
        ("overall", stats_json(snapshot.overall)),
        ("process", process_json(snapshot.process)),
        ("bufferpool", buffers_json(snapshot.bufferpool)),
        ("vhosts", _axis_json(snapshot.vhosts)),
    ]
    if sources:
        parts.append(("sources", _axis_json(snapshot.sources)))
    parts.append(("backends", _axis_json(snapshot.backends)))
    if snapshot.store is not None:
        parts.append(("configStore", store_json(snapshot.store)))
    if snapshot.pool is not None:
        parts.append(("pool", pool_json(snapshot.pool)))
    return _json_object(parts)


# --------------------------------------------------------------------------- #
# human
# --------------------------------------------------------------------------- #

_UNITS: Final = ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB"))


def human_bytes(count: float) -> str:
    """amqpprox's byte text: ``<n> B`` under 1 KiB, else ``%g`` KB/MB/GB (1 TiB up: bytes)."""
    if count < 1 << 40:
        for size, unit in _UNITS:
            if count >= size:
                return f"{count / size:g} {unit}"
    return f"{round(count)} B"


def stats_human(stats: ConnectionStats, interval: float) -> str:
    def rate(value: int) -> int:
        return round(value / interval)

    return (
        f"Paused: {stats.paused} Active: {stats.active} Auth denied: {stats.auth_denied} "
        f"Limited connections: {stats.limited} Removed(Clean): {stats.removed_graceful} "
        f"Removed(Broker): {stats.removed_broker} Removed(Client): {stats.removed_client} "
        f"IN: {human_bytes(rate(stats.bytes_received))}/s {rate(stats.packets_received)} pkt/s "
        f"{rate(stats.frames_received)} frames/s "
        f"OUT: {human_bytes(rate(stats.bytes_sent))}/s {rate(stats.packets_sent)} pkt/s "
        f"{rate(stats.frames_sent)} frames/s"
    )


def process_human(process: ProcessStats) -> str:
    return (
        f"CPU%: {process.cpu_percent_overall} USR%: {process.cpu_percent_user} "
        f"SYS%: {process.cpu_percent_system} RSS: {human_bytes(process.mem_rss_kb * 1024)}"
    )


def buffers_human(buffers: BufferStats) -> str:
    pools = ", ".join(f"{name}={cur}/{peak}" for name, cur, peak in buffers.pools())
    return f"Spilt to heap: {buffers.spill_to_heap_count}, Pools (Current/Peak): {pools}"


def snapshot_human(snapshot: StatsSnapshot, *, sources: bool = True) -> str:
    interval = snapshot.interval
    lines = [
        "Overall:",
        stats_human(snapshot.overall, interval),
        "Process:",
        process_human(snapshot.process),
        "BufferPool:",
        buffers_human(snapshot.bufferpool),
    ]
    axes: list[tuple[str, Mapping[str, ConnectionStats]]] = [("Vhosts", snapshot.vhosts)]
    if sources:
        axes.append(("Sources", snapshot.sources))
    axes.append(("Backends", snapshot.backends))
    for title, axis in axes:
        lines.append(f"{title}:")
        lines += [f"{escape(key)}: {stats_human(stats, interval)}" for key, stats in axis.items()]
    if snapshot.store is not None:
        lines += ["ConfigStore:", store_human(snapshot.store)]
    if snapshot.pool is not None:
        lines += ["Pool:", pool_human(snapshot.pool)]
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------- #
# STAT LISTEN: one chunk
# --------------------------------------------------------------------------- #


def _axis(snapshot: StatsSnapshot, kind: str) -> Mapping[str, ConnectionStats]:
    return {"vhost": snapshot.vhosts, "backend": snapshot.backends, "source": snapshot.sources}[
        kind
    ]


def render(snapshot: StatsSnapshot, output: Output, kind: str, value: str = "") -> str:
    """One STAT LISTEN chunk: the filtered view, ending in ``\\n``.

    ``kind`` is one of ``WHOLE_FILTERS`` or ``AXIS_FILTERS`` (then ``value`` is the
    key; a key not seen this interval shows all zeros, as in amqpprox).
    """
    as_json = output == "json"
    stats: Callable[[ConnectionStats], str] = (
        stats_json if as_json else lambda s: stats_human(s, snapshot.interval)
    )
    if kind in ("all", "all-except-per-source"):
        whole = snapshot_json if as_json else snapshot_human
        return whole(snapshot, sources=kind == "all") + "\n"
    if kind == "overall":
        text = stats(snapshot.overall)
    elif kind == "process":
        text = (process_json if as_json else process_human)(snapshot.process)
    elif kind == "bufferpool":
        text = (buffers_json if as_json else buffers_human)(snapshot.bufferpool)
    else:
        text = stats(_axis(snapshot, kind).get(value) or ConnectionStats())
    return text + "\n"


# --------------------------------------------------------------------------- #
# StatsD
# --------------------------------------------------------------------------- #

DEFAULT_PREFIX: Final = "amqprouter"
# A tag value holding one of these would end the tag, the name or the value.
_TAG_UNSAFE: Final = re.compile(r"[,:=|@#\s]")


def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)


def _stats_lines(prefix: str, tags: str, stats: ConnectionStats) -> Iterable[str]:
    for (key, name), (_key, value) in zip(stats.FIELDS, stats.items(), strict=True):
        kind = "g" if name in stats.GAUGES else "c"
        yield f"{prefix}.{key}{tags}:{value}|{kind}"


def statsd_lines(snapshot: StatsSnapshot, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The StatsD datagrams of one interval (one metric each), amqpprox's names and tags."""
    lines = list(_stats_lines(prefix, ",rmqEndpointType=overall", snapshot.overall))
    for vhost, stats in snapshot.vhosts.items():
        if vhost:
            tags = f",rmqEndpointType=vhost,rmqVhostName={_tag(vhost)}"
            lines += _stats_lines(prefix, tags, stats)
    for axis, kind in ((snapshot.sources, "sources"), (snapshot.backends, "backends")):
        for host, stats in axis.items():
            tags = f",rmqEndpointType={kind},rmqEndpointHostname={_tag(host)}"
            lines += _stats_lines(prefix, tags, stats)
    lines += [f"{prefix}.{name}:{value}|g" for name, value in snapshot.process.items()]
    pool = snapshot.bufferpool
    lines.append(f"{prefix}.spill_to_heap_count:{pool.spill_to_heap_count}|g")
    for name, current, highest in pool.pools():
        lines.append(f"{prefix}.pools_{name}_current:{current}|g")
        lines.append(f"{prefix}.pools_{name}_highest:{highest}|g")
    return lines
