"""Routing commands as pure functions: (snapshot, command) → (next snapshot, reply).

``apply`` executes BACKEND, FARM, MAP and DATACENTER commands against one
``RoutingTable`` and returns the table that replaces it with the reply text; the
table passed in is never changed. Successful mutations reply ``""``; print
commands return the same table. ``config_commands`` goes the other way: the
commands that rebuild a table from an empty one (for CONFIG PRINT).

Replies and errors are amqpprox's (reference/amqpprox.md §1), with these
differences, each fixing a quirk of the reference:

- BACKEND PRINT and FARM PRINT list in name order (amqpprox: hash order). A farm
  lists its members in the order FARM ADD gave them (amqpprox: hash order), and
  that is also the order round-robin and datacenter-affinity work in. A member
  named twice in FARM ADD is kept once, at its first place.
- MAP PRINT also prints the default farm, after the vhosts, as
  ``(default) => Farm:<farm>`` (amqpprox does not print it at all). A vhost holding
  ``*`` is a pattern (ours, ``routing.vhost_patterns``); MAP PRINT lists the mappings
  in the order a vhost is matched against them: exact ones by name, then patterns,
  most specific first. A mapping with MAP ... AS (ours) ends with
  `` AS <broker vhost>``, the name quoted as the grammar reads it back.
- BACKEND DELETE of a backend that a farm still uses is refused with
  ``Backend '<b>' is used by farm(s) <f1>, <f2>; remove it from them first.\\n``
  (amqpprox deletes it and leaves the farm pointing at freed memory).
- FARM ADD with no backends creates an empty farm (amqpprox answers "Farm name
  and selector must be provided."). A connection routed to an empty farm is
  refused like an unmapped vhost, and the log says the farm has no backends.
- BACKEND DISABLE/ENABLE (ours) take a backend out of rotation and back; an
  unknown name answers ``Backend '<b>' not found\n``. BACKEND PRINT appends
  `` DISABLED`` to a disabled backend's line (only then, so the reference's line
  is unchanged otherwise); CONFIG PRINT writes a BACKEND DISABLE after the
  backends. Deleting a backend forgets that it was disabled.
- RULE ADD/DELETE/PRINT (ours, docs/routing.md): RULE ADD checks that its farm or
  backend exists (``Farm '<f>' not found``) and replaces a rule of the same priority;
  RULE DELETE of an unknown priority answers ``Rule <p> not found``. FARM DELETE and
  BACKEND DELETE do not look at rules: a rule whose target is gone narrows nothing.
- Every reply ends with its newline (amqpprox's BACKEND ADD and DELETE errors have
  none).
- Unchanged from amqpprox, on purpose: MAP BACKEND/FARM/DEFAULT accept a backend
  or farm that does not exist (yet); ``RoutingTable.candidates`` then refuses the
  connection with the usual text and a ``NoRoute.detail`` naming what is missing.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from amqprouter.control import commands as c
from amqprouter.control.grammar.words import quote
from amqprouter.net.sockets import endpoint
from amqprouter.routing import selectors
from amqprouter.routing.client_rules import Rule
from amqprouter.routing.model import Backend, Farm, RoutingTable, Target

#: The commands ``apply`` executes.
ROUTING_COMMANDS = (
    c.BackendAdd,
    c.BackendDelete,
    c.BackendDisable,
    c.BackendEnable,
    c.FarmAdd,
    c.FarmWeight,
    c.FarmSticky,
    c.FarmPartition,
    c.FarmDelete,
    c.FarmPrint,
    c.MapBackend,
    c.MapFarm,
    c.MapUnmap,
    c.MapDefault,
    c.MapRemoveDefault,
    c.MapPool,
    c.MapPrint,
    c.RuleAdd,
    c.RuleDelete,
    c.RulePrint,
    c.DatacenterSet,
    c.DatacenterPrint,
)


def backend_line(backend: Backend) -> str:
    """A backend as BACKEND PRINT shows it, without the newline."""
    proxy = f" PROXY PROTOCOL V{int(backend.send_proxy)} ENABLED" if backend.send_proxy else ""
    flags = proxy + (" TLS" if backend.tls else "")
    return (
        f"{backend.name} ({backend.datacenter}): {backend.host} "
        f"{endpoint((backend.ip or '', backend.port))}{flags}"
    )


def backend_print(table: RoutingTable, health: Callable[[str], str] = lambda name: "") -> str:
    """BACKEND PRINT: every backend's line by name, with `` DISABLED`` when BACKEND
    DISABLE/DRAIN took it out and then what ``health`` says of it (`` UP``, ...)."""
    return "".join(
        backend_line(table.backends[name])
        + (" DISABLED" if name in table.disabled else "")
        + health(name)
        + "\n"
        for name in sorted(table.backends)
    )


def apply(
    table: RoutingTable, command: c.Command, *, resolved_ip: str | None = None
) -> tuple[RoutingTable, str]:
    """Execute one routing command: the next snapshot and the reply text.

    ``resolved_ip`` is BACKEND ADD's host, resolved by the caller (who answers the
    resolution error itself when it fails).

    Raises:
        ValueError: BACKEND ADD without ``resolved_ip``.
        TypeError: ``command`` is not one of ``ROUTING_COMMANDS``.
    """
    match command:
        case c.BackendAdd():
            return _backend_add(table, command, resolved_ip)
        case c.BackendDelete(name=name):
            return _backend_delete(table, name)
        case c.BackendDisable(name=name) | c.BackendEnable(name=name):
            if name not in table.backends:
                return table, f"Backend '{name}' not found\n"
            if isinstance(command, c.BackendDisable):
                return attrs.evolve(table, disabled=table.disabled | {name}), ""
            return attrs.evolve(table, disabled=table.disabled - {name}), ""
        case c.FarmAdd(name=name, selector=selector, backends=members, weights=weights):
            return _farm_add(table, name, selector, members, weights)
        case c.FarmWeight(name=name, member=member, weight=weight):
            return _farm_weight(table, name, member, weight)
        case c.FarmSticky(name=name, seconds=seconds):
            farm = table.farms.get(name)
            if farm is None:
                return table, f"Farm '{name}' not found\n"
            # Not _with_farm: the selector's memory stays. The clients' entries too: OFF
            # stops using them (they expire), ON again finds the live ones.
            sticky = None if seconds is None else float(seconds)
            farm = attrs.evolve(farm, sticky=sticky)
            return attrs.evolve(table, farms={**table.farms, name: farm}), ""
        case c.FarmPartition(name=name, policy=policy):
            return _farm_partition(table, name, policy)
        case c.FarmDelete(name=name):
            farms = {n: f for n, f in table.farms.items() if n != name}
            return attrs.evolve(table, farms=farms), ""
        case c.FarmPrint():
            return table, "".join(farm_line(table.farms[n]) + "\n" for n in sorted(table.farms))
        case c.MapBackend(vhost=vhost, backend=backend, broker_vhost=renamed):
            return _map(table, vhost, ("backend", backend), renamed), ""
        case c.MapFarm(vhost=vhost, farm=farm, broker_vhost=renamed):
            return _map(table, vhost, ("farm", farm), renamed), ""
        case c.MapUnmap(vhost=vhost):
            mappings = {v: t for v, t in table.mappings.items() if v != vhost}
            renames = {v: r for v, r in table.renames.items() if v != vhost}
            return attrs.evolve(table, mappings=mappings, renames=renames), ""
        case c.MapDefault(farm=farm):
            return attrs.evolve(table, default_farm=farm), ""
        case c.MapRemoveDefault():
            return attrs.evolve(table, default_farm=None), ""
        case c.MapPool(vhost=vhost, pooled=pooled):
            pools = {v: p for v, p in table.pools.items() if v != vhost}
            if pooled is not None:
                pools[vhost] = pooled
            return attrs.evolve(table, pools=pools), ""
        case c.MapPrint():
            return table, _map_print(table)
        case c.RuleAdd():
            return _rule_add(table, command)
        case c.RuleDelete(priority=priority):
            if all(rule.priority != priority for rule in table.rules):
                return table, f"Rule {priority} not found\n"
            return attrs.evolve(table, rules=[r for r in table.rules if r.priority != priority]), ""
        case c.RulePrint():
            return table, "".join(rule_line(rule) + "\n" for rule in table.rules)
        case c.DatacenterSet(name=name):
            # amqpprox repartitions every farm, even for the same datacenter: markers reset.
            return attrs.evolve(table, datacenter=name, layouts={}), ""
        case c.DatacenterPrint():
            return table, table.datacenter + "\n"
    raise TypeError(f"not a routing command: {command!r}")


def _backend_add(
    table: RoutingTable, command: c.BackendAdd, resolved_ip: str | None
) -> tuple[RoutingTable, str]:
    dns = command.dns
    if not dns and resolved_ip is None:
        raise ValueError("BACKEND ADD needs the host resolved by the caller (resolved_ip)")
    backend = Backend(
        command.name,
        command.datacenter,
        command.host,
        command.port,
        dns=dns,
        ip=None if dns else resolved_ip,
        send_proxy=command.send_proxy,
        tls=command.tls,
    )
    if backend.name in table.backends:
        return table, f"Failed to insert backend: '{backend_line(backend)}', error code: 1\n"
    return attrs.evolve(table, backends={**table.backends, backend.name: backend}), ""


def _backend_delete(table: RoutingTable, name: str) -> tuple[RoutingTable, str]:
    if name not in table.backends:
        return table, f"Delete failed to remove '{name}', rcode 1\n"
    users = sorted(farm.name for farm in table.farms.values() if name in farm.members)
    if users:
        return table, (
            f"Backend '{name}' is used by farm(s) {', '.join(users)}; remove it from them first.\n"
        )
    backends = {n: b for n, b in table.backends.items() if n != name}
    return attrs.evolve(table, backends=backends, disabled=table.disabled - {name}), ""


def farm_line(farm: Farm) -> str:
    """A farm as FARM PRINT shows it, without the newline: amqpprox's line (each member
    followed by a space) for a round-robin farm; a weighted selector's members as
    ``name*weight``, and what is not amqpprox's in parentheses after them."""
    weighted = farm.selector in selectors.WEIGHTED
    members = "".join(
        (f"{m}*{w} " if weighted else f"{m} ")
        for m, w in zip(farm.members, farm.weights, strict=True)
    )
    extras = [] if farm.selector == "round-robin" else [farm.selector]
    if farm.sticky is not None:
        extras.append(f"sticky {farm.sticky:g}s")
    return f"{farm.name}: {members}" + (f"({', '.join(extras)})" if extras else "")


def _farm_add(
    table: RoutingTable,
    name: str,
    selector: str,
    members: tuple[str, ...],
    weights: tuple[int, ...] = (),
) -> tuple[RoutingTable, str]:
    if selector not in selectors.SELECTORS:
        return table, f"Selector '{selector}' not found\n"
    if weights and selector not in selectors.WEIGHTED:
        return table, (
            f"Selector '{selector}' takes no weights: use weighted-round-robin or "
            "least-connections for name*weight members.\n"
        )
    if weights:
        # A member named twice keeps its first place, and the weight given there.
        first = dict(reversed(list(zip(members, weights, strict=True))))
        weights = tuple(first[member] for member in dict.fromkeys(members))
    unique = tuple(dict.fromkeys(members))
    missing = [member for member in unique if member not in table.backends]
    if missing:
        return table, "".join(f"Backend '{member}' not found\n" for member in missing) + (
            "Farm not inserted due to at least one missing Backend\n"
        )
    # A replaced farm loses its policies and is repartitioned: markers reset.
    return _with_farm(table, Farm(name, selector, unique, weights=weights)), ""


def _farm_weight(
    table: RoutingTable, name: str, member: str, weight: int
) -> tuple[RoutingTable, str]:
    farm = table.farms.get(name)
    if farm is None:
        return table, f"Farm '{name}' not found\n"
    if member not in farm.members:
        return table, f"Backend '{member}' is not a member of farm '{name}'\n"
    if farm.selector not in selectors.WEIGHTED:
        return table, (
            f"Farm '{name}' uses {farm.selector}, which has no weights: FARM ADD it with "
            "weighted-round-robin or least-connections.\n"
        )
    weights = list(farm.weights)
    weights[farm.members.index(member)] = weight
    # Not _with_farm: the layout (and the selector's memory) stays, the weight applies
    # from the next choice on.
    farm = attrs.evolve(farm, weights=tuple(weights))
    return attrs.evolve(table, farms={**table.farms, name: farm}), ""


def _farm_partition(table: RoutingTable, name: str, policy: str) -> tuple[RoutingTable, str]:
    if policy not in selectors.POLICIES:
        return table, f"Partition policy '{policy}' not found\n"
    farm = table.farms.get(name)
    if farm is None:
        return table, f"Farm '{name}' not found\n"
    return _with_farm(table, attrs.evolve(farm, policies=(*farm.policies, policy))), ""


def _with_farm(table: RoutingTable, farm: Farm) -> RoutingTable:
    """``table`` with ``farm`` added or replaced, and repartitioned (its markers reset)."""
    layouts = {n: layout for n, layout in table.layouts.items() if n != farm.name}
    return attrs.evolve(table, farms={**table.farms, farm.name: farm}, layouts=layouts)


def _map(table: RoutingTable, vhost: str, target: Target, renamed: str | None) -> RoutingTable:
    """``table`` with ``vhost`` mapped to ``target``; a mapping without AS renames nothing."""
    renames = {v: r for v, r in table.renames.items() if v != vhost}
    if renamed is not None:
        renames[vhost] = renamed
    return attrs.evolve(table, mappings={**table.mappings, vhost: target}, renames=renames)


def renamed_suffix(table: RoutingTable, vhost: str) -> str:
    """`` AS <broker vhost>`` (quoted as the grammar reads it back) for a renaming mapping."""
    renamed = table.renames.get(vhost)
    return "" if renamed is None else f" AS {quote(renamed)}"


def rule_line(rule: Rule) -> str:
    """A rule as RULE PRINT shows it: ``<priority> <cidr,...> => Farm:<f> BREAK``."""
    kind, name = rule.target
    return (
        f"{rule.priority} {','.join(rule.networks)} => "
        f"{'Farm' if kind == 'farm' else 'Backend'}:{name} {rule.on_down}"
    )


def _rule_add(table: RoutingTable, command: c.RuleAdd) -> tuple[RoutingTable, str]:
    # Checked now (unlike MAP's targets): a rule naming a typo would never narrow anything.
    if command.kind == "farm" and command.target not in table.farms:
        return table, f"Farm '{command.target}' not found\n"
    if command.kind == "backend" and command.target not in table.backends:
        return table, f"Backend '{command.target}' not found\n"
    rule = Rule(command.priority, command.networks, (command.kind, command.target), command.on_down)
    others = [r for r in table.rules if r.priority != command.priority]
    return attrs.evolve(table, rules=[*others, rule]), ""


def _map_print(table: RoutingTable) -> str:
    """In matching order: exact vhosts by name, then patterns, most specific first."""
    lines = [
        f'"{vhost}" => {"Farm" if kind == "farm" else "Backend"}:{name}'
        f"{renamed_suffix(table, vhost)}\n"
        for vhost, (kind, name) in table.mapping_order()
    ]
    if table.default_farm is not None:
        lines.append(f"(default) => Farm:{table.default_farm}\n")
    # MAP POOL's word per vhost; a vhost not listed follows --pool.
    lines += [
        f'"{vhost}" pool {"ON" if pooled else "OFF"}\n'
        for vhost, pooled in sorted(table.pools.items())
    ]
    return "".join(lines)


def config_commands(table: RoutingTable) -> list[c.Command]:
    """The commands that rebuild ``table`` from an empty one, in an order that works.

    DATACENTER SET (when set), BACKEND ADD/ADD_DNS by name, BACKEND DISABLE, FARM ADD and its FARM
    PARTITIONs by farm name, MAP BACKEND/FARM in matching order (exact vhosts by name, then
    patterns, most specific first), MAP DEFAULT, RULE ADD by priority (after the farms and
    backends they name). A static
    backend is re-added by host, so loading the commands resolves it again.
    Round-robin positions are not configuration and start again from 0.
    """
    result: list[c.Command] = []
    if table.datacenter:
        result.append(c.DatacenterSet(table.datacenter))
    for name in sorted(table.backends):
        b = table.backends[name]
        result.append(
            c.BackendAdd(b.name, b.datacenter, b.host, b.port, b.send_proxy, b.tls, dns=b.dns)
        )
    result += [c.BackendDisable(name) for name in sorted(table.disabled)]
    for name in sorted(table.farms):
        farm = table.farms[name]
        weights = farm.weights if farm.weighted else ()
        result.append(c.FarmAdd(farm.name, farm.selector, farm.members, weights))
        result += [c.FarmPartition(farm.name, policy) for policy in farm.policies]
        if farm.sticky is not None:
            result.append(c.FarmSticky(farm.name, int(farm.sticky)))
    # Matching order: patterns that tie keep the order they were mapped in once read back.
    for vhost, (kind_name, target) in table.mapping_order():
        renamed = table.renames.get(vhost)
        if kind_name == "farm":
            result.append(c.MapFarm(vhost, target, renamed))
        else:
            result.append(c.MapBackend(vhost, target, renamed))
    if table.default_farm is not None:
        result.append(c.MapDefault(table.default_farm))
    result += [c.MapPool(vhost, pooled) for vhost, pooled in sorted(table.pools.items())]
    result += [
        c.RuleAdd(rule.priority, rule.networks, rule.target[0], rule.target[1], rule.on_down)
        for rule in table.rules
    ]
    return result
