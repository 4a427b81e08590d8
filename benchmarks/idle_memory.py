#!/usr/bin/env python3
"""Memory per idle forwarding session, and what holds it.

Run from the repository root (no broker needed; a few seconds):

    .venv/bin/python benchmarks/idle_memory.py [--sessions 2000] [--forwarding engine|tasks]
                                               [--trace] [--top 25]

A router (an in-process ``Server``, as the command builds it, in a child process)
forwards ``--sessions`` idle sessions to a fake broker in this process (stats_cost.py's:
it answers the handshake, then stays silent). The child measures itself twice, after
a warm-up of 50 sessions opened and closed, and once every session is open and has
settled: its RSS growth per session and, with ``--trace``, the Python heap per session
(tracemalloc, one frame) and the lines that allocated it (``--top``). With
``--trace-frames N`` the top entries group by N-frame tracebacks instead.

docs/benchmark.md quotes the figures ("Idle sessions").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats_cost import CONCURRENCY, TIMEOUT, fake_broker_session, open_session

from amqprouter.observe import logging as router_logging
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.session import SessionSettings

REPO = Path(__file__).resolve().parent.parent
WARM_UP = 50


# --- the child: the router, measuring itself on request -------------------------------


async def serve(broker_port: int, forwarding: str, trace: int, top: int) -> None:
    router_logging.configure()  # as the command does without --log-directory: stderr
    routing = RoutingTable.single(Backend("fake", "dc", "127.0.0.1", broker_port))
    server = Server(SessionSettings(), routing, forwarding=forwarding)  # type: ignore[arg-type]
    process = psutil.Process()
    stdin = trio.lowlevel.FdStream(os.dup(0))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        port = await server.listen(0, "127.0.0.1")
        print(port, flush=True)
        base_rss = 0
        base: tracemalloc.Snapshot | None = None
        pending = b""
        while True:
            while b"\n" not in pending:
                data = await stdin.receive_some(1024)
                if not data:
                    nursery.cancel_scope.cancel()
                    return
                pending += data
            line, pending = pending.split(b"\n", 1)
            word = line.decode().strip()
            if word == "mark":
                base_rss = process.memory_info().rss
                if trace:
                    base = tracemalloc.take_snapshot()
                print("marked", len(server.sessions), flush=True)
            elif word == "measure":
                count = len(server.sessions)
                rss = process.memory_info().rss
                lines = [f"sessions {count}"]
                lines.append(f"rss KiB/session {(rss - base_rss) / count / 1024:.2f}")
                if trace and base is not None:
                    now = tracemalloc.take_snapshot()
                    group = "traceback" if trace > 1 else "lineno"
                    stats = now.compare_to(base, group)
                    total = sum(s.size_diff for s in stats)
                    lines.append(f"heap bytes/session {total / count:.0f}")
                    for stat in stats[:top]:
                        where = stat.traceback.format()
                        lines.append(
                            f"{stat.size_diff / count:8.1f} B {stat.count_diff / count:6.2f} "
                            f"blocks  {' <- '.join(w.strip() for w in where[::2][-trace:])}"
                        )
                print("\n".join(lines), flush=True)
                print("end", flush=True)


# --- the parent: the fake broker and the clients ---------------------------------------


async def measure(
    sessions: int, forwarding: str, trace: int, top: int, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, fake_broker_session, 0)
        broker_port = listeners[0].socket.getsockname()[1]
        command = [sys.executable, __file__, "--serve", str(broker_port)]
        command += ["--forwarding", forwarding, "--trace-frames", str(trace), "--top", str(top)]
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
        )
        assert process.stdin is not None and process.stdout is not None
        out = process.stdout
        buffer = b""

        async def line() -> str:
            nonlocal buffer
            with trio.fail_after(TIMEOUT):
                while b"\n" not in buffer:
                    data = await out.receive_some(65536)
                    if not data:
                        raise RuntimeError("the router exited")
                    buffer += data
            text, buffer = buffer.split(b"\n", 1)
            return text.decode()

        port = int(await line())
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def open_many(count: int, into: list[trio.SocketStream]) -> None:
            async def one() -> None:
                async with limiter:
                    await open_session(port, into)

            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as opening:
                    for _ in range(count):
                        opening.start_soon(one)

        warm: list[trio.SocketStream] = []
        await open_many(WARM_UP, warm)
        for stream in warm:
            await stream.aclose()
        await trio.sleep(1.0)
        await process.stdin.send_all(b"mark\n")
        print(await line())
        streams: list[trio.SocketStream] = []
        started = time.monotonic()
        await open_many(sessions, streams)
        print(f"{sessions} sessions opened in {time.monotonic() - started:.1f} s")
        await trio.sleep(1.5)  # settled: buffers, lazily started tasks
        await process.stdin.send_all(b"measure\n")
        while (text := await line()) != "end":
            print(text)
        for stream in streams:
            await stream.aclose()
        await process.stdin.aclose()
        with trio.fail_after(TIMEOUT):
            await process.wait()
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--forwarding", choices=("engine", "tasks"), default="engine")
    parser.add_argument("--trace", action="store_true", help="tracemalloc (one frame)")
    parser.add_argument("--trace-frames", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    trace = args.trace_frames or (1 if args.trace else 0)
    if args.serve is not None:
        if trace:
            tracemalloc.start(trace)
        trio.run(serve, args.serve, args.forwarding, trace, args.top)
        return
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(REPO))
    print(f"forwarding {args.forwarding}, code from {env['PYTHONPATH']}")
    trio.run(measure, args.sessions, args.forwarding, trace, args.top, env)


if __name__ == "__main__":
    main()
