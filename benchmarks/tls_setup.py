"""What the TLS workloads need: certificates made with trustme, a client context, and a
private RabbitMQ node with a TLS listener (started with tests/brokers.py's RabbitNode)."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.brokers import RabbitNode

REPO = Path(__file__).resolve().parent.parent
#: The name every TLS client of the benchmark checks; the certificate also holds 127.0.0.1
#: (the router's egress names the backend by its address).
SERVER_NAME = "localhost"


class TlsSetupError(Exception):
    """Certificates or the TLS node could not be made: reported in one line, not a trace."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate clients (and the router's egress) trust
    chain: Path  # the server certificate chain (leaf first), PEM
    key: Path  # its private key, PEM


def make_certs(directory: Path) -> TlsFiles:
    """A fresh CA and a server certificate for localhost and 127.0.0.1, written as PEM."""
    try:
        import trustme
    except ImportError as e:
        raise TlsSetupError("--tls needs trustme: .venv/bin/pip install trustme") from e
    ca = trustme.CA()
    cert = ca.issue_cert(SERVER_NAME, "127.0.0.1")
    files = TlsFiles(directory / "ca.pem", directory / "chain.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    cert.private_key_pem.write_to_path(str(files.key))
    files.chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return files


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """What a careful client does: verify the chain against our CA, and the host name."""
    return ssl.create_default_context(cafile=str(files.ca))


def _import_brokers() -> None:
    """Make tests/brokers.py importable (the benchmark runs as a script), or say why not."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from tests import brokers  # noqa: F401
    except ImportError as e:
        raise TlsSetupError(f"--tls needs tests/brokers.py from the repository: {e}") from e


@contextlib.contextmanager
def tls_node(files: TlsFiles) -> Iterator[tuple[RabbitNode, int]]:
    """A private node (not started yet: call start_tls_node) with a TLS listener on the
    returned port, besides its plain one. Destroyed (killed, data removed) on exit."""
    _import_brokers()
    from tests import brokers

    tls_port = brokers.free_port()
    try:
        with brokers.RabbitNodeFactory() as factory:
            node = factory.create(start=False)
            # The node runs as the rabbitmq user when we are root: its copies of the files
            # live in its data directory, which start() hands over to that user.
            tls_dir = node.data_dir / "tls"
            tls_dir.mkdir(parents=True, exist_ok=True)
            for f in (files.ca, files.chain, files.key):
                shutil.copy(f, tls_dir / f.name)
            # RABBITMQ_CONFIG_FILES (conf.d) is read after rabbitmq.conf: the plain node's
            # config stays tests/brokers.py's, and this adds the TLS listener.
            conf_d = node.data_dir / "conf.d"
            conf_d.mkdir(parents=True, exist_ok=True)
            (conf_d / "10-bench-tls.conf").write_text(
                f"listeners.ssl.1 = 127.0.0.1:{tls_port}\n"
                f"ssl_options.cacertfile = {tls_dir / files.ca.name}\n"
                f"ssl_options.certfile = {tls_dir / files.chain.name}\n"
                f"ssl_options.keyfile = {tls_dir / files.key.name}\n"
                "ssl_options.verify = verify_none\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
            )
            yield node, tls_port
    except brokers.BrokerError as e:
        raise TlsSetupError(f"private TLS RabbitMQ node: {e}") from e


def start_tls_node(node: RabbitNode, tls_port: int, timeout: float = 90.0) -> None:
    """Boot the node and wait until its TLS port answers a TLS handshake... or say why not."""
    from tests import brokers

    print(f"starting private RabbitMQ node {node.name} (TLS on :{tls_port})...", flush=True)
    t0 = time.monotonic()
    try:
        node.start(timeout=timeout)
    except brokers.BrokerError as e:
        first = str(e).splitlines()[0]
        raise TlsSetupError(
            f"private TLS RabbitMQ node did not start: {first} (its logs are deleted on exit;"
            f" AMQPROUTER_KEEP_BROKER_DATA=1 keeps them in {node.data_dir})"
        ) from e
    deadline = time.monotonic() + 30
    while not brokers.port_is_open(tls_port):
        if time.monotonic() > deadline:
            raise TlsSetupError(
                f"private RabbitMQ node {node.name} booted but its TLS port :{tls_port} does not"
                f" accept (AMQPROUTER_KEEP_BROKER_DATA=1 keeps its log {node.log_file})"
            )
        time.sleep(0.1)
    print(f"  node up in {time.monotonic() - t0:.1f}s", flush=True)
