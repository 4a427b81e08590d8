"""Build the wheel with the compiled frame scanner and engine and run the tests on it.

    .venv/bin/python scripts/compiled_check.py                 # build, install, test
    .venv/bin/python scripts/compiled_check.py --build-only DIR  # build, install into DIR

scripts/test runs it (so CI does): the tests run on both frames modules, the pure one
(every other step) and the mypyc-compiled one (here). Steps, each printed with its time:

1. ``AMQPROUTER_COMPILE=1 python -m build --wheel`` in a copy of the checkout's files
   (packaging/backend adds mypy to the build's requirements; setup.py compiles
   ``amqprouter/protocol/frames.py``, ``amqprouter/net/engine.py`` and the handshake
   machines with mypyc).
2. The wheel is a CPython wheel for this platform and holds the compiled scanner and
   forwarding engine.
3. ``pip install --no-deps --target`` a scratch directory: the whole package, from the
   wheel, without touching .venv (whose editable install stays pure Python).
4. ``amqprouter --version`` from there says the frame scanner is compiled.
5. The tests that run the compiled modules (tests/protocol, tests/session, the
   engine's tests in tests/net) with the scratch directory first on the path:
   ``--import-mode=append`` and no ``pythonpath`` setting keep the checkout from shadowing it, and
   ``AMQPROUTER_EXPECT_COMPILED=1`` makes tests/conftest.py stop the run at once if
   the pure scanner or engine was imported after all. The session and net tests run
   on the engine (the default data plane), so the compiled engine's thread, its epoll
   loop and its hand-backs are what they exercise.

With ``--build-only DIR`` it stops after step 4 and leaves the install in DIR (for
``benchmarks/bench.py --compiled``). Exits 0 when every step passed, else 1 with a
``compiled_check: error:`` line saying which and why.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final

from wheel_smoke import (
    BUILD_TIMEOUT,
    COMMAND_TIMEOUT,
    REPO,
    SmokeError,
    checkout_files,
    copy_files,
    run,
)
from wheel_smoke import phase as smoke_phase

#: The tests that exercise the compiled modules: the frame reader and scanner and the
#: handshake machines (tests/protocol), the forwarding engine (its own tests, and the
#: sessions that forward through it). The rest of tests/net (names, TLS contexts) runs
#: no compiled code.
TEST_PATHS: Final = (
    "tests/protocol",
    "tests/session",
    "tests/net/test_engine.py",
    "tests/net/test_engine_tls.py",
)
TEST_TIMEOUT: Final = 600.0
#: The compiled modules the wheel must hold (of setup.py's COMPILED_MODULES, those the
#: forwarding path runs: the frame scanner and the forwarding engine).
COMPILED_MODULES: Final = ("amqprouter/protocol/frames.cpython-", "amqprouter/net/engine.cpython-")


def phase(what: str) -> AbstractContextManager[None]:
    return smoke_phase(what, "compiled_check")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--build-only",
        metavar="DIR",
        type=Path,
        help="build and install the compiled package into DIR; run no tests",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="amqprouter-compiled-") as scratch:
            site = args.build_only.resolve() if args.build_only else Path(scratch) / "site"
            build_and_install(Path(scratch), site)
            if args.build_only is None:
                with phase(f"tests of {', '.join(TEST_PATHS)} on the compiled module"):
                    run_tests(site)
    except SmokeError as exc:
        print(f"compiled_check: error: {exc}", file=sys.stderr)
        return 1
    print(f"    compiled_check: all checks passed in {time.monotonic() - started:.1f} s")
    return 0


def build_and_install(scratch: Path, site: Path) -> None:
    with phase("built the wheel with AMQPROUTER_COMPILE=1, from a copy of the checkout"):
        source = copy_files(checkout_files(), scratch / "source")
        out = scratch / "dist"
        env = {**os.environ, "AMQPROUTER_COMPILE": "1"}
        command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)]
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT
            )
        except subprocess.TimeoutExpired as exc:
            took = f"{BUILD_TIMEOUT:.0f} s"
            raise SmokeError(f"the compiled build did not finish within {took}") from exc
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
            raise SmokeError(f"the compiled build failed (exit {done.returncode}):\n{output}")
        wheels = sorted(out.glob("*.whl"))
        if len(wheels) != 1:
            raise SmokeError(f"expected one wheel in {out}, found {wheels}")
    wheel = wheels[0]
    with phase(f"{wheel.name} is a CPython wheel holding the compiled scanner and engine"):
        check_wheel(wheel)
    with phase(f"installed it into {site}"):
        run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
            timeout=BUILD_TIMEOUT,
        )
    with phase("amqprouter --version from there says the scanner is compiled"):
        said = run(
            [sys.executable, "-m", "amqprouter", "--version"],
            timeout=COMMAND_TIMEOUT,
            cwd=site,  # not the checkout: its amqprouter/ would be imported first
        ).strip()
        if not said.endswith("(frame scanner: compiled with mypyc)"):
            raise SmokeError(f"amqprouter --version from {site} said {said!r}")


def check_wheel(wheel: Path) -> None:
    tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
    if tag not in wheel.name:
        raise SmokeError(f"{wheel.name} is not a CPython {tag.strip('-')} wheel")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for module in COMPILED_MODULES:
        if not any(name.startswith(module) and name.endswith(".so") for name in names):
            raise SmokeError(f"{wheel.name} holds no {module}*.so")


def run_tests(site: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "AMQPROUTER_EXPECT_COMPILED": "1",
    }
    pytest = Path(sys.executable).with_name("pytest")
    command = [
        str(pytest),
        "-q",
        "-o",
        "pythonpath=",
        "--import-mode=append",
        "-p",
        "no:cacheprovider",
        *TEST_PATHS,
    ]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, timeout=TEST_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise SmokeError(f"the tests did not finish within {TEST_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        raise SmokeError(f"the tests failed on the compiled module (pytest exit {done.returncode})")


if __name__ == "__main__":
    sys.exit(main())
