"""Log file names, rotation by size and by UTC day, the directory bound, numbering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from amqprouter.observe.log_files import RotatingFileSink, file_name, our_files


class SteppingClock:
    """A UTC clock a test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_file_names_are_amqpprox_pattern() -> None:
    assert file_name(datetime(2024, 1, 1).date(), 0) == "amqprouter_20240101_00000.log"
    assert file_name(datetime(2024, 12, 31).date(), 123456) == "amqprouter_20241231_123456.log"


def test_directory_is_created_and_first_file_opened(tmp_path: Path) -> None:
    clock = SteppingClock(datetime(2024, 3, 5, 12, tzinfo=UTC))
    sink = RotatingFileSink(tmp_path / "a" / "logs", clock=clock)
    sink.write_lines(["one", "two"])
    sink.close()
    assert _names(tmp_path / "a" / "logs") == ["amqprouter_20240305_00000.log"]
    assert (tmp_path / "a" / "logs" / "amqprouter_20240305_00000.log").read_text() == "one\ntwo\n"


def test_rotates_by_size_never_splitting_a_line(tmp_path: Path) -> None:
    clock = SteppingClock(datetime(2024, 3, 5, 12, tzinfo=UTC))
    sink = RotatingFileSink(tmp_path, max_file_bytes=10, clock=clock)
    sink.write_lines(["aaaa", "bbbb"])  # 5 + 5 bytes: exactly full
    sink.write_lines(["cccc", "a line longer than ten bytes", "dd"])
    sink.close()
    contents = [(tmp_path / name).read_text() for name in _names(tmp_path)]
    assert _names(tmp_path) == [f"amqprouter_20240305_0000{n}.log" for n in range(4)]
    assert contents == ["aaaa\nbbbb\n", "cccc\n", "a line longer than ten bytes\n", "dd\n"]


def test_rotates_at_utc_midnight(tmp_path: Path) -> None:
    clock = SteppingClock(datetime(2024, 3, 5, 23, 59, 59, tzinfo=UTC))
    sink = RotatingFileSink(tmp_path, clock=clock)
    sink.write_lines(["before midnight"])
    clock.now += timedelta(seconds=2)
    sink.write_lines(["after midnight", "same day"])
    clock.now += timedelta(hours=23)
    sink.write_lines(["still the 6th"])
    sink.close()
    assert _names(tmp_path) == ["amqprouter_20240305_00000.log", "amqprouter_20240306_00001.log"]
    assert (tmp_path / "amqprouter_20240306_00001.log").read_text() == (
        "after midnight\nsame day\nstill the 6th\n"
    )


def test_numbering_continues_over_existing_files(tmp_path: Path) -> None:
    (tmp_path / "amqprouter_20240101_00007.log").write_text("old\n")
    (tmp_path / "amqprouter_20231231_00003.log").write_text("older\n")
    (tmp_path / "amqprouter_20240101_99.log").write_text("not ours: too few digits\n")
    clock = SteppingClock(datetime(2024, 3, 5, tzinfo=UTC))
    sink = RotatingFileSink(tmp_path, clock=clock)
    sink.close()
    assert sink.path.name == "amqprouter_20240305_00008.log"
    assert sink.path.read_text() == ""  # a new file, not appended to the old one


def test_directory_bound_deletes_our_oldest_files_only(tmp_path: Path) -> None:
    others = ["notes.txt", "amqpprox_20240101_00000.log", "amqprouter_20240101_1.log"]
    for name in others:
        (tmp_path / name).write_text("x" * 100)  # not ours: never counted nor deleted
    (tmp_path / "amqprouter_20240101_00000.log").write_text("x" * 9)
    clock = SteppingClock(datetime(2024, 3, 5, tzinfo=UTC))
    # Files of 10 bytes (one 9-byte line each) and at most 25 bytes of them in all.
    sink = RotatingFileSink(tmp_path, max_file_bytes=10, max_directory_bytes=25, clock=clock)
    for number in range(1, 5):
        sink.write_lines([f"{number}" * 9])
    sink.close()
    ours = [file.path.name for file in our_files(tmp_path)]
    # Started at 00001 (after the existing 00000); each line after the first starts a
    # file; 00000..00002 went, oldest first, to leave room for a full current file.
    assert ours == ["amqprouter_20240305_00003.log", "amqprouter_20240305_00004.log"]
    assert (tmp_path / ours[-1]).read_text() == "4" * 9 + "\n"
    assert set(others) <= set(_names(tmp_path))


def test_the_file_being_written_is_never_deleted(tmp_path: Path) -> None:
    clock = SteppingClock(datetime(2024, 3, 5, tzinfo=UTC))
    sink = RotatingFileSink(tmp_path, max_file_bytes=100, max_directory_bytes=1, clock=clock)
    sink.write_lines(["first"])
    sink.write_lines(["x" * 200])  # over both limits: a file of its own
    sink.write_lines(["third"])
    sink.close()
    assert [file.path.name for file in our_files(tmp_path)] == ["amqprouter_20240305_00002.log"]


def test_a_file_in_the_way_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("")
    with pytest.raises(NotADirectoryError):
        RotatingFileSink(tmp_path / "logs")


def test_an_unwritable_directory_is_an_error(tmp_path: Path) -> None:
    # A path under a regular file cannot be created, even by root.
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        RotatingFileSink(tmp_path / "file" / "logs")


def test_reopen_after_a_rename_writes_a_new_file_of_the_same_name(tmp_path: Path) -> None:
    sink = RotatingFileSink(tmp_path)
    sink.write_lines(["before"])
    moved = tmp_path / "amqprouter.log.1"  # logrotate's rename, then SIGHUP
    sink.path.rename(moved)
    sink.write_lines(["still the open file"])
    sink.reopen()
    sink.write_lines(["after"])
    assert moved.read_text() == "before\nstill the open file\n"
    assert sink.path.read_text() == "after\n"
    sink.reopen()  # nothing renamed: the same file goes on
    sink.write_lines(["again"])
    assert sink.path.read_text() == "after\nagain\n"
    sink.close()


def test_a_reopen_that_fails_keeps_the_open_file(tmp_path: Path) -> None:
    sink = RotatingFileSink(tmp_path / "logs")
    (tmp_path / "logs").rename(tmp_path / "moved")
    (tmp_path / "logs").write_text("a file where the directory was")
    with pytest.raises(OSError):
        sink.reopen()
    sink.write_lines(["kept"])
    assert (tmp_path / "moved" / sink.path.name).read_text() == "kept\n"
    sink.close()
