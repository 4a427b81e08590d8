"""What changed in a ``--config`` file, as the control commands that apply the change.

Pure functions, no I/O. A reload (control/reload.py) folds the file's commands into a
``State``: one entry per configured object, keyed by what names it (``("backend",
"b1")``, ``("map", "vhost1")``, ``("listen", "5673")``, ``("limit", "CONN_RATE",
"DEFAULT")``...), holding the commands that create it from nothing. A later command
for the same key replaces the entry (``LOG FILE 5`` after ``LOG FILE 3``), its
opposite removes it (``MAP UNMAP v``, ``BACKEND DELETE b``, ``LISTEN STOP``), and
``FARM PARTITION`` is kept with its farm. Commands that only print are skipped; actions
(EXIT, SESSION, VHOST, BACKEND DRAIN, STAT LISTEN, CONFIG RELOAD) are not configuration:
a reload refuses a file holding one (``strict``), since running them again on every
SIGHUP is never what the file meant; the state of a file at start skips them, as they
ran once then.

``diff(old, new)`` compares the state the file had when it was last applied with the
state it has now; objects only the operator created over the control socket are in
neither, so a reload never touches them. It returns a ``Plan``:

* ``routing``: every BACKEND, FARM, MAP, RULE and DATACENTER command, in an order that
  works against one table (rules deleted, maps unmapped, then farms deleted, then
  backends deleted, then backends added, farms added, maps set, rules added). The
  controller applies them to a copy of the routing table and swaps it in once, or not
  at all when one fails: a session sees the old configuration or the new one, never
  half of it.
* ``steps``: the rest (health checks, limits, auth, StatsD, log levels, TLS, listeners),
  each applied on its own, in that order (TLS before the listeners that need it).

A changed backend is replaced: BACKEND DELETE then BACKEND ADD in the same table swap,
which leaves its sessions connected (a session keeps the backend it was routed to) and
keeps its health check. A farm that uses it is deleted and added again in the same swap
(BACKEND DELETE refuses a backend a farm uses), which resets its round-robin position.
A changed farm, map, limit, level or TLS setting is set again; a changed listener is
stopped and started again (clients connected through it stay connected).

Some lines cannot be taken back by any command (a TLS file or cipher list,
MAPHOSTNAME DNS): a file that drops one is refused, and says to restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from amqprouter.control import commands as c
from amqprouter.control.grammar import to_line
from amqprouter.control.grammar.words import quote

#: What names a configured object: its kind, then the words that tell it apart.
Key = tuple[str, ...]
#: The commands that create an object from nothing (a farm: FARM ADD, then PARTITIONs).
Entry = tuple[c.Command, ...]
#: Every object a file configures, in the order the file first names them.
State = dict[Key, Entry]

# Commands that only print: nothing to apply, at start or at a reload.
_QUERIES = (
    c.Help,
    c.Complete,
    c.Conn,
    c.ConfigPrint,
    c.BackendPrint,
    c.FarmPrint,
    c.MapPrint,
    c.RulePrint,
    c.DatacenterPrint,
    c.TlsPrint,
    c.TlsCiphersPrint,
    c.LimitPrint,
    c.AuthPrint,
)

# A TLS setting no command unsets (there is no "no file" nor "OpenSSL's default ciphers").
_TLS_FOR_GOOD = ("CA_CERT_FILE", "CERT_CHAIN_FILE", "KEY_FILE", "TMP_DH_FILE", "CIPHERS")

_ROUTING_KINDS = ("datacenter", "backend", "disabled", "farm", "map", "default", "pool", "rule")
# The order of the steps after the routing swap.
_STEP_KINDS = ("check", "on_down", "limit", "auth", "statsd", "per-source", "log", "maphostname")


@attrs.frozen
class FoldError:
    """Where (``<file>:<line>``) and why a file's commands cannot make a state."""

    where: str
    reason: str


@attrs.frozen
class Step:
    """Commands applied together, the change lines they make, and the state they leave.

    ``updates`` is what the last applied state becomes once the step succeeds (None:
    the key is gone), so a step that fails is tried again at the next reload.
    """

    commands: tuple[c.Command, ...]
    changes: tuple[str, ...]
    updates: tuple[tuple[Key, Entry | None], ...]


@attrs.frozen
class Plan:
    routing: Step
    steps: tuple[Step, ...]

    @property
    def changes(self) -> tuple[str, ...]:
        return self.routing.changes + tuple(line for step in self.steps for line in step.changes)


def fold(commands: Iterable[tuple[str, c.Command]], *, strict: bool) -> State | FoldError:
    """The state that ``commands`` (each with where it came from) configure, in order.

    ``strict`` refuses actions and lines that make no sense (a reload's file);
    otherwise they are skipped: the start ran an action once, and applied every line
    (one that failed stopped the router).
    """
    state: State = {}
    for where, command in commands:
        error = _fold_one(state, command)
        if error is None or not strict:
            continue
        return FoldError(where, _reason(command, error))
    return state


def fold_problems(commands: Iterable[tuple[str, c.Command]]) -> list[FoldError]:
    """Every line of ``commands`` that a reload's strict fold refuses, not just the
    first (CONFIG CHECK and ``amqprouter --check`` list them all)."""
    state: State = {}
    problems = []
    for where, command in commands:
        error = _fold_one(state, command)
        if error is not None:
            problems.append(FoldError(where, _reason(command, error)))
    return problems


def _reason(command: c.Command, error: str) -> str:
    if error is _ACTION:
        return f"'{to_line(command)}' is an action, not configuration: a reload does not run it"
    return error


_ACTION = "action"


def _fold_one(state: State, command: c.Command) -> str | None:
    """Fold ``command`` into ``state``: None, or why it cannot be (``_ACTION``: an action)."""
    match command:
        case c.BackendAdd(name=name):
            if ("backend", name) in state:
                return f"backend '{name}' is added twice (BACKEND DELETE it in between)"
            state[("backend", name)] = (command,)
        case c.BackendDelete(name=name):
            for key in (("backend", name), ("disabled", name), ("check", name)):
                state.pop(key, None)
        case c.BackendDisable(name=name):
            state[("disabled", name)] = (command,)
        case c.BackendEnable(name=name):
            state.pop(("disabled", name), None)
        case c.BackendCheckOn(name=name):
            state[("check", name)] = (command,)
        case c.BackendCheckOff(name=name):
            state.pop(("check", name), None)
        case c.FarmAdd(name=name):
            state[("farm", name)] = (command,)
        case c.FarmPartition(name=name):
            farm = state.get(("farm", name))
            if farm is None:
                return f"FARM PARTITION of farm '{name}', which the file does not add before"
            state[("farm", name)] = (*farm, command)
        case c.FarmSticky(name=name):
            farm = state.get(("farm", name))
            if farm is None:
                return f"FARM STICKY of farm '{name}', which the file does not add before"
            rest = tuple(k for k in farm if not isinstance(k, c.FarmSticky))
            state[("farm", name)] = rest if command.seconds is None else (*rest, command)
        case c.FarmWeight(name=name, member=member, weight=weight):
            farm = state.get(("farm", name))
            if farm is None:
                return f"FARM WEIGHT of farm '{name}', which the file does not add before"
            add = farm[0]
            assert isinstance(add, c.FarmAdd)
            if member not in add.backends:
                return f"FARM WEIGHT of '{member}', which FARM ADD {name} does not name"
            # The farm's entry stays what creates it: FARM ADD with the weight in it.
            weights = list(add.weights or (1,) * len(add.backends))
            weights[add.backends.index(member)] = weight
            kept = () if set(weights) <= {1} else tuple(weights)
            state[("farm", name)] = (attrs.evolve(add, weights=kept), *farm[1:])
        case c.FarmDelete(name=name):
            state.pop(("farm", name), None)
            state.pop(("on_down", name), None)
        case c.FarmOnDown(name=name):
            state[("on_down", name)] = (command,)
        case c.MapBackend(vhost=vhost) | c.MapFarm(vhost=vhost):
            state[("map", vhost)] = (command,)
        case c.MapUnmap(vhost=vhost):
            state.pop(("map", vhost), None)
        case c.MapPool(vhost=vhost, pooled=pooled):
            if pooled is None:
                state.pop(("pool", vhost), None)
            else:
                state[("pool", vhost)] = (command,)
        case c.RuleAdd(priority=priority):
            state[("rule", str(priority))] = (command,)
        case c.RuleDelete(priority=priority):
            state.pop(("rule", str(priority)), None)
        case c.MapDefault():
            state[("default",)] = (command,)
        case c.MapRemoveDefault():
            state.pop(("default",), None)
        case c.DatacenterSet(name=name):
            if name:
                state[("datacenter",)] = (command,)
            else:  # a bare SET is the default: no datacenter
                state.pop(("datacenter",), None)
        case c.ListenStart(port=port) | c.ListenStartSecure(port=port):
            state[("listen", str(port))] = (command,)
        case c.ListenStop(port=None):
            _drop_kind(state, "listen")
        case c.ListenStop(port=port):
            state.pop(("listen", str(port)), None)
        case c.LogConsole():
            state[("log", "CONSOLE")] = (command,)
        case c.LogFile():
            state[("log", "FILE")] = (command,)
        case c.TlsFile(direction=direction, kind=kind):
            # RSA_KEY_FILE is KEY_FILE (docs/tls.md): the later one wins.
            state[("tls", direction, "KEY_FILE" if kind == "RSA_KEY_FILE" else kind)] = (command,)
        case c.TlsVerifyMode(direction=direction):
            state[("tls", direction, "VERIFY_MODE")] = (command,)
        case c.TlsCiphersSet(direction=direction):
            state[("tls", direction, "CIPHERS")] = (command,)
        case c.TlsMinVersion(direction=direction):
            state[("tls", direction, "MIN_VERSION")] = (command,)
        case c.LimitSet(kind=kind, vhost=vhost):
            state[_limit_key(kind, vhost)] = (command,)
        case c.LimitDisable(kind=kind, vhost=vhost):
            state.pop(_limit_key(kind, vhost), None)
        case c.AuthService():
            state[("auth",)] = (command,)
        case c.AuthAlwaysAllow():
            state.pop(("auth",), None)
        case c.StatSend(host=host, port=port):
            state[("statsd", host, str(port))] = (command,)
        case c.StatStopSend():
            _drop_kind(state, "statsd")
        case c.StatPerSource(enabled=enabled):
            if enabled:  # the default
                state.pop(("per-source",), None)
            else:
                state[("per-source",)] = (command,)
        case c.MapHostnameDns():
            state[("maphostname",)] = (command,)
        case _ if isinstance(command, _QUERIES):
            pass
        case _:
            return _ACTION
    return None


def _drop_kind(state: State, kind: str) -> None:
    for key in [key for key in state if key[0] == kind]:
        del state[key]


def _limit_key(kind: str, vhost: str | None) -> Key:
    return ("limit", kind, "DEFAULT") if vhost is None else ("limit", kind, "VHOST", vhost)


def diff(old: Mapping[Key, Entry], new: Mapping[Key, Entry]) -> Plan | str:
    """The plan that turns ``old`` into ``new``, or why no command can (a reason)."""
    removed = [key for key in old if key not in new]
    added = [key for key in new if key not in old]
    replaced = [key for key in new if key in old and old[key] != new[key]]
    for key in removed:
        if (key[0] == "tls" and key[2] in _TLS_FOR_GOOD) or key[0] == "maphostname":
            return (
                f"'{to_line(old[key][-1])}' was removed from the file, and no command takes it "
                "back: restart the router to apply that"
            )
    routing = _routing_step(old, new, removed, added, replaced)
    steps: list[Step] = []
    for kind in _STEP_KINDS:
        if kind == "statsd":
            steps += _statsd_steps(old, new, removed, added)
            continue
        for key in [k for k in removed + added + replaced if k[0] == kind]:
            step = _step(old, new, key)
            if step is not None:
                steps.append(step)
    steps += _tls_steps(old, new, removed, added, replaced)
    steps += _listen_steps(old, new, removed, added, replaced)
    return Plan(routing, tuple(steps))


def _of(keys: Sequence[Key], kind: str) -> list[Key]:
    return [key for key in keys if key[0] == kind]


def _routing_step(
    old: Mapping[Key, Entry],
    new: Mapping[Key, Entry],
    removed: Sequence[Key],
    added: Sequence[Key],
    replaced: Sequence[Key],
) -> Step:
    changed = [key for key in [*removed, *added, *replaced] if key[0] in _ROUTING_KINDS]
    deleted_backends = {key[1] for key in _of(removed, "backend") + _of(replaced, "backend")}
    replaced_backends = {key[1] for key in _of(replaced, "backend")}
    # Farms that keep their line but use a replaced backend: deleted and added again.
    again = [
        key
        for key in _of(list(new), "farm")
        if key not in changed and replaced_backends & set(_members(new[key]))
    ]
    commands: list[c.Command] = []
    commands += [c.RuleDelete(int(key[1])) for key in _of(removed, "rule")]
    commands += [c.MapUnmap(key[1]) for key in _of(removed, "map")]
    commands += [c.MapRemoveDefault() for _key in _of(removed, "default")]
    commands += [c.MapPool(key[1], None) for key in _of(removed, "pool")]
    # BACKEND DELETE forgets a disabled mark: only backends that stay need ENABLE.
    commands += [
        c.BackendEnable(key[1])
        for key in _of(removed, "disabled")
        if key[1] not in deleted_backends
    ]
    commands += [
        c.FarmDelete(key[1]) for key in _of(removed, "farm") + _of(replaced, "farm") + again
    ]
    commands += [
        c.BackendDelete(key[1]) for key in _of(removed, "backend") + _of(replaced, "backend")
    ]
    commands += [c.DatacenterSet("") for _key in _of(removed, "datacenter")]
    for key in _of(added, "datacenter") + _of(replaced, "datacenter"):
        commands += new[key]
    for key in _of(added, "backend") + _of(replaced, "backend"):
        commands += new[key]
    disabled = _of(added, "disabled") + [
        ("disabled", name)
        for name in sorted(replaced_backends)
        if ("disabled", name) in new and ("disabled", name) not in added
    ]
    for key in disabled:
        commands += new[key]
    for key in _of(added, "farm") + _of(replaced, "farm") + again:
        commands += new[key]
    for key in (
        _of(added, "map")
        + _of(replaced, "map")
        + _of(added, "default")
        + _of(replaced, "default")
        + _of(added, "pool")
        + _of(replaced, "pool")
    ):
        commands += new[key]
    # Rules last: RULE ADD checks that its farm or backend exists; a replaced one is set
    # again (the same priority replaces it).
    for key in _of(added, "rule") + _of(replaced, "rule"):
        commands += new[key]
    lines = [_describe(key, old, new) for key in changed]
    for key in again:
        using = ", ".join(sorted(replaced_backends & set(_members(new[key]))))
        lines.append(f"Re-added farm {key[1]} (with replaced backend {using})")
    updates = tuple((key, new.get(key)) for key in changed)
    return Step(tuple(commands), tuple(lines), updates)


def _members(entry: Entry) -> tuple[str, ...]:
    farm = entry[0]
    assert isinstance(farm, c.FarmAdd)
    return farm.backends


def _step(old: Mapping[Key, Entry], new: Mapping[Key, Entry], key: Key) -> Step | None:
    """One health, limit, auth, StatsD-scope or log change on its own."""
    entry = new.get(key)
    if entry is not None:
        commands: Entry = entry
    else:
        commands = _undo(key, new)
    if entry is None and not commands and key[0] in ("check", "on_down"):
        # Its backend or farm is gone from the file too: the routing swap dropped it.
        return Step((), (), ((key, None),))
    return Step(commands, (_describe(key, old, new),), ((key, entry),))


def _undo(key: Key, new: Mapping[Key, Entry]) -> Entry:
    """The commands that take back a removed key (the default it had before the file)."""
    match key:
        case ("check", name):
            return (c.BackendCheckOff(name),) if ("backend", name) in new else ()
        case ("on_down", name):
            return (c.FarmOnDown(name, False),) if ("farm", name) in new else ()
        case ("limit", kind, "DEFAULT"):
            return (c.LimitDisable(kind, None),)  # type: ignore[arg-type]
        case ("limit", kind, "VHOST", vhost):
            return (c.LimitDisable(kind, vhost),)  # type: ignore[arg-type]
        case ("auth",):
            return (c.AuthAlwaysAllow(),)
        case ("per-source",):
            return (c.StatPerSource(enabled=True),)
        case ("tls", direction, "VERIFY_MODE"):
            return (c.TlsVerifyMode(direction, ()),)  # type: ignore[arg-type]
        case ("tls", direction, "MIN_VERSION"):
            return (c.TlsMinVersion(direction, "1.2"),)  # type: ignore[arg-type]
        case ("listen", port):
            return (c.ListenStop(int(port)),)
    # A LOG level has no "unset": the reloader puts the start's levels under the file's
    # (control/reload.py), so a removed LOG line sets them back and never comes here.
    return ()


def _statsd_steps(
    old: Mapping[Key, Entry],
    new: Mapping[Key, Entry],
    removed: Sequence[Key],
    added: Sequence[Key],
) -> list[Step]:
    gone, more = _of(removed, "statsd"), _of(added, "statsd")
    if not gone:
        return [Step(new[key], (_describe(key, old, new),), ((key, new[key]),)) for key in more]
    # STAT STOP SEND stops every publisher: the file's remaining ones start again.
    keep = _of(list(new), "statsd")
    commands: list[c.Command] = [c.StatStopSend()]
    for key in keep:
        commands += new[key]
    lines = tuple(_describe(key, old, new) for key in gone + more)
    updates = tuple((key, new.get(key)) for key in gone + more)
    return [Step(tuple(commands), lines, updates)]


def _tls_steps(
    old: Mapping[Key, Entry],
    new: Mapping[Key, Entry],
    removed: Sequence[Key],
    added: Sequence[Key],
    replaced: Sequence[Key],
) -> list[Step]:
    """One step per direction: applied as one change, so a new certificate and its key
    are checked against each other, never the new one against the old one."""
    steps = []
    for direction in ("INGRESS", "EGRESS"):
        keys = [key for key in [*removed, *added, *replaced] if key[:2] == ("tls", direction)]
        if not keys:
            continue
        commands: list[c.Command] = []
        for key in keys:
            entry = new.get(key)
            commands += entry if entry is not None else _undo(key, new)
        lines = tuple(_describe(key, old, new) for key in keys)
        steps.append(Step(tuple(commands), lines, tuple((key, new.get(key)) for key in keys)))
    return steps


def _listen_steps(
    old: Mapping[Key, Entry],
    new: Mapping[Key, Entry],
    removed: Sequence[Key],
    added: Sequence[Key],
    replaced: Sequence[Key],
) -> list[Step]:
    steps = []
    # Stops first: a port may move from one listener line to another.
    for key in _of(removed, "listen"):
        steps.append(Step(_undo(key, new), (_describe(key, old, new),), ((key, None),)))
    for key in _of(replaced, "listen"):
        commands = (c.ListenStop(int(key[1])), *new[key])
        steps.append(Step(commands, (_describe(key, old, new),), ((key, new[key]),)))
    for key in _of(added, "listen"):
        steps.append(Step(new[key], (_describe(key, old, new),), ((key, new[key]),)))
    return steps


def _describe(key: Key, old: Mapping[Key, Entry], new: Mapping[Key, Entry]) -> str:
    """One reply line: ``Added backend b3``, ``Replaced map vhost1 -> farm2``..."""
    entry = new.get(key)
    verb = "Removed" if entry is None else "Replaced" if key in old else "Added"
    match key:
        case ("backend", name):
            return f"{verb} backend {name}"
        case ("farm", name):
            return f"{verb} farm {name}"
        case ("map", vhost):
            return f"{verb} map {vhost}" + _target(entry)
        case ("default",):
            return f"{verb} default farm" + _target(entry)
        case ("disabled", name):
            return f"{'Enabled' if entry is None else 'Disabled'} backend {name}"
        case ("rule", priority):
            return f"{verb} rule {priority}"
    shown = old[key] if entry is None else entry
    return f"{verb} {to_line(shown[0])}"


def _target(entry: Entry | None) -> str:
    match entry:
        case (c.MapBackend(backend=name, broker_vhost=renamed),) | (
            c.MapFarm(farm=name, broker_vhost=renamed),
        ) if renamed is not None:
            # A changed AS is a changed mapping: the reply says what the broker opens now.
            return f" -> {name} AS {quote(renamed)}"
        case (c.MapBackend(backend=name),) | (c.MapFarm(farm=name),) | (c.MapDefault(farm=name),):
            return f" -> {name}"
    return ""
