"""Certificates for TLS tests, made with trustme (nothing is checked in).

``tls_files`` (session fixture) writes one set of PEM files to a temporary
directory: a CA, a server certificate for localhost and 127.0.0.1, a client
certificate (CN=client), an expired server certificate, one for the wrong host
name, and a second CA that signed nothing here (a "wrong CA" for the verifier).

Use it from a test directory's conftest.py (``from tests.tls_certs import
tls_files``) or build a set directly with ``make_tls_files(path)``.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import attrs
import pytest
import trustme


@attrs.frozen
class CertFiles:
    """A leaf certificate (with its chain) and its private key, as PEM files."""

    chain: Path
    key: Path


@attrs.frozen
class TlsFiles:
    directory: Path
    ca: Path  # the CA that signed every certificate below
    other_ca: Path  # a CA that signed none of them
    server: CertFiles  # localhost, 127.0.0.1
    client: CertFiles  # CN=client, O=amqprouter tests
    expired: CertFiles  # localhost, 127.0.0.1, expired a year ago
    wrong_name: CertFiles  # wrong.example.invalid only
    ca_key: Path  # the CA's own key: a key that matches none of the leaves

    def server_context(self, *, client_ca: bool = False) -> ssl.SSLContext:
        """A plain Python server context with the server certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server.chain, self.server.key)
        if client_ca:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        """A plain Python client context trusting the CA (host names checked)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(self.client.chain, self.client.key)
        return context


def _write(leaf: trustme.LeafCert, directory: Path, name: str) -> CertFiles:
    chain = directory / f"{name}-chain.pem"
    key = directory / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return CertFiles(chain, key)


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="amqprouter tests")
    other = trustme.CA(organization_name="amqprouter other CA")
    now = datetime.datetime.now(datetime.UTC)
    (directory / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (directory / "other-ca.pem").write_bytes(other.cert_pem.bytes())
    (directory / "ca.key").write_bytes(ca.private_key_pem.bytes())
    return TlsFiles(
        directory=directory,
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server=_write(ca.issue_cert("localhost", "127.0.0.1"), directory, "server"),
        client=_write(
            ca.issue_cert(
                "client.example", common_name="client", organization_name="amqprouter tests"
            ),
            directory,
            "client",
        ),
        expired=_write(
            ca.issue_cert(
                "localhost",
                "127.0.0.1",
                not_before=now - datetime.timedelta(days=730),
                not_after=now - datetime.timedelta(days=365),
            ),
            directory,
            "expired",
        ),
        wrong_name=_write(ca.issue_cert("wrong.example.invalid"), directory, "wrong-name"),
        ca_key=directory / "ca.key",
    )


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))
