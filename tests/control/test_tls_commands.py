"""The TLS verb executed: replies, exit status, and the previous context kept on error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from amqprouter.control.controller import Controller
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from tests.router import running_router
from tests.tls_certs import TlsFiles

BIN = Path(sys.executable).parent


def controller() -> Controller:
    return Controller(Server(SessionSettings()), request_exit=lambda: None)


async def ok(ctl: Controller, line: str) -> str:
    reply = await ctl.handle(line)
    assert reply.ok, (line, reply.text)
    return reply.text


async def refused(ctl: Controller, line: str) -> str:
    reply = await ctl.handle(line)
    assert not reply.ok, (line, reply.text)
    return reply.text


async def ingress_loaded(ctl: Controller, files: TlsFiles) -> None:
    assert await ok(ctl, f"TLS INGRESS CERT_CHAIN_FILE {files.server.chain}") == ""
    assert ctl.tls.context("INGRESS") is None  # no key yet
    assert await ok(ctl, f"TLS INGRESS KEY_FILE {files.server.key}") == ""
    assert ctl.tls.context("INGRESS") is not None


async def test_print_says_what_is_missing_then_what_is_loaded(tls_files: TlsFiles) -> None:
    ctl = controller()
    assert await ok(ctl, "TLS INGRESS PRINT") == (
        "TLS INGRESS: incomplete, no context: missing CERT_CHAIN_FILE, KEY_FILE\n"
        "CA_CERT_FILE (none)\n"
        "VERIFY_MODE NONE\n"
        "MIN_VERSION 1.2\n"
        "CIPHERS (OpenSSL default)\n"
    )
    await ingress_loaded(ctl, tls_files)
    await ok(ctl, f"TLS INGRESS CA_CERT_FILE {tls_files.ca}")
    await ok(ctl, "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT")
    await ok(ctl, "TLS INGRESS MIN_VERSION 1.3")
    lines = (await ok(ctl, "TLS INGRESS PRINT")).splitlines()
    assert lines[0] == "TLS INGRESS: loaded (used by new sessions)"
    assert lines[1].startswith(f"CERT_CHAIN_FILE {tls_files.server.chain} subject=OU=")
    assert " issuer=OU=Testing CA" in lines[1] and "notAfter=Jan  1 00:00:00 3000 GMT" in lines[1]
    assert lines[2:] == [
        f"KEY_FILE {tls_files.server.key}",
        f"CA_CERT_FILE {tls_files.ca}",
        "VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT",
        "MIN_VERSION 1.3",
        "CIPHERS (OpenSSL default)",
    ]
    # EGRESS is complete with nothing set: a client needs no certificate.
    assert (await ok(ctl, "TLS EGRESS PRINT")).startswith("TLS EGRESS: loaded")


async def test_errors_name_the_file_and_keep_the_previous_context(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    ctl = controller()
    await ingress_loaded(ctl, tls_files)
    context, settings = ctl.tls.context("INGRESS"), ctl.tls.settings("INGRESS")
    missing = tmp_path / "missing.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases = [
        (f"TLS INGRESS KEY_FILE {missing}", f"Error: {missing}: no such file.\n"),
        (
            f"TLS INGRESS CERT_CHAIN_FILE {not_pem}",
            f"Error: {not_pem}: not a PEM certificate file (no '-----BEGIN' certificate block).\n",
        ),
        (
            f"TLS INGRESS KEY_FILE {tls_files.client.key}",
            f"Error: {tls_files.client.key}: the private key does not match the certificate "
            f"in {tls_files.server.chain}.\n",
        ),
        (
            f"TLS INGRESS RSA_KEY_FILE {tls_files.ca_key}",
            f"Error: {tls_files.ca_key}: the private key does not match the certificate "
            f"in {tls_files.server.chain}.\n",
        ),
        (
            "TLS INGRESS VERIFY_MODE CLIENT_ONCE",
            "Error: VERIFY_MODE CLIENT_ONCE only has an effect with PEER.\n",
        ),
        (
            "TLS INGRESS CIPHERS SET NO-SUCH-CIPHER",
            "Failed to set cipher suite. Error: cipher list 'NO-SUCH-CIPHER' selects no "
            "cipher OpenSSL knows (no cipher can be selected).\n",
        ),
        (
            f"TLS INGRESS TMP_DH_FILE {tmp_path}",
            f"Error: {tmp_path}: is a directory, not a file.\n",
        ),
        (f"TLS EGRESS TMP_DH_FILE {missing}", "Error: TMP_DH_FILE applies to INGRESS only.\n"),
    ]
    for line, reply in cases:
        assert await refused(ctl, line) == reply
        assert ctl.tls.context("INGRESS") is context, line
        assert ctl.tls.settings("INGRESS") == settings, line


async def test_each_command_builds_a_new_context(tls_files: TlsFiles) -> None:
    ctl = controller()
    await ingress_loaded(ctl, tls_files)
    first = ctl.tls.context("INGRESS")
    # Sending the same file again reloads it (rotation: new files at the same path).
    await ok(ctl, f"TLS INGRESS CERT_CHAIN_FILE {tls_files.server.chain}")
    second = ctl.tls.context("INGRESS")
    assert second is not None and second is not first
    # PEER without a CA file cannot verify anything: no context until there is one.
    await ok(ctl, "TLS INGRESS VERIFY_MODE PEER")
    assert ctl.tls.context("INGRESS") is None
    assert "missing CA_CERT_FILE" in await ok(ctl, "TLS INGRESS PRINT")
    await ok(ctl, f"TLS INGRESS CA_CERT_FILE {tls_files.ca}")
    assert ctl.tls.context("INGRESS") is not None


async def test_ciphers(tls_files: TlsFiles) -> None:
    ctl = controller()
    default = await ok(ctl, "TLS EGRESS CIPHERS PRINT")
    assert default.startswith("Ciphers:\nTLS_AES_256_GCM_SHA384\n")
    reply = await ok(ctl, "TLS EGRESS CIPHERS SET ECDHE-ECDSA-AES128-GCM-SHA256")
    # TLS 1.3 suites stay (Python cannot restrict them); the 1.2 list is what was set.
    assert reply.startswith("Updated cipher list:\n")
    names = reply.splitlines()[1:]
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in names
    assert [name for name in names if not name.startswith("TLS_")] == [
        "ECDHE-ECDSA-AES128-GCM-SHA256"
    ]
    assert await ok(ctl, "TLS EGRESS CIPHERS PRINT") == reply.replace(
        "Updated cipher list", "Ciphers"
    )


def _tls_setup(files: TlsFiles) -> list[str]:
    return [
        f"TLS INGRESS CERT_CHAIN_FILE {files.server.chain}",
        f"TLS INGRESS RSA_KEY_FILE {files.server.key}",
        f"TLS INGRESS CA_CERT_FILE {files.ca}",
        "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT CLIENT_ONCE",
        "TLS INGRESS MIN_VERSION 1.3",
        f"TLS EGRESS CA_CERT_FILE {files.ca}",
        "TLS EGRESS VERIFY_MODE PEER",
        f"TLS EGRESS CERT_CHAIN_FILE {files.client.chain}",
        f"TLS EGRESS KEY_FILE {files.client.key}",
        "TLS EGRESS CIPHERS SET ECDHE+AESGCM",
    ]


def _expected_tls_config(files: TlsFiles) -> list[str]:
    # CA first, then the chain and key (RSA_KEY_FILE is written as KEY_FILE).
    return [
        f"TLS INGRESS CA_CERT_FILE {files.ca}",
        f"TLS INGRESS CERT_CHAIN_FILE {files.server.chain}",
        f"TLS INGRESS KEY_FILE {files.server.key}",
        "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT CLIENT_ONCE",
        "TLS INGRESS MIN_VERSION 1.3",
        f"TLS EGRESS CA_CERT_FILE {files.ca}",
        f"TLS EGRESS CERT_CHAIN_FILE {files.client.chain}",
        f"TLS EGRESS KEY_FILE {files.client.key}",
        "TLS EGRESS VERIFY_MODE PEER",
        "TLS EGRESS CIPHERS SET ECDHE+AESGCM",
    ]


async def test_config_print_round_trip_in_process(tls_files: TlsFiles) -> None:
    ctl = controller()
    for line in _tls_setup(tls_files):
        await ok(ctl, line)
    config = await ok(ctl, "CONFIG PRINT")
    tls_lines = [line for line in config.splitlines() if line.startswith("TLS ")]
    assert tls_lines == _expected_tls_config(tls_files)
    again = controller()
    for line in tls_lines:
        await ok(again, line)
    assert await ok(again, "CONFIG PRINT") == config
    for direction in ("INGRESS", "EGRESS"):
        assert again.tls.settings(direction) == ctl.tls.settings(direction)
        assert again.tls.context(direction) is not None


def _ctl(socket_path: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "amqprouter_ctl"), str(socket_path), *words],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_config_file_restores_tls_and_ctl_exit_status(tls_files: TlsFiles, tmp_path: Path) -> None:
    config_file = tmp_path / "router.conf"
    config_file.write_text("".join(line + "\n" for line in _tls_setup(tls_files)))
    # Any port will do: no client connects, and the router only listens in plain text here.
    with running_router(5672, extra=["--config", str(config_file)]) as router:
        socket_path = router.stdout_path.parent / "control"
        printed = _ctl(socket_path, "CONFIG", "PRINT")
        assert printed.returncode == 0, printed
        tls_lines = [line for line in printed.stdout.splitlines() if line.startswith("TLS ")]
        assert tls_lines == _expected_tls_config(tls_files)

        bad = _ctl(socket_path, "TLS", "INGRESS", "KEY_FILE", str(tls_files.client.key))
        assert bad.returncode == 1
        assert "the private key does not match the certificate" in bad.stdout + bad.stderr
        still = _ctl(socket_path, "TLS", "INGRESS", "PRINT")
        assert still.returncode == 0
        assert f"KEY_FILE {tls_files.server.key}\n" in still.stdout
        assert still.stdout.startswith("TLS INGRESS: loaded")


def test_config_file_with_a_bad_tls_line_stops_the_start(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    config_file = tmp_path / "router.conf"
    config_file.write_text(f"TLS INGRESS KEY_FILE {tmp_path / 'gone.key'}\n")
    with (
        pytest.raises(AssertionError, match=r"gone\.key: no such file"),
        running_router(5672, extra=["--config", str(config_file)]),
    ):
        pass
