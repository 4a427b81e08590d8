"""--sticky-file: written atomically and loadable after a SIGKILL at any moment; the
writer task saves changes and once more when cancelled; bad files are refused clearly."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from amqprouter.routing.sticky import StickyTable
from amqprouter.server import sticky_file

# A writer that rewrites the file as fast as it can, each time with a different table
# (its size changes too), and says when it has written once.
_WRITER = """
import sys
from pathlib import Path
from amqprouter.server.sticky_file import write

path = Path(sys.argv[1])
round = 0
while True:
    round += 1
    records = [
        {"farm": "f", "client": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
         "backend": f"b{round}", "expires": 4e9, "timeout": 60.0}
        for i in range(20000 + round % 7 * 3000)
    ]
    write(path, records)
    if round == 1:
        print("written", flush=True)
"""


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    table = StickyTable()
    table.attach("f", "10.0.0.1", "b1", 60)
    path = tmp_path / "sticky.json"
    sticky_file.write(path, table.export())
    loaded = StickyTable()
    assert sticky_file.load(path, loaded) == 1
    assert loaded.member("f", "10.0.0.1") == "b1"
    assert [p.name for p in tmp_path.iterdir()] == ["sticky.json"]  # no temporary left


def test_a_missing_file_is_an_empty_table(tmp_path: Path) -> None:
    assert sticky_file.load(tmp_path / "none.json", StickyTable()) == 0


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 2, "entries": []}', b'{"version": 1, "entries": [{}]}'],
)
def test_a_bad_file_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sticky.json"
    path.write_bytes(content)
    with pytest.raises(sticky_file.StickyFileError, match="is not a sticky file"):
        sticky_file.load(path, StickyTable())


def test_sigkill_mid_write_always_leaves_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "sticky.json"
    rng = random.Random(11)
    for _ in range(8):
        with subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        ) as writer:
            assert writer.stdout is not None
            assert writer.stdout.readline() == b"written\n"
            # Somewhere inside one of the next writes (each takes tens of milliseconds).
            time.sleep(rng.uniform(0.0, 0.3))
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        table = StickyTable()
        count = sticky_file.load(path, table)
        assert count >= 20000
        backends = {json.dumps(entry.backend) for entry in table.entries().values()}
        assert len(backends) == 1  # one whole write, never two halves
    # Temporary files of killed writes are left behind at worst, never read.
    assert all(p.name.startswith(".sticky.json.") for p in tmp_path.iterdir() if p != path)


async def test_keep_saved_writes_changes_and_once_more_when_cancelled(tmp_path: Path) -> None:
    # Real time: the write runs in a worker thread, which a mock clock would outrun.
    path = tmp_path / "sticky.json"
    table = StickyTable()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sticky_file.keep_saved, path, lambda: table, 0.05)
        await trio.sleep(0.3)
        assert not path.exists()  # nothing changed: nothing written
        table.attach("f", "10.0.0.1", "b1", 60)
        with trio.fail_after(5):
            while not path.exists():
                await trio.sleep(0.02)
        assert sticky_file.load(path, StickyTable()) == 1
        nursery.cancel_scope.cancel()
        table.attach("f", "10.0.0.2", "b2", 60)  # after the last interval: the final save has it
    assert sticky_file.load(path, StickyTable()) == 2
