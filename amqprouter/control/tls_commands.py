"""The TLS verb: each command makes a new settings record and, when the record is
complete, a new context (``net.tls_context``). On any error the reply says why
(naming the file), the exit status is 1, and the previous record and context stay
in force. Sessions take the context when they start, so a change applies to new
sessions only.

Replies are amqpprox's where it has them (reference/amqpprox.md section 1: file
commands answer nothing on success and ``Error: <reason>`` on failure; ``CIPHERS
PRINT`` answers ``Ciphers:`` and one name a line; ``CIPHERS SET`` answers
``Updated cipher list:`` and the list, or starts with ``Failed to set cipher
suite.``). PRINT and MIN_VERSION are ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from amqprouter.control import commands as c
from amqprouter.control.socket_server import Reply
from amqprouter.net.tls_context import (
    DIRECTIONS,
    TlsConfigError,
    TlsSettings,
    TlsState,
    VerifyMode,
    base_context,
    check_file,
    cipher_names,
    describe_certificate,
    missing,
    verify_words,
)

#: The commands ``execute`` runs.
TLS_COMMANDS = (
    c.TlsFile,
    c.TlsVerifyMode,
    c.TlsCiphersSet,
    c.TlsCiphersPrint,
    c.TlsMinVersion,
    c.TlsPrint,
)


def execute(state: TlsState, command: c.TlsCommand) -> Reply:
    """Run one TLS command against ``state`` (changed only on success)."""
    current = state.settings(command.direction)
    if isinstance(command, c.TlsPrint):
        return Reply(print_text(state, command.direction))
    if isinstance(command, c.TlsCiphersPrint):
        context = state.context(command.direction) or base_context(current)
        return Reply("Ciphers:\n" + "".join(f"{name}\n" for name in cipher_names(context)))
    try:
        updated = _updated(current, command)
        built = state.update(updated)
    except TlsConfigError as exc:
        prefix = "Failed to set cipher suite. " if isinstance(command, c.TlsCiphersSet) else ""
        return Reply(f"{prefix}Error: {exc}\n", ok=False)
    if isinstance(command, c.TlsCiphersSet):
        names = cipher_names(built or base_context(updated))
        return Reply("Updated cipher list:\n" + "".join(f"{name}\n" for name in names))
    return Reply("")


def execute_together(
    state: TlsState,
    commands: Sequence[c.TlsFile | c.TlsVerifyMode | c.TlsCiphersSet | c.TlsMinVersion],
) -> Reply:
    """Apply the settings ``commands`` change, all of one direction, as one change: one
    record and one context, so a new certificate is checked against its new key (a
    reload of the ``--config`` file). On any error nothing changes."""
    directions = {command.direction for command in commands}
    if len(directions) != 1:
        raise ValueError("execute_together takes the commands of one direction")
    settings = state.settings(directions.pop())
    try:
        for command in commands:
            settings = _updated(settings, command)
        state.update(settings)
    except TlsConfigError as exc:
        return Reply(f"Error: {exc}\n", ok=False)
    return Reply("")


def reload_files(state: TlsState) -> list[str]:
    """Build each complete direction's context again from its files as they are now
    (SIGHUP, CONFIG RELOAD): the errors, one a direction; that direction keeps the
    context it had."""
    errors = []
    for direction in DIRECTIONS:
        settings = state.settings(direction)
        if missing(settings):
            continue  # no context to reload
        try:
            state.update(settings)
        except TlsConfigError as exc:
            errors.append(f"TLS {direction}: {exc} (the previous files stay in force)")
    return errors


def _updated(
    settings: TlsSettings,
    command: c.TlsFile | c.TlsVerifyMode | c.TlsCiphersSet | c.TlsMinVersion,
) -> TlsSettings:
    """The record ``command`` asks for (TlsConfigError if a file cannot be used)."""
    if isinstance(command, c.TlsFile):
        if command.kind == "TMP_DH_FILE" and command.direction == "EGRESS":
            # A client does not choose DH parameters: accepting would be a no-op.
            raise TlsConfigError("TMP_DH_FILE applies to INGRESS only.")
        check_file(command.kind, command.path)
        match command.kind:
            case "KEY_FILE" | "RSA_KEY_FILE":
                return attrs.evolve(settings, key_file=command.path)
            case "CERT_CHAIN_FILE":
                return attrs.evolve(settings, cert_chain_file=command.path)
            case "CA_CERT_FILE":
                return attrs.evolve(settings, ca_file=command.path)
            case "TMP_DH_FILE":
                return attrs.evolve(settings, dh_file=command.path)
    if isinstance(command, c.TlsVerifyMode):
        modes = tuple(dict.fromkeys(VerifyMode(word) for word in command.modes))
        return attrs.evolve(settings, verify_mode=modes)
    if isinstance(command, c.TlsCiphersSet):
        return attrs.evolve(settings, ciphers=command.ciphers)
    return attrs.evolve(settings, min_version=command.version)


def print_text(state: TlsState, direction: c.TlsDirection) -> str:
    """TLS ... PRINT: what is set, what is loaded, what is missing."""
    settings = state.settings(direction)
    lacks = missing(settings)
    if state.context(direction) is not None:
        status = "loaded (used by new sessions)"
    else:
        status = f"incomplete, no context: missing {', '.join(lacks)}"
    lines = [f"TLS {direction}: {status}"]
    if settings.cert_chain_file is not None:
        cert = describe_certificate(settings.cert_chain_file)
        lines.append(f"CERT_CHAIN_FILE {settings.cert_chain_file} {cert}")
    if settings.key_file is not None:
        lines.append(f"KEY_FILE {settings.key_file}")
    lines.append(f"CA_CERT_FILE {settings.ca_file or '(none)'}")
    if settings.dh_file is not None:
        lines.append(f"TMP_DH_FILE {settings.dh_file}")
    lines.append(f"VERIFY_MODE {verify_words(settings)}")
    lines.append(f"MIN_VERSION {settings.min_version}")
    lines.append(f"CIPHERS {settings.ciphers or '(OpenSSL default)'}")
    return "".join(line + "\n" for line in lines)


def config_commands(state: TlsState) -> list[c.Command]:
    """The TLS commands that rebuild ``state`` from a fresh one (CONFIG PRINT)."""
    result: list[c.Command] = []
    for direction in DIRECTIONS:
        settings = state.settings(direction)
        files: list[tuple[c.TlsFileKind, str | None]] = [
            ("CA_CERT_FILE", settings.ca_file),
            ("CERT_CHAIN_FILE", settings.cert_chain_file),
            ("KEY_FILE", settings.key_file),
            ("TMP_DH_FILE", settings.dh_file),
        ]
        result += [c.TlsFile(direction, kind, path) for kind, path in files if path is not None]
        if settings.verify_mode:
            words = tuple(mode.value for mode in settings.verify_mode)
            result.append(c.TlsVerifyMode(direction, words))  # type: ignore[arg-type]
        if settings.min_version != "1.2":
            result.append(c.TlsMinVersion(direction, settings.min_version))
        if settings.ciphers is not None:
            result.append(c.TlsCiphersSet(direction, settings.ciphers))
    return result
