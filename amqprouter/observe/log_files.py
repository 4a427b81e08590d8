"""Log files: ``amqprouter_%Y%m%d_%5N.log`` in one directory, rotated and bounded.

amqpprox's rules (Boost.Log's text file backend and collector): a new file at 32 MiB
or at midnight UTC, whichever comes first; the directory keeps at most 1 GiB of our
files, the oldest deleted first; files already there are scanned at start, so the
counter ``N`` continues instead of starting again at 0. Files that are not ours (any
other name) are never touched.

This module does blocking file I/O: it runs on the log writer thread
(``observe.log_queue``), never on the trio thread. ``reopen`` (SIGHUP, CONFIG RELOAD)
comes from another thread (a trio worker thread), so a lock keeps it from cutting into
a write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO, Final

import attrs

FILE_PREFIX: Final = "amqprouter_"
#: ``amqprouter_20240101_00000.log``: the UTC day the file was opened, then the counter.
FILE_PATTERN: Final = re.compile(r"amqprouter_(\d{8})_(\d{5,})\.log")
DEFAULT_MAX_FILE_BYTES: Final = 32 * 1024 * 1024
DEFAULT_MAX_DIRECTORY_BYTES: Final = 1024 * 1024 * 1024

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def file_name(day: date, number: int) -> str:
    return f"{FILE_PREFIX}{day:%Y%m%d}_{number:05d}.log"


@attrs.frozen
class LogFile:
    """One of our files found in the directory."""

    path: Path
    number: int
    size: int


def our_files(directory: Path) -> list[LogFile]:
    """Our files in ``directory``, oldest (lowest counter) first; other names are ignored."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = FILE_PATTERN.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # removed meanwhile
                continue
            found.append(LogFile(Path(entry.path), int(match.group(2)), size))
    return sorted(found, key=lambda file: file.number)


class RotatingFileSink:
    """Appends lines to the current file; starts the next one by size or by UTC day.

    ``clock`` gives the current UTC time; tests pass their own to cross midnight.
    Opening (``__init__``) creates the directory and the first file, so a directory
    that cannot be written is an ``OSError`` at start, not a silent loss later.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_directory_bytes: int = DEFAULT_MAX_DIRECTORY_BYTES,
        clock: Clock = utc_now,
    ) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.max_directory_bytes = max_directory_bytes
        self._clock = clock
        self._lock = threading.Lock()
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))
        directory.mkdir(parents=True, exist_ok=True)
        existing = our_files(directory)
        self._next_number = existing[-1].number + 1 if existing else 0
        self._file: BinaryIO | None = None
        self._size = 0
        self._day = clock().date()
        self._open(self._day)

    @property
    def path(self) -> Path:
        """The file being written."""
        return self._path

    def write_lines(self, lines: Iterable[str]) -> None:
        """Write ``lines`` (without newlines), rotating between lines when due."""
        with self._lock:
            self._write_lines(lines)

    def _write_lines(self, lines: Iterable[str]) -> None:
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            data = (line + "\n").encode(errors="replace")
            day = self._clock().date()
            size = self._size + chunk_size
            # A line longer than the limit still goes whole into a file of its own.
            if day != self._day or (size > 0 and size + len(data) > self.max_file_bytes):
                self._write(chunk, chunk_size)
                chunk, chunk_size = [], 0
                self._rotate(day)
            chunk.append(data)
            chunk_size += len(data)
        self._write(chunk, chunk_size)

    def close(self) -> None:
        with self._lock:
            self._close()

    def reopen(self) -> None:
        """Open the current file's name again: logrotate's rotation without copytruncate
        renames the file, then sends SIGHUP; lines go on in a new file of that name (or
        in the same file, when nothing renamed it).

        The new file is opened before the old one is closed, so an ``OSError`` (the
        directory gone and not creatable, no permission) leaves the lines going where
        they went.
        """
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            file = self._path.open("ab")
            self._close()
            self._file = file
            self._size = file.tell()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, chunk: list[bytes], size: int) -> None:
        if not chunk:
            return
        assert self._file is not None
        self._file.write(b"".join(chunk))
        # To the kernel now: a crash or kill loses nothing already written here.
        self._file.flush()
        self._size += size

    def _rotate(self, day: date) -> None:
        self._close()
        self._day = day
        self._open(day)

    def _open(self, day: date) -> None:
        self._path = self.directory / file_name(day, self._next_number)
        self._next_number += 1
        self._file = self._path.open("ab")
        self._size = self._file.tell()
        self._collect()

    def _collect(self) -> None:
        """Delete our oldest files so that they and a full current file fit the bound.

        Room is made when a file is opened, for the whole ``max_file_bytes`` it may
        grow to: the directory stays within the bound between rotations too.
        """
        budget = self.max_directory_bytes - self.max_file_bytes
        older = [file for file in our_files(self.directory) if file.path != self._path]
        total = sum(file.size for file in older)
        for file in older:  # oldest first
            if total <= budget:
                break
            with contextlib.suppress(FileNotFoundError):  # removed by hand meanwhile
                file.path.unlink()
            total -= file.size
