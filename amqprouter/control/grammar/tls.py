"""TLS: the INGRESS and EGRESS contexts' files and settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from amqprouter.control.commands import (
    Command,
    TlsCiphersPrint,
    TlsCiphersSet,
    TlsDirection,
    TlsFile,
    TlsFileKind,
    TlsMinVersion,
    TlsPrint,
    TlsVerifyMode,
    TlsVerifyWord,
)
from amqprouter.control.grammar.words import (
    ParseError,
    Parser,
    quote,
    upper,
    with_choices,
)

_TLS_DIRECTIONS: Mapping[str, TlsDirection] = {"INGRESS": "INGRESS", "EGRESS": "EGRESS"}
_TLS_FILE_KINDS: Mapping[str, TlsFileKind] = {kind: kind for kind in get_args(TlsFileKind)}
_TLS_VERIFY_WORDS: Mapping[str, TlsVerifyWord] = {word: word for word in get_args(TlsVerifyWord)}
_TLS_MIN_VERSIONS: Mapping[str, Literal["1.2", "1.3"]] = {"1.2": "1.2", "1.3": "1.3"}
_TLS_SUBCOMMANDS = (
    "KEY_FILE, CERT_CHAIN_FILE, RSA_KEY_FILE, TMP_DH_FILE, CA_CERT_FILE, VERIFY_MODE, "
    "CIPHERS, MIN_VERSION or PRINT"
)


def _tls(args: Sequence[str]) -> Command | ParseError:
    direction = _TLS_DIRECTIONS.get(upper(args[0])) if args else None
    if direction is None:
        return ParseError("Direction must be INGRESS or EGRESS\n")
    if len(args) < 2:
        return ParseError(f"TLS {direction} needs a subcommand: {_TLS_SUBCOMMANDS}.\n")
    subcommand, rest = upper(args[1]), args[2:]
    kind = _TLS_FILE_KINDS.get(subcommand)
    if kind is not None:
        if not rest:
            return ParseError("File must be specified\n")
        if len(rest) > 1:
            # A control line is split on whitespace: taking the first word would load
            # another file than meant. Quoted, such a name is one word.
            name = " ".join(rest)
            return ParseError(
                f"A TLS file name must be one word: '{name}' has spaces in it; "
                f"quote it: {quote(name)}\n"
            )
        return TlsFile(direction, kind, rest[0])
    match subcommand:
        case "VERIFY_MODE":
            modes: list[TlsVerifyWord] = []
            for word in rest:
                mode = _TLS_VERIFY_WORDS.get(upper(word))
                if mode is None:
                    return ParseError(
                        with_choices(f"Unknown mode: {word}", list(_TLS_VERIFY_WORDS), what="modes")
                    )
                modes.append(mode)
            return TlsVerifyMode(direction, tuple(modes))
        case "CIPHERS":
            action = upper(rest[0]) if rest else ""
            if action == "PRINT":
                return TlsCiphersPrint(direction)
            if action != "SET":
                return ParseError("CIPHERS takes PRINT or SET ciphersuite(:ciphersuite)*.\n")
            if len(rest) < 2:
                return ParseError("CIPHERS SET needs a cipher list.\n")
            return TlsCiphersSet(direction, rest[1])
        case "MIN_VERSION":
            version = _TLS_MIN_VERSIONS.get(rest[0]) if rest else None
            if version is None:
                return ParseError("MIN_VERSION must be 1.2 or 1.3.\n")
            return TlsMinVersion(direction, version)
        case "PRINT":
            return TlsPrint(direction)
    return ParseError(f"Unknown TLS subcommand '{subcommand}': expected {_TLS_SUBCOMMANDS}.\n")


TLS: Parser = _tls
