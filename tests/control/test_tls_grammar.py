"""The TLS verb's grammar: amqpprox's words and error texts, plus ours."""

from __future__ import annotations

import pytest

from amqprouter.control.commands import (
    BackendAdd,
    Command,
    TlsCiphersPrint,
    TlsCiphersSet,
    TlsFile,
    TlsMinVersion,
    TlsPrint,
    TlsVerifyMode,
)
from amqprouter.control.grammar import ParseError, help_text, parse, to_line

SUBCOMMANDS = (
    "KEY_FILE, CERT_CHAIN_FILE, RSA_KEY_FILE, TMP_DH_FILE, CA_CERT_FILE, VERIFY_MODE, "
    "CIPHERS, MIN_VERSION or PRINT"
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("TLS INGRESS KEY_FILE /k.pem", TlsFile("INGRESS", "KEY_FILE", "/k.pem")),
        ("TLS ingress key_file /K.pem", TlsFile("INGRESS", "KEY_FILE", "/K.pem")),
        ("TLS EGRESS RSA_KEY_FILE k", TlsFile("EGRESS", "RSA_KEY_FILE", "k")),
        ("TLS INGRESS CERT_CHAIN_FILE c", TlsFile("INGRESS", "CERT_CHAIN_FILE", "c")),
        ("TLS INGRESS TMP_DH_FILE dh", TlsFile("INGRESS", "TMP_DH_FILE", "dh")),
        ("TLS EGRESS CA_CERT_FILE ca", TlsFile("EGRESS", "CA_CERT_FILE", "ca")),
        ("TLS EGRESS VERIFY_MODE", TlsVerifyMode("EGRESS", ())),
        (
            "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT client_once",
            TlsVerifyMode("INGRESS", ("PEER", "FAIL_IF_NO_PEER_CERT", "CLIENT_ONCE")),
        ),
        ("TLS INGRESS VERIFY_MODE NONE", TlsVerifyMode("INGRESS", ("NONE",))),
        ("TLS EGRESS CIPHERS PRINT", TlsCiphersPrint("EGRESS")),
        ("TLS EGRESS CIPHERS set A:B", TlsCiphersSet("EGRESS", "A:B")),
        ("TLS INGRESS MIN_VERSION 1.2", TlsMinVersion("INGRESS", "1.2")),
        ("TLS EGRESS MIN_VERSION 1.3", TlsMinVersion("EGRESS", "1.3")),
        ("TLS  EGRESS\tPRINT", TlsPrint("EGRESS")),
    ],
)
def test_valid(line: str, expected: Command) -> None:
    assert parse(line) == expected
    assert parse(to_line(expected)) == expected


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("TLS", "Direction must be INGRESS or EGRESS\n"),
        ("TLS BOTH KEY_FILE k", "Direction must be INGRESS or EGRESS\n"),
        ("TLS INGRESS", f"TLS INGRESS needs a subcommand: {SUBCOMMANDS}.\n"),
        ("TLS INGRESS KEY_FILE", "File must be specified\n"),
        ("TLS EGRESS CA_CERT_FILE", "File must be specified\n"),
        (
            "TLS INGRESS CERT_CHAIN_FILE /etc/my certs/chain.pem",
            "A TLS file name must be one word: '/etc/my certs/chain.pem' has spaces in it; "
            "quote it: '/etc/my certs/chain.pem'\n",
        ),
        (
            "TLS INGRESS VERIFY_MODE PEER SOMETIMES",
            "Unknown mode: SOMETIMES; valid modes: NONE, PEER, FAIL_IF_NO_PEER_CERT, "
            "CLIENT_ONCE.\n",
        ),
        ("TLS INGRESS CIPHERS", "CIPHERS takes PRINT or SET ciphersuite(:ciphersuite)*.\n"),
        ("TLS INGRESS CIPHERS LIST", "CIPHERS takes PRINT or SET ciphersuite(:ciphersuite)*.\n"),
        ("TLS INGRESS CIPHERS SET", "CIPHERS SET needs a cipher list.\n"),
        (
            "TLS INGRESS CIPHERS SET A B",
            "Unexpected word 'B': 'TLS INGRESS CIPHERS SET A' takes no more words.\n",
        ),
        ("TLS INGRESS MIN_VERSION", "MIN_VERSION must be 1.2 or 1.3.\n"),
        ("TLS INGRESS MIN_VERSION 1.1", "MIN_VERSION must be 1.2 or 1.3.\n"),
        ("TLS INGRESS MIN_VERSION TLSv1.3", "MIN_VERSION must be 1.2 or 1.3.\n"),
        (
            "TLS INGRESS PRINT ALL",
            "Unexpected word 'ALL': 'TLS INGRESS PRINT' takes no more words.\n",
        ),
        # amqpprox ignores an unknown subcommand; an ignored setting is a lie.
        ("TLS INGRESS KEYFILE k", f"Unknown TLS subcommand 'KEYFILE': expected {SUBCOMMANDS}.\n"),
    ],
)
def test_errors(line: str, reply: str) -> None:
    assert parse(line) == ParseError(reply)


def test_help_line_is_the_reference_text_plus_ours() -> None:
    line = next(text for text in help_text().splitlines() if text.startswith("TLS "))
    assert line.startswith(
        "TLS (INGRESS | EGRESS) (KEY_FILE file | CERT_CHAIN_FILE file | RSA_KEY_FILE file | "
        "TMP_DH_FILE file | CA_CERT_FILE file | VERIFY_MODE mode* | CIPHERS (PRINT | SET "
        "ciphersuite(:ciphersuite)*)"
    )
    assert line.endswith("| MIN_VERSION (1.2 | 1.3) | PRINT)")


def test_tls_is_no_longer_refused_as_not_supported() -> None:
    assert parse("TLS INGRESS PRINT") == TlsPrint("INGRESS")


def test_send_proxy_goes_with_tls() -> None:
    backend = parse("BACKEND ADD b dc h 5671 TLS SEND-PROXY")
    assert isinstance(backend, BackendAdd) and backend.tls and backend.send_proxy == 1


def test_a_path_with_a_space_is_written_quoted_and_one_with_a_newline_not_at_all() -> None:
    command = TlsFile("INGRESS", "KEY_FILE", "/etc/my keys/a b.pem")
    assert to_line(command) == "TLS INGRESS KEY_FILE '/etc/my keys/a b.pem'"
    assert parse(to_line(command)) == command
    with pytest.raises(ValueError, match="cannot be written"):
        to_line(TlsFile("INGRESS", "KEY_FILE", "/a\nb.pem"))
