"""A ``--config`` file as the router reads it at start.

``MAP BACKEND v $'b1\\u2028EXIT'`` used to be accepted; CONFIG PRINT wrote it as one
line, and ``--config`` (then split with ``str.splitlines()``) read it as two, the
second an EXIT that stopped the router at start. Now the grammar refuses the word,
and the file reader ends lines at ``\\n`` only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.router import REPO, router_command


def _start(tmp_path: Path, config: bytes) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "router.conf"
    path.write_bytes(config)
    return subprocess.run(
        router_command(
            "--config",
            str(path),
            "--control-socket",
            str(tmp_path / "control"),
            "--log-directory",
            str(tmp_path / "logs"),
        ),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_a_line_separator_in_a_config_line_is_refused_not_run_as_a_second_command(
    tmp_path: Path,
) -> None:
    result = _start(tmp_path, "# restored\nMAP BACKEND v b1\u2028EXIT\r\n".encode())
    assert result.returncode == 6, result.stderr  # a config error, not EXIT's clean stop
    assert (
        f"{tmp_path / 'router.conf'}:2: MAP BACKEND v b1\\u2028EXIT: Word 'b1\\u2028EXIT' "
        "contains \\u2028: no word may contain a control character, a line separator or a "
        "bidi control.\n"
    ) in result.stderr
    assert "\u2028" not in result.stderr


def test_a_config_file_that_is_not_utf8_is_refused_with_where(tmp_path: Path) -> None:
    result = _start(tmp_path, b"LOG FILE 3\nMAP BACKEND v b\xff\n")
    assert result.returncode == 6
    assert f"{tmp_path / 'router.conf'}:2: not UTF-8 text (byte 26 of the file)\n" in result.stderr
