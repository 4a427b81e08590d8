"""Fixtures for the control tests: TLS certificates (tests/tls_certs.py)."""

from tests.tls_certs import tls_files

__all__ = ["tls_files"]
