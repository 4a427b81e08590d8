"""Reading a ``--config`` file: its command lines, each with where it came from.

The same reader serves the start (cli/command.py applies the lines one by one) and a reload
(control/reload.py parses them all before applying anything), so a file says the same
thing to both.
"""

from __future__ import annotations

from pathlib import Path

from amqprouter.control.grammar import WHITESPACE


class ConfigFileError(Exception):
    """The file cannot be read as text; ``str()`` says where and why."""


def where(path: Path, number: int) -> str:
    """How a line is named in messages: ``<file>:<line>``."""
    return f"{path}:{number}"


def read_lines(path: Path) -> list[tuple[str, str]]:
    r"""The commands of a ``--config`` file, each with where it came from (``file:line``).

    Lines end at ``\n`` only, and each is stripped of the control grammar's
    whitespace only (``\r`` is one: CRLF files work), as the control socket reads a
    line: ``str.splitlines()`` would also end a line at U+2028, U+0085,
    ``\x1c``..``\x1e``, ``\v`` or ``\f``, and ``str.strip()`` would eat U+00A0, so a
    file would not say to the router what it says to the control socket. The file is
    UTF-8 (what CONFIG PRINT writes); anything else is refused, with where.

    Raises:
        ConfigFileError: the file cannot be read, or is not UTF-8.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigFileError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigFileError(
            f"{where(path, line)}: not UTF-8 text (byte {exc.start} of the file)"
        ) from exc
    lines = []
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip(WHITESPACE)  # a CRLF line's "\r" included
        if stripped and not stripped.startswith("#"):
            lines.append((where(path, number), stripped))
    return lines
