"""The TLS command-line flags: listed by --help, turned into TLS commands at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.router import REPO, router_command


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        router_command(
            "--control-socket",
            f"{tmp_path}/control",
            "--log-directory",
            f"{tmp_path}/logs",
            *args,
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_help_lists_the_tls_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "amqprouter", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    text = " ".join(result.stdout.split())
    for flag in (
        "--listen-tls-port",
        "--tls-cert-chain",
        "--tls-key",
        "--destination-tls",
        "--tls-ca",
    ):
        assert flag in text


def test_destination_tls_needs_simple_mode(tmp_path: Path) -> None:
    result = run("--destination-tls", tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("--destination-tls applies to simple mode's broker")


def test_a_missing_key_file_stops_start_up_naming_it(tmp_path: Path) -> None:
    result = run("--tls-key", f"{tmp_path}/nowhere.key", tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"--tls-key: TLS INGRESS KEY_FILE {tmp_path}/nowhere.key: Error: " in result.stderr
    assert "nowhere.key" in result.stderr.split("Error: ", 1)[1]


def test_a_tls_port_without_certificate_stops_start_up(tmp_path: Path) -> None:
    result = run("--listen-tls-port", "15671", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Cannot listen on port 15671: TLS INGRESS needs CERT_CHAIN_FILE and KEY_FILE" in (
        result.stderr
    )
