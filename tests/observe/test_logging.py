"""Both sinks through structlog: per-sink levels, runtime changes, formats, cost."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from amqprouter.control.controller import Controller
from amqprouter.observe import logging as router_logging
from amqprouter.observe.log_files import our_files
from amqprouter.observe.logging import RouterBoundLogger
from amqprouter.server import Server
from amqprouter.session import SessionSettings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    router_logging.shutdown()
    structlog.reset_defaults()


def _file_lines(directory: Path) -> list[str]:
    """Every line of our files, after the writers stopped (so all is on disk)."""
    router_logging.shutdown()
    return [line for file in our_files(directory) for line in file.path.read_text().splitlines()]


def test_a_debug_file_with_a_fatal_console(tmp_path: Path) -> None:
    console = io.StringIO()
    router_logging.configure(0, directory=tmp_path, file_verbosity=4, console=console)
    log = structlog.get_logger("test").bind(session=7)
    log.debug("detail", n=1)
    log.info("news")
    log.critical("the end")
    lines = _file_lines(tmp_path)
    assert [line.split(" event=")[1].split(" ")[0] for line in lines] == [
        "'detail'",
        "'news'",
        "'the",
    ]
    assert lines[0].endswith("level='debug' event='detail' session=7 n=1")
    assert lines[0].startswith("timestamp='")
    assert console.getvalue().splitlines() == [lines[2]]


def test_log_file_at_runtime_reaches_loggers_bound_before(tmp_path: Path) -> None:
    router_logging.configure(0, directory=tmp_path, console=io.StringIO())
    bound = structlog.get_logger("test").bind(session=1)  # like a session's self.log
    bound.debug("hidden at INFO")
    router_logging.set_file_verbosity(4)
    bound.debug("shown at DEBUG")
    router_logging.set_file_verbosity(1)
    bound.warning("hidden at ERROR")
    bound.error("shown at ERROR")
    events = [line.split("event=")[1] for line in _file_lines(tmp_path)]
    assert events == ["'shown at DEBUG' session=1", "'shown at ERROR' session=1"]


async def test_log_commands_set_the_sinks(tmp_path: Path) -> None:
    console = io.StringIO()
    router_logging.configure(0, directory=tmp_path, console=console)
    controller = Controller(Server(SessionSettings()), request_exit=lambda: None)
    log = structlog.get_logger("test")
    assert (await controller.handle("LOG FILE 4")).ok
    log.debug("to the file")
    assert (await controller.handle("LOG CONSOLE 3")).ok
    assert (await controller.handle("LOG FILE 0")).ok
    log.info("to the console")
    assert (await controller.handle("LOG FILE 9")).text == "Verbosity must be between 0 and 5.\n"
    assert controller.config_text().startswith("LOG CONSOLE 3\nLOG FILE 0\n")
    (file_line,) = _file_lines(tmp_path)
    assert "event='to the file'" in file_line
    (console_line,) = console.getvalue().splitlines()
    assert "event='to the console'" in console_line


def test_disabled_levels_cost_what_structlog_filtering_costs(tmp_path: Path) -> None:
    router_logging.configure(0, directory=tmp_path, console=io.StringIO())
    at_info = structlog.make_filtering_bound_logger(logging.INFO)
    # The filtering level is the lower of the two sinks': INFO (the file's default).
    assert vars(RouterBoundLogger)["debug"] is at_info.debug  # structlog's `return None`
    assert vars(RouterBoundLogger)["info"] is not at_info.debug
    router_logging.set_file_verbosity(0)
    at_critical = structlog.make_filtering_bound_logger(logging.CRITICAL)
    assert vars(RouterBoundLogger)["error"] is at_critical.error


def test_trace_enables_every_level() -> None:
    console = io.StringIO()
    router_logging.configure(5, console=console)  # crashed before (no structlog level 5)
    structlog.get_logger("test").debug("deep")
    router_logging.shutdown()
    assert "event='deep'" in console.getvalue()


def test_json_lines_on_both_sinks(tmp_path: Path) -> None:
    console = io.StringIO()
    router_logging.configure(3, log_format="json", directory=tmp_path, console=console)
    log = structlog.get_logger("test").bind(session=3, vhost="/", connection_name=None)
    log.info("session open", reply="two\nlines")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("session failed")
    lines = _file_lines(tmp_path)
    assert console.getvalue().splitlines() == lines
    opened, failed = (json.loads(line) for line in lines)
    assert opened == {
        "event": "session open",
        "level": "info",
        "timestamp": opened["timestamp"],
        "session": 3,
        "vhost": "/",
        "connection_name": None,
        "reply": "two\nlines",
    }
    assert opened["timestamp"].endswith("Z")
    assert list(opened)[:5] == ["timestamp", "level", "event", "session", "vhost"]
    assert failed["level"] == "error"
    assert "ValueError: boom" in failed["exception"]


def test_kv_lines_stay_one_line() -> None:
    line = router_logging.render("info", "control", command="CONN", reply="a\nb\n")
    assert "\n" not in line
    assert line.endswith("event='control' command='CONN' reply='a\\nb\\n'")


def test_the_drop_notice_is_a_log_line() -> None:
    line = router_logging.render("warning", router_logging.DROP_NOTICE_EVENT, dropped=12)
    assert line.endswith("level='warning' event='log lines dropped' dropped=12")


def test_truncate_marks_what_it_cut() -> None:
    assert router_logging.truncate("short", 10) == "short"
    assert router_logging.truncate("x" * 25, 10) == "x" * 10 + "...[15 more characters]"


def test_an_unusable_directory_changes_nothing(tmp_path: Path) -> None:
    console = io.StringIO()
    router_logging.configure(3, console=console)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        router_logging.configure(3, directory=tmp_path / "file" / "logs")
    structlog.get_logger("test").info("still here")
    router_logging.shutdown()
    assert "event='still here'" in console.getvalue()


async def test_log_file_is_refused_without_log_files() -> None:
    router_logging.configure(0, directory=None, console=io.StringIO())
    controller = Controller(Server(SessionSettings()), request_exit=lambda: None)
    reply = await controller.handle("LOG FILE 4")
    assert not reply.ok
    assert reply.text.startswith("LOG FILE has no effect: this router writes no log files")
    assert reply.text.endswith("\n")
    assert "LOG FILE" not in controller.config_text(), "CONFIG PRINT must not write it back"
