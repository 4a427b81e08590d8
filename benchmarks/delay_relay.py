#!/usr/bin/env python3
"""A broker at a distance: a TCP relay that delays every byte by a fixed time each way.

    .venv/bin/python benchmarks/delay_relay.py LISTEN_PORT DEST_PORT [--delay-ms 0.5]

This kernel has no netem, and on loopback the broker answers in microseconds, so a
routed handshake never pays the round trips a real network charges. bench.py's
``distance`` workload puts this relay in front of the broker and connects every side
(direct, HAProxy, the router with and without primed connections) through it.

Each direction is a reader and a writer task: the reader stamps every read with the
time it is due (now + delay) and queues it; the writer sends each read when it is due,
in order. So the delay is a latency, not a rate limit: reads in flight overlap, as
packets on a link do. An end of stream or a reset is passed on after the same delay.

Timers: trio's own wake-ups come from ``epoll_wait``, whose timeout is in whole
milliseconds (rounded up), which would turn 0.5 ms into 1-1.5 ms. The writer waits on a
``timerfd`` instead (nanosecond deadlines, through ctypes: Python 3.11 has no
``os.timerfd_create``), so the delay is what was asked to within tens of microseconds.
Linux only, like the rest of the benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import socket
import sys
import time

import trio

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1
READ_SIZE = 1 << 18


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Itimerspec),
    ctypes.POINTER(_Itimerspec),
]


class Timer:
    """A timerfd on CLOCK_MONOTONIC (``time.monotonic``'s clock): ``wait_until`` parks the
    task on it until a deadline, to the nanosecond."""

    def __init__(self) -> None:
        self.fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

    async def wait_until(self, deadline: float) -> None:
        if deadline <= time.monotonic():
            return
        fraction, whole = math.modf(deadline)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(int(whole), int(fraction * 1e9)))
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")
        await trio.lowlevel.wait_readable(self.fd)
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


async def _read(
    src: trio.SocketStream, queue: trio.MemorySendChannel[tuple[float, bytes]], delay: float
) -> None:
    try:
        while True:
            try:
                data = await src.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            await queue.send((time.monotonic() + delay, data))
            if not data:
                return
    finally:
        await queue.aclose()


async def _write(
    dst: trio.SocketStream,
    queue: trio.MemoryReceiveChannel[tuple[float, bytes]],
    done: trio.CancelScope,
) -> None:
    timer = Timer()
    try:
        async for due, data in queue:
            await timer.wait_until(due)
            if not data:
                break
            await dst.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        done.cancel()  # the far side is gone: so is the other direction
    finally:
        timer.close()


async def relay(listen_port: int, dest_port: int, delay: float) -> None:
    async def handle(client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", dest_port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                for src, dst in ((client, upstream), (upstream, client)):
                    send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
                    nursery.start_soon(_read, src, send, delay)
                    nursery.start_soon(_write, dst, receive, nursery.cancel_scope)

    listeners = await trio.open_tcp_listeners(listen_port, host="127.0.0.1")
    for listener in listeners:
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    print(f"delay relay :{listen_port} -> :{dest_port}, {delay * 1e3:g} ms each way", flush=True)
    await trio.serve_listeners(handle, listeners)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("listen_port", type=int)
    parser.add_argument("dest_port", type=int)
    parser.add_argument("--delay-ms", type=float, default=0.5, help="each way (0.5)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(relay, args.listen_port, args.dest_port, args.delay_ms / 1e3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
