"""CONN: one record per session, written as amqpprox's line or as a JSON object.

``conn_record`` reads a live session once; ``conn_line`` and ``conn_json`` only
format that record, so the text and the JSON reply never disagree. The record holds
the raw values (a vhost as the client sent it, a host name as the DNS gave it): the
line escapes them (``amqprouter.text``), the JSON lets JSON's own escaping do it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from amqprouter.net import sockets
from amqprouter.observe.stats import NO_RATES, SessionRates
from amqprouter.protocol.client_identity import bounded
from amqprouter.session import Session
from amqprouter.text import escape

Address = tuple[str, int]


@attrs.frozen
class ConnRecord:
    """What CONN shows of one session at one moment."""

    id: int
    vhost: str
    disconnected: bool
    paused: bool
    auth_denied: bool
    ingress_remote: Address
    #: The router's own address the client connected to (amqpprox shows no port).
    ingress_local: str
    egress_local: Address
    egress_remote: Address
    in_bytes: int
    in_frames: int
    in_packets: int
    out_bytes: int
    out_frames: int
    out_packets: int
    #: Seconds since each direction last carried data.
    idle_in: float
    idle_out: float
    #: The client's TLS version (None on a plain listener), and its verified certificate.
    tls: str | None = None
    client_cert: str | None = None
    #: Where routing sent it: the backend it got (None before it connected), the
    #: mapping that matched its vhost (the vhost, a pattern or "(default)") and the
    #: priority of the client-address rule that narrowed the choice (None: none did);
    #: the vhost the broker opened when the mapping renames it (MAP ... AS; None: the
    #: client's own).
    backend: str | None = None
    mapping: str | None = None
    broker_vhost: str | None = None
    rule: int | None = None
    #: The pooled broker connection the session shares (pooling mode); None: its own.
    pool_link: int | None = None
    #: Who the client is (ours, after amqpprox's fields): what the client said in
    #: StartOk (bounded; None where it said nothing), seconds since it connected, and
    #: its traffic per second over the last statistics interval.
    user: str | None = None
    connection_name: str | None = None
    product: str | None = None
    version: str | None = None
    platform: str | None = None
    age: float = 0.0
    rates: SessionRates = NO_RATES


def conn_record(
    session: Session,
    name: Callable[[str], str] = str,
    rates: Callable[[int], SessionRates] | None = None,
) -> ConnRecord:
    """``session`` now; ``name`` turns an address into a host name (MAPHOSTNAME DNS);
    ``rates`` gives a session's rates by id (the statistics collector's)."""
    now = time.monotonic()
    identity = session.identity
    ingress, egress = session.ingress, session.egress
    client_host, client_port = session.client_address
    egress_host, egress_port = session.broker_local
    broker_host, broker_port = session.broker_address
    version = session.client.tls_version()
    route = session.route
    return ConnRecord(
        id=session.id,
        vhost=session.vhost or "",
        disconnected=session.state.value in ("closing", "closed"),
        paused=session.paused,
        auth_denied=session.auth_denied,
        ingress_remote=(name(client_host), client_port),
        ingress_local=name(session.client_local[0]),
        egress_local=(name(egress_host), egress_port),
        egress_remote=(name(broker_host), broker_port),
        in_bytes=ingress.bytes,
        in_frames=ingress.frames,
        in_packets=ingress.reads,
        out_bytes=egress.bytes,
        out_frames=egress.frames,
        out_packets=egress.reads,
        idle_in=now - session.last_ingress,
        idle_out=now - session.last_egress,
        tls=version,
        client_cert=None if version is None else session.client.peer_subject(),
        backend=None if session.backend is None else session.backend.name,
        mapping=None if route is None else route.mapping,
        broker_vhost=None if route is None else route.broker_vhost,
        rule=None if route is None or route.rule is None else route.rule.priority,
        pool_link=session.pool_link,
        user=identity.user,
        connection_name=bounded(session.connection_name),
        product=identity.product,
        version=identity.version,
        platform=identity.platform,
        age=max(0.0, time.time() - session.started),
        rates=NO_RATES if rates is None else rates(session.id),
    )


#: CONN SORT's fields: each sorts the largest first (the oldest first for ``age``).
SORT_KEYS: Final[Mapping[str, Callable[[ConnRecord], float]]] = {
    "inBytes": lambda r: r.in_bytes,
    "outBytes": lambda r: r.out_bytes,
    "inFrames": lambda r: r.in_frames,
    "outFrames": lambda r: r.out_frames,
    "inRate": lambda r: r.rates.in_bytes,
    "outRate": lambda r: r.rates.out_bytes,
    "rate": lambda r: r.rates.in_bytes + r.rates.out_bytes,
    "age": lambda r: r.age,
}


def sorted_records(records: Iterable[ConnRecord], field: str | None) -> list[ConnRecord]:
    """``records`` by ``field`` (one of ``SORT_KEYS``), the largest first, ties by id;
    by id when ``field`` is None."""
    if field is None:
        return sorted(records, key=lambda r: r.id)
    key = SORT_KEYS[field]
    return sorted(records, key=lambda r: (-key(r), r.id))


def _yes(flag: bool) -> str:
    return "Y" if flag else "N"


def conn_line(record: ConnRecord) -> str:
    """One CONN line, in amqpprox's format (idle seconds measured, not since 1970).

    The vhost is the client's choice and a host name the DNS's: both are escaped, so
    neither can forge a line or a terminal escape (``amqprouter.text``).
    """

    def at(address: Address) -> str:
        # An IPv6 host in brackets, so host and port can be told apart; IPv4 as amqpprox.
        return sockets.endpoint((escape(address[0]), address[1]))

    r = record
    return (
        (
            f"id={r.id} vhost={escape(r.vhost)} disconnected={_yes(r.disconnected)} "
            f"paused={_yes(r.paused)} authDenied={_yes(r.auth_denied)} "
            f"ingressRemote={at(r.ingress_remote)} ingressLocal={escape(r.ingress_local)} "
            f"egressLocal={at(r.egress_local)} egressRemote={at(r.egress_remote)} "
            f"inBytes={r.in_bytes} inFrames={r.in_frames} inPackets={r.in_packets} "
            f"outBytes={r.out_bytes} outFrames={r.out_frames} outPackets={r.out_packets} "
            f"{r.idle_in:.3f}:{r.idle_out:.3f}"
        )
        + _tls_fields(r)
        + _identity_fields(r)
    )


def _quoted(value: str | None) -> str:
    """A client's words in CONN: escaped (``amqprouter.text``), then quoted, so a space
    or a quote in them cannot start a field of their own; ``-`` when not known."""
    if value is None:
        return "-"
    return '"' + escape(value).replace('"', '\\"') + '"'


def _name(value: str | None) -> str:
    """An operator's name (a backend): bare as amqpprox's words are, quoted as a client's
    words are if it holds a space, a quote or ``=`` (a quoted control word may)."""
    if value is not None and (value == "" or any(c in value for c in " \t\"'=")):
        return _quoted(value)
    return "-" if value is None else escape(value)


def _identity_fields(record: ConnRecord) -> str:
    """Where routing sent the client, who it is and how much it sends now (ours, after
    every other field)."""
    r = record
    return (
        f" backend={_name(r.backend)} mapping={_name(r.mapping)} "
        # Only on a renamed vhost's line, so every other line keeps its fields.
        f"{'' if r.broker_vhost is None else f'brokerVhost={_name(r.broker_vhost)} '}"
        f"rule={'-' if r.rule is None else r.rule} "
        # Only on a pooled session's line, as brokerVhost.
        f"{'' if r.pool_link is None else f'poolLink={r.pool_link} '}"
        f"user={_quoted(r.user)} "
        f"connectionName={_quoted(r.connection_name)} product={_quoted(r.product)} "
        f"version={_quoted(r.version)} platform={_quoted(r.platform)} age={r.age:.0f} "
        f"inRate={r.rates.in_bytes:.0f} outRate={r.rates.out_bytes:.0f} "
        f"inFrameRate={r.rates.in_frames:.0f} outFrameRate={r.rates.out_frames:.0f}"
    )


def _tls_fields(record: ConnRecord) -> str:
    """What a TLS client's CONN line adds (ours; plain lines stay amqpprox's)."""
    if record.tls is None:
        return ""
    if record.client_cert is None:
        return f" tls={record.tls}"
    quoted = record.client_cert.replace("\\", "\\\\").replace('"', '\\"')
    return f' tls={record.tls} clientCert="{quoted}"'


def conn_json(record: ConnRecord) -> dict[str, Any]:
    """The record as CONN's JSON object: the line's names, typed values, raw text."""

    def endpoint(address: Address) -> dict[str, Any]:
        return {"host": address[0], "port": address[1]}

    r = record
    return {
        "id": r.id,
        "vhost": r.vhost,
        "disconnected": r.disconnected,
        "paused": r.paused,
        "authDenied": r.auth_denied,
        "ingressRemote": endpoint(r.ingress_remote),
        "ingressLocal": {"host": r.ingress_local},
        "egressLocal": endpoint(r.egress_local),
        "egressRemote": endpoint(r.egress_remote),
        "inBytes": r.in_bytes,
        "inFrames": r.in_frames,
        "inPackets": r.in_packets,
        "outBytes": r.out_bytes,
        "outFrames": r.out_frames,
        "outPackets": r.out_packets,
        "idleInSeconds": round(r.idle_in, 3),
        "idleOutSeconds": round(r.idle_out, 3),
        "tls": r.tls,
        "clientCert": r.client_cert,
        "backend": r.backend,
        "mapping": r.mapping,
        "brokerVhost": r.broker_vhost,
        "rule": r.rule,
        "poolLink": r.pool_link,
        "user": r.user,
        "connectionName": r.connection_name,
        "product": r.product,
        "version": r.version,
        "platform": r.platform,
        "ageSeconds": round(r.age, 3),
        "inRate": round(r.rates.in_bytes, 1),
        "outRate": round(r.rates.out_bytes, 1),
        "inFrameRate": round(r.rates.in_frames, 1),
        "outFrameRate": round(r.rates.out_frames, 1),
    }
