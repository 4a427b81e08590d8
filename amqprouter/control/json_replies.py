"""The JSON form of the listing commands (``amqprouter_ctl --json``): one object a line.

A client asks for it with the line ``AMQPROUTER_CTL JSON`` before its command
(``socket_server``). The objects are built from the records the text replies are
built from (the routing snapshot, the limits, the vhost states, ``conn.ConnRecord``),
never by reading the text back, so a name with a space or a quote in it cannot
shift a field. Names are camelCase, as in amqpprox's STAT json, and the encoding is
STAT's too: ``json.dumps`` with every non-ASCII character escaped, and DEL as
``\\u007f``, so a line holds no control character a terminal would act on.

Commands with a JSON form: CONN, BACKEND PRINT, FARM PRINT, MAP PRINT, RULE PRINT, VHOST PRINT,
LIMIT PRINT, SESSION TRACE, SESSION CAPTURE and VHOST TRACE (their own JSON lines,
control/trace_commands.py), and STAT LISTEN json (its own json, unchanged). Any other command asked
for as JSON is refused and not run: a mutation answered in text where a script
expects JSON would be read as a failure after it took effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from amqprouter.control import commands as c
from amqprouter.control.grammar import to_line
from amqprouter.routing.health import BackendHealth
from amqprouter.routing.model import RoutingTable
from amqprouter.routing.vhost_patterns import is_pattern
from amqprouter.server.limits import LIMIT_KINDS, Limits

#: The commands that have a JSON form (STAT LISTEN only with its ``json`` output).
JSON_COMMANDS: Final = (
    c.Conn,
    c.BackendPrint,
    c.FarmPrint,
    c.MapPrint,
    c.RulePrint,
    c.VhostPrint,
    c.LimitPrint,
    c.StatListen,
    c.SessionTrace,
    c.SessionCapture,
    c.VhostTrace,
)
_JSON_NAMES: Final = (
    "CONN, BACKEND PRINT, FARM PRINT, MAP PRINT, RULE PRINT, VHOST PRINT, LIMIT PRINT, SESSION "
    "TRACE, SESSION CAPTURE, VHOST TRACE and STAT LISTEN json"
)


def refusal(command: c.Command) -> str:
    """The reply to a command that has no JSON form (STAT LISTEN human included)."""
    words = to_line(command).split(" ")
    shown = " ".join(words[:3] if isinstance(command, c.StatListen) else words[:2])
    return f"{shown} has no JSON form; --json works with {_JSON_NAMES}.\n"


def has_json_form(command: c.Command) -> bool:
    if isinstance(command, c.StatListen):
        return command.output == "json"
    return isinstance(command, JSON_COMMANDS)


def json_line(value: Mapping[str, Any]) -> str:
    """One object as one line, encoded as STAT's json is (observe.render)."""
    return json.dumps(value).replace("\x7f", "\\u007f") + "\n"


def json_lines(values: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json_line(value) for value in values)


def backends(table: RoutingTable, health: Callable[[str], BackendHealth | None]) -> str:
    """BACKEND PRINT: by name, as the text; ``health`` is the registry's state of one."""
    return json_lines(
        {
            "name": backend.name,
            "datacenter": backend.datacenter,
            "host": backend.host,
            # ADD_DNS: resolved at each connection, so no address (the text's empty ip).
            "ip": backend.ip,
            "port": backend.port,
            "dns": backend.dns,
            "proxyProtocol": int(backend.send_proxy),
            "tls": backend.tls,
            "disabled": name in table.disabled,
            "health": _health(health(name)),
        }
        for name, backend in sorted(table.backends.items())
    )


def _health(state: BackendHealth | None) -> dict[str, Any] | None:
    """None where the text shows nothing: no check and never marked down."""
    if state is None or (not state.down and state.check is None):
        return None
    return {
        "up": not state.down,
        "reason": state.reason if state.down else None,
        "checked": state.check is not None,
    }


def farms(table: RoutingTable) -> str:
    """FARM PRINT: by name, members in their order (and their weights, in that order)."""
    return json_lines(
        {
            "name": farm.name,
            "selector": farm.selector,
            "members": list(farm.members),
            "weights": list(farm.weights),
            "policies": list(farm.policies),
            "stickySeconds": farm.sticky,
        }
        for _name, farm in sorted(table.farms.items())
    )


def mappings(table: RoutingTable) -> str:
    """MAP PRINT: in matching order (exact vhosts by name, then patterns, most specific
    first), then the default farm (``vhost`` null, ``default`` true); ``brokerVhost`` is
    MAP ... AS's vhost (null: the broker opens the client's own); ``pool`` is MAP POOL's
    word (null: as --pool says). A vhost with a MAP POOL word and no mapping follows, by
    name, with ``type`` and ``name`` null."""
    records: list[dict[str, Any]] = [
        {
            "vhost": vhost,
            "default": False,
            "pattern": is_pattern(vhost),
            "type": kind,
            "name": name,
            "brokerVhost": table.renames.get(vhost),
            "pool": table.pools.get(vhost),
        }
        for vhost, (kind, name) in table.mapping_order()
    ]
    if table.default_farm is not None:
        records.append(
            {
                "vhost": None,
                "default": True,
                "pattern": False,
                "type": "farm",
                "name": table.default_farm,
                "brokerVhost": None,
                "pool": None,
            }
        )
    records += [
        {
            "vhost": vhost,
            "default": False,
            "pattern": is_pattern(vhost),
            "type": None,
            "name": None,
            "brokerVhost": None,
            "pool": pooled,
        }
        for vhost, pooled in sorted(table.pools.items())
        if vhost not in table.mappings
    ]
    return json_lines(records)


def rules(table: RoutingTable) -> str:
    """RULE PRINT: by priority."""
    return json_lines(
        {
            "priority": rule.priority,
            "networks": list(rule.networks),
            "type": rule.target[0],
            "name": rule.target[1],
            "onDown": rule.on_down,
        }
        for rule in table.rules
    )


def vhosts(paused: set[str], seen: Iterable[str]) -> str:
    """VHOST PRINT: every vhost seen or paused, sorted."""
    return json_lines(
        {"vhost": vhost, "paused": vhost in paused} for vhost in sorted(paused.union(seen))
    )


#: What each limit counts, for the JSON's ``unit``.
_UNITS: Final = {
    "CONN_RATE": "connections/s",
    "CONN_RATE_ALARM": "connections/s",
    "DATA_RATE": "bytes/s",
    "DATA_RATE_ALARM": "bytes/s",
    "CONNECTIONS": "connections",
}


def limits(table: Limits, vhost: str | None) -> str:
    """LIMIT PRINT [vhost]: one object per limit in force, in the text's order of kinds.

    Without a vhost, every limit in force, as the text: the DEFAULT's (``vhost`` null),
    then each vhost's own, by vhost; with one, those in force for it, its own or the
    DEFAULT's (``default`` says which). No limit: no line.
    """
    records = []
    for kind in LIMIT_KINDS:
        if vhost is None:
            value = table.settings[kind].get(None)
            found = None if value is None else (value, True)
        else:
            found = table.effective(kind, vhost)
        if found is not None:
            records.append(_limit(vhost, kind, *found))
    if vhost is None:
        for own in sorted(
            {v for values in table.settings.values() for v in values if v is not None}
        ):
            records += [
                _limit(own, kind, table.settings[kind][own], False)
                for kind in LIMIT_KINDS
                if own in table.settings[kind]
            ]
    return json_lines(records)


def _limit(vhost: str | None, kind: str, value: int, default: bool) -> dict[str, Any]:
    return {
        "vhost": vhost,
        "limit": kind,
        "value": value,
        "unit": _UNITS[kind],
        "alarmOnly": kind.endswith("_ALARM"),
        "default": default,
    }
