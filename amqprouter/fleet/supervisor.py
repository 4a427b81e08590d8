"""The supervisor of ``--workers N``: N worker processes, one control socket, one HTTP port.

Each worker is this same program started again (``python -m amqprouter``, the
supervisor's own flags and environment, plus the hidden ``--fleet-worker``): a whole
router that binds the client ports with SO_REUSEPORT, so the kernel spreads new
connections over the workers, and forwards on its own. A separate interpreter per
worker, not a fork: a worker that has just been started runs the code installed now
(what a restart for new code needs), shares no trio state, locks or threads with the
supervisor, and is an ordinary router to talk to (``amqprouter_ctl`` on its socket).

The supervisor (docs/fleet.md):

* answers the control socket, sending each command line to the workers in the control
  grammar itself, and merging their replies: CONN as one listing, VHOST PRINT united,
  STAT LISTEN's streams interleaved (each line naming its worker), the configuration
  listings from one worker (they all hold the same), SESSION to the worker whose id it
  is (a worker's session ids start at its serial number << 32);
* applies a command that may change the configuration to one worker first, the
  *canary*: if it fails there, it is answered with that failure and no other worker
  is asked, so nothing changed anywhere; if it succeeds, every other worker applies it,
  and one that then fails (a local reason: a port it cannot bind) is replaced by a
  fresh worker started from the canary's configuration, so the fleet never stays split;
* keeps the fleet's configuration (CONFIG PRINT of the canary after every change) in
  its private directory: a worker started later applies it instead of the flags;
* replaces a worker that dies (logged), and recycles one whose RSS passes
  ``--worker-max-rss``: a new worker first, then the old one drains (SIGTERM);
* serves ``/metrics`` (every worker's, each sample labelled ``worker``), ``/livez``
  (its own loop), ``/readyz`` (ready while any worker is), ``/`` (the workers);
* with ``--config-store``, sends a configuration command to the canary alone, which
  writes it to the store, where the other workers take it;
* SIGTERM or EXIT GRACEFUL drains every worker and exits when they are gone; SIGINT or
  EXIT stops them at once; SIGHUP sends CONFIG RELOAD to every worker;
* SIGUSR2 restarts for new code: N new workers start (the code installed now, the
  fleet's configuration), then the old ones stop accepting and retire: their sessions
  go on until ``--shutdown-timeout``, and only then get a 320.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click
import structlog
import trio

from amqprouter.control import commands as c
from amqprouter.control.grammar import ParseError, help_text, parse
from amqprouter.control.socket_server import (
    ControlSocketError,
    Reply,
    serve_control,
)
from amqprouter.fleet import fleet_http, merge
from amqprouter.fleet.fanout import ask_all, stat_stream, wait_in_step
from amqprouter.fleet.link import Answer, ask
from amqprouter.fleet.role import SNAPSHOT, WorkerRole, worker_of_session
from amqprouter.fleet.worker import EXIT_WORKERS_FAILED, Worker, WorkerStartFailed
from amqprouter.observe.http import Response, serve_http
from amqprouter.observe.probes import LoopHeartbeat
from amqprouter.systemd_notify import READY, STOPPING, notify

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.fleet")

#: A worker that has not applied its start-up commands within this is given up on.
START_TIMEOUT: Final = 60.0
#: How often the ready file of a starting worker and the workers' RSS are looked at.
POLL_INTERVAL: Final = 0.05
RSS_INTERVAL: Final = 1.0
#: A worker that died is replaced after this, doubled while replacements keep dying
#: before they are ready, up to the maximum (a port another program took, a bad host).
RESPAWN_DELAY: Final = 0.5
MAX_RESPAWN_DELAY: Final = 30.0
#: Beyond the workers' own drain deadline, how long they get to exit before SIGKILL.
EXIT_GRACE: Final = 5.0

EXIT_LISTEN_FAILED: Final = 4
EXIT_CONTROL_SOCKET_IN_USE: Final = 5
EXIT_HTTP_FAILED: Final = 7

# Answered by one worker: every worker holds the same configuration.
_FROM_ONE = (
    c.ConfigPrint,
    c.BackendPrint,
    c.FarmPrint,
    c.MapPrint,
    c.DatacenterPrint,
    c.TlsPrint,
    c.TlsCiphersPrint,
    c.AuthPrint,
    c.LimitPrint,
)


class Supervisor:
    """N worker slots, each running one worker (and, while one is replaced, two)."""

    def __init__(
        self,
        workers: int,
        *,
        argv: Sequence[str],
        directory: Path,
        max_rss_bytes: int | None = None,
        shutdown_timeout: float = 10.0,
        shared_store: bool = False,
    ) -> None:
        self.count = workers
        self.argv = list(argv)
        self.directory = directory
        self.max_rss_bytes = max_rss_bytes
        self.shutdown_timeout = shutdown_timeout
        self.slots: list[Worker | None] = [None] * workers
        #: Every worker process not yet exited, whatever its state (starting included):
        #: what a stop must reach.
        self.processes: set[Worker] = set()
        self.retiring: list[Worker] = []
        self.restarts = 0
        #: --config-store: each worker is connected to it; a configuration command goes to
        #: one worker, which writes it there, and the others take it from the store.
        self.shared_store = shared_store
        #: Restarts (SIGUSR2) done: 0 for the workers started first.
        self.generation = 0
        self.stopping = False
        self._serials = 0
        self._lock = trio.Lock()  # one command (or replacement) at a time
        self._nursery: trio.Nursery | None = None
        self._respawn_delay = [RESPAWN_DELAY] * workers
        self.heartbeat: LoopHeartbeat | None = None  # made in ``run``: it reads trio's clock

    # -- the workers -----------------------------------------------------------------

    def live(self) -> list[Worker]:
        """The workers that serve and are asked commands, canary (lowest slot) first."""
        return [
            w
            for w in self.slots
            if w is not None and w.ready and not w.retiring and w.process.returncode is None
        ]

    async def _spawn(self, slot: int) -> Worker:
        """Start a worker in ``slot`` and wait until it has applied its start-up commands.

        Raises:
            WorkerStartFailed: it exited first, or took longer than START_TIMEOUT.
        """
        assert self._nursery is not None
        if self.stopping:
            raise WorkerStartFailed("the supervisor is stopping", EXIT_WORKERS_FAILED)
        self._serials += 1
        role = WorkerRole(self._serials, self.count, self.directory)
        env = dict(os.environ)
        # The supervisor is the service systemd knows; a worker's READY=1 is not.
        env.pop("NOTIFY_SOCKET", None)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "amqprouter", *self.argv, "--fleet-worker", role.spec()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # its "Listening..." lines: the supervisor's say it
            # Its own session: a terminal's Ctrl-C reaches the supervisor alone, which
            # decides what the workers do.
            start_new_session=True,
        )
        worker = Worker(role, slot, process, time.monotonic())
        self.processes.add(worker)
        self._nursery.start_soon(self._watch, worker)
        with trio.move_on_after(START_TIMEOUT):
            while process.returncode is None:
                with contextlib.suppress(OSError, ValueError):
                    worker.http_port = int(role.ready_file.read_text().strip())
                    worker.ready = True
                    log.info("worker started", worker=role.serial, slot=slot, pid=process.pid)
                    return worker
                await trio.sleep(POLL_INTERVAL)
            raise WorkerStartFailed(
                f"worker {role.serial} exited during its start (code {process.returncode})",
                process.returncode if process.returncode > 0 else EXIT_WORKERS_FAILED,
            )
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise WorkerStartFailed(
            f"worker {role.serial} did not start within {START_TIMEOUT:g} s", EXIT_WORKERS_FAILED
        )

    async def _spawn_all(self) -> list[Worker]:
        """A worker for every slot, started side by side; all or none (the ones that
        started are stopped again when one fails).

        Raises:
            WorkerStartFailed: the first failure.
        """
        started: dict[int, Worker] = {}
        failures: list[WorkerStartFailed] = []

        async def one(slot: int) -> None:
            try:
                started[slot] = await self._spawn(slot)
            except WorkerStartFailed as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for slot in range(self.count):
                nursery.start_soon(one, slot)
        if failures:
            for worker in started.values():
                worker.retiring = True
                self.retiring.append(worker)
                self._signal(worker, signal.SIGTERM)
            raise failures[0]
        return [started[slot] for slot in range(self.count)]

    async def restart(self) -> None:
        """SIGUSR2: new workers, started from the code installed now and the fleet's
        configuration, take over; the old ones stop accepting at once and retire (their
        sessions go on until ``--shutdown-timeout``, then get a 320)."""
        if self.stopping:
            return
        async with self._lock:  # no command half-applied across two generations
            log.info("restart: starting new workers", workers=self.count)
            try:
                fresh = await self._spawn_all()
            except WorkerStartFailed as exc:
                log.error(
                    "restart failed: the new workers did not start; the old ones keep serving",
                    error=str(exc),
                )
                return
            # Whoever holds a slot now retires, a replacement started meanwhile included.
            old = [w for w in self.slots if w is not None]
            for worker in old:
                worker.retiring = True
                self.retiring.append(worker)
            for worker in fresh:
                self.slots[worker.slot] = worker
            for worker in old:
                self._signal(worker, signal.SIGUSR2)
            self.generation += 1
            log.info(
                "restart: new workers serving; the old ones retire",
                new=[w.serial for w in fresh],
                retiring=[w.serial for w in old],
                drain_seconds=self.shutdown_timeout,
            )

    async def _watch(self, worker: Worker) -> None:
        """Wait for ``worker`` to exit; replace it when it was serving."""
        code = await worker.process.wait()
        self.processes.discard(worker)
        for path in (worker.role.ready_file, worker.role.control_socket):
            with contextlib.suppress(OSError):
                path.unlink()
        if worker in self.retiring:
            self.retiring.remove(worker)
            log.info("worker retired", worker=worker.serial, pid=worker.process.pid, code=code)
            return
        if self.slots[worker.slot] is not worker or not worker.ready:
            return  # still starting: _spawn reports it
        self.slots[worker.slot] = None
        if self.stopping:
            log.info("worker stopped", worker=worker.serial, code=code)
            return
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        log.error(
            "worker died; replacing it", worker=worker.serial, pid=worker.process.pid, how=how
        )
        self.restarts += 1
        await self._refill(worker.slot)

    async def _refill(self, slot: int) -> None:
        """Start a worker in the empty ``slot``, retrying with back-off until one starts."""
        while not self.stopping and self.slots[slot] is None:
            try:
                self.slots[slot] = await self._spawn(slot)
                self._respawn_delay[slot] = RESPAWN_DELAY
                return
            except WorkerStartFailed as exc:
                delay = self._respawn_delay[slot]
                log.error("worker failed to start; trying again", error=str(exc), in_seconds=delay)
                self._respawn_delay[slot] = min(delay * 2, MAX_RESPAWN_DELAY)
                await trio.sleep(delay)

    async def replace(self, worker: Worker, why: str) -> None:
        """A fresh worker in ``worker``'s slot, then ``worker`` drains (SIGTERM): it
        stops accepting and closes its sessions gracefully (320 to each client)."""
        if worker.retiring or self.stopping:
            return
        worker.retiring = True
        log.warning("replacing worker", worker=worker.serial, why=why)
        try:
            fresh = await self._spawn(worker.slot)
        except WorkerStartFailed as exc:
            # Better a worker with the problem than no worker: it keeps serving.
            worker.retiring = False
            log.error("replacement failed to start; keeping the worker", error=str(exc))
            return
        self.slots[worker.slot] = fresh
        self.retiring.append(worker)
        self.restarts += 1
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)

    async def _watch_memory(self) -> None:
        assert self.max_rss_bytes is not None and self._nursery is not None
        while True:
            await trio.sleep(RSS_INTERVAL)
            for worker in self.live():
                rss = worker.rss_bytes()
                if rss is not None and rss > self.max_rss_bytes:
                    why = f"RSS {rss >> 20} MB above --worker-max-rss {self.max_rss_bytes >> 20} MB"
                    self._nursery.start_soon(self.replace, worker, why)

    def write_snapshot(self, text: str) -> None:
        """The fleet's configuration, where a worker started from now on reads it."""
        temporary = self.directory / (SNAPSHOT + ".new")
        temporary.write_text(text)
        temporary.replace(self.directory / SNAPSHOT)

    async def refresh_snapshot(self) -> None:
        live = self.live()
        if live:
            answer = await ask(live[0].role.control_socket, "CONFIG PRINT")
            if answer.ok:
                self.write_snapshot(answer.text)

    # -- the control socket ------------------------------------------------------------

    async def handle(self, line: str, *, as_json: bool = False) -> Reply:
        command = parse(line)
        if isinstance(command, ParseError):
            return Reply(command.reply, ok=False)
        if isinstance(command, c.Help):
            verb = line.strip().split(" ", 1)[0].upper()
            return Reply(help_text(), ok=verb == "HELP")
        if isinstance(command, c.StatListen):
            live = self.live()
            if not live:
                return Reply("No worker is running (they are being started again).\n", ok=False)
            assert self._nursery is not None
            return Reply("", stream=stat_stream(self._nursery, line, live))
        if isinstance(command, c.Exit):
            return self._exit(command)
        async with self._lock:
            live = self.live()
            if not live:
                return Reply("No worker is running (they are being started again).\n", ok=False)
            answer = await self._dispatch(command, line, live, as_json)
        return Reply(answer.text, ok=answer.ok)

    async def _dispatch(
        self, command: c.Command, line: str, live: list[Worker], as_json: bool
    ) -> Answer:
        if isinstance(command, _FROM_ONE):
            return await ask(live[0].role.control_socket, line, as_json=as_json)
        if isinstance(command, c.SessionControl):
            serial = worker_of_session(command.session_id)
            holder = next((w for w in live if w.serial == serial), live[0])
            return await ask(holder.role.control_socket, line)
        if isinstance(command, c.Conn):
            answers = await ask_all(live, line, as_json)
            return merge.conn_lines([a for _w, a in answers], command.sort)
        if isinstance(command, c.VhostPrint):
            answers = await ask_all(live, line, as_json)
            return merge.united([a for _w, a in answers])
        # Anything that may change something: the canary first, then the others.
        canary = await ask(live[0].role.control_socket, line, as_json=as_json)
        if self.shared_store and isinstance(command, c.MutatingCommand):
            # The canary wrote it to the store (or refused: Redis away, a bad command);
            # every other worker takes it from there, as every other router does.
            if canary.ok:
                await wait_in_step(live)
                await self.refresh_snapshot()
            return canary
        if not canary.ok and isinstance(command, c.ConfigReload):
            # A reload re-opens the log files and re-reads the TLS files even when it
            # fails (no --config file, a bad line): every worker does that part.
            others = await ask_all(live[1:], line, as_json)
            return merge.agreed([(live[0].serial, canary)] + [(w.serial, a) for w, a in others])
        if not canary.ok:
            return canary
        answers = [(live[0], canary), *await ask_all(live[1:], line, as_json)]
        changes_configuration = isinstance(command, (c.MutatingCommand, c.ConfigReload))
        for worker, answer in answers:
            if not answer.ok and changes_configuration:
                assert self._nursery is not None
                why = f"it failed '{line.strip()}' that worker {live[0].serial} applied"
                self._nursery.start_soon(self.replace, worker, why)
        await self.refresh_snapshot()  # before a replacement starts: it reads it
        merged = merge.agreed([(w.serial, a) for w, a in answers])
        if not merged.ok and changes_configuration:
            note = "workers that failed it are being replaced with the fleet's configuration\n"
            return Answer(merged.text + note, ok=False)
        return merged

    def _exit(self, command: c.Exit) -> Reply:
        if command.graceful:
            seconds = self.shutdown_timeout if command.seconds is None else command.seconds
            return Reply("Exiting.\n", after=partial(self.request_stop, seconds))
        return Reply("Exiting.\n", after=partial(self.request_stop, None))

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self, drain_seconds: float | None) -> None:
        """Stop every worker: drain for ``drain_seconds`` (None: at once)."""
        if self._stop is None or self._stop.is_set():
            return
        self._drain_seconds = drain_seconds
        self._stop.set()

    _stop: trio.Event | None = None
    _drain_seconds: float | None = None

    def _stop_requested(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _stop_workers(self) -> None:
        """Drain every worker (``EXIT GRACEFUL`` on its socket, SIGTERM if it does not
        answer), or stop it at once (SIGINT); SIGKILL whatever outlives the deadline."""
        self.stopping = True
        workers = list(self.processes)
        drain = self._drain_seconds

        async def stop(worker: Worker) -> None:
            if drain is not None and worker.ready:
                answer = await ask(worker.role.control_socket, f"EXIT GRACEFUL {drain:g}")
                if answer.ok:
                    return
            self._signal(worker, signal.SIGTERM if drain is not None else signal.SIGINT)

        async with trio.open_nursery() as nursery:
            for worker in workers:
                if worker.process.returncode is None:
                    nursery.start_soon(stop, worker)
        with trio.move_on_after((drain or 0) + EXIT_GRACE):
            for worker in workers:
                await worker.process.wait()
        for worker in workers:
            if worker.process.returncode is None:
                log.warning("worker did not exit in time; killed", worker=worker.serial)
                self._signal(worker, signal.SIGKILL)
                await worker.process.wait()

    def stop_now(self) -> None:
        """SIGINT, or a second signal during a drain: every worker stops at once."""
        if self._stop is not None and self._stop.is_set():
            for worker in list(self.processes):
                self._signal(worker, signal.SIGINT)
        self.request_stop(None)

    @staticmethod
    def _signal(worker: Worker, number: signal.Signals) -> None:
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(number)

    # -- HTTP ----------------------------------------------------------------------------

    async def metrics(self) -> Response:
        live = self.live()
        return await fleet_http.metrics(live, restarts=self.restarts, generation=self.generation)

    async def readiness(self) -> Response:
        return await fleet_http.readiness(self.live())

    def status_page(self) -> Response:
        return fleet_http.status_page(
            self.processes,
            serving=len(self.live()),
            count=self.count,
            generation=self.generation,
            restarts=self.restarts,
        )

    def liveness(self) -> Response:
        why = None if self.heartbeat is None else self.heartbeat.stalled()
        return Response(200, "ok\n") if why is None else Response(503, why + "\n")

    # -- the whole --------------------------------------------------------------------------

    async def run(
        self,
        control_socket: Path,
        mode: int,
        *,
        http_port: int | None = None,
        http_host: str | None = None,
        task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Start the workers, serve until stopped; the exit code."""
        self._stop = trio.Event()
        with trio.open_signal_receiver(
            signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2
        ) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    for worker in await self._spawn_all():
                        self.slots[worker.slot] = worker
                except WorkerStartFailed as exc:
                    click.echo(f"Cannot start the workers: {exc}", err=True)
                    self._drain_seconds = None
                    await self._stop_workers()
                    nursery.cancel_scope.cancel()
                    return exc.code
                await self.refresh_snapshot()
                if http_port is not None:
                    self.heartbeat = LoopHeartbeat()
                    await nursery.start(self.heartbeat.run)
                    try:
                        await nursery.start(
                            partial(
                                serve_http,
                                http_port,
                                {"/livez": self.liveness, "/": self.status_page},
                                host=http_host,
                                async_routes={
                                    "/metrics": self.metrics,
                                    "/readyz": self.readiness,
                                    "/healthz": self.readiness,
                                },
                            )
                        )
                    except OSError as exc:
                        click.echo(
                            f"Cannot serve HTTP on port {http_port}: {exc.strerror or exc}",
                            err=True,
                        )
                        await self._stop_workers()
                        nursery.cancel_scope.cancel()
                        return EXIT_HTTP_FAILED
                try:
                    await nursery.start(
                        partial(serve_control, control_socket, self.handle, mode=mode)
                    )
                except (ControlSocketError, OSError) as exc:
                    click.echo(f"Cannot use the control socket: {exc}", err=True)
                    await self._stop_workers()
                    nursery.cancel_scope.cancel()
                    return EXIT_CONTROL_SOCKET_IN_USE
                if self.max_rss_bytes is not None:
                    nursery.start_soon(self._watch_memory)
                self._announce()
                notify(READY, f"STATUS={self.count} workers")
                task_status.started()

                async def on_signal() -> None:
                    async for number in signals:
                        if number == signal.SIGHUP:
                            nursery.start_soon(self._reload)
                        elif number == signal.SIGUSR2:
                            nursery.start_soon(self.restart)
                        elif number == signal.SIGTERM and not self._stop_requested():
                            self.request_stop(self.shutdown_timeout)
                        else:
                            self.stop_now()

                nursery.start_soon(on_signal)
                await self._stop.wait()
                notify(STOPPING)
                log.info("stopping the workers", drain_seconds=self._drain_seconds)
                await self._stop_workers()
                nursery.cancel_scope.cancel()
        return 0

    async def _reload(self) -> None:
        reply = await self.handle("CONFIG RELOAD")
        (log.info if reply.ok else log.warning)(
            "reload sent to the workers", reply=reply.text.strip().replace("\n", "; ")
        )

    def _announce(self) -> None:
        try:
            snapshot = (self.directory / SNAPSHOT).read_text()
        except OSError:
            return
        for line in snapshot.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "LISTEN" and words[2].isdigit():
                kind = "TLS" if words[1] == "START_SECURE" else "AMQP"
                click.echo(
                    f"Listening for {kind} clients on port {words[2]} (every address), "
                    f"{self.count} workers"
                )


def run_supervisor(
    workers: int,
    *,
    argv: Sequence[str],
    control_socket: Path,
    mode: int,
    http_port: int | None,
    http_host: str | None,
    max_rss_mb: int | None,
    shutdown_timeout: float,
    shared_store: bool = False,
) -> int:
    """Run a supervisor of ``workers`` workers until it stops; the exit code. Its private
    directory (worker sockets, the configuration snapshot) sits beside the control
    socket, which a service manager makes writable, and is removed at the end."""
    directory = Path(
        tempfile.mkdtemp(prefix=f".{control_socket.name}.workers-", dir=control_socket.parent)
    )
    try:
        supervisor = Supervisor(
            workers,
            argv=argv,
            directory=directory,
            max_rss_bytes=None if max_rss_mb is None else max_rss_mb << 20,
            shutdown_timeout=shutdown_timeout,
            shared_store=shared_store,
        )
        return trio.run(
            partial(supervisor.run, control_socket, mode, http_port=http_port, http_host=http_host)
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
