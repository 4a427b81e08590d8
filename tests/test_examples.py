"""The examples in examples/ run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.brokers import SystemBroker, free_port

REPO = Path(__file__).resolve().parent.parent


def test_simple_mode_example(system_broker: SystemBroker) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
    }
    result = subprocess.run(
        [str(REPO / "examples" / "simple_mode.sh"), str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "server says it is: amqprouter" in result.stdout
    assert "ok: every message came back, in order" in result.stdout
    assert "Stopping amqprouter" in result.stdout
