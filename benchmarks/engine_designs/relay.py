"""Three forwarding designs as standalone relays, for docs/benchmark.md's comparison.

    python benchmarks/engine_designs/relay.py DESIGN LISTEN_PORT [BROKER_PORT]

DESIGN is one of:

* ``tasks``: today's data plane in miniature: two trio tasks per session, each calling
  ``recv``/``send`` on the non-blocking socket and parking on ``wait_readable`` when the
  kernel says would-block (one-shot epoll re-arm per park): the reference.
* ``epoll-task``: one trio task serves an edge-triggered epoll set (every socket
  registered once, EPOLLIN|EPOLLOUT|EPOLLET); it parks on the epoll descriptor's
  readability (``trio.lowlevel.wait_readable``) and, woken, drains every ready socket.
* ``thread``: a forwarding thread runs its own blocking ``epoll.poll`` (the GIL released
  while it waits) over the same kind of set; trio hands it sessions through a queue and an
  eventfd. ``--switch-interval`` sets ``sys.setswitchinterval`` (the GIL hand-off bound
  while the trio thread is busy).

All three do what the router does per read: frame scan (``amqprouter.protocol.frames.
FrameScanner``, whole frames forwarded, a partial one held back), then one write; a read
waits until the previous write is done (back-pressure). The trio side accepts, reads the
client's 8-byte protocol header, connects to the broker and writes the header, then hands
both sockets to the design's forwarding. Not part of the package: a measuring tool.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from amqprouter.protocol.errors import FrameError
from amqprouter.protocol.frames import FrameScanner

READ_SIZE = 256 * 1024
FRAME_MAX = 131072
BURST = 16  # reads in a row from one socket before the others get a turn
IN, OUT, ET = select.EPOLLIN, select.EPOLLOUT, select.EPOLLET
HUP = select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP


class Side:
    """One socket of a pair: what it reads goes to ``peer``; ``owed`` is what waits to be
    written to this socket (back-pressure: the peer is not read while it is non-empty)."""

    __slots__ = ("fd", "owed", "peer", "readable", "scanner", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.scanner = FrameScanner(FRAME_MAX)
        self.owed: memoryview | None = None
        self.readable = True  # edge-triggered: assume data until recv says otherwise
        self.peer: Side = self


class Forwarder:
    """The edge-triggered epoll set and the per-socket work shared by the two designs."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.sides: dict[int, Side] = {}
        self.again: collections.deque[Side] = collections.deque()

    def add(self, client: socket.socket, broker: socket.socket) -> None:
        a, b = Side(client), Side(broker)
        a.peer, b.peer = b, a
        for side in (a, b):
            self.sides[side.fd] = side
            self.epoll.register(side.fd, IN | OUT | ET | select.EPOLLRDHUP)
        # Bytes may have arrived before registration: the first edge may be gone.
        self.pump(a)
        self.pump(b)

    def close(self, side: Side) -> None:
        for s in (side, side.peer):
            if self.sides.pop(s.fd, None) is not None:
                self.epoll.unregister(s.fd)
                s.sock.close()

    def handle(self, fd: int, events: int) -> None:
        side = self.sides.get(fd)
        if side is None:
            return
        if events & OUT and side.owed is not None:
            if not self.flush(side):
                return
            if side.peer.readable:  # its reads waited for this write
                self.pump(side.peer)
        if events & (IN | HUP):
            side.readable = True
            self.pump(side)

    def flush(self, side: Side) -> bool:
        """Write what is owed to ``side``; whether it is all out (False: closed or full)."""
        owed = side.owed
        assert owed is not None
        try:
            sent = side.sock.send(owed)
        except BlockingIOError:
            return False
        except OSError:
            self.close(side)
            return False
        side.owed = owed[sent:] if sent < len(owed) else None
        return side.owed is None

    def pump(self, side: Side) -> None:
        """Read ``side`` and forward to its peer until drained, blocked or a burst is done."""
        peer = side.peer
        for _ in range(BURST):
            if peer.owed is not None or not side.readable or side.fd not in self.sides:
                return
            try:
                data = side.sock.recv(READ_SIZE)
            except BlockingIOError:
                side.readable = False
                return
            except OSError:
                self.close(side)
                return
            if not data:
                self.close(side)
                return
            if len(data) < READ_SIZE:
                # A short read emptied the socket; edge-triggered epoll reports the next
                # arrival, so no recv to hear EAGAIN.
                side.readable = False
            try:
                pieces, _controls = side.scanner.scan(data)
            except FrameError:
                self.close(side)
                return
            if not pieces:
                continue
            try:
                if len(pieces) == 1:
                    sent = peer.sock.send(pieces[0])
                    total = len(pieces[0])
                else:
                    sent = peer.sock.sendmsg(pieces)
                    total = sum(len(p) for p in pieces)
            except BlockingIOError:
                sent, total = 0, 1
            except OSError:
                self.close(side)
                return
            if sent < total:
                rest = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                peer.owed = memoryview(rest)[sent:]
                return
        # A full burst: come back to it after the others (the design's loop does).
        self.again.append(side)


HANDSHAKE_WORK = 0.0  # seconds of Python per accepted connection (--handshake-work)


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# --- the trio side: accept, protocol header, broker connect, hand-over --------------------


async def connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    code = sock.connect_ex(("127.0.0.1", port))
    if code == errno.EINPROGRESS:
        await trio.lowlevel.wait_writable(sock.fileno())
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        sock.close()
        raise OSError(code, os.strerror(code))
    return sock


async def recv_exactly(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        try:
            data = sock.recv(size - len(got))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock.fileno())
            continue
        if not data:
            raise OSError("closed")
        got += data
    return got


async def open_pair(client: socket.socket, broker_port: int) -> socket.socket | None:
    try:
        header = await recv_exactly(client, 8)
        broker = await connect(broker_port)
        broker.send(header)
    except OSError:
        trio.lowlevel.notify_closing(client.fileno())
        client.close()
        return None
    return broker


async def serve(port: int, on_pair: object, broker_port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    print(f"relay listening on :{port}", flush=True)

    async def session(client: socket.socket) -> None:
        # Stands for the router's own work per connection (its two handshakes): CPU on
        # the trio thread, in a few slices with checkpoints between, as a handshake parks.
        for _ in range(4):
            burn(HANDSHAKE_WORK / 4)
            await trio.lowlevel.checkpoint()
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        broker = await open_pair(client, broker_port)
        if broker is not None:
            await on_pair(client, broker)  # type: ignore[operator]

    async with trio.open_nursery() as nursery:
        while True:
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener.fileno())
                continue
            nursery.start_soon(session, client)


# --- design "tasks": two trio tasks per session (the reference) ----------------------------


async def tasks_design(port: int, broker_port: int) -> None:
    async def pump(src: socket.socket, dst: socket.socket, scope: trio.CancelScope) -> None:
        scanner = FrameScanner(FRAME_MAX)
        reads = 0
        try:
            while True:
                try:
                    data = src.recv(READ_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(src.fileno())
                    continue
                if not data:
                    break
                reads += 1
                if reads % 16 == 0:
                    await trio.lowlevel.checkpoint()
                pieces, _ = scanner.scan(data)
                for piece in pieces:
                    view = memoryview(piece)
                    while view:
                        try:
                            view = view[dst.send(view) :]
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(dst.fileno())
        except (OSError, FrameError):
            pass
        scope.cancel()

    async def on_pair(client: socket.socket, broker: socket.socket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, broker, nursery.cancel_scope)
            await pump(broker, client, nursery.cancel_scope)
        for s in (client, broker):
            trio.lowlevel.notify_closing(s.fileno())
            s.close()

    await serve(port, on_pair, broker_port)


# --- design "epoll-task": one trio task, an edge-triggered epoll set -----------------------


async def epoll_task_design(port: int, broker_port: int) -> None:
    forwarder = Forwarder()
    epoll = forwarder.epoll

    async def engine() -> None:
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, events in epoll.poll(0):
                forwarder.handle(fd, events)
            while forwarder.again:  # full bursts: one more turn each, after a checkpoint
                await trio.lowlevel.checkpoint()
                for _ in range(len(forwarder.again)):
                    forwarder.pump(forwarder.again.popleft())

    async def on_pair(client: socket.socket, broker: socket.socket) -> None:
        forwarder.add(client, broker)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine)
        await serve(port, on_pair, broker_port)


# --- design "thread": a forwarding thread with a blocking epoll loop -----------------------


async def thread_design(port: int, broker_port: int) -> None:
    forwarder = Forwarder()
    epoll = forwarder.epoll
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    epoll.register(wake, IN)
    handed: collections.deque[tuple[socket.socket, socket.socket]] = collections.deque()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            # Drained bursts left over: do not block, give them their turn now.
            for fd, events in epoll.poll(0 if forwarder.again else -1):
                if fd == wake:
                    os.eventfd_read(wake)
                    while handed:
                        forwarder.add(*handed.popleft())
                else:
                    forwarder.handle(fd, events)
            for _ in range(len(forwarder.again)):
                forwarder.pump(forwarder.again.popleft())

    async def on_pair(client: socket.socket, broker: socket.socket) -> None:
        handed.append((client, broker))
        os.eventfd_write(wake, 1)

    thread = threading.Thread(target=loop, name="forwarding", daemon=True)
    thread.start()
    try:
        await serve(port, on_pair, broker_port)
    finally:
        stop.set()
        os.eventfd_write(wake, 1)
        thread.join()


DESIGNS = {"tasks": tasks_design, "epoll-task": epoll_task_design, "thread": thread_design}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("design", choices=sorted(DESIGNS))
    parser.add_argument("port", type=int)
    parser.add_argument("broker_port", type=int, nargs="?", default=5672)
    parser.add_argument("--switch-interval", type=float, default=0.0)
    parser.add_argument("--handshake-work", type=float, default=0.0, help="µs per connection")
    args = parser.parse_args()
    global HANDSHAKE_WORK
    HANDSHAKE_WORK = args.handshake_work / 1e6
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(DESIGNS[args.design], args.port, args.broker_port)


if __name__ == "__main__":
    main()
