"""Build the sdist and the wheel, check what they hold, and run the wheel from a fresh venv.

    .venv/bin/python scripts/wheel_smoke.py

scripts/test runs it (so CI does). Steps, each printed with its time:

1. ``python -m build`` in a copy of the checkout's files (``git ls-files``, less
   top-level dot files such as .ci/; from an unpacked sdist, without .git, its
   egg-info/SOURCES.txt): the sdist, then the wheel built from that sdist (so the
   sdist is known to hold what a build needs).
2. The sdist holds every one of those files, so its tests, benchmarks and examples
   run from it: whatever they import or read ships with them (MANIFEST.in).
3. The wheel holds both packages, their ``py.typed``, the auth service's .proto and
   stubs, no tests, and both console scripts.
4. A fresh venv gets the wheel (pip pulls the runtime dependencies, no extras);
   ``amqprouter --version`` and ``amqprouter_ctl --help`` run from it, and the package
   imported there is the venv's own copy, not this checkout.
5. Simple mode from that venv in front of RabbitMQ on 127.0.0.1:5672: one message is
   published (confirmed) and read back through it with pika, ``amqprouter_ctl`` from
   the venv prints the backend, and SIGTERM ends the router with exit status 0.

Exits 0 when every step passed, else 1 with a ``wheel_smoke: error:`` line saying
which and why. Temporary directories are removed either way. Needs ``build`` and
``pika`` (the test extra) and RabbitMQ (scripts/test starts it).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pika

REPO: Final = Path(__file__).resolve().parent.parent
PACKAGES: Final = ("amqprouter", "amqprouter_ctl")
SDIST_EGG_INFO: Final = "amqprouter.egg-info/"
WHEEL_MUST_HOLD: Final = (
    "amqprouter/py.typed",
    "amqprouter_ctl/py.typed",
    "amqprouter/server/authproto/auth.proto",
    "amqprouter/server/authproto/auth_pb2.pyi",
)
BROKER: Final = ("127.0.0.1", 5672)
BUILD_TIMEOUT: Final = 240.0
INSTALL_TIMEOUT: Final = 300.0
COMMAND_TIMEOUT: Final = 30.0
LISTEN_TIMEOUT: Final = 15.0
#: The router's --shutdown-timeout default is 10 s and no session is open by then.
STOP_TIMEOUT: Final = 15.0


class SmokeError(Exception):
    pass


def main() -> int:
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="amqprouter-wheel-smoke-") as scratch:
            smoke(Path(scratch))
    except SmokeError as exc:
        print(f"wheel_smoke: error: {exc}", file=sys.stderr)
        return 1
    print(f"    wheel_smoke: all checks passed in {time.monotonic() - started:.1f} s")
    return 0


def smoke(scratch: Path) -> None:
    with phase("built the sdist and, from it, the wheel, from a copy of the checkout"):
        files = checkout_files()
        source = copy_files(files, scratch / "source")
        sdist, wheel = build(source, scratch / "dist")
    with phase(f"{sdist.name} holds every file of the checkout"):
        check_sdist(sdist, files)
    with phase(f"{wheel.name} holds both packages and their py.typed, no tests"):
        check_wheel(wheel)
    venv = scratch / "venv"
    with phase("installed the wheel into a fresh venv"):
        install(wheel, venv)
    with phase("the venv's amqprouter --version and amqprouter_ctl --help"):
        check_commands(venv, version_of(wheel), scratch)
    with phase("simple mode from the venv: one message through it, then SIGTERM, exit 0"):
        simple_mode(venv, scratch / "run")


@contextmanager
def phase(what: str, script: str = "wheel_smoke") -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"    {script}: {what} ({time.monotonic() - started:.1f} s)")


def run(command: Sequence[str | Path], *, timeout: float, cwd: Path | None = None) -> str:
    """Run *command*; return its output, or raise with the output when it fails."""
    words = [str(word) for word in command]
    try:
        result = subprocess.run(
            words,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise SmokeError(f"`{' '.join(words)}` did not finish within {timeout:.0f} s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise SmokeError(f"`{' '.join(words)}` exited with {result.returncode}:\n{tail(output)}")
    return result.stdout


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def build(source: Path, out: Path) -> tuple[Path, Path]:
    run([sys.executable, "-m", "build", "--outdir", out, source], timeout=BUILD_TIMEOUT)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise SmokeError(f"expected one sdist and one wheel in {out}, found {sdists + wheels}")
    return sdists[0], wheels[0]


def checkout_files() -> set[str]:
    """The files the sdist must hold: this checkout's, as git knows them."""
    if (REPO / ".git").exists():
        # Untracked files that are not ignored count too: the build takes them.
        listed = run(
            ["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            timeout=COMMAND_TIMEOUT,
        ).split("\0")
        return {
            name for name in listed if name and not name.startswith(".") and (REPO / name).is_file()
        }
    sources = REPO / SDIST_EGG_INFO / "SOURCES.txt"
    if (REPO / "PKG-INFO").is_file() and sources.is_file():
        # Less the egg-info itself: the build writes it anew from MANIFEST.in.
        return {
            name
            for name in sources.read_text().splitlines()
            if name and not name.startswith(SDIST_EGG_INFO)
        }
    raise SmokeError(
        f"{REPO} is neither a git checkout nor an unpacked sdist: nothing to compare the sdist with"
    )


def copy_files(names: set[str], target: Path) -> Path:
    """Copy *names* from the checkout: the build sees no stale egg-info/SOURCES.txt
    (setuptools would add the files it lists) and nothing git ignores."""
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)
    return target


def check_sdist(sdist: Path, expected: set[str]) -> None:
    with tarfile.open(sdist) as archive:
        members = [member.name for member in archive.getmembers() if member.isfile()]
    root = sdist.name.removesuffix(".tar.gz") + "/"
    missing = expected - {name.removeprefix(root) for name in members}
    if missing:
        raise SmokeError(f"{sdist.name} lacks (add them to MANIFEST.in): {listing(missing)}")


def listing(names: set[str], most: int = 20) -> str:
    ordered = sorted(names)
    more = f" and {len(ordered) - most} more" if len(ordered) > most else ""
    return ", ".join(ordered[:most]) + more


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next((n.split("/")[0] for n in names if ".dist-info/" in n), None)
        if dist_info is None:
            raise SmokeError(f"{wheel.name} has no .dist-info directory")
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    if tops != {*PACKAGES, dist_info}:
        raise SmokeError(
            f"{wheel.name}: top-level entries {sorted(tops)}, expected only {list(PACKAGES)}"
            f" and {dist_info} (tests and examples belong in the sdist only)"
        )
    sources = {
        str(path.relative_to(REPO))
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    missing = (sources | set(WHEEL_MUST_HOLD)) - names
    if missing:
        raise SmokeError(f"{wheel.name} lacks {listing(missing)}")
    for script in PACKAGES:
        if f"{script} = {script}.cli:main" not in entry_points:
            raise SmokeError(f"{wheel.name} has no console script {script}:\n{entry_points}")


def version_of(wheel: Path) -> str:
    # name-version-python-abi-platform.whl
    return wheel.name.split("-")[1]


def install(wheel: Path, venv: Path) -> None:
    run([sys.executable, "-m", "venv", venv], timeout=COMMAND_TIMEOUT)
    run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-input", wheel],
        timeout=INSTALL_TIMEOUT,
    )


def check_commands(venv: Path, version: str, cwd: Path) -> None:
    said = run([venv / "bin" / "amqprouter", "--version"], timeout=COMMAND_TIMEOUT).strip()
    # The smoke test's wheel is the default, pure one (scripts/compiled_check.py builds
    # the other).
    if said != f"amqprouter, version {version} (frame scanner: pure Python)":
        raise SmokeError(f"amqprouter --version said {said!r}, expected version {version}")
    said = run([venv / "bin" / "amqprouter_ctl", "--version"], timeout=COMMAND_TIMEOUT).strip()
    if said != f"amqprouter_ctl, version {version}":
        raise SmokeError(f"amqprouter_ctl --version said {said!r}, expected version {version}")
    # From a directory without the checkout on sys.path: the venv's copy, with py.typed.
    where = run(
        [
            venv / "bin" / "python",
            "-c",
            "import pathlib, amqprouter, amqprouter_ctl\n"
            "for m in (amqprouter, amqprouter_ctl):\n"
            "    d = pathlib.Path(m.__file__).parent\n"
            "    print(d, (d / 'py.typed').is_file())",
        ],
        timeout=COMMAND_TIMEOUT,
        cwd=cwd,
    )
    for line in where.splitlines():
        directory, typed = line.rsplit(" ", 1)
        if not Path(directory).is_relative_to(venv) or typed != "True":
            raise SmokeError(f"the venv imports {directory} (py.typed there: {typed})")


def simple_mode(venv: Path, run_dir: Path) -> None:
    run_dir.mkdir()
    port = free_port()
    control = run_dir / "control"
    output = run_dir / "router.out"
    command = [
        str(venv / "bin" / "amqprouter"),
        *("--listen-port", str(port)),
        *("--destination-dns", BROKER[0], "--destination-port", str(BROKER[1])),
        *("--control-socket", str(control), "--log-directory", str(run_dir / "logs")),
        *("-v", "3"),
    ]
    with output.open("w") as sink:
        router = subprocess.Popen(
            command, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_listening(router, port)
            backends = run(
                [venv / "bin" / "amqprouter_ctl", control, "BACKEND", "PRINT"],
                timeout=COMMAND_TIMEOUT,
            )
            if f"{BROKER[0]} :{BROKER[1]}" not in backends:
                raise SmokeError(f"BACKEND PRINT does not show the broker:\n{backends}")
            round_trip(port)
            router.send_signal(signal.SIGTERM)
            try:
                status = router.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise SmokeError(f"the router did not stop within {STOP_TIMEOUT:.0f} s") from exc
            if status != 0:
                raise SmokeError(f"the router exited with {status} after SIGTERM, expected 0")
        except SmokeError as exc:
            raise SmokeError(f"{exc}\nthe router's output:\n{tail(output.read_text())}") from exc
    finally:
        if router.poll() is None:
            router.kill()
            router.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(router: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while time.monotonic() < deadline:
        if router.poll() is not None:
            raise SmokeError(f"the router exited with {router.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SmokeError(f"the router did not listen on port {port} within {LISTEN_TIMEOUT:.0f} s")


def round_trip(port: int) -> None:
    """Publish one confirmed message through the router and get it back."""
    body = f"wheel smoke {uuid.uuid4()}".encode()
    parameters = pika.ConnectionParameters(
        "127.0.0.1", port, connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5
    )
    try:
        connection = pika.BlockingConnection(parameters)
    except pika.exceptions.AMQPError as exc:
        raise SmokeError(
            f"no AMQP connection through the router ({exc!r}); is RabbitMQ up on"
            f" {BROKER[0]}:{BROKER[1]}?"
        ) from exc
    try:
        product = connection._impl.server_properties.get("product")
        if product != "amqprouter":
            raise SmokeError(f"the server's product is {product!r}, not amqprouter")
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, body)  # returns once the broker confirmed it
        _method, _properties, received = channel.basic_get(queue, auto_ack=True)
        if received != body:
            raise SmokeError(f"published {body!r}, got back {received!r}")
    finally:
        if connection.is_open:
            connection.close()


if __name__ == "__main__":
    sys.exit(main())
