"""The status page in a real browser: Debian's chromium, headless, against a live router.

Two checks a string comparison cannot make: the page *renders* (a screenshot, decoded
here with zlib and the PNG chunk layout, has text and the page's own table colours),
and the DOM a browser builds from it has the backend names as text and no element or
script from a hostile name (a vhost whose script, had it run, would retitle the page).

Chromium is a test requirement (scripts/setup.sh installs it); without it this test
fails and says how to install it.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
import trio

from amqprouter.app import start_http, start_stats
from amqprouter.observe.stats import Totals
from amqprouter.routing import Backend, Farm, RoutingTable
from amqprouter.server import Server
from amqprouter.session import SessionSettings

#: One chromium run; it takes about a second here.
BROWSER_TIMEOUT = 30.0
WINDOW = (1000, 900)
#: Had this vhost's script run, the page's title would say so.
HOSTILE_VHOST = "<script>document.title='pwned'</script>"
HOSTILE_BACKEND = "<img src=x onerror=\"document.title='pwned'\">"
#: The page's CSS colours: table headers, and the "up"/"ok" cells.
HEADER_RGB = (0xDD, 0xE6, 0xF0)
UP_RGB = (0xD8, 0xF0, 0xD8)


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Debian's chromium is needed for the status page test: apt-get install -y chromium "
            "(scripts/setup.sh installs it when run as root)",
            pytrace=False,
        )
    return path


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_pixels(data: bytes) -> tuple[int, int, set[tuple[int, ...]]]:
    """(width, height, the distinct RGB colours) of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(
        ">IIBBBBB", header
    )
    assert (depth, interlace) == (8, 0) and colour in (2, 6), "8-bit RGB(A), not interlaced"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                upper_left = previous[x - channels] if x >= channels else 0
                line[x] = (line[x] + _paeth(left, up, upper_left)) & 0xFF
        colours.update(tuple(line[x : x + 3]) for x in range(0, stride, channels))
        previous = line
    return width, height, colours


async def browse(*args: str) -> bytes:
    with trio.fail_after(BROWSER_TIMEOUT):
        result = await trio.run_process(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout


async def test_the_status_page_renders_in_chromium(tmp_path: Path) -> None:
    browser = chromium()  # fail first, and clearly, if it is missing
    backends = {
        "alpha-broker": Backend("alpha-broker", "dc1", "127.0.0.1", 5672),
        "beta-broker": Backend("beta-broker", "dc1", "127.0.0.1", 5673),
        HOSTILE_BACKEND: Backend(HOSTILE_BACKEND, "dc2", "127.0.0.1", 5674),
    }
    routing = RoutingTable(
        backends=backends,
        farms={"main-farm": Farm("main-farm", "round-robin", tuple(backends))},
        default_farm="main-farm",
        disabled={"beta-broker"},
    )
    server = Server(SessionSettings(), routing)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await server.listen(0, "127.0.0.1")
        stats = await start_stats(nursery, server, interval=1.0)
        stats.collector.totals[(HOSTILE_VHOST, "alpha-broker")] = Totals(bytes_received=5000)
        stats.events.routed.add(HOSTILE_VHOST)  # a broker accepted it: shown by name
        (port,) = await start_http(nursery, server, stats, port=0, host="127.0.0.1")
        url = f"http://127.0.0.1:{port}/"
        dom = (await browse("--dump-dom", url)).decode()
        shot = tmp_path / "status.png"
        await browse(f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url)
        nursery.cancel_scope.cancel()
    assert browser
    # The DOM chromium built: our title, the names as text, nothing a name smuggled in.
    assert "<title>amqprouter status</title>" in dom, "a script from a name ran"
    for name in ("alpha-broker", "beta-broker", "main-farm (default)"):
        assert f"<td>{name}</td>" in dom, name
    assert "<td>&lt;img src=x onerror=\"document.title='pwned'\"&gt;</td>" in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "<img" not in dom and dom.count("<script") == 0
    # The screenshot: the window's size, text (antialiasing makes many colours), and
    # the page's own table colours, so the tables were laid out and styled.
    width, height, colours = png_pixels(shot.read_bytes())
    assert (width, height) == WINDOW
    assert len(colours) > 50, f"only {len(colours)} colours: a blank page?"
    assert HEADER_RGB in colours and UP_RGB in colours
