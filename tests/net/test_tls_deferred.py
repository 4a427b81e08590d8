"""A TLS server side starts OpenSSL only once the client has sent something: a
connection that stays silent costs the socket, not OpenSSL's state and buffers."""

from __future__ import annotations

import socket
import ssl
from typing import Any, cast

import pytest
import trio
import trio.testing

from amqprouter.net.tls_context import build_context
from amqprouter.net.tls_transport import TlsHandshakeError, TLSTransport, tls_handshake
from tests.net.test_tls_transport import client_settings, server_settings, tcp_pair
from tests.tls_certs import TlsFiles


class RecordingContext:
    """An SSLContext that counts the SSL objects it makes."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.wrapped = 0

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.wrapped += 1
        return self.context.wrap_socket(*args, **kwargs)


async def test_a_silent_client_gets_no_ssl_object_until_it_speaks(tls_files: TlsFiles) -> None:
    server_sock, client_sock = await tcp_pair()
    recording = RecordingContext(build_context(server_settings(tls_files)))
    served: list[TLSTransport] = []

    async def serve() -> None:
        context = cast(ssl.SSLContext, recording)
        served.append(await tls_handshake(server_sock, context, server_side=True))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await trio.testing.wait_all_tasks_blocked()
            assert recording.wrapped == 0  # silent: nothing allocated by OpenSSL
            client = await tls_handshake(
                client_sock,
                build_context(client_settings(tls_files)),
                server_side=False,
                server_hostname="localhost",
            )
    assert recording.wrapped == 1  # and the handshake then completes as ever
    client.close()
    served[0].close()


async def test_a_silent_client_cut_by_the_timeout_leaves_nothing_open(
    tls_files: TlsFiles, autojump_clock: trio.testing.MockClock
) -> None:
    server_sock, client_sock = await tcp_pair()
    with trio.move_on_after(30) as scope:
        await tls_handshake(
            server_sock, build_context(server_settings(tls_files)), server_side=True
        )
    assert scope.cancelled_caught
    assert server_sock.fileno() == -1
    client_sock.close()


async def test_a_client_that_connects_and_leaves_is_a_handshake_error(
    tls_files: TlsFiles,
) -> None:
    server_sock, client_sock = await tcp_pair()
    client_sock.shutdown(socket.SHUT_WR)
    client_sock.close()
    with trio.fail_after(10), pytest.raises(TlsHandshakeError):
        await tls_handshake(
            server_sock, build_context(server_settings(tls_files)), server_side=True
        )
    assert server_sock.fileno() == -1
