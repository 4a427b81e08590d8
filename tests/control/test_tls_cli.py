"""The TLS command-line flags exist and are refused at start until they are wired."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.router import REPO, router_command


@pytest.mark.parametrize(
    "args",
    [
        ["--listen-tls-port", "5671"],
        ["--tls-cert-chain", "/etc/amqprouter/chain.pem"],
        ["--tls-key", "/etc/amqprouter/server.key"],
        ["--destination-tls"],
        ["--tls-ca", "/etc/ssl/certs/fleet-ca.pem"],
    ],
)
def test_tls_flag_is_refused_not_ignored(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        router_command(
            "--listen-port",
            "5999",
            "--destination-dns",
            "localhost",
            "--destination-port",
            "5672",
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
    assert result.returncode == 2, result
    assert result.stderr == (
        f"{args[0]} is not wired yet: this version cannot serve or reach TLS from the "
        "command line. The TLS control verb loads certificates (docs/tls.md).\n"
    )
    assert "Starting amqprouter" not in result.stdout


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
    assert text.count("NOT WIRED YET: refused at start.") == 5
