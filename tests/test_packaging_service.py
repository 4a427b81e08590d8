"""packaging/: the systemd unit checked by systemd itself, the Containerfile by what can run here.

The unit goes through ``systemd-analyze verify`` as written, with the router installed
where docs/operations.md puts it (``/opt/amqprouter/bin``; verify insists the commands
exist there: this venv's programs are linked there when no real install is), and
``systemd-analyze security``.
No container daemon runs on the test machines, so the Containerfile is checked piece
by piece instead of built: its instructions, that the files it copies exist and make a
wheel, that it ends as a non-root user, and that its HEALTHCHECK command, run as
written, passes against a real router configured by the image's ENV lines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amqprouter.server.server import SHUTDOWN_TIMEOUT
from tests.brokers import free_port, port_is_open, wait_for
from tests.router import REPO, router_command

UNIT = REPO / "packaging" / "amqprouter.service"
CONTAINERFILE = REPO / "packaging" / "Containerfile"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
AMQPROUTER = Path(sys.executable).parent / "amqprouter"


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(SYSTEMD_ANALYZE).exists():
        pytest.fail(
            f"{SYSTEMD_ANALYZE} is missing: install Debian's systemd (scripts/setup.sh does)"
        )
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


#: Where docs/operations.md installs the router, and so where the unit runs it from.
INSTALLED = Path("/opt/amqprouter/bin")
PROGRAMS = ("amqprouter", "amqprouter_ctl")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The router's programs at the path the docs install them to: a real install kept
    as it is, or else this venv's programs linked there for the test (and removed after).

    Needs root (CI runs as root), as an install to /opt does.
    """
    made: list[Path] = []
    if not all(os.access(INSTALLED / name, os.X_OK) for name in PROGRAMS):
        if os.geteuid() != 0:
            pytest.fail(f"linking the router into {INSTALLED} needs root (CI runs as root)")
        for directory in (INSTALLED.parent, INSTALLED):
            if not directory.exists():
                directory.mkdir()
                made.append(directory)
        for name in PROGRAMS:
            if not (INSTALLED / name).exists():
                (INSTALLED / name).symlink_to(AMQPROUTER.parent / name)
                made.append(INSTALLED / name)
    try:
        yield INSTALLED
    finally:
        for path in reversed(made):
            if path.is_symlink():
                path.unlink()
            else:
                path.rmdir()


@pytest.fixture
def unit_here(tmp_path: Path, installed: Path) -> Path:
    """A copy of the unit as written, with the router installed where it says."""
    copy = tmp_path / "amqprouter.service"
    shutil.copy(UNIT, copy)
    return copy


def test_the_unit_runs_the_router_from_where_the_docs_install_it(installed: Path) -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    assert "python3 -m venv /opt/amqprouter\n" in operations
    assert f"`ExecStart=` is `{installed}/amqprouter`" in operations.replace("\n  ", " ")
    commands = [*_unit_commands("ExecStartPre"), *_unit_commands("ExecStart")]
    commands += _unit_commands("ExecReload")
    assert {Path(command[0]).parent for command in commands[:-1]} == {installed}
    # The program there is a router that runs.
    version = subprocess.run(
        [str(installed / "amqprouter"), "--version"], capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0 and version.stdout.startswith("amqprouter, version")


def _unit_commands(key: str) -> list[list[str]]:
    """Each ``key=`` command line of the unit, split."""
    return [
        shlex.split(line.split("=", 1)[1])
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def _venv(commands: list[list[str]]) -> list[list[str]]:
    """``commands`` with this venv's programs for the installed ones (the checkout's code)."""
    return [
        [str(AMQPROUTER.parent / Path(word).name) if word.startswith(f"{INSTALLED}/") else word
         for word in command]
        for command in commands
    ]  # fmt: skip


def _unit_environment(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment=AMQPROUTER_"):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    # The checkout's code, whatever the venv's scripts were installed from.
    env["PYTHONPATH"] = str(REPO)
    return {**env, **overrides}


def test_the_unit_checks_the_configuration_before_start_and_reload(tmp_path: Path) -> None:
    (check,) = _venv(_unit_commands("ExecStartPre"))
    assert check == [str(AMQPROUTER), "--check"]
    reload_check, hup = _venv(_unit_commands("ExecReload"))
    assert reload_check[1:] == ["CONFIG", "CHECK"] and hup == ["/bin/kill", "-HUP", "$MAINPID"]
    config = tmp_path / "router.conf"
    socket_path = tmp_path / "control"
    port = free_port()
    env = _unit_environment(
        AMQPROUTER_CONFIG=str(config),
        AMQPROUTER_CONTROL_SOCKET=str(socket_path),
        AMQPROUTER_LISTEN_PORT="",
        AMQPROUTER_DESTINATION_DNS="",
        AMQPROUTER_DESTINATION_PORT="",
    )
    # ExecStartPre, as the unit runs it: a broken file fails the start, with its lines.
    config.write_text("BACKEND ADD b dc 127.0.0.1 5672\nFARM ADD f round-robin b x\n")
    result = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 6
    assert result.stderr.startswith(f"{config}:2: FARM ADD f round-robin b x: Backend 'x'")
    config.write_text(f"BACKEND ADD b dc 127.0.0.1 5672\nLISTEN START {port}\n")
    result = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # ExecReload's check, against the running router: its own port does not count.
    process = subprocess.Popen(
        router_command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO
    )
    try:
        wait_for(lambda: port_is_open(port), timeout=15, what="the router to listen")
        result = subprocess.run(reload_check, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        config.write_text(f"LISTEN START {port}\nMAP FARM v nosuch\n")
        result = subprocess.run(reload_check, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert result.stdout.startswith(f"{config}:2: MAP FARM v nosuch: Farm 'nosuch' not found")
    finally:
        process.send_signal(signal.SIGTERM)
        _out, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_systemd_accepts_the_unit(unit_here: Path) -> None:
    result = _systemd_analyze("verify", str(unit_here))
    # verify exits 0 on unknown keys and bad values too: it only warns. Any line about
    # the unit is a mistake in it.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_verify_check_sees_a_mistake(unit_here: Path) -> None:
    unit_here.write_text(unit_here.read_text().replace("ProtectHome=yes", "ProtectHome=bogus"))
    assert "Failed to parse protect home value" in _systemd_analyze("verify", str(unit_here)).stderr


def test_the_unit_is_hardened(unit_here: Path) -> None:
    result = _systemd_analyze("security", "--offline=true", "--json=short", str(unit_here))
    assert result.returncode == 0, result.stderr
    failed = {item["name"] for item in json.loads(result.stdout) if item["set"] is False}
    for setting in ("DynamicUser=", "NoNewPrivileges=", "ProtectSystem=", "ProtectHome="):
        assert setting not in failed
    overall = _systemd_analyze("security", "--offline=true", str(unit_here)).stdout
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", overall)
    assert level is not None, overall
    assert float(level.group(1)) <= 2.0, overall  # systemd calls up to 2.0 "OK"


def test_the_unit_says_what_the_router_does() -> None:
    settings = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"  # the last one: after the check
    # systemd must not SIGKILL a drain that --shutdown-timeout still allows.
    assert float(settings["TimeoutStopSec"].removesuffix("s")) > SHUTDOWN_TIMEOUT
    # Every variable the unit sets is a flag's.
    variables = re.findall(r"^Environment=(AMQPROUTER_\w+)=", UNIT.read_text(), re.MULTILINE)
    help_text = subprocess.run(
        [str(AMQPROUTER), "--help"], capture_output=True, text=True, check=True
    ).stdout.replace("\n", " ")
    for variable in variables:
        assert variable in help_text


# --------------------------------------------------------------------------- #
# Containerfile

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in CONTAINERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Containerfile ends inside a continued line"
    return [(text.split(None, 1)[0], text.split(None, 1)[1].strip()) for text in logical]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, arguments in _final_stage():
        if name == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_containerfile_instructions_are_known_and_bases_are_python_slim() -> None:
    instructions = _instructions()
    unknown = [name for name, _ in instructions if name not in INSTRUCTIONS]
    assert not unknown
    bases = [arguments.split()[0] for name, arguments in instructions if name == "FROM"]
    # Pinned to one release (major.minor.patch, and the Debian release) or a digest, the
    # same for both stages: a floating tag changes under the same commit.
    assert len(bases) == 2 and bases[0] == bases[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", bases[0]) or (
        re.fullmatch(r"python@sha256:[0-9a-f]{64}", bases[0])
    ), bases[0]
    assert ("ENTRYPOINT", '["amqprouter"]') in instructions


def test_the_files_it_copies_exist_and_build_the_wheel(tmp_path: Path) -> None:
    # Stage 1 as a builder would run it: the COPY sources only, then `pip wheel .`.
    context = tmp_path / "context"
    context.mkdir()
    for name, arguments in _instructions():
        if name == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                target = context / (source if destination.endswith("/") else destination)
                if (REPO / source).is_dir():
                    shutil.copytree(
                        REPO / source, target, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(REPO / source, target)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("amqprouter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "amqprouter/cli.py" in names and "amqprouter_ctl/cli.py" in names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "amqprouter = amqprouter.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_image_runs_as_a_numeric_non_root_user_that_owns_the_socket_directory() -> None:
    final = _final_stage()
    users = [arguments for name, arguments in final if name == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid != "0"
    creating = " ".join(arguments for name, arguments in final if name == "RUN")
    assert f"--uid {uid}" in creating
    socket = _env()["AMQPROUTER_CONTROL_SOCKET"]
    assert f"-o amqprouter -g amqprouter -m 0755 {Path(socket).parent}" in creating
    http_port = _env()["AMQPROUTER_HTTP_PORT"]
    exposed = " ".join(arguments for name, arguments in final if name == "EXPOSE").split()
    assert http_port in exposed


def test_the_stop_grace_outlasts_the_drain() -> None:
    # docker stop: SIGTERM (which drains), then SIGKILL after the runtime's grace.
    assert ("STOPSIGNAL", "SIGTERM") in _final_stage()
    drain = float(_env()["AMQPROUTER_SHUTDOWN_TIMEOUT"])
    docker_default_grace = 10.0
    assert drain < docker_default_grace
    # The grace the file's own example and the docs give is longer too.
    text = CONTAINERFILE.read_text()
    example = re.search(r"docker run .*--stop-timeout (\d+)", text)
    assert example is not None and float(example.group(1)) > drain
    operations = (REPO / "docs" / "operations.md").read_text()
    for grace in ("--stop-timeout", "stop_grace_period", "terminationGracePeriodSeconds"):
        assert grace in operations and grace in text


def _healthcheck_command() -> list[str]:
    (arguments,) = [arguments for name, arguments in _final_stage() if name == "HEALTHCHECK"]
    exec_form = arguments[arguments.index("CMD ") + 4 :]
    command: list[str] = json.loads(exec_form)
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_healthcheck_passes_against_a_router_configured_as_the_image_is(
    tmp_path: Path,
) -> None:
    # The image's ENV, with this machine's free port and a private control socket.
    http_port = free_port()
    env = {
        **os.environ,
        **_env(),
        "AMQPROUTER_HTTP_PORT": str(http_port),
        "AMQPROUTER_HTTP_HOST": "127.0.0.1",
        "AMQPROUTER_CONTROL_SOCKET": str(tmp_path / "control"),
    }
    healthcheck = _healthcheck_command()
    # Nothing answers yet: the check must fail, or it proves nothing.
    assert subprocess.run(healthcheck, env=env, capture_output=True, timeout=10).returncode != 0
    process = subprocess.Popen(
        router_command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path
    )
    try:
        wait_for(lambda: port_is_open(http_port), timeout=15, what="the router's HTTP port")
        result = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, (
            f"the router must serve what HEALTHCHECK asks: {result.stderr}"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _out, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
