"""The control socket against a second local user, squatters, and file-descriptor exhaustion.

The tests run as root (as CI does) and play the other user with ``nobody``: real
processes under another uid, racing the router for the socket path, holding an
impostor socket, or leaving a regular file where the socket should be.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amqprouter.control import socket_server
from amqprouter.control.socket_server import ControlSocketError, bind_control_socket
from tests.brokers import wait_for
from tests.integration.test_control_plane import (
    CTL,
    WAIT,
    ControlledRouter,
    control_answers,
    ctl,
    launch_router,
    start_router,
)
from tests.router import router_command

OTHER_USER = "nobody"
#: The other user's Python: the system one, which every user may run.
OTHER_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def other_uid() -> int:
    assert os.geteuid() == 0, "these tests play a second user: run them as root (as CI does)"
    return pwd.getpwnam(OTHER_USER).pw_uid


@pytest.fixture
def base() -> Iterator[Path]:
    """A short directory every user can traverse (a socket path must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="amqprouter-sec-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def as_other_user(script: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run a Python ``script`` as the other user until the block ends."""
    process = subprocess.Popen(
        [OTHER_PYTHON, "-c", script, *args],
        user=OTHER_USER,
        group=pwd.getpwnam(OTHER_USER).pw_gid,
        extra_groups=[],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(WAIT)


# --------------------------------------------------------------------------- #
# 10.1: the mode is never applied through a name another user can swap
# --------------------------------------------------------------------------- #

#: The attacker: whenever a socket appears at the path, swap it for a symlink to the
#: target (a chmod through the path would then change the target), and clear the
#: symlink soon after so that the next bind can proceed.
SWAPPER = r"""
import os, stat, sys, time
path, target = sys.argv[1:3]
parent, deadline = os.getppid(), time.monotonic() + 60  # never outlive the test
while os.getppid() == parent and time.monotonic() < deadline:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
            os.symlink(target, path)
            time.sleep(0.002)
            os.unlink(path)
    except OSError:
        pass
"""

RACE_ATTEMPTS = 3000
RACE_BINDS = 100


def _bind_then_chmod(path: Path, mode: int) -> None:
    """The old procedure (bind, then chmod the path), to show the attacker is real."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(previous)
        os.chmod(path, mode)
    except OSError:
        pass  # the attacker's symlink was in the way, or gone before the chmod
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()


def test_a_second_user_swapping_the_socket_for_a_symlink_changes_no_mode(
    base: Path, other_uid: int
) -> None:
    arena = base / "arena"  # not sticky, and the other user may write it
    arena.mkdir()
    os.chown(arena, other_uid, -1)
    arena.chmod(0o755)
    target = base / "target"  # root's file, which the attacker wants made 0666
    target.write_text("root's secret")
    target.chmod(0o600)
    path = arena / "control"

    def target_mode() -> int:
        return stat.S_IMODE(target.stat().st_mode)

    with as_other_user(SWAPPER, str(path), str(target)):
        # Calibration: against the old bind-then-chmod the attacker wins.
        deadline = time.monotonic() + 5
        while target_mode() == 0o600 and time.monotonic() < deadline:
            _bind_then_chmod(path, 0o666)
        assert target_mode() == 0o666, "the attacker never won against bind-then-chmod"
        target.chmod(0o600)

        # The router's procedure, in the same hostile directory (its own refusal of
        # such directories is switched off here, to test the bind itself).
        binds = refused = 0
        for _attempt in range(RACE_ATTEMPTS):
            try:
                bound = bind_control_socket(path, 0o666, check_dir=False)
            except ControlSocketError:
                refused += 1  # the attacker's symlink sat at the path: never replaced
                continue
            binds += 1
            bound.sock.close()
            with contextlib.suppress(OSError):
                if bound.is_at(path):
                    path.unlink()
            assert target_mode() == 0o600, f"after {binds} binds"
            if binds == RACE_BINDS:
                break
    assert target_mode() == 0o600
    assert binds >= 10, f"only {binds} binds got through ({refused} refused): nothing was tested"
    assert [p.name for p in arena.iterdir() if p.name.startswith(".")] == []


def test_router_refuses_a_directory_other_users_can_write(base: Path) -> None:
    # (A directory another user owns is refused too: tests/control/test_socket.py.)
    open_dir = base / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    router = launch_router(open_dir / "control", logdir=base)
    assert router.wait() == 5
    assert (
        f"Cannot use the control socket: {open_dir} is writable by other users (mode 0777) "
        "and not sticky"
    ) in router.stderr
    assert "Traceback" not in router.stderr
    assert list(open_dir.iterdir()) == []

    sticky = base / "sticky"  # like /tmp: others may write, but not remove our files
    sticky.mkdir()
    sticky.chmod(0o1777)
    router = start_router(sticky / "control")
    try:
        assert stat.S_IMODE((sticky / "control").stat().st_mode) == 0o600
        assert router.must("EXIT") == "Exiting.\n"
        assert router.wait() == 0
    finally:
        router.stop(signal.SIGKILL)


# --------------------------------------------------------------------------- #
# 10.5: squatting, the owner check, the default path, a socket deleted under us
# --------------------------------------------------------------------------- #

#: An impostor: answers every command with a forged reply and exit status 0.
IMPOSTOR = r"""
import os, socket, sys, time
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen()
server.settimeout(0.5)
parent, deadline = os.getppid(), time.monotonic() + 60  # never outlive the test
while os.getppid() == parent and time.monotonic() < deadline:
    try:
        conn, _ = server.accept()
    except socket.timeout:
        continue
    conn.settimeout(5)
    try:
        conn.recv(65536)
        conn.sendall(b"forged reply\n\x000")
    except OSError:
        pass
    conn.close()
"""


@contextlib.contextmanager
def impostor(path: Path) -> Iterator[None]:
    with as_other_user(IMPOSTOR, str(path)) as process:
        deadline = time.monotonic() + WAIT
        while not path.exists():
            assert process.poll() is None, "the impostor did not start"
            assert time.monotonic() < deadline, "the impostor did not bind"
            time.sleep(0.02)
        yield


def test_ctl_refuses_a_socket_another_user_holds(base: Path, other_uid: int) -> None:
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    squatted = shared / "amqprouter"
    with impostor(squatted):
        refused = ctl(squatted, "MAP", "PRINT")
        assert (refused.code, refused.out) == (2, "")
        assert refused.err == (
            f"amqprouter_ctl: refusing {squatted}: the socket file belongs to {OTHER_USER} "
            f"(uid {other_uid}), not you or root, so it may not be your router; if it is, "
            f"pass --allow-owner {OTHER_USER} (or set AMQPROUTER_CTL_ALLOW_OWNER={OTHER_USER})\n"
        )
        # The router started on the squatted path says whose it is.
        router = launch_router(squatted, logdir=base)
        assert router.wait() == 5
        assert (
            f"{squatted} is the control socket of a running router (it belongs to "
            f"{OTHER_USER} (uid {other_uid}))"
        ) in router.stderr

        # Told to trust that user, amqprouter_ctl talks to it (by name, uid or env).
        for args, env in [
            (["--allow-owner", OTHER_USER], {}),
            ([f"--allow-owner={other_uid}"], {}),
            ([], {"AMQPROUTER_CTL_ALLOW_OWNER": f"root,{OTHER_USER}"}),
        ]:
            allowed = subprocess.run(
                [str(CTL), *args, str(squatted), "MAP", "PRINT"],
                capture_output=True,
                text=True,
                timeout=WAIT,
                env={**os.environ, **env},
                check=False,
            )
            assert (allowed.returncode, allowed.stdout) == (0, "forged reply\n"), args

        # A root-owned file over the impostor's socket: the process behind it is checked.
        os.chown(squatted, 0, 0)
        behind = ctl(squatted, "MAP", "PRINT")
        assert behind.code == 2
        assert (
            f"refusing {squatted}: the process answering on it runs as {OTHER_USER} "
            f"(uid {other_uid})"
        ) in behind.err


def test_ctl_unknown_allowed_owner_is_a_usage_error(base: Path) -> None:
    result = subprocess.run(
        [str(CTL), "--allow-owner", "no-such-user-here", str(base / "x"), "MAP", "PRINT"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 1
    assert "--allow-owner: no such user 'no-such-user-here'" in result.stderr


def test_ctl_says_a_regular_file_is_not_a_socket(base: Path) -> None:
    plain = base / "plain"
    plain.write_text("not a router")
    result = ctl(plain, "MAP", "PRINT")
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith(
        f"amqprouter_ctl: cannot reach a router at {plain}: not a socket but a regular file; "
    )


def test_ctl_finds_the_socket_from_env_or_a_bare_name(base: Path) -> None:
    router = start_router(base / "control")
    try:
        env = {**os.environ, "AMQPROUTER_CONTROL_SOCKET": str(router.socket)}
        for argv, cwd in [
            ([str(CTL), "DATACENTER", "PRINT"], None),  # no path: the env
            ([str(CTL), "control", "DATACENTER", "PRINT"], base),  # a socket in the cwd
            ([str(CTL), str(router.socket), "DATACENTER", "PRINT"], None),  # amqpprox's form
        ]:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=WAIT, env=env, cwd=cwd, check=False
            )
            assert (result.returncode, result.stderr) == (0, ""), argv
    finally:
        router.stop()


def test_router_defaults_to_run_amqprouter_as_root(base: Path) -> None:
    """Root's router uses /run/amqprouter/control (created 0755) and ctl finds it."""
    run_dir = socket_server.RUN_DIRECTORY
    if control_answers(socket_server.RUN_SOCKET):
        pytest.fail(f"another router answers on {socket_server.RUN_SOCKET}; stop it first")
    process = subprocess.Popen(
        [*router_command(), "--log-directory", str(base / "logs"), "-v", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while not control_answers(socket_server.RUN_SOCKET):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "router did not answer on the default path"
            time.sleep(0.05)
        st = run_dir.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 0)
        no_env = {k: v for k, v in os.environ.items() if k != "AMQPROUTER_CONTROL_SOCKET"}
        result = subprocess.run(
            [str(CTL), "EXIT"], capture_output=True, text=True, timeout=WAIT, env=no_env
        )
        assert (result.returncode, result.stdout) == (0, "Exiting.\n"), result.stderr
        out, _err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=WAIT)
    assert process.returncode == 0
    assert f"control using: '{socket_server.RUN_SOCKET}'" in out
    assert not socket_server.RUN_SOCKET.exists()


def test_router_recreates_its_socket_when_deleted_or_replaced(base: Path) -> None:
    router = start_router(base / "control")
    try:
        router.socket.unlink()
        _wait_until_answers(router)
        first = router.socket.stat().st_ino
        # A stale socket put in its place (another router that died) is replaced too.
        router.socket.unlink()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
            dead.bind(str(router.socket))
        _wait_until_answers(router)
        assert router.socket.stat().st_ino != first
        assert stat.S_IMODE(router.socket.stat().st_mode) == 0o600
        assert router.must("EXIT") == "Exiting.\n"
        assert router.wait() == 0
    finally:
        router.stop(signal.SIGKILL)
    warnings = [line for line in router.stderr.splitlines() if "control socket file was" in line]
    assert len(warnings) == 2, router.stderr
    assert "level='warning'" in warnings[0] and "removed; recreated it" in warnings[0]
    assert "replaced; recreated it" in warnings[1]


def _wait_until_answers(router: ControlledRouter) -> None:
    """Bounded: the router looks every WATCH_INTERVAL (2 s)."""
    deadline = time.monotonic() + WAIT
    while not control_answers(router.socket):
        assert router.process.poll() is None, router.stderr
        assert time.monotonic() < deadline, f"socket not recreated\n{router.stdout}"
        time.sleep(0.1)


# --------------------------------------------------------------------------- #
# 9.6: running out of file descriptors does not end the router
# --------------------------------------------------------------------------- #

FD_LIMIT = 40
CONNECTIONS = 80


def test_router_survives_running_out_of_file_descriptors(base: Path) -> None:
    router = start_router(base / "control")
    # Lowered on the running process: a few descriptors above what it uses at rest.
    resource.prlimit(router.process.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    path, process = router.socket, router.process
    clients: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS):  # silent clients: each holds one router descriptor
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(path))
            clients.append(client)

        def in_use() -> int:
            return sum(1 for fd in os.listdir(f"/proc/{process.pid}/fd") if int(fd) < FD_LIMIT)

        deadline = time.monotonic() + WAIT
        while process.poll() is None and in_use() < FD_LIMIT:
            assert time.monotonic() < deadline, f"router never ran out of descriptors: {in_use()}"
            time.sleep(0.05)
        for client in clients:
            client.close()
        clients.clear()
        _wait_until_answers(router)  # it accepts again once the clients are gone
        assert router.must("DATACENTER SET dc1") == ""
        assert router.must("DATACENTER PRINT") == "dc1\n"
        assert router.process.poll() is None

        def recovered() -> bool:
            # Connections still queued when the clients closed are accepted (and
            # closed) afterwards and may run it short once more: wait for the line
            # that says it got over it, as it does within ACCEPT_RETRY_DELAY.
            err = router.stderr
            return 0 < err.count("cannot accept") == err.count("control socket accepting again")

        wait_for(recovered, timeout=WAIT, what="'control socket accepting again' in the log")
    finally:
        for client in clients:
            client.close()
        router.stop(signal.SIGKILL)
    assert "Traceback" not in router.stderr
    # One line when accepting starts failing, one when it works again (not a flood).
    short = [line for line in router.stderr.splitlines() if "cannot accept" in line]
    assert short, router.stderr
    assert all("level='warning'" in line and "Too many open files" in line for line in short)
    assert router.stderr.count("control socket accepting again") == len(short)
