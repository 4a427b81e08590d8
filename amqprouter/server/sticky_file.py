"""``--sticky-file PATH``: the sticky clients (``routing.sticky``) kept across restarts.

The file is JSON: ``{"version": 1, "entries": [{"farm", "client", "backend", "expires",
"timeout"}, ...]}``, ``expires`` in wall-clock seconds. It is only ever replaced whole
and atomically: the new content goes to a temporary file in the same directory, which
is flushed and fsync'ed, then renamed over the old one, and the directory is fsync'ed
so the rename itself survives a power cut. A crash (SIGKILL included) at any moment
leaves the old file or the new one, never a mix; a leftover temporary file is ignored
(and replaced by the next write).

``keep_saved`` runs beside the server: every ``SAVE_INTERVAL`` it writes the table if it
changed (``StickyTable.changes``), in a worker thread (a large table's JSON and the
fsyncs must not stall sessions), and once more when cancelled (shutdown). Reading at
start (``load``) happens before anything is served.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog
import trio

from amqprouter.routing.sticky import StickyTable

log = structlog.get_logger("amqprouter.sticky")

#: Seconds between checks for changes (a write happens only after one): a restart
#: loses at most this much of the clients' stickiness.
SAVE_INTERVAL: Final = 1.0
#: The final write at shutdown may take this long at most.
FINAL_SAVE_TIMEOUT: Final = 5.0
FORMAT_VERSION: Final = 1


class StickyFileError(Exception):
    """The file cannot be read, or is not a sticky file."""


def load(path: Path, table: StickyTable) -> int:
    """Add the unexpired entries of ``path`` to ``table``; how many (0: no file yet).

    Raises:
        StickyFileError: unreadable, not JSON, or not this format.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StickyFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a version {FORMAT_VERSION} sticky file")
        entries = document["entries"]
        if not isinstance(entries, list):
            raise ValueError("'entries' is not a list")
        return table.restore(entries)
    except (ValueError, KeyError) as exc:
        raise StickyFileError(f"{path} is not a sticky file: {exc}") from exc


def write(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records``, atomically (see the module docstring)."""
    data = json.dumps({"version": FORMAT_VERSION, "entries": records}).encode("utf-8")
    directory = path.parent
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


async def keep_saved(
    path: Path, table: Callable[[], StickyTable], interval: float = SAVE_INTERVAL
) -> None:
    """Write the sticky table to ``path`` whenever it changed, until cancelled; then once
    more (bounded by ``FINAL_SAVE_TIMEOUT``)."""
    saved = table().changes
    try:
        while True:
            await trio.sleep(interval)
            saved = await _save_if_changed(path, table(), saved)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(FINAL_SAVE_TIMEOUT):
            await _save_if_changed(path, table(), saved)


async def _save_if_changed(path: Path, sticky: StickyTable, saved: int) -> int:
    sticky.sweep()
    changes = sticky.changes
    if changes == saved:
        return saved
    records = sticky.export()  # in this thread: the table is only ever used in it
    try:
        await trio.to_thread.run_sync(write, path, records)
    except OSError as exc:
        # Kept trying at the next change; the router keeps routing either way.
        log.warning("cannot write the sticky file", path=str(path), error=exc.strerror or str(exc))
        return saved
    return changes
