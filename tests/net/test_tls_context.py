"""The TLS settings record and the context builder: every refusal names the file and why."""

from __future__ import annotations

import datetime
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trustme

from amqprouter.control.tls_commands import reload_files
from amqprouter.net.tls_context import (
    MAX_PEM_BYTES,
    TlsConfigError,
    TlsSettings,
    TlsState,
    VerifyMode,
    build_context,
    certificate_expiry,
    check_file,
    cipher_names,
    describe_certificate,
    missing,
)
from tests.tls_certs import CertFiles, TlsFiles


def ingress(files: TlsFiles, **changes: Any) -> TlsSettings:
    base = TlsSettings(
        "INGRESS", key_file=str(files.server.key), cert_chain_file=str(files.server.chain)
    )
    return attrs.evolve(base, **changes)


def test_server_context_is_tls12_minimum_and_no_client_cert(tls_files: TlsFiles) -> None:
    context = build_context(ingress(tls_files))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_min_version_13(tls_files: TlsFiles) -> None:
    context = build_context(ingress(tls_files, min_version="1.3"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        ((VerifyMode.PEER,), ssl.CERT_OPTIONAL),
        ((VerifyMode.PEER, VerifyMode.FAIL_IF_NO_PEER_CERT), ssl.CERT_REQUIRED),
        (
            (VerifyMode.PEER, VerifyMode.FAIL_IF_NO_PEER_CERT, VerifyMode.CLIENT_ONCE),
            ssl.CERT_REQUIRED,
        ),
        ((VerifyMode.NONE,), ssl.CERT_NONE),
    ],
)
def test_ingress_verify_modes(
    tls_files: TlsFiles, modes: tuple[VerifyMode, ...], expected: ssl.VerifyMode
) -> None:
    context = build_context(ingress(tls_files, verify_mode=modes, ca_file=str(tls_files.ca)))
    assert context.verify_mode == expected
    assert not context.check_hostname


def test_egress_peer_checks_host_names(tls_files: TlsFiles) -> None:
    settings = TlsSettings("EGRESS", ca_file=str(tls_files.ca), verify_mode=(VerifyMode.PEER,))
    context = build_context(settings)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    plain = build_context(TlsSettings("EGRESS"))
    assert plain.verify_mode == ssl.CERT_NONE
    assert not plain.check_hostname


def test_missing_parts(tls_files: TlsFiles) -> None:
    assert missing(TlsSettings("INGRESS")) == ["CERT_CHAIN_FILE", "KEY_FILE"]
    assert missing(TlsSettings("EGRESS")) == []
    assert missing(TlsSettings("EGRESS", key_file="k")) == ["CERT_CHAIN_FILE"]
    peer = TlsSettings("EGRESS", verify_mode=(VerifyMode.PEER,))
    assert missing(peer) == ["CA_CERT_FILE (VERIFY_MODE PEER checks certificates against it)"]
    with pytest.raises(TlsConfigError, match="TLS INGRESS is incomplete: missing KEY_FILE"):
        build_context(TlsSettings("INGRESS", cert_chain_file=str(tls_files.server.chain)))


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.pem")
    with pytest.raises(TlsConfigError) as info:
        check_file("CERT_CHAIN_FILE", path)
    assert str(info.value) == f"{path}: no such file."


def test_unreadable_file_is_named(
    tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(tls_files.server.key.read_bytes())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the read fail as it would for others

        def denied(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(TlsConfigError) as info:
        check_file("KEY_FILE", str(path))
    assert str(info.value) == f"{path}: not readable (permission denied)."


def test_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "cert.der"
    path.write_bytes(b"\x30\x82\x01\x0a garbage")
    with pytest.raises(TlsConfigError, match=r"cert.der: not a PEM certificate file"):
        check_file("CA_CERT_FILE", str(path))
    with pytest.raises(TlsConfigError, match=r"cert.der: not a PEM private key file"):
        check_file("KEY_FILE", str(path))
    with pytest.raises(TlsConfigError, match=r"cert.der: not a PEM DH parameters file"):
        check_file("TMP_DH_FILE", str(path))


def test_corrupt_pem_certificate(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsConfigError, match=r"bad.pem: not a valid PEM certificate"):
        check_file("CERT_CHAIN_FILE", str(path))


def test_key_that_does_not_match(tls_files: TlsFiles) -> None:
    settings = ingress(tls_files, key_file=str(tls_files.client.key))
    with pytest.raises(TlsConfigError) as info:
        build_context(settings)
    assert str(info.value) == (
        f"{tls_files.client.key}: the private key does not match the certificate in "
        f"{tls_files.server.chain}."
    )


def test_encrypted_key_refused_without_prompting(tmp_path: Path) -> None:
    path = tmp_path / "enc.key"
    path.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    with pytest.raises(TlsConfigError, match=r"enc\.key: the private key is encrypted"):
        check_file("KEY_FILE", str(path))


def test_bad_cipher_list(tls_files: TlsFiles) -> None:
    with pytest.raises(TlsConfigError, match="cipher list 'NOT-A-CIPHER' selects no cipher"):
        build_context(ingress(tls_files, ciphers="NOT-A-CIPHER"))
    context = build_context(ingress(tls_files, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    names = cipher_names(context)
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in names
    assert "ECDHE-ECDSA-AES256-GCM-SHA384" not in names


def test_dh_params(tmp_path: Path, tls_files: TlsFiles) -> None:
    # RFC 7919's ffdhe2048 group, in PEM: the file a server operator would use.
    path = tmp_path / "dh.pem"
    path.write_text(FFDHE2048)
    check_file("TMP_DH_FILE", str(path))
    build_context(ingress(tls_files, dh_file=str(path)))


def test_state_keeps_previous_on_error(tls_files: TlsFiles) -> None:
    state = TlsState()
    assert state.update(TlsSettings("INGRESS", cert_chain_file=str(tls_files.server.chain))) is None
    good = state.update(ingress(tls_files))
    assert good is not None
    bad = ingress(tls_files, key_file=str(tls_files.ca_key))
    with pytest.raises(TlsConfigError, match="does not match"):
        state.update(bad)
    assert state.context("INGRESS") is good
    assert state.settings("INGRESS") == ingress(tls_files)


def test_verify_mode_combinations_refused() -> None:
    state = TlsState()
    for modes, text in [
        ((VerifyMode.NONE, VerifyMode.PEER), "NONE cannot be combined"),
        ((VerifyMode.FAIL_IF_NO_PEER_CERT,), "FAIL_IF_NO_PEER_CERT only has an effect with PEER"),
    ]:
        with pytest.raises(TlsConfigError, match=text):
            state.update(TlsSettings("INGRESS", verify_mode=modes))
    with pytest.raises(TlsConfigError, match="CLIENT_ONCE applies to INGRESS only"):
        state.update(TlsSettings("EGRESS", verify_mode=(VerifyMode.PEER, VerifyMode.CLIENT_ONCE)))
    assert state.settings("INGRESS") == TlsSettings("INGRESS")


def test_describe_certificate(tls_files: TlsFiles) -> None:
    text = describe_certificate(str(tls_files.client.chain))
    assert text.startswith("subject=CN=client,OU=")
    assert "issuer=OU=Testing CA" in text
    assert "notAfter=" in text


FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    with pytest.raises(TlsConfigError) as info:
        check_file("CA_CERT_FILE", str(fifo))  # would block in open() if it were opened
    assert str(info.value) == f"{fifo}: not a regular file."
    with pytest.raises(TlsConfigError) as info:
        check_file("KEY_FILE", "/dev/zero")
    assert str(info.value) == "/dev/zero: not a regular file."


def test_too_large(tmp_path: Path) -> None:
    path = tmp_path / "huge.pem"
    with path.open("wb") as file:
        file.truncate(MAX_PEM_BYTES + 1)
    with pytest.raises(TlsConfigError, match=r"huge\.pem: too large for a PEM file"):
        check_file("CA_CERT_FILE", str(path))


# --------------------------------------------------------------------------- #
# The presented certificate's expiry (amqprouter_tls_certificate_expiry_seconds)
# --------------------------------------------------------------------------- #


def _leaf_expiring(directory: Path, name: str, not_after: datetime.datetime) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="amqprouter expiry")
    leaf = ca.issue_cert(
        "localhost",
        common_name=name,
        not_before=not_after - datetime.timedelta(days=90),
        not_after=not_after,
    )
    chain, key = directory / f"{name}-chain.pem", directory / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return CertFiles(chain, key)


NOT_AFTER = datetime.datetime(2031, 5, 17, 8, 30, 0, tzinfo=datetime.UTC)


def test_certificate_expiry_reads_the_presented_certificate(tmp_path: Path) -> None:
    files = _leaf_expiring(tmp_path, "edge", NOT_AFTER)
    expiry = certificate_expiry(str(files.chain))
    assert expiry is not None
    # The leaf (first in the chain file), not its CA: the leaf's name and notAfter.
    assert expiry.not_after == NOT_AFTER.timestamp()
    assert expiry.subject.startswith("CN=edge,")
    assert certificate_expiry(str(tmp_path / "missing.pem")) is None


def test_without_cryptography_the_standard_library_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _leaf_expiring(tmp_path, "edge", NOT_AFTER)
    with_cryptography = certificate_expiry(str(files.chain))
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import fails, as uninstalled
    without = certificate_expiry(str(files.chain))
    assert without is not None and with_cryptography is not None
    assert without.not_after == with_cryptography.not_after == NOT_AFTER.timestamp()
    assert without.subject.split(",")[0] == with_cryptography.subject.split(",")[0] == "CN=edge"


def test_the_state_keeps_each_directions_expiry_from_its_last_load(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    state = TlsState()
    assert state.expiry("INGRESS") is None and state.expiry("EGRESS") is None
    first = _leaf_expiring(tmp_path, "edge", NOT_AFTER)
    ingress = TlsSettings("INGRESS", key_file=str(first.key), cert_chain_file=str(first.chain))
    state.update(ingress)
    expiry = state.expiry("INGRESS")
    assert expiry is not None and expiry.not_after == NOT_AFTER.timestamp()
    # Read at load, not on demand: a renewed file changes nothing until it is reloaded.
    renewed_at = NOT_AFTER + datetime.timedelta(days=365)
    renewed = _leaf_expiring(tmp_path / "new", "edge", renewed_at)
    first.chain.write_bytes(renewed.chain.read_bytes())
    first.key.write_bytes(renewed.key.read_bytes())
    assert state.expiry("INGRESS") == expiry
    assert reload_files(state) == []
    reloaded = state.expiry("INGRESS")
    assert reloaded is not None and reloaded.not_after == renewed_at.timestamp()
    # EGRESS presents a certificate only with one (mutual TLS to the brokers).
    client = tls_files.client
    state.update(TlsSettings("EGRESS", key_file=str(client.key), cert_chain_file=str(client.chain)))
    egress = state.expiry("EGRESS")
    assert egress is not None and egress.subject.startswith("CN=client,")
    state.update(TlsSettings("EGRESS"))
    assert state.expiry("EGRESS") is None
