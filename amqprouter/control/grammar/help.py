"""HELP: one line per verb, and the reply to a verb the grammar does not know."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from amqprouter.text import escape

#: Verb → its HELP text, word for word amqpprox's (CONFIG is ours). HELP prints
#: them sorted by verb, one ``VERB text`` line each, as amqpprox's std::map does.
HELP_TEXTS: Mapping[str, str] = {
    "AUTH": "(SERVICE hostname port target | ALWAYS_ALLOW | PRINT) - Change authentication "
    "mechanism for connecting clients",
    "BACKEND": "(ADD name datacenter host port [SEND-PROXY|SEND-PROXY-V2] [TLS] | ADD_DNS name "
    "datacenter address port [SEND-PROXY|SEND-PROXY-V2] [TLS] | DELETE name | DISABLE name | "
    "ENABLE name | "
    "DRAIN name [GRACEFUL|FORCE] | PRINT"
    " | CHECK name (ON [interval_ms [fall [rise [timeout_ms]]]] | OFF)"
    ") - Change backend servers",
    "CONFIG": "(PRINT | RELOAD | CHECK [file]) - Print the current configuration as the "
    "commands that rebuild it, re-read the --config file and apply what changed in it (as "
    "SIGHUP does), or check a file (default: the --config file) without applying it",
    "COMPLETE": "[word...] - Print the words (keywords and live names) that may follow "
    "these, one a line: amqprouter_ctl's shell completion asks it",
    # amqpprox's text; SORT is ours.
    "CONN": "Print the connected sessions\n"
    "CONN SORT (inBytes | outBytes | inFrames | outFrames | inRate | outRate | rate | age) - "
    "Print the connected sessions by a field, the largest first (the oldest first for age)",
    "DATACENTER": "SET name | PRINT",
    "EXIT": "[GRACEFUL [seconds]] - Exit the program gracefully (GRACEFUL: close every "
    "session cleanly first).",
    "FARM": "(ADD name selector backend[*weight]* | PARTITION name policy | DELETE name | PRINT"
    " | ON_DOWN name (DISCONNECT | KEEP) | WEIGHT name backend weight"
    " | STICKY name (ON [seconds] | OFF)"
    ") - Change farms (selectors: round-robin, weighted-round-robin, least-connections)",
    "HELP": "Print this help text.",
    # amqpprox's four LIMIT lines; CONNECTIONS is ours (its PR #91).
    "LIMIT": "(CONN_RATE_ALARM | CONN_RATE) (VHOST vhostName numberOfConnections | DEFAULT "
    "numberOfConnections) - Configure connection rate limits (normal or alarmonly) for incoming "
    "clients connections\n"
    "LIMIT (DATA_RATE_ALARM | DATA_RATE) (DEFAULT | VHOST vhostName) BytesPerSecond - Configure "
    "data rate limits or alarms for incoming client data\n"
    "LIMIT CONNECTIONS (VHOST vhostName | DEFAULT) numberOfConnections - Configure the most "
    "concurrent connections per vhost\n"
    "LIMIT DISABLE (CONN_RATE_ALARM | CONN_RATE | DATA_RATE_ALARM | DATA_RATE | CONNECTIONS) "
    "(VHOST vhostName | DEFAULT) - Disable configured limit thresholds\n"
    "LIMIT PRINT [vhostName] - Print the configured default limits or specific vhost limits",
    "LISTEN": "START port [ACCEPT-PROXY FROM cidr[,cidr...]] [ALLOW cidr[,cidr...]] | "
    "START_SECURE port [ACCEPT-PROXY FROM cidr[,cidr...]] [ALLOW cidr[,cidr...]] | STOP [port]",
    "LOG": "CONSOLE verbosity | FILE verbosity",
    "MAP": "(BACKEND vhost backend [AS brokerVhost] | FARM vhost name [AS brokerVhost] | "
    "UNMAP vhost | DEFAULT farmName | REMOVE_DEFAULT | POOL vhost (ON | OFF | DEFAULT) | "
    "PRINT) - Change mappings of resources to servers (a vhost with * is a pattern: * matches "
    "any run of characters; AS makes the broker open brokerVhost instead of the client's "
    "vhost; POOL shares broker connections among the vhost's clients, DEFAULT follows "
    "--pool: docs/pooling.md)",
    "MAPHOSTNAME": "DNS - Set up mapping of IPs to hostnames",
    "RULE": "(ADD priority cidr[,cidr...] (FARM name | BACKEND name) [BREAK | CONTINUE] | "
    "DELETE priority | PRINT) - Narrow the backends of clients from these networks to a farm's "
    "or a backend's, lowest priority first (docs/routing.md)",
    # Two HELP lines in amqpprox (two STAT handlers): the second keeps its own verb.
    "STAT": "(STOP SEND | SEND <host> <port> | (LISTEN (json|human) (overall|vhost=foo|"
    "backend=bar|source=baz|all|all-except-per-source|process|bufferpool)) - Output "
    "statistics\nSTAT (DISABLE|ENABLE) per-source - Enable/Disable internal collection of "
    "per-source statistics. Applies to all send/listeners",
    # amqpprox's text starts with a space (hence two after SESSION); UNPAUSE is ours.
    "SESSION": " id# (PAUSE|UNPAUSE|DISCONNECT_GRACEFUL|FORCE_DISCONNECT) - Control a "
    "particular session\n"
    "SESSION TRACE id# [ON [TO file] [BODIES n] [RATE n] [SECONDS s] | OFF] - One line per "
    "frame the session forwards, streamed here (or written to a new file), until the reader "
    "leaves or a bound stops it; BODIES shows the first n bytes of each message body\n"
    "SESSION CAPTURE id# file [SECONDS s] - Write the session's frames to a new pcap file "
    "(client to broker, in clear) that Wireshark decodes",
    # amqpprox's text; PRINT and MIN_VERSION are ours.
    "TLS": "(INGRESS | EGRESS) (KEY_FILE file | CERT_CHAIN_FILE file | RSA_KEY_FILE file | "
    "TMP_DH_FILE file | CA_CERT_FILE file | VERIFY_MODE mode* | CIPHERS (PRINT | SET "
    "ciphersuite(:ciphersuite)*) | MIN_VERSION (1.2 | 1.3) | PRINT)",
    "VHOST": "PAUSE vhost | UNPAUSE vhost | PRINT | BACKEND_DISCONNECT vhost | "
    "FORCE_DISCONNECT vhost | TRACE vhost [ON [TO file] [BODIES n] [RATE n] [SECONDS s] | "
    "OFF] - TRACE: SESSION TRACE for the vhost's sessions, those opened from now on too",
}


def unknown_verb(verb: str) -> str:
    """The reply to a verb the grammar does not know (amqpprox answers with all of HELP),
    naming the closest verb when one is close (a typo: ``BACKNED``)."""
    close = difflib.get_close_matches(verb.upper(), sorted(HELP_TEXTS), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]}?" if close else ""
    return f"Unknown command '{escape(verb)}'.{hint} Send HELP for the list of commands.\n"


def help_text() -> str:
    """The reply to HELP (and to an unknown verb or an empty line)."""
    return "".join(f"{verb} {text}\n" for verb, text in sorted(HELP_TEXTS.items()))
