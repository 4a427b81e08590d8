"""TLS settings per direction, and the ``ssl.SSLContext`` built from them.

Two directions, as in amqpprox (reference/amqpprox.md section 5): INGRESS is the
server side (``LISTEN START_SECURE``), EGRESS the client side (backends flagged
``TLS``). Each has one immutable ``TlsSettings`` record; a TLS command makes a new
record, ``build_context`` turns it into a context, and ``TlsState.update`` swaps
both in only if that worked, so a bad file never takes down a working context.
A record that is not complete yet (INGRESS without a certificate and key, PEER
without a CA file, half a client certificate) has no context; ``missing`` says
what it lacks.

Verify modes are OpenSSL's flags, which Python's ssl module does not expose
one by one; docs/tls.md says how each is honoured:

* ``NONE`` (or no mode): no certificate is checked (a server does not ask for one).
* ``PEER``: EGRESS checks the broker's chain against the CA file *and* its host
  name (amqpprox checks neither name nor SNI); INGRESS asks the client for a
  certificate and checks it when one is sent (``CERT_OPTIONAL``).
* ``FAIL_IF_NO_PEER_CERT`` (with PEER): INGRESS refuses a client without one
  (``CERT_REQUIRED``); on EGRESS PEER already refuses a broker without one.
* ``CLIENT_ONCE`` (with PEER): ask for the client certificate on the first
  handshake only. Renegotiation is switched off (``OP_NO_RENEGOTIATION``) and
  TLS 1.3 post-handshake authentication is never enabled, so that always holds.
"""

from __future__ import annotations

import datetime
import enum
import os
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs

Direction = Literal["INGRESS", "EGRESS"]
DIRECTIONS: tuple[Direction, ...] = ("INGRESS", "EGRESS")


class VerifyMode(enum.Enum):
    """amqpprox's VERIFY_MODE words (OpenSSL's SSL_VERIFY_* flags)."""

    NONE = "NONE"
    PEER = "PEER"
    FAIL_IF_NO_PEER_CERT = "FAIL_IF_NO_PEER_CERT"
    CLIENT_ONCE = "CLIENT_ONCE"


MinVersion = Literal["1.2", "1.3"]
_TLS_VERSIONS: dict[MinVersion, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class TlsConfigError(Exception):
    """A setting that cannot be used; ``str()`` is the reply for the operator."""


@attrs.frozen
class TlsSettings:
    """What the TLS commands set for one direction (None: not set)."""

    direction: Direction
    key_file: str | None = None
    cert_chain_file: str | None = None
    ca_file: str | None = None
    dh_file: str | None = None
    #: In the order given; empty means NONE, as in amqpprox.
    verify_mode: tuple[VerifyMode, ...] = ()
    min_version: MinVersion = "1.2"
    #: An OpenSSL cipher list for TLS 1.2; None keeps OpenSSL's default.
    ciphers: str | None = None

    @property
    def peer(self) -> bool:
        return VerifyMode.PEER in self.verify_mode


def check_verify_mode(direction: Direction, modes: tuple[VerifyMode, ...]) -> None:
    """Refuse combinations OpenSSL would silently ignore (TlsConfigError)."""
    if VerifyMode.NONE in modes and len(set(modes)) > 1:
        raise TlsConfigError("VERIFY_MODE NONE cannot be combined with other modes.")
    needs_peer = [
        m.value for m in modes if m in (VerifyMode.FAIL_IF_NO_PEER_CERT, VerifyMode.CLIENT_ONCE)
    ]
    if needs_peer and VerifyMode.PEER not in modes:
        # OpenSSL ignores these flags without SSL_VERIFY_PEER: the operator would
        # believe client certificates are required while none is even asked for.
        raise TlsConfigError(f"VERIFY_MODE {needs_peer[0]} only has an effect with PEER.")
    if direction == "EGRESS" and VerifyMode.CLIENT_ONCE in modes:
        raise TlsConfigError("VERIFY_MODE CLIENT_ONCE applies to INGRESS only.")


def missing(settings: TlsSettings) -> list[str]:
    """What ``settings`` lacks before a context can be built (empty: complete)."""
    lacks: list[str] = []
    has_cert, has_key = settings.cert_chain_file is not None, settings.key_file is not None
    if settings.direction == "INGRESS" or has_cert != has_key:
        # A server always needs both; a client needs both or neither (mutual TLS).
        if not has_cert:
            lacks.append("CERT_CHAIN_FILE")
        if not has_key:
            lacks.append("KEY_FILE")
    if settings.peer and settings.ca_file is None:
        lacks.append("CA_CERT_FILE (VERIFY_MODE PEER checks certificates against it)")
    return lacks


# --------------------------------------------------------------------------- #
# files
# --------------------------------------------------------------------------- #

#: Far more than any certificate chain or CA bundle (the Mozilla bundle is ~220 KB).
MAX_PEM_BYTES = 16 * 1024 * 1024

_PEM_MARKERS = {
    "certificate": (b"-----BEGIN CERTIFICATE-----",),
    "private key": (
        b"-----BEGIN PRIVATE KEY-----",
        b"-----BEGIN RSA PRIVATE KEY-----",
        b"-----BEGIN EC PRIVATE KEY-----",
        b"-----BEGIN DSA PRIVATE KEY-----",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
    ),
    "DH parameters": (b"-----BEGIN DH PARAMETERS-----",),
}


def read_pem(path: str, what: Literal["certificate", "private key", "DH parameters"]) -> bytes:
    """The file's bytes, or TlsConfigError naming the file and why it cannot be used."""
    try:
        # Read in the control plane's thread: refuse what is not a small regular
        # file (a FIFO would block the open, /dev/zero the read, for ever).
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):
            raise TlsConfigError(f"{path}: not a regular file.")
        if info.st_size > MAX_PEM_BYTES:
            raise TlsConfigError(f"{path}: too large for a PEM file ({info.st_size} bytes).")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"{path}: no such file.") from None
    except PermissionError:
        raise TlsConfigError(f"{path}: not readable (permission denied).") from None
    except IsADirectoryError:
        raise TlsConfigError(f"{path}: is a directory, not a file.") from None
    except OSError as exc:
        raise TlsConfigError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if not any(marker in data for marker in _PEM_MARKERS[what]):
        raise TlsConfigError(f"{path}: not a PEM {what} file (no '-----BEGIN' {what} block).")
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        raise TlsConfigError(f"{path}: the private key is encrypted; give an unencrypted key.")
    return data


def check_certificates(path: str) -> None:
    """``path`` holds PEM certificates OpenSSL can parse (TlsConfigError if not)."""
    data = read_pem(path, "certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=data.decode("ascii", "replace")
        )
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(f"{path}: not a valid PEM certificate ({_reason(exc)}).") from None


def check_file(kind: str, path: str) -> None:
    """The checks a file command makes before anything else (TlsConfigError)."""
    if kind in ("KEY_FILE", "RSA_KEY_FILE"):
        read_pem(path, "private key")
    elif kind == "TMP_DH_FILE":
        read_pem(path, "DH parameters")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_dh_params(path)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"{path}: not valid DH parameters ({_reason(exc)}).") from None
    else:
        check_certificates(path)


def _reason(exc: BaseException) -> str:
    """A short reason from an ssl error: OpenSSL's reason code in words."""
    reason = getattr(exc, "reason", None)  # not set on every SSLError
    if isinstance(exc, ssl.SSLError) and reason:
        return str(reason).lower().replace("_", " ")
    # Some SSLErrors carry only a message ("No cipher can be selected.").
    text = str(exc.args[-1]) if isinstance(exc, ssl.SSLError) and exc.args else str(exc)
    text = text.rstrip(".")
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def _refuse_password() -> str:
    # Without a callback OpenSSL would prompt on the daemon's terminal and hang.
    raise TlsConfigError("the private key is encrypted; give an unencrypted key.")


# --------------------------------------------------------------------------- #
# contexts
# --------------------------------------------------------------------------- #


def base_context(settings: TlsSettings) -> ssl.SSLContext:
    """Protocol, versions, options and ciphers: everything but files (TlsConfigError)."""
    server = settings.direction == "INGRESS"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    # Never SSLv3, TLS 1.0 or 1.1, whatever the system's OpenSSL policy allows.
    context.minimum_version = _TLS_VERSIONS[settings.min_version]
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if server:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE  # as amqpprox
    if settings.ciphers is not None:
        try:
            context.set_ciphers(settings.ciphers)
        except ssl.SSLError as exc:
            raise TlsConfigError(
                f"cipher list '{settings.ciphers}' selects no cipher OpenSSL knows "
                f"({_reason(exc)})."
            ) from None
    return context


def build_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context for a complete record (see ``missing``); TlsConfigError naming
    the file and the reason when a file cannot be used."""
    lacks = missing(settings)
    if lacks:
        raise TlsConfigError(f"TLS {settings.direction} is incomplete: missing {', '.join(lacks)}.")
    context = base_context(settings)
    server = settings.direction == "INGRESS"
    if settings.cert_chain_file is not None and settings.key_file is not None:
        _load_chain(context, settings.cert_chain_file, settings.key_file)
    if settings.ca_file is not None:
        check_certificates(settings.ca_file)
        try:
            context.load_verify_locations(cafile=settings.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"{settings.ca_file}: cannot be loaded ({_reason(exc)})."
            ) from None
    if settings.dh_file is not None:
        check_file("TMP_DH_FILE", settings.dh_file)
        context.load_dh_params(settings.dh_file)
    modes = settings.verify_mode
    if server:
        context.check_hostname = False
        if VerifyMode.FAIL_IF_NO_PEER_CERT in modes:
            context.verify_mode = ssl.CERT_REQUIRED
        elif VerifyMode.PEER in modes:
            context.verify_mode = ssl.CERT_OPTIONAL
        else:
            context.verify_mode = ssl.CERT_NONE
    elif VerifyMode.PEER in modes:
        context.check_hostname = True  # against the backend's host name (SNI too)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    check_certificates(cert_file)
    read_pem(key_file, "private key")
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_password)
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise TlsConfigError(
                f"{key_file}: the private key does not match the certificate in {cert_file}."
            ) from None
        raise TlsConfigError(f"{key_file}: not a valid PEM private key ({_reason(exc)}).") from None
    except OSError as exc:
        raise TlsConfigError(f"{key_file}: cannot be loaded ({exc.strerror or exc}).") from None


# --------------------------------------------------------------------------- #
# what is loaded (TLS ... PRINT)
# --------------------------------------------------------------------------- #

_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
    "emailAddress": "emailAddress",
}

_Name = tuple[tuple[tuple[str, str], ...], ...]


def name_line(name: _Name) -> str:
    """A certificate name as one line, most specific first (RFC 4514): ``CN=a,O=b``."""
    parts = [
        f"{_SHORT_NAMES.get(key, key)}={value}" for rdn in reversed(name) for key, value in rdn
    ]
    return ",".join(parts)


_decode_cert: Callable[[str], dict[str, object]] | None = getattr(
    getattr(ssl, "_ssl", None), "_test_decode_cert", None
)


def describe_certificate(path: str) -> str:
    """Subject, issuer and expiry of the first certificate in ``path``, one line."""
    if _decode_cert is None:  # pragma: no cover - every CPython since 3.2 has it
        return f"(certificate details not available) {path}"
    try:
        cert = _decode_cert(path)
    except (ssl.SSLError, OSError) as exc:
        return f"(unreadable now: {_reason(exc)})"
    subject = name_line(cert.get("subject", ()))  # type: ignore[arg-type]
    issuer = name_line(cert.get("issuer", ()))  # type: ignore[arg-type]
    return f"subject={subject} issuer={issuer} notAfter={cert.get('notAfter', '?')}"


@attrs.frozen
class CertificateExpiry:
    """When the certificate a direction presents stops being valid (its notAfter)."""

    #: The certificate's subject as RFC 4514 writes it, most specific first (``CN=a,O=b``).
    subject: str
    #: notAfter as seconds since the epoch (UTC, as RFC 5280 times are).
    not_after: float


def certificate_expiry(path: str) -> CertificateExpiry | None:
    """The notAfter and subject of the first certificate in ``path`` (the one presented:
    a chain file starts with it), or None when it cannot be read now.

    ``cryptography`` reads it when installed (a public API); without it, the standard
    library's own decoder does (``ssl._ssl._test_decode_cert``, private but in every
    CPython since 3.2, the one TLS PRINT uses), and ``ssl.cert_time_to_seconds`` turns
    its notAfter text into seconds in UTC.
    """
    try:
        from cryptography import x509  # optional: not a dependency of the router
    except ImportError:
        return _expiry_from_ssl(path)
    try:
        certificate = x509.load_pem_x509_certificates(read_pem(path, "certificate"))[0]
    except (TlsConfigError, ValueError, IndexError):
        return None
    # not_valid_after_utc since cryptography 42; before it a naive datetime in UTC.
    after = getattr(certificate, "not_valid_after_utc", None)
    if after is None:  # pragma: no cover - cryptography < 42
        after = certificate.not_valid_after.replace(tzinfo=datetime.UTC)
    return CertificateExpiry(certificate.subject.rfc4514_string(), after.timestamp())


def _expiry_from_ssl(path: str) -> CertificateExpiry | None:
    if _decode_cert is None:  # pragma: no cover - every CPython since 3.2 has it
        return None
    try:
        cert = _decode_cert(path)
        not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    except (ssl.SSLError, OSError, KeyError, ValueError):
        return None
    return CertificateExpiry(name_line(cert.get("subject", ())), not_after)  # type: ignore[arg-type]


def verify_words(settings: TlsSettings) -> str:
    return " ".join(mode.value for mode in settings.verify_mode) or "NONE"


def cipher_names(context: ssl.SSLContext) -> list[str]:
    return [str(cipher["name"]) for cipher in context.get_ciphers()]


# --------------------------------------------------------------------------- #
# the live state
# --------------------------------------------------------------------------- #


class TlsState:
    """The record and, when complete, the context of each direction.

    Sessions read ``context(direction)`` when they start, so a change applies to
    new sessions only; existing ones keep the context they were made with.
    """

    def __init__(self) -> None:
        self._settings: dict[Direction, TlsSettings] = {d: TlsSettings(d) for d in DIRECTIONS}
        # EGRESS is complete with nothing set (a client needs no certificate).
        self._contexts: dict[Direction, ssl.SSLContext | None] = {
            d: None if missing(s) else build_context(s) for d, s in self._settings.items()
        }
        # The presented certificate's expiry, read when it is loaded (and reloaded),
        # never per scrape: /metrics' amqprouter_tls_certificate_expiry_seconds.
        self._expiry: dict[Direction, CertificateExpiry | None] = dict.fromkeys(DIRECTIONS)

    def settings(self, direction: Direction) -> TlsSettings:
        return self._settings[direction]

    def context(self, direction: Direction) -> ssl.SSLContext | None:
        return self._contexts[direction]

    def update(self, settings: TlsSettings) -> ssl.SSLContext | None:
        """Make ``settings`` current; build its context when it is complete.

        Raises TlsConfigError (and changes nothing) when the record cannot be used.
        Returns the new context, or None for a record that is not complete yet.
        """
        check_verify_mode(settings.direction, settings.verify_mode)
        base_context(settings)  # checks the cipher list even when incomplete
        context = None if missing(settings) else build_context(settings)
        self._settings[settings.direction] = settings
        self._contexts[settings.direction] = context
        chain = settings.cert_chain_file
        self._expiry[settings.direction] = (
            certificate_expiry(chain) if context is not None and chain is not None else None
        )
        return context

    def expiry(self, direction: Direction) -> CertificateExpiry | None:
        """When the certificate ``direction`` presents expires (INGRESS: to clients;
        EGRESS: the client certificate to brokers), as of its last load; None without one."""
        return self._expiry[direction]
