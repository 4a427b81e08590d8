"""The inverse of parsing: a command as the line that parses back to it (CONFIG PRINT,
the ``--config`` file, replies that quote a command)."""

from __future__ import annotations

import decimal
from typing import assert_never

from amqprouter.control.commands import (
    AuthAlwaysAllow,
    AuthPrint,
    AuthService,
    BackendAdd,
    BackendCheckOff,
    BackendCheckOn,
    BackendDelete,
    BackendDisable,
    BackendDrain,
    BackendEnable,
    BackendPrint,
    Command,
    Complete,
    ConfigCheck,
    ConfigPrint,
    ConfigReload,
    Conn,
    DatacenterPrint,
    DatacenterSet,
    Exit,
    FarmAdd,
    FarmDelete,
    FarmOnDown,
    FarmPartition,
    FarmPrint,
    FarmSticky,
    FarmWeight,
    Help,
    LimitDisable,
    LimitPrint,
    LimitSet,
    ListenStart,
    ListenStartSecure,
    ListenStop,
    LogConsole,
    LogFile,
    MapBackend,
    MapDefault,
    MapFarm,
    MapHostnameDns,
    MapPool,
    MapPrint,
    MapRemoveDefault,
    MapUnmap,
    RuleAdd,
    RuleDelete,
    RulePrint,
    SessionCapture,
    SessionControl,
    SessionTrace,
    StatListen,
    StatPerSource,
    StatSend,
    StatStopSend,
    TlsCiphersPrint,
    TlsCiphersSet,
    TlsFile,
    TlsMinVersion,
    TlsPrint,
    TlsVerifyMode,
    TraceOptions,
    VhostBackendDisconnect,
    VhostForceDisconnect,
    VhostPause,
    VhostPrint,
    VhostTrace,
    VhostUnpause,
)
from amqprouter.control.grammar.words import quote


def _listen_options(proxy_from: tuple[str, ...], allow: tuple[str, ...]) -> list[str]:
    words = ["ACCEPT-PROXY", "FROM", ",".join(proxy_from)] if proxy_from else []
    return words + (["ALLOW", ",".join(allow)] if allow else [])


def words_of(command: Command) -> list[str]:
    """The words of ``command``'s canonical line, its verb first."""
    match command:
        case BackendAdd():
            subcommand = "ADD_DNS" if command.dns else "ADD"
            flags = [
                flag
                for flag, wanted in (
                    ("SEND-PROXY", command.send_proxy == 1),
                    ("SEND-PROXY-V2", command.send_proxy == 2),
                    ("TLS", command.tls),
                )
                if wanted
            ]
            return [
                "BACKEND",
                subcommand,
                command.name,
                command.datacenter,
                command.host,
                str(command.port),
                *flags,
            ]
        case BackendDelete(name):
            return ["BACKEND", "DELETE", name]
        case BackendPrint():
            return ["BACKEND", "PRINT"]
        case BackendCheckOn(name, interval_ms, fall, rise, timeout_ms):
            numbers = [str(n) for n in (interval_ms, fall, rise, timeout_ms)]
            return ["BACKEND", "CHECK", name, "ON", *numbers]
        case BackendCheckOff(name):
            return ["BACKEND", "CHECK", name, "OFF"]
        case BackendDisable(name):
            return ["BACKEND", "DISABLE", name]
        case BackendEnable(name):
            return ["BACKEND", "ENABLE", name]
        case BackendDrain(name, graceful):
            return ["BACKEND", "DRAIN", name, "GRACEFUL" if graceful else "FORCE"]
        case SessionControl(session_id, action):
            return ["SESSION", str(session_id)] + ([action] if action else [])
        case SessionTrace(session_id, on, options):
            return ["SESSION", "TRACE", str(session_id), *_trace_words(on, options)]
        case SessionCapture(session_id, path, seconds):
            words = ["SESSION", "CAPTURE", str(session_id), path]
            return words + ([] if seconds is None else ["SECONDS", _decimal(seconds)])
        case VhostTrace(vhost, on, options):
            return ["VHOST", "TRACE", vhost, *_trace_words(on, options)]
        case VhostPause(vhost):
            return ["VHOST", "PAUSE", vhost]
        case VhostUnpause(vhost):
            return ["VHOST", "UNPAUSE", vhost]
        case VhostPrint():
            return ["VHOST", "PRINT"]
        case VhostBackendDisconnect(vhost):
            return ["VHOST", "BACKEND_DISCONNECT", vhost]
        case VhostForceDisconnect(vhost):
            return ["VHOST", "FORCE_DISCONNECT", vhost]
        case FarmAdd(name, selector, backends, weights):
            if not weights:
                return ["FARM", "ADD", name, selector, *backends]
            members = [m if w == 1 else f"{m}*{w}" for m, w in zip(backends, weights, strict=True)]
            return ["FARM", "ADD", name, selector, *members]
        case FarmSticky(name, seconds):
            return ["FARM", "STICKY", name] + (["OFF"] if seconds is None else ["ON", str(seconds)])
        case FarmWeight(name, member, weight):
            return ["FARM", "WEIGHT", name, member, str(weight)]
        case FarmPartition(name, policy):
            return ["FARM", "PARTITION", name, policy]
        case FarmDelete(name):
            return ["FARM", "DELETE", name]
        case FarmPrint():
            return ["FARM", "PRINT"]
        case FarmOnDown(name, disconnect):
            return ["FARM", "ON_DOWN", name, "DISCONNECT" if disconnect else "KEEP"]
        case MapBackend(vhost, backend, broker_vhost):
            return ["MAP", "BACKEND", vhost, backend, *_as_words(broker_vhost)]
        case MapFarm(vhost, farm, broker_vhost):
            return ["MAP", "FARM", vhost, farm, *_as_words(broker_vhost)]
        case MapUnmap(vhost):
            return ["MAP", "UNMAP", vhost]
        case MapDefault(farm):
            return ["MAP", "DEFAULT", farm]
        case MapRemoveDefault():
            return ["MAP", "REMOVE_DEFAULT"]
        case MapPool(vhost, pooled):
            return ["MAP", "POOL", vhost, {True: "ON", False: "OFF", None: "DEFAULT"}[pooled]]
        case MapPrint():
            return ["MAP", "PRINT"]
        case RuleAdd(priority, networks, kind, target, on_down):
            return ["RULE", "ADD", str(priority), ",".join(networks), kind.upper(), target, on_down]
        case RuleDelete(priority):
            return ["RULE", "DELETE", str(priority)]
        case RulePrint():
            return ["RULE", "PRINT"]
        case ListenStart(port, proxy_from, allow):
            return ["LISTEN", "START", str(port), *_listen_options(proxy_from, allow)]
        case ListenStartSecure(port, proxy_from, allow):
            return ["LISTEN", "START_SECURE", str(port), *_listen_options(proxy_from, allow)]
        case ListenStop(port):
            return ["LISTEN", "STOP"] + ([] if port is None else [str(port)])
        case DatacenterSet(name):
            # An empty name is a bare SET, which parses back to "".
            return ["DATACENTER", "SET"] + ([name] if name else [])
        case DatacenterPrint():
            return ["DATACENTER", "PRINT"]
        case LogConsole(level):
            return ["LOG", "CONSOLE", str(level)]
        case LogFile(level):
            return ["LOG", "FILE", str(level)]
        case MapHostnameDns():
            return ["MAPHOSTNAME", "DNS"]
        case ConfigPrint():
            return ["CONFIG", "PRINT"]
        case ConfigReload():
            return ["CONFIG", "RELOAD"]
        case Complete(words):
            return ["COMPLETE", *words]
        case ConfigCheck(path):
            return ["CONFIG", "CHECK"] + ([] if path is None else [path])
        case StatListen(output, kind, value):
            return ["STAT", "LISTEN", output, f"{kind}={value}" if value else kind]
        case StatSend(host, port):
            return ["STAT", "SEND", host, str(port)]
        case StatStopSend():
            return ["STAT", "STOP", "SEND"]
        case StatPerSource(enabled):
            return ["STAT", "ENABLE" if enabled else "DISABLE", "per-source"]
        case Conn(sort):
            return ["CONN"] if sort is None else ["CONN", "SORT", sort]
        case Exit(graceful, seconds):
            if not graceful:
                return ["EXIT"]
            return ["EXIT", "GRACEFUL"] + ([] if seconds is None else [_decimal(seconds)])
        case TlsFile(direction, kind, path):
            return ["TLS", direction, kind, path]
        case TlsVerifyMode(direction, modes):
            return ["TLS", direction, "VERIFY_MODE", *modes]
        case TlsCiphersSet(direction, ciphers):
            return ["TLS", direction, "CIPHERS", "SET", ciphers]
        case TlsCiphersPrint(direction):
            return ["TLS", direction, "CIPHERS", "PRINT"]
        case TlsMinVersion(direction, version):
            return ["TLS", direction, "MIN_VERSION", version]
        case TlsPrint(direction):
            return ["TLS", direction, "PRINT"]
        case LimitSet(kind, vhost, value):
            return ["LIMIT", kind, *_limit_target_words(vhost), str(value)]
        case LimitDisable(kind, vhost):
            return ["LIMIT", "DISABLE", kind, *_limit_target_words(vhost)]
        case LimitPrint(vhost):
            return ["LIMIT", "PRINT"] + ([] if vhost is None else [vhost])
        case AuthService(host, port, target):
            return ["AUTH", "SERVICE", host, str(port), target]
        case AuthAlwaysAllow():
            return ["AUTH", "ALWAYS_ALLOW"]
        case AuthPrint():
            return ["AUTH", "PRINT"]
        case Help():
            return ["HELP"]
        case _:
            assert_never(command)


def _trace_words(on: bool, options: TraceOptions) -> list[str]:
    if not on:
        return ["OFF"]
    words = ["ON"]
    if options.path is not None:
        words += ["TO", options.path]
    if options.bodies:
        words += ["BODIES", str(options.bodies)]
    if options.rate is not None:
        words += ["RATE", str(options.rate)]
    if options.seconds is not None:
        words += ["SECONDS", _decimal(options.seconds)]
    return words


def _as_words(broker_vhost: str | None) -> list[str]:
    return [] if broker_vhost is None else ["AS", broker_vhost]


def _limit_target_words(vhost: str | None) -> list[str]:
    return ["DEFAULT"] if vhost is None else ["VHOST", vhost]


def _decimal(number: float) -> str:
    """``number`` as the plain decimal ``_SECONDS`` reads: the shortest digits that read
    back as the same float (``repr``), never an exponent (``:g`` wrote ``1e-07``), and
    a whole number without ``.0``."""
    return format(decimal.Decimal(repr(number)), "f").removesuffix(".0")


def to_line(command: Command) -> str:
    """The command line (without ``\\n``) that ``parse`` turns back into ``command``.

    CONFIG PRINT writes the configuration with this, and a ``--config`` file
    is read back with ``parse``, so ``parse(to_line(c)) == c`` must hold for
    every command.

    Raises:
        ValueError: ``command`` holds a value no command line can carry (an
            empty name, a name with a control character in it, a port or level
            out of range). The round trip itself is checked, so nothing that would
            read back differently ever leaves here.
    """
    # Imported here: parsing itself needs words_of (how many words a command uses).
    from amqprouter.control.grammar.line import parse

    # A word holding whitespace, a quote or a backslash (a vhost "my vhost") is quoted.
    line = " ".join(quote(word) for word in words_of(command))
    if parse(line) != command:
        raise ValueError(f"{command!r} cannot be written as a control command line")
    return line
