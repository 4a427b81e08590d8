"""The supervisor's HTTP answers: /metrics of every worker, /readyz, and ``/`` (the
workers, for people). Each worker's own page, with its sessions, is on its loopback port."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence

from amqprouter.fleet import merge
from amqprouter.fleet.link import http_get
from amqprouter.fleet.worker import Worker
from amqprouter.observe.http import Response
from amqprouter.observe.prometheus import CONTENT_TYPE
from amqprouter.observe.status_page import CONTENT_TYPE as STATUS_CONTENT_TYPE


async def metrics(live: Sequence[Worker], *, restarts: int, generation: int) -> Response:
    """Every serving worker's /metrics, each sample labelled ``worker``, and the fleet's."""
    pages = []
    for worker in live:
        status, body = await http_get(worker.http_port, "/metrics")
        if status == 200:
            pages.append((worker.serial, body))
    own = (
        "# HELP amqprouter_workers Worker processes serving (--workers).\n"
        "# TYPE amqprouter_workers gauge\n"
        f"amqprouter_workers {len(live)}\n"
        "# HELP amqprouter_worker_restarts_total Workers replaced: died, recycled or "
        "failed a command.\n"
        "# TYPE amqprouter_worker_restarts_total counter\n"
        f"amqprouter_worker_restarts_total {restarts}\n"
        "# HELP amqprouter_worker_generation Restarts for new code (SIGUSR2) done.\n"
        "# TYPE amqprouter_worker_generation gauge\n"
        f"amqprouter_worker_generation {generation}\n"
    )
    return Response(200, merge.metrics(pages, own), CONTENT_TYPE)


async def readiness(live: Sequence[Worker]) -> Response:
    """200 while any worker is ready; the body says each worker's answer."""
    lines = []
    ready = 0
    for worker in live:
        status, body = await http_get(worker.http_port, "/readyz")
        ready += status == 200
        lines.append(f"worker {worker.serial}: {body.strip() or status}")
    if not lines:
        lines.append("no worker running")
    return Response(200 if ready else 503, "".join(line + "\n" for line in lines))


def status_page(
    processes: Iterable[Worker], *, serving: int, count: int, generation: int, restarts: int
) -> Response:
    """``/``: every worker process (starting, serving or retiring), for people."""
    now = time.monotonic()
    rows = []
    for worker in sorted(processes, key=lambda w: w.serial):
        rss = worker.rss_bytes()
        state = "retiring" if worker.retiring else "serving" if worker.ready else "starting"
        cells = [
            str(worker.serial),
            str(worker.slot),
            str(worker.process.pid),
            state,
            "?" if rss is None else f"{rss / (1 << 20):.0f}",
            f"{now - worker.started:.0f}",
            f"127.0.0.1:{worker.http_port}" if worker.http_port else "",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    heads = ["worker", "slot", "pid", "state", "RSS MB", "up s", "its own page"]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>amqprouter workers</title></head>"
        f"<body><h1>amqprouter: {serving} of {count} workers serving</h1>"
        f"<p>restarts for new code: {generation}; workers replaced: "
        f"{restarts}</p><table border='1'><tr>"
        + "".join(f"<th>{h}</th>" for h in heads)
        + "</tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return Response(200, page, STATUS_CONTENT_TYPE)
