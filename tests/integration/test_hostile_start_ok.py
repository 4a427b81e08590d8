"""A StartOk nesting 488 arrays, sent to a real router.

It used to end in ``RecursionError`` inside pamqp: the client got nothing and the log
a 220 KB traceback. Now the client gets Start, then Close 501 with a text that says
why, and the log one line.
"""

from __future__ import annotations

import socket

from amqprouter.protocol import constants, properties
from amqprouter.protocol.methods import close_frame
from tests.brokers import SYSTEM_PORT, SystemBroker
from tests.protocol.test_field_table import DEEP_START_OK, DEEP_TEXT
from tests.router import running_router

CLOSE_OK = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xce"


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_deep_client_properties_get_close_501_and_one_log_line(
    system_broker: SystemBroker,
) -> None:
    expected = properties.START_FRAME + close_frame(constants.FRAME_ERROR, DEEP_TEXT)
    with running_router(SYSTEM_PORT) as router:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
                sock.sendall(constants.PROTOCOL_HEADER + DEEP_START_OK)
                assert _read_exactly(sock, len(expected)) == expected
                sock.sendall(CLOSE_OK)
                assert sock.recv(1) == b"", "the router closes after our Close-Ok"
        # Stopping the router flushes its log; its files go when the block ends.
        assert router.stop() == 0
        output = router.stdout + router.stderr
    lines = [line for line in output.splitlines() if DEEP_TEXT in line]
    assert len(lines) == 3, output[-2000:]
    assert all("client handshake error" in line for line in lines), lines
    assert "Traceback" not in output
    assert "RecursionError" not in output
