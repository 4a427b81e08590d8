"""structlog set-up: the console (stderr) and the log files, each at its own verbosity.

Both sinks get the same lines, one per event: key=value (``kv``, the default) or one
JSON object (``json``). Each sink has a verbosity on amqpprox's scale (0 FATAL ..
5 TRACE) that ``LOG CONSOLE n`` / ``LOG FILE n`` change at runtime.

Cost: loggers are structlog's filtering bound loggers at the lower of the two levels,
so a level neither sink wants is one method call that returns ``None``. Changing a
level swaps the methods of the one wrapper class in place, so loggers already bound
(every session's ``self.log``) follow at once. An enabled line is rendered once, on
the caller's thread, and handed to each sink's bounded queue (``observe.log_queue``);
the writes happen on writer threads, never on the trio thread.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import structlog

from amqprouter.observe.log_files import (
    DEFAULT_MAX_DIRECTORY_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    Clock,
    RotatingFileSink,
    utc_now,
)
from amqprouter.observe.log_queue import (
    DEFAULT_MAX_QUEUED,
    STOP_TIMEOUT,
    QueuedSink,
    StreamSink,
)

#: amqpprox's scale: 0 FATAL, 1 ERROR, 2 WARN, 3 INFO, 4 DEBUG, 5 TRACE.
VERBOSITY_LEVELS: Final = (
    logging.CRITICAL,
    logging.ERROR,
    logging.WARNING,
    logging.INFO,
    logging.DEBUG,
    logging.DEBUG - 5,
)
MAX_VERBOSITY: Final = len(VERBOSITY_LEVELS) - 1
DEFAULT_CONSOLE_VERBOSITY: Final = 0
DEFAULT_FILE_VERBOSITY: Final = 3

Format = Literal["kv", "json"]
FORMATS: Final[tuple[Format, ...]] = ("kv", "json")
#: kv lines start with these keys, in this order (when present); the rest follow.
KEY_ORDER: Final = (
    "timestamp",
    "level",
    "event",
    "session",
    "vhost",
    "client",
    "backend",
    "connection_name",
)
#: A control reply longer than this is cut in the audit line (CONN of many sessions).
AUDIT_REPLY_LIMIT: Final = 2000
DROP_NOTICE_EVENT: Final = "log lines dropped"

_RENDERERS: Final[dict[Format, structlog.typing.Processor]] = {
    "kv": structlog.processors.KeyValueRenderer(key_order=list(KEY_ORDER), drop_missing=True),
    "json": structlog.processors.JSONRenderer(),
}


class RouterBoundLogger(structlog.BoundLoggerBase):
    """The wrapper class of every logger; ``_filter_at`` fills in its level methods."""


def _filter_at(level: int) -> None:
    # structlog's own filtering class for this level lends us its methods (a disabled
    # level is its `_nop`). structlog has nothing below DEBUG: TRACE enables everything.
    if level < logging.DEBUG:
        level = logging.NOTSET
    template = structlog.make_filtering_bound_logger(level)
    for name, method in vars(template).items():
        if not name.startswith("_"):
            setattr(RouterBoundLogger, name, method)


class _Sinks:
    """The logger at the end of structlog's chain: a rendered line to every sink."""

    def __init__(self) -> None:
        self.console: QueuedSink | None = None
        self.file: QueuedSink | None = None
        self.format: Format = "kv"
        self.all: tuple[QueuedSink, ...] = ()

    def emit(self, level: int, line: str) -> None:
        for sink in self.all:
            sink.emit(level, line)

    # The method names structlog's filtering loggers proxy to (exception is error).
    def critical(self, line: str) -> None:
        self.emit(logging.CRITICAL, line)

    def error(self, line: str) -> None:
        self.emit(logging.ERROR, line)

    def warning(self, line: str) -> None:
        self.emit(logging.WARNING, line)

    def info(self, line: str) -> None:
        self.emit(logging.INFO, line)

    def debug(self, line: str) -> None:
        self.emit(logging.DEBUG, line)


_SINKS: Final = _Sinks()


def _render(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> str:
    if _SINKS.format == "json":
        # The same keys first as in kv lines, so both read alike.
        first = {key: event_dict.pop(key) for key in KEY_ORDER if key in event_dict}
        event_dict = first | dict(event_dict)
    return str(_RENDERERS[_SINKS.format](_logger, _method, event_dict))


#: Fields every line of this process carries: a worker of ``--workers`` adds its
#: serial number (``worker=3``), so the supervisor's log tells its workers apart.
_PROCESS_FIELDS: Final[dict[str, Any]] = {}


def tag_lines(**fields: Any) -> None:
    """Add ``fields`` to every line logged from now on."""
    _PROCESS_FIELDS.update(fields)


def _add_process_fields(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in _PROCESS_FIELDS.items():
        event_dict.setdefault(key, value)
    return event_dict


_PROCESSORS: Final[list[structlog.typing.Processor]] = [
    _add_process_fields,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    _render,
]


def render(method: str, event: str, **values: Any) -> str:
    """One line as a logger would write it (``method`` is a level name: ``warning``)."""
    event_dict: Any = {"event": event, **values}
    for processor in _PROCESSORS:
        event_dict = processor(None, method, event_dict)
    return str(event_dict)


def _drop_notice(dropped: int) -> str:
    return render("warning", DROP_NOTICE_EVENT, dropped=dropped)


def configure(
    verbosity: int = DEFAULT_CONSOLE_VERBOSITY,
    *,
    log_format: Format = "kv",
    directory: Path | None = None,
    file_verbosity: int = DEFAULT_FILE_VERBOSITY,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_directory_bytes: int = DEFAULT_MAX_DIRECTORY_BYTES,
    clock: Clock = utc_now,
    console: TextIO | None = None,
    max_queued: int = DEFAULT_MAX_QUEUED,
) -> None:
    """Log to ``console`` (stderr) at ``verbosity`` and, given a ``directory``, to files.

    Raises ``OSError`` when the directory cannot be created or its first file opened;
    nothing is changed then. Sinks of an earlier call are flushed and replaced.
    """
    file = None
    if directory is not None:
        file_sink = RotatingFileSink(
            directory,
            max_file_bytes=max_file_bytes,
            max_directory_bytes=max_directory_bytes,
            clock=clock,
        )
        file = QueuedSink(
            file_sink,
            VERBOSITY_LEVELS[file_verbosity],
            drop_notice=_drop_notice,
            max_queued=max_queued,
            name="log-file-writer",
        )
    shutdown()
    _SINKS.format = log_format
    _SINKS.console = QueuedSink(
        StreamSink(console),
        VERBOSITY_LEVELS[verbosity],
        drop_notice=_drop_notice,
        max_queued=max_queued,
        name="log-console-writer",
    )
    _SINKS.file = file
    _SINKS.all = (_SINKS.console,) if file is None else (_SINKS.console, file)
    _update_filter()
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=RouterBoundLogger,
        # Every logger writes through the one _Sinks, whatever sinks it holds later.
        logger_factory=lambda *_args: _SINKS,
        cache_logger_on_first_use=True,
    )


def set_console_verbosity(verbosity: int) -> None:
    """``LOG CONSOLE n``."""
    if _SINKS.console is not None:
        _SINKS.console.level = VERBOSITY_LEVELS[verbosity]
        _update_filter()


def has_files() -> bool:
    """Whether log files are written (--log-directory): ``LOG FILE n`` needs them."""
    return _SINKS.file is not None


def set_file_verbosity(verbosity: int) -> None:
    """``LOG FILE n`` (the controller refuses it without a log directory)."""
    if _SINKS.file is not None:
        _SINKS.file.level = VERBOSITY_LEVELS[verbosity]
        _update_filter()


def reopen_files() -> Path | None:
    """Re-open the log file under its name (``RotatingFileSink.reopen``); the file, or
    None without a log directory. Blocking file I/O: call it off the trio thread.

    Raises:
        OSError: the file cannot be opened again (the old one is still written).
    """
    file = _SINKS.file
    if file is None or not isinstance(file.sink, RotatingFileSink):
        return None
    file.sink.reopen()
    return file.sink.path


def shutdown(timeout: float = STOP_TIMEOUT) -> None:
    """Write what is queued and stop the writers (at exit: the last lines reach disk)."""
    sinks, _SINKS.all = _SINKS.all, ()
    _SINKS.console = _SINKS.file = None
    _SINKS.format = "kv"
    # The files first: a console nobody reads must not keep their last lines waiting.
    for sink in reversed(sinks):
        sink.close(timeout)


def _update_filter() -> None:
    _filter_at(min(sink.level for sink in _SINKS.all))


def truncate(text: str, limit: int = AUDIT_REPLY_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


_filter_at(VERBOSITY_LEVELS[DEFAULT_CONSOLE_VERBOSITY])
