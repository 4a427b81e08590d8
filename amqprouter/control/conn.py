"""CONN: one record per session, written as amqpprox's line or as a JSON object.

``conn_record`` reads a live session once; ``conn_line`` and ``conn_json`` only
format that record, so the text and the JSON reply never disagree. The record holds
the raw values (a vhost as the client sent it, a host name as the DNS gave it): the
line escapes them (``amqprouter.text``), the JSON lets JSON's own escaping do it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from amqprouter.net import sockets
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
    #: priority of the client-address rule that narrowed the choice (None: none did).
    backend: str | None = None
    mapping: str | None = None
    rule: int | None = None


def conn_record(session: Session, name: Callable[[str], str] = str) -> ConnRecord:
    """``session`` now; ``name`` turns an address into a host name (MAPHOSTNAME DNS)."""
    now = time.monotonic()
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
        rule=None if route is None or route.rule is None else route.rule.priority,
    )


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
        + _routing_fields(r)
        + _tls_fields(r)
    )


def _routing_fields(record: ConnRecord) -> str:
    """Where routing sent the session (ours, after amqpprox's fields): ``backend=``,
    ``mapping=`` and ``rule=``, each once known."""
    fields = ""
    if record.backend is not None:
        fields += f" backend={escape(record.backend)}"
    if record.mapping is not None:
        fields += f" mapping={escape(record.mapping)}"
    if record.rule is not None:
        fields += f" rule={record.rule}"
    return fields


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
        "rule": r.rule,
    }
