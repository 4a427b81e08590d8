"""Parsed control commands: one frozen value per command form.

``grammar.parse`` turns a line into one of these; the control server executes
it; ``grammar.to_line`` writes it back as text (for ``CONFIG PRINT``). The
classes hold what the operator typed, checked only for shape (a port is a port,
a level is 0..5); whether a backend, farm, selector or policy exists is decided
when the command is executed, against the state of that moment.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import attrs

from amqprouter.server.limits import LimitKind

# --------------------------------------------------------------------------- #
# HELP, CONN, EXIT, CONFIG
# --------------------------------------------------------------------------- #


@attrs.frozen
class Help:
    """``HELP``, and also any unknown verb or an empty line (as amqpprox answers them)."""


#: ``CONN SORT field``'s fields, as CONN names them; each sorts the largest first.
CONN_SORT_FIELDS: Final = (
    "inBytes",
    "outBytes",
    "inFrames",
    "outFrames",
    "inRate",
    "outRate",
    "rate",
    "age",
)


@attrs.frozen
class Conn:
    """``CONN [SORT field]``: print the connected sessions (by ``sort``, the largest
    first, or by id)."""

    sort: str | None = None


@attrs.frozen
class Exit:
    """``EXIT``: stop the router at once; ``EXIT GRACEFUL [seconds]`` drains sessions first.

    ``seconds`` None means the ``--shutdown-timeout`` default.
    """

    graceful: bool = False
    seconds: float | None = None


@attrs.frozen
class ConfigPrint:
    """``CONFIG PRINT`` (ours): print the configuration as the commands that rebuild it."""


@attrs.frozen
class ConfigReload:
    """``CONFIG RELOAD`` (ours): re-read the ``--config`` file and apply what changed in it,
    re-open the log files and re-read the TLS files (as SIGHUP does)."""


@attrs.frozen
class ConfigCheck:
    """``CONFIG CHECK [file]`` (ours): parse and validate a file of control commands as a
    start or a reload would apply it, changing nothing; ``path`` None is the router's own
    ``--config`` file."""

    path: str | None = None


@attrs.frozen
class Complete:
    """``COMPLETE [word...]`` (ours): the words that may follow ``words`` on a control
    line, keywords and live names, one a line (amqprouter_ctl's shell completion)."""

    words: tuple[str, ...] = ()


# --------------------------------------------------------------------------- #
# BACKEND
# --------------------------------------------------------------------------- #


@attrs.frozen
class BackendAdd:
    """``BACKEND ADD name datacenter host port [SEND-PROXY|SEND-PROXY-V2] [TLS]``:
    ``host`` resolved once, now; with ``dns``, ``BACKEND ADD_DNS ...``: resolved at each
    connection. ``send_proxy`` is the PROXY protocol version (0: none)."""

    name: str
    datacenter: str
    host: str
    port: int
    send_proxy: int = 0
    tls: bool = False
    dns: bool = False


def BackendAddDns(
    name: str, datacenter: str, host: str, port: int, send_proxy: int = 0, tls: bool = False
) -> BackendAdd:
    """``BACKEND ADD_DNS ...``: a ``BackendAdd`` resolved at each connection."""
    return BackendAdd(name, datacenter, host, port, send_proxy, tls, dns=True)


@attrs.frozen
class BackendDelete:
    """``BACKEND DELETE name``."""

    name: str


@attrs.frozen
class BackendPrint:
    """``BACKEND PRINT``."""


#: Active health check defaults, HAProxy's (``inter 2000 fall 3 rise 2``; the check
#: timeout defaults to the interval, as HAProxy's does without ``timeout check``).
CHECK_INTERVAL_MS = 2000
CHECK_FALL = 3
CHECK_RISE = 2


@attrs.frozen
class BackendCheckOn:
    """``BACKEND CHECK name ON [interval_ms [fall [rise [timeout_ms]]]]`` (ours).

    Every ``interval_ms`` send each address of the backend the AMQP protocol header
    and expect Connection.Start within ``timeout_ms``; ``fall`` failures in a row mark
    it down, ``rise`` successes in a row up. The parser fills in the defaults.
    """

    name: str
    interval_ms: int = CHECK_INTERVAL_MS
    fall: int = CHECK_FALL
    rise: int = CHECK_RISE
    timeout_ms: int = CHECK_INTERVAL_MS


@attrs.frozen
class BackendCheckOff:
    """``BACKEND CHECK name OFF`` (ours): stop checking; a check's down mark is lifted."""

    name: str


@attrs.frozen
class BackendDisable:
    """``BACKEND DISABLE name`` (ours): no new sessions to it; existing ones stay."""

    name: str


@attrs.frozen
class BackendEnable:
    """``BACKEND ENABLE name`` (ours): undo DISABLE."""

    name: str


@attrs.frozen
class BackendDrain:
    """``BACKEND DRAIN name [GRACEFUL|FORCE]`` (ours): DISABLE, then disconnect its sessions."""

    name: str
    graceful: bool = True


# --------------------------------------------------------------------------- #
# FARM
# --------------------------------------------------------------------------- #


@attrs.frozen
class FarmAdd:
    """``FARM ADD name selector backend[*weight]*`` (also spelled ``ADD_MANUAL``); may have
    no backends. ``weights`` parallel ``backends``, or are empty when every one is 1."""

    name: str
    selector: str
    backends: tuple[str, ...] = ()
    weights: tuple[int, ...] = ()


@attrs.frozen
class FarmWeight:
    """``FARM WEIGHT farm member weight`` (ours): a member's weight from the next choice
    on; 0 drains it (no new sessions, existing ones stay)."""

    name: str
    member: str
    weight: int


@attrs.frozen
class FarmSticky:
    """``FARM STICKY farm ON [seconds]`` / ``FARM STICKY farm OFF`` (ours): a client
    address keeps the member it landed on while that member is up, and ``seconds``
    (None: OFF) after its last session ends."""

    name: str
    seconds: int | None


@attrs.frozen
class FarmPartition:
    """``FARM PARTITION name policy``: append a partition policy to a farm."""

    name: str
    policy: str


@attrs.frozen
class FarmDelete:
    """``FARM DELETE name``."""

    name: str


@attrs.frozen
class FarmPrint:
    """``FARM PRINT``."""


@attrs.frozen
class FarmOnDown:
    """``FARM ON_DOWN name DISCONNECT|KEEP`` (ours): what a member going down does to
    its sessions; ``disconnect`` closes them gracefully (default KEEP)."""

    name: str
    disconnect: bool


# --------------------------------------------------------------------------- #
# RULE (ours: client-address rules, docs/routing.md)
# --------------------------------------------------------------------------- #


@attrs.frozen
class RuleAdd:
    """``RULE ADD priority cidr[,cidr...] (FARM name | BACKEND name) [BREAK|CONTINUE]``:
    clients in ``networks`` use only the target's backends among their vhost's; when
    those are all down, BREAK refuses them and CONTINUE (the default) tries the next
    rule. A rule of the same priority is replaced."""

    priority: int
    networks: tuple[str, ...]
    kind: Literal["farm", "backend"]
    target: str
    on_down: Literal["BREAK", "CONTINUE"] = "CONTINUE"


@attrs.frozen
class RuleDelete:
    """``RULE DELETE priority``."""

    priority: int


@attrs.frozen
class RulePrint:
    """``RULE PRINT``: the rules by priority."""


# --------------------------------------------------------------------------- #
# MAP
# --------------------------------------------------------------------------- #


@attrs.frozen
class MapBackend:
    """``MAP BACKEND vhost backend [AS broker-vhost]``."""

    vhost: str
    backend: str
    #: The vhost the broker is asked to open instead (None: the client's own).
    broker_vhost: str | None = None


@attrs.frozen
class MapFarm:
    """``MAP FARM vhost farm [AS broker-vhost]``."""

    vhost: str
    farm: str
    #: The vhost the broker is asked to open instead (None: the client's own).
    broker_vhost: str | None = None


@attrs.frozen
class MapUnmap:
    """``MAP UNMAP vhost``."""

    vhost: str


@attrs.frozen
class MapDefault:
    """``MAP DEFAULT farm``: the farm for vhosts that have no mapping."""

    farm: str


@attrs.frozen
class MapRemoveDefault:
    """``MAP REMOVE_DEFAULT``."""


@attrs.frozen
class MapPool:
    """``MAP POOL vhost ON|OFF|DEFAULT``: pooling mode for the vhost's clients
    (docs/pooling.md); DEFAULT forgets the vhost's word and follows ``--pool``."""

    vhost: str
    #: True: pooled; False: not pooled even under --pool; None: as --pool says.
    pooled: bool | None


@attrs.frozen
class MapPrint:
    """``MAP PRINT``."""


# --------------------------------------------------------------------------- #
# LISTEN
# --------------------------------------------------------------------------- #


@attrs.frozen
class ListenStart:
    """``LISTEN START port [ACCEPT-PROXY FROM cidr[,cidr...]] [ALLOW cidr[,cidr...]]``:
    ``proxy_from`` (canonical networks; non-empty: ACCEPT-PROXY) are the balancers that
    may send a PROXY header first; ``allow`` limits which clients may connect."""

    port: int
    proxy_from: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    @property
    def accept_proxy(self) -> bool:
        return bool(self.proxy_from)


@attrs.frozen
class ListenStartSecure:
    """``LISTEN START_SECURE port [ACCEPT-PROXY FROM ...] [ALLOW ...]``: a TLS listener."""

    port: int
    proxy_from: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    @property
    def accept_proxy(self) -> bool:
        return bool(self.proxy_from)


@attrs.frozen
class ListenStop:
    """``LISTEN STOP [port]``: ``port`` None stops every listener."""

    port: int | None = None


# --------------------------------------------------------------------------- #
# AUTH
# --------------------------------------------------------------------------- #


@attrs.frozen
class AuthService:
    """``AUTH SERVICE host port target``: ask ``http://host:port<target>`` about each
    new client (server/auth.py)."""

    host: str
    port: int
    target: str


@attrs.frozen
class AuthAlwaysAllow:
    """``AUTH ALWAYS_ALLOW``: no auth service (the default)."""


@attrs.frozen
class AuthPrint:
    """``AUTH PRINT``."""


# --------------------------------------------------------------------------- #
# DATACENTER, LOG, MAPHOSTNAME
# --------------------------------------------------------------------------- #


@attrs.frozen
class DatacenterSet:
    """``DATACENTER SET [name]``: a missing name sets "" (no datacenter), as in amqpprox."""

    name: str


@attrs.frozen
class DatacenterPrint:
    """``DATACENTER PRINT``."""


@attrs.frozen
class LogConsole:
    """``LOG CONSOLE level``: 0 FATAL, 1 ERROR, 2 WARN, 3 INFO, 4 DEBUG, 5 TRACE."""

    level: int


@attrs.frozen
class LogFile:
    """``LOG FILE level``: same levels as ``LogConsole``."""

    level: int


@attrs.frozen
class MapHostnameDns:
    """``MAPHOSTNAME DNS``: show reverse-DNS names instead of IPs from now on."""


# --------------------------------------------------------------------------- #
# STAT
# --------------------------------------------------------------------------- #


@attrs.frozen
class StatListen:
    """``STAT LISTEN (json|human) [filter]``: stream a snapshot every stats interval.

    ``output`` is ``json`` or ``human``; ``filter`` one of ``all``,
    ``all-except-per-source``, ``overall``, ``process``, ``bufferpool`` (``value``
    empty) or ``vhost``, ``backend``, ``source`` (``value`` is the key).
    """

    output: str
    filter: str = "all"
    value: str = ""


@attrs.frozen
class StatSend:
    """``STAT SEND host port``: publish every interval to a StatsD endpoint over UDP."""

    host: str
    port: int


@attrs.frozen
class StatStopSend:
    """``STAT STOP SEND``: stop every StatsD publisher (listeners go on)."""


@attrs.frozen
class StatPerSource:
    """``STAT ENABLE|DISABLE per-source``: collect the per-client-host axis or not."""

    enabled: bool


# --------------------------------------------------------------------------- #
# SESSION, VHOST (session control: runtime state, never configuration)
# --------------------------------------------------------------------------- #


@attrs.frozen
class SessionControl:
    """``SESSION id (PAUSE|UNPAUSE|DISCONNECT_GRACEFUL|FORCE_DISCONNECT)``.

    ``action`` is the upper-cased word as typed (possibly empty or unknown).
    """

    session_id: int
    action: str


@attrs.frozen
class TraceOptions:
    """What ``... TRACE ... ON`` may add: ``TO file`` (else streamed to the control
    client), ``BODIES n`` (the first n bytes of each body), ``RATE n`` (lines/s) and
    ``SECONDS s``; None is the default (session/trace.py)."""

    path: str | None = None
    bodies: int = 0
    rate: int | None = None
    seconds: float | None = None


@attrs.frozen
class SessionTrace:
    """``SESSION TRACE id [ON|OFF] [TO file] [BODIES n] [RATE n] [SECONDS s]`` (ours):
    one line per frame the session forwards, until the reader leaves or a bound ends it;
    ``OFF`` stops every trace of the session."""

    session_id: int
    on: bool = True
    options: TraceOptions = TraceOptions()


@attrs.frozen
class SessionCapture:
    """``SESSION CAPTURE id file [SECONDS s]`` (ours): the session's frames as a pcap."""

    session_id: int
    path: str
    seconds: float | None = None


@attrs.frozen
class VhostTrace:
    """``VHOST TRACE vhost [ON|OFF] [TO file] [BODIES n] [RATE n] [SECONDS s]`` (ours):
    SESSION TRACE for every session of ``vhost``, those opened from then on too."""

    vhost: str
    on: bool = True
    options: TraceOptions = TraceOptions()


@attrs.frozen
class VhostPause:
    """``VHOST PAUSE vhost``: hold its sessions' client data and new clients at Open."""

    vhost: str


@attrs.frozen
class VhostUnpause:
    """``VHOST UNPAUSE vhost``: resume its sessions and the clients held at Open."""

    vhost: str


@attrs.frozen
class VhostPrint:
    """``VHOST PRINT``: every vhost seen, ``<vhost> = PAUSED|UNPAUSED``."""


@attrs.frozen
class VhostBackendDisconnect:
    """``VHOST BACKEND_DISCONNECT vhost``: cut its sessions' broker side; clients get 320."""

    vhost: str


@attrs.frozen
class VhostForceDisconnect:
    """``VHOST FORCE_DISCONNECT vhost``: cut both sides of its sessions."""

    vhost: str


# --------------------------------------------------------------------------- #
# TLS
# --------------------------------------------------------------------------- #

TlsDirection: TypeAlias = Literal["INGRESS", "EGRESS"]
TlsFileKind: TypeAlias = Literal[
    "KEY_FILE", "CERT_CHAIN_FILE", "RSA_KEY_FILE", "TMP_DH_FILE", "CA_CERT_FILE"
]
TlsVerifyWord: TypeAlias = Literal["NONE", "PEER", "FAIL_IF_NO_PEER_CERT", "CLIENT_ONCE"]


@attrs.frozen
class TlsFile:
    """``TLS (INGRESS|EGRESS) KEY_FILE|CERT_CHAIN_FILE|RSA_KEY_FILE|TMP_DH_FILE|CA_CERT_FILE f``.

    RSA_KEY_FILE is KEY_FILE: a PEM key of any type (docs/tls.md).
    """

    direction: TlsDirection
    kind: TlsFileKind
    path: str


@attrs.frozen
class TlsVerifyMode:
    """``TLS (INGRESS|EGRESS) VERIFY_MODE mode*``: no mode is NONE, as in amqpprox."""

    direction: TlsDirection
    modes: tuple[TlsVerifyWord, ...]


@attrs.frozen
class TlsCiphersSet:
    """``TLS (INGRESS|EGRESS) CIPHERS SET list``: an OpenSSL cipher list (TLS 1.2)."""

    direction: TlsDirection
    ciphers: str


@attrs.frozen
class TlsCiphersPrint:
    """``TLS (INGRESS|EGRESS) CIPHERS PRINT``: the ciphers in force."""

    direction: TlsDirection


@attrs.frozen
class TlsMinVersion:
    """``TLS (INGRESS|EGRESS) MIN_VERSION 1.2|1.3`` (ours): the oldest version accepted."""

    direction: TlsDirection
    version: Literal["1.2", "1.3"]


@attrs.frozen
class TlsPrint:
    """``TLS (INGRESS|EGRESS) PRINT`` (ours): what is loaded, and what is missing."""

    direction: TlsDirection


TlsCommand: TypeAlias = (
    TlsFile | TlsVerifyMode | TlsCiphersSet | TlsCiphersPrint | TlsMinVersion | TlsPrint
)


# --------------------------------------------------------------------------- #
# LIMIT
# --------------------------------------------------------------------------- #


@attrs.frozen
class LimitSet:
    """``LIMIT kind (DEFAULT | VHOST vhost) n``: ``vhost`` None is DEFAULT."""

    kind: LimitKind
    vhost: str | None
    value: int


@attrs.frozen
class LimitDisable:
    """``LIMIT DISABLE kind (DEFAULT | VHOST vhost)``."""

    kind: LimitKind
    vhost: str | None


@attrs.frozen
class LimitPrint:
    """``LIMIT PRINT [vhost]``: the DEFAULT limits, or those in force for ``vhost``."""

    vhost: str | None = None


# --------------------------------------------------------------------------- #
# unions
# --------------------------------------------------------------------------- #

# Commands that change the router's configuration: the ones CONFIG PRINT can
# emit and a --config file would hold. The aliases are runtime unions, so
# ``isinstance(command, MutatingCommand)`` works.
MutatingCommand: TypeAlias = (
    BackendAdd
    | BackendDelete
    | BackendCheckOn
    | BackendCheckOff
    | BackendDisable
    | BackendEnable
    | FarmAdd
    | FarmWeight
    | FarmSticky
    | FarmPartition
    | FarmDelete
    | FarmOnDown
    | MapBackend
    | MapFarm
    | MapUnmap
    | MapDefault
    | MapRemoveDefault
    | MapPool
    | RuleAdd
    | RuleDelete
    | ListenStart
    | ListenStartSecure
    | ListenStop
    | DatacenterSet
    | LogConsole
    | LogFile
    | MapHostnameDns
    | TlsFile
    | TlsVerifyMode
    | TlsCiphersSet
    | TlsMinVersion
    | LimitSet
    | LimitDisable
    | AuthService
    | AuthAlwaysAllow
)

# Everything ``grammar.parse`` can return besides a ParseError.
Command: TypeAlias = (
    MutatingCommand
    | Help
    | Conn
    | Exit
    | ConfigPrint
    | ConfigReload
    | ConfigCheck
    | Complete
    | BackendPrint
    | FarmPrint
    | MapPrint
    | RulePrint
    | DatacenterPrint
    | StatListen
    | StatSend
    | StatStopSend
    | StatPerSource
    | BackendDrain
    | SessionControl
    | SessionTrace
    | SessionCapture
    | VhostTrace
    | VhostPause
    | VhostUnpause
    | VhostPrint
    | VhostBackendDisconnect
    | VhostForceDisconnect
    | TlsCiphersPrint
    | TlsPrint
    | LimitPrint
    | AuthPrint
)
