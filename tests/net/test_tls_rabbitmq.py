"""The TLS transport against a real RabbitMQ TLS listener (a private node)."""

from __future__ import annotations

import socket
import ssl

import trio
from pamqp import commands, frame, header

from amqprouter.net import sockets
from amqprouter.net.tls_context import TlsSettings, VerifyMode, build_context
from amqprouter.net.tls_transport import TLSTransport, handshake_reason, tls_handshake
from tests.brokers import NodeTls, RabbitNodeFactory
from tests.tls_certs import TlsFiles


async def connection_start(transport: TLSTransport) -> commands.Connection.Start:
    """Send the protocol header; read frames until the broker's Connection.Start."""
    await transport.send_all(frame.marshal(header.ProtocolHeader(), 0))
    data = b""
    while True:
        _kind, _channel, size = frame.frame_parts(data)
        if size is not None and len(data) >= size + 8:
            _consumed, _channel, method = frame.unmarshal(data)
            assert isinstance(method, commands.Connection.Start), method
            return method
        try:
            chunk = transport.recv(65536)
        except BlockingIOError:
            await transport.wait_readable()
            continue
        assert chunk, "the broker closed the connection"
        data += chunk


async def test_handshake_and_connection_start_over_tls(
    rabbit_node_factory: RabbitNodeFactory, tls_files: TlsFiles
) -> None:
    tls = NodeTls(
        cacertfile=tls_files.ca,
        certfile=tls_files.server.chain,
        keyfile=tls_files.server.key,
        verify=True,
        fail_if_no_peer_cert=True,
    )
    node = rabbit_node_factory.create_tls(tls)
    mutual = TlsSettings(
        "EGRESS",
        ca_file=str(tls_files.ca),
        verify_mode=(VerifyMode.PEER,),
        cert_chain_file=str(tls_files.client.chain),
        key_file=str(tls_files.client.key),
    )

    async def start(settings: TlsSettings, version: ssl.TLSVersion) -> commands.Connection.Start:
        context = build_context(settings)
        context.maximum_version = version
        sock = await sockets.connect((node.host, tls.port), socket.AF_INET)
        transport = await tls_handshake(
            sock, context, server_side=False, server_hostname="localhost"
        )
        try:
            assert transport.peer_subject() is not None  # the broker's, verified
            return await connection_start(transport)
        finally:
            transport.close()

    with trio.fail_after(30):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            start_frame = await start(mutual, version)
            assert start_frame.version_major == 0 and start_frame.version_minor == 9
            assert b"PLAIN" in start_frame.mechanisms.encode()
        # Without a client certificate the broker (fail_if_no_peer_cert) refuses.
        anonymous = TlsSettings("EGRESS", ca_file=str(tls_files.ca), verify_mode=(VerifyMode.PEER,))
        try:
            await start(anonymous, ssl.TLSVersion.TLSv1_3)
        except sockets.PeerGone as exc:
            refused = str(exc)
        except ssl.SSLError as exc:
            refused = handshake_reason(exc, during_handshake=False)
        else:
            raise AssertionError("the broker accepted a client without a certificate")
        # TLS 1.3: the client's handshake ends before the broker checks it; the
        # broker's alert then closes the connection under the first write or read.
        assert refused in ("peer closed the connection", "tlsv13 alert certificate required"), (
            refused
        )
