"""A TLS ``Transport``: a non-blocking ``ssl.SSLSocket`` on trio's event loop.

Why not ``trio.SSLStream``: it runs every TLS record through Python
(``ssl.MemoryBIO`` in, ``MemoryBIO`` out, a trio stream call for each); an
``SSLSocket`` lets OpenSSL read and write the socket itself, so the hot path is
one C call per ``recv``/``send`` as for plain TCP. docs/tls.md has the figures
(benchmarks/tls_transport.py).

Non-blocking TLS has two traps that this module hides from the pumps:

* A read can need the socket *writable* (TLS 1.3 key update, a pending alert),
  and a write can need it *readable*. ``recv`` remembers which want it hit and
  ``wait_readable`` waits for that.
* OpenSSL may already hold decrypted bytes (``pending()``) while the kernel
  socket has nothing: waiting on the file descriptor then would stall the
  session, so ``wait_readable`` returns at once.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import trio

from amqprouter.net import sockets
from amqprouter.net.tls_context import name_line


class TlsHandshakeError(Exception):
    """A TLS handshake that failed; ``reason`` is short enough for one log line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def handshake_reason(exc: BaseException, *, during_handshake: bool = True) -> str:
    """Why TLS failed, in a few words ("certificate verify failed: ...")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = str(exc.verify_message or "").rstrip(".")
        return f"certificate verify failed: {detail}" if detail else "certificate verify failed"
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError | ConnectionError):
        when = " during the TLS handshake" if during_handshake else ""
        return f"peer closed the connection{when}"
    reason = getattr(exc, "reason", None)  # not set on every SSLError
    if isinstance(exc, ssl.SSLError) and reason:
        return str(reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def tls_handshake(
    sock: socket.socket,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
) -> TLSTransport:
    """Run the TLS handshake over the connected non-blocking ``sock``.

    The transport owns the socket from here: on failure (TlsHandshakeError) or
    cancellation (the caller's timeout bounds a peer that stops halfway) it is
    closed. ``server_hostname`` is the SNI name and, when the context checks
    host names, the name the certificate must carry.
    """
    try:
        if server_side:
            # The client speaks first (ClientHello). OpenSSL's state and its first read's
            # buffers cost ~42 KB per connection: a client that never sends costs none.
            await trio.lowlevel.wait_readable(sock.fileno())
        tls = context.wrap_socket(
            sock,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
            do_handshake_on_connect=False,
        )
    except BaseException:
        sockets.close_socket(sock)
        raise
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(tls.fileno())
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(tls.fileno())
            except OSError as exc:  # SSLError is an OSError
                raise TlsHandshakeError(handshake_reason(exc)) from exc
    except BaseException:
        sockets.close_socket(tls)
        raise
    return TLSTransport(tls)


def _subject(sock: ssl.SSLSocket) -> str | None:
    """The verified peer certificate's subject, one line; None if none was verified."""
    try:
        cert = sock.getpeercert()
    except (ValueError, OSError):  # not connected, or no handshake yet
        return None
    if not cert:  # none sent, or not verified (getpeercert gives {} then)
        return None
    return name_line(cert["subject"])  # type: ignore[arg-type]


class TLSTransport:
    """A connected TLS stream (see the module docstring and ``net.transport``)."""

    __slots__ = ("_parked", "_subject", "_version", "recv", "sock", "ssl_sock", "want_write")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        #: The same socket twice: typed as the Transport's TCP socket, and as SSL.
        self.sock: socket.socket = sock
        self.ssl_sock = sock
        #: The last read needed the socket writable (TLS wants to send first); the
        #: forwarding engine reads it too, to read again on EPOLLOUT.
        self.want_write = False
        # One TLS connection, two tasks (the pump reading it, the one writing it), and
        # TLS may make either wait for either readiness (a read that must write a
        # KeyUpdate reply, a write that must read). trio allows one task parked per
        # fd and direction, so a second one waits for the first one's wake-up instead.
        self._parked: dict[bool, trio.Event] = {}
        self.recv: Callable[[int], bytes] = self._recv
        # Read once, after the handshake: CONN, the logs and statistics ask later,
        # possibly after the socket is closed (when the SSL object is gone).
        self._subject = _subject(sock)
        self._version = sock.version()

    def _recv(self, size: int) -> bytes:
        # One SSL_read returns at most one TLS record (16 KiB of plaintext), however
        # much the socket holds. Reading records until ``size`` or until OpenSSL wants
        # more gives the pump what a plain socket would: large reads, and a short read
        # only when the socket is really drained (the pump then waits instead of
        # taking a scheduler round trip per record).
        chunks: list[bytes] = []
        total = 0
        while total < size:
            try:
                data = self.ssl_sock.recv(size - total)
            except ssl.SSLWantReadError:
                self.want_write = False
                if chunks:
                    break
                raise BlockingIOError from None
            except ssl.SSLWantWriteError:
                self.want_write = True  # the next wait is for writable
                if chunks:
                    return b"".join(chunks)
                raise BlockingIOError from None
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or the TCP stream ended without one: what was read
                # first is delivered, and the next call says end of stream again.
                break
            if not data:
                break
            chunks.append(data)
            total += len(data)
        self.want_write = False
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    async def _park(self, writable: bool) -> None:
        """Wait until the socket is readable (or writable), sharing one trio wait."""
        other = self._parked.get(writable)
        if other is not None:
            await other.wait()  # then the caller retries, as after its own wait
            return
        event = self._parked[writable] = trio.Event()
        try:
            if writable:
                await trio.lowlevel.wait_writable(self.sock.fileno())
            else:
                await trio.lowlevel.wait_readable(self.sock.fileno())
        finally:
            del self._parked[writable]
            event.set()

    async def wait_readable(self) -> None:
        if self.ssl_sock.pending():
            return  # already decrypted: waiting on the socket could stall for ever
        await self._park(writable=self.want_write)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                # One SSL_write: without partial-write mode it writes all or raises
                # a want; the retry then continues where OpenSSL got to.
                sent = self.ssl_sock.send(view)
            except ssl.SSLWantWriteError:
                await self._park(writable=True)
                continue
            except ssl.SSLWantReadError:
                await self._park(writable=False)
                continue
            except OSError as exc:
                raise sockets.PeerGone(handshake_reason(exc, during_handshake=False)) from exc
            view = view[sent:]

    async def send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        # There is no SSL sendmsg: one record stream, so join once.
        await self.send_all(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def pending(self) -> int:
        return self.ssl_sock.pending()

    def close(self) -> None:
        # No close_notify exchange (amqpprox PR #73 does not wait for one either):
        # closing wakes any parked task and drops the connection.
        sockets.close_socket(self.sock)

    def peer_name(self) -> tuple[str, int]:
        return sockets.peer_name(self.sock)

    def local_name(self) -> tuple[str, int]:
        return sockets.local_name(self.sock)

    def peer_subject(self) -> str | None:
        return self._subject

    def tls_version(self) -> str | None:
        """The negotiated protocol ("TLSv1.3")."""
        return self._version

    def raw_socket(self) -> socket.socket | None:
        return None  # its bytes are records: not for a hook to read or write
