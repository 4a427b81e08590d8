"""SESSION TRACE, SESSION CAPTURE and VHOST TRACE: seeing inside sessions, on demand.

Only through the control socket (there is no flag, no configuration line: CONFIG
PRINT never writes one, and a restart forgets them). A trace without ``TO file`` is
the reply itself, streamed as STAT LISTEN's is until the control client leaves or
the trace stops; with ``TO file`` it is written by a task of the server, and the
reply says where. Files are created new, 0600, never through a symlink
(``session.trace.open_new_file``). ``BODIES n`` is warned of in the reply and the log:
message contents then reach the trace. With ``amqprouter_ctl --json`` each reply
and each trace line is one JSON object.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Final

import structlog

from amqprouter.control import commands as c
from amqprouter.control.socket_server import Reply
from amqprouter.net.sockets import endpoint
from amqprouter.server import Server
from amqprouter.session import Session, State, capture, trace

log = structlog.get_logger("amqprouter.control")

#: The commands ``execute`` runs.
TRACE_COMMANDS: Final = (c.SessionTrace, c.SessionCapture, c.VhostTrace)
TraceCommand = c.SessionTrace | c.SessionCapture | c.VhostTrace
_NOT_FOUND: Final = "Session not found.\n"


def _pooled(session: Session, verb: str) -> Reply:
    return Reply(
        f"Session {session.id} is pooled: its frames share a broker connection with other "
        f"clients' and {verb} does not follow them yet (docs/pooling.md).\n",
        ok=False,
    )


def execute(server: Server, command: TraceCommand, *, as_json: bool = False) -> Reply:
    if isinstance(command, c.SessionCapture):
        return _capture(server, command, as_json)
    if isinstance(command, c.SessionTrace):
        session = server.sessions.get(command.session_id)
        if session is None:
            return Reply(_NOT_FOUND, ok=False)
        label = f"session {session.id}"
        if not command.on:
            traces = [w for w in session.watchers if isinstance(w, trace.Trace)]
            stopped = _stop([t for t in traces if t.stopped is None])
            return _done(f"Stopped {stopped} trace(s) of {label}.\n", as_json, stopped)
        if session.state in (State.CLOSING, State.CLOSED):
            return Reply(f"Session {session.id} is ending; there is nothing to trace.\n", ok=False)
        if session.pool_link is not None:
            return _pooled(session, "TRACE")
        return _start(server, label, command.options, as_json, [session], vhost=None)
    label = f"vhost {command.vhost}"
    if not command.on:
        traces = server.vhost_traces.pop(command.vhost, [])
        stopped = _stop([t for t in traces if t.stopped is None])
        return _done(f"Stopped {stopped} trace(s) of {label}.\n", as_json, stopped)
    sessions = server.vhost_sessions(command.vhost)
    return _start(server, label, command.options, as_json, sessions, vhost=command.vhost)


def _start(
    server: Server,
    label: str,
    options: c.TraceOptions,
    as_json: bool,
    sessions: list[Session],
    *,
    vhost: str | None,
) -> Reply:
    fd = None
    if options.path is not None:
        try:
            fd = trace.open_new_file(options.path)
        except OSError as exc:
            return Reply(f"Cannot trace {label}: {exc}\n", ok=False)
    trace_options = trace.TraceOptions(
        rate=options.rate if options.rate is not None else trace.DEFAULT_RATE,
        seconds=options.seconds if options.seconds is not None else trace.DEFAULT_SECONDS,
        bodies=options.bodies,
        as_json=as_json,
    )
    # A session's trace ends with it; a vhost's goes on for the sessions still to come.
    running = trace.Trace(label, trace_options, path=options.path, ends_with_session=vhost is None)
    if vhost is not None:
        # traces_on forgets the vhost's stopped traces, so the list never only grows.
        server.vhost_traces[vhost] = [*server.traces_on(vhost), running]
    for session in sessions:
        session.watch_frames(running)
    log.info("trace started", trace=label, path=options.path, seconds=trace_options.seconds)
    if options.bodies:
        log.warning("trace shows message bodies", trace=label, bodies=options.bodies)
    if fd is None:
        return Reply(running.head(), stream=running.stream())
    server.spawn(partial(running.write_to, fd))
    return Reply(running.head())


def _stop(traces: list[trace.Trace]) -> int:
    for each in traces:
        each.stop("turned off")
    return len(traces)


def _done(text: str, as_json: bool, stopped: int) -> Reply:
    return Reply(_json({"event": "traceOff", "stopped": stopped}) if as_json else text)


def _capture(server: Server, command: c.SessionCapture, as_json: bool) -> Reply:
    session = server.sessions.get(command.session_id)
    if session is None:
        return Reply(_NOT_FOUND, ok=False)
    if session.pool_link is not None:
        return _pooled(session, "CAPTURE")
    if session.state is not State.OPEN:
        return Reply(
            f"Session {session.id} is not forwarding ({session.state.value}); CAPTURE needs "
            "an open session.\n",
            ok=False,
        )
    try:
        fd = trace.open_new_file(command.path)
    except OSError as exc:
        return Reply(f"Cannot capture session {session.id}: {exc}\n", ok=False)
    seconds = command.seconds if command.seconds is not None else capture.DEFAULT_SECONDS
    running = capture.Capture(session, fd, command.path, seconds)
    session.watch_frames(running)
    server.spawn(running.run)
    client, broker = endpoint(session.client_address), endpoint(session.broker_address)
    log.info("capture started", session=session.id, path=command.path, seconds=seconds)
    if as_json:
        return Reply(
            _json(
                {
                    "event": "captureStarted",
                    "session": session.id,
                    "path": command.path,
                    "seconds": seconds,
                    "client": client,
                    "broker": broker,
                }
            )
        )
    port = session.broker_address[1]
    return Reply(
        f"Capturing session {session.id} ({client} to {broker}) to {command.path} for at most "
        f"{seconds:g}s; read it with: tshark -r {command.path} -d tcp.port=={port},amqp\n"
    )


def _json(value: dict[str, object]) -> str:
    return json.dumps(value).replace("\x7f", "\\u007f") + "\n"
