"""Checking a configuration without applying it: the checker finds every problem a start
or a reload would meet, each with its line; CONFIG CHECK asks a running router (which
leaves out the ports it holds itself); a reload says one verdict, with line numbers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from amqprouter.control.config_check import check_file, check_lines
from tests.brokers import free_port
from tests.control.test_config_reload import ask, router_with
from tests.tls_certs import TlsFiles


@contextmanager
def port_in_use() -> Iterator[int]:
    """A port something else listens on, every address (as the router would bind it)."""
    holder = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    holder.bind(("::", 0))
    holder.listen()
    try:
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


def lines_of(text: str, name: str = "router.conf") -> list[tuple[str, str]]:
    return [
        (f"{name}:{number}", line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line and not line.startswith("#")
    ]


def problems(text: str, **kwargs: object) -> list[str]:
    return [str(problem) for problem in check_lines(lines_of(text), **kwargs)]  # type: ignore[arg-type]


def test_a_good_file_has_no_problem() -> None:
    text = (
        "BACKEND ADD b1 dc 127.0.0.1 5672\n"
        "BACKEND ADD_DNS b2 dc broker.invalid 5672\n"  # ADD_DNS resolves at each connection
        "MAP BACKEND early b1\n"  # before the farm it names would be fine too: see below
        "FARM ADD f round-robin b1 b2\n"
        "FARM PARTITION f datacenter-affinity\n"
        "MAP FARM v f\n"
        "MAP DEFAULT f\n"
        "BACKEND CHECK b1 ON\n"
        "FARM ON_DOWN f DISCONNECT\n"
        "LIMIT CONN_RATE DEFAULT 10\n"
        f"LISTEN START {free_port()}\n"
    )
    assert problems(text) == []


def test_every_problem_is_listed_with_its_line() -> None:
    with port_in_use() as taken:
        text = (
            "BACKEND ADD b1 dc 127.0.0.1 5672\n"
            "FARM ADD broken round-robin b1 x\n"
            "MAP BACKEND v1 nosuch\n"
            "MAP FARM v2 b1\n"
            "MAP DEFAULT broken\n"
            f"LISTEN START {taken}\n"
            "BACKEND CHECK zz ON\n"
            "FARM ON_DOWN zz KEEP\n"
            "EXIT\n"
            "MAP BACKEND v3 b1 extra\n"
            "BACKEND ADD b1 dc 127.0.0.1 5673\n"
            "FARM ADD g no-such-selector b1\n"
        )
        found = problems(text)
    assert found == [
        "router.conf:2: FARM ADD broken round-robin b1 x: Backend 'x' not found; "
        "Farm not inserted due to at least one missing Backend",
        "router.conf:3: MAP BACKEND v1 nosuch: Backend 'nosuch' not found: clients of vhost "
        "'v1' would be refused",
        "router.conf:4: MAP FARM v2 b1: Farm 'b1' not found: clients of vhost 'v2' would be "
        "refused",
        "router.conf:5: MAP DEFAULT broken: Farm 'broken' not found: clients of unmapped "
        "vhosts would be refused",
        f"router.conf:6: LISTEN START {taken}: Cannot listen on port {taken}: Address already "
        "in use",
        "router.conf:7: BACKEND CHECK zz ON: Backend 'zz' not found",
        "router.conf:8: FARM ON_DOWN zz KEEP: Farm 'zz' not found",
        "router.conf:9: EXIT: 'EXIT' is an action, not configuration: a reload does not run it",
        "router.conf:10: MAP BACKEND v3 b1 extra: Unexpected word 'extra': 'MAP BACKEND v3 b1' "
        "takes no more words.",
        "router.conf:11: BACKEND ADD b1 dc 127.0.0.1 5673: backend 'b1' is added twice "
        "(BACKEND DELETE it in between)",
        "router.conf:12: FARM ADD g no-such-selector b1: Selector 'no-such-selector' not found",
    ]


def test_a_map_is_judged_by_the_whole_file_and_an_unmap_forgets_it() -> None:
    assert problems("MAP BACKEND v b\nBACKEND ADD b dc 127.0.0.1 5672\n") == []
    assert problems("MAP BACKEND v b\nMAP UNMAP v\nMAP DEFAULT f\nMAP REMOVE_DEFAULT\n") == []
    # Deleted later in the file: the map would refuse clients.
    assert problems("BACKEND ADD b dc 127.0.0.1 5672\nMAP BACKEND v b\nBACKEND DELETE b\n") == [
        "router.conf:2: MAP BACKEND v b: Backend 'b' not found: clients of vhost 'v' would be "
        "refused"
    ]


def test_a_host_that_does_not_resolve_is_one_problem() -> None:
    def resolve(host: str, port: int) -> str | None:
        return f"Failed to resolve '{host}', error code: Name or service not known"

    # The farm that names the backend is not reported too: one mistake, one line.
    assert problems(
        "BACKEND ADD b dc nowhere.invalid 5672\nFARM ADD f round-robin b\n", resolve=resolve
    ) == [
        "router.conf:1: BACKEND ADD b dc nowhere.invalid 5672: Failed to resolve "
        "'nowhere.invalid', error code: Name or service not known"
    ]


def test_a_port_this_router_holds_is_not_bound_again() -> None:
    with port_in_use() as taken:
        assert problems(f"LISTEN START {taken}\n", listening={taken}) == []
    # Listened on twice in the file: bound once (the second is the same listener).
    bound: list[int] = []

    def bind(port: int) -> str | None:
        bound.append(port)
        return None

    assert problems("LISTEN START 5999\nLISTEN START 5999\n", bind=bind) == []
    assert bound == [5999]


def test_log_file_needs_log_files() -> None:
    assert problems("LOG FILE 4\n", log_files=True) == []
    assert problems("LOG FILE 4\n", log_files=False) == [
        "router.conf:1: LOG FILE 4: LOG FILE has no effect: this router writes no log files "
        "(start it with --log-directory); LOG CONSOLE sets the level of what it logs."
    ]


def test_tls_files_that_cannot_be_read_or_used(tmp_path: Path, tls_files: TlsFiles) -> None:
    unreadable = tmp_path / "missing.pem"
    found = problems(f"TLS INGRESS CERT_CHAIN_FILE {unreadable}\n")
    assert len(found) == 1
    assert found[0].startswith(f"router.conf:1: TLS INGRESS CERT_CHAIN_FILE {unreadable}: ")
    assert str(unreadable) in found[0]
    # A certificate and a key that do not belong together.
    text = (
        f"TLS INGRESS CERT_CHAIN_FILE {tls_files.server.chain}\n"
        f"TLS INGRESS KEY_FILE {tls_files.client.key}\n"
    )
    (mismatch,) = problems(text)
    assert mismatch.startswith(f"router.conf:2: TLS INGRESS KEY_FILE {tls_files.client.key}: ")
    good = (
        f"TLS INGRESS CERT_CHAIN_FILE {tls_files.server.chain}\n"
        f"TLS INGRESS KEY_FILE {tls_files.server.key}\n"
        f"LISTEN START_SECURE {free_port()}\n"
    )
    assert problems(good) == []
    assert problems(f"LISTEN START_SECURE {free_port()}\n")[0].endswith(
        "TLS INGRESS needs CERT_CHAIN_FILE and KEY_FILE first"
    )


def test_control_characters_never_reach_the_screen_raw() -> None:
    (problem,) = problems("MAP BACKEND v\x1b[2J b extra\n")
    assert "\x1b" not in problem


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    assert [str(p) for p in check_file(tmp_path / "nope.conf")] == [
        f"Cannot read {tmp_path / 'nope.conf'}: No such file or directory"
    ]
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"MAP BACKEND v b\n\xff\n")
    (problem,) = check_file(bad)
    assert str(problem).startswith(f"{bad}:2: not UTF-8 text")


# --------------------------------------------------------------------------- #
# CONFIG CHECK through the control socket, and a reload's verdict


async def test_config_check_through_the_control_socket(tmp_path: Path) -> None:
    port = free_port()
    config, socket_path = tmp_path / "router.conf", tmp_path / "ctl"
    config.write_text(f"BACKEND ADD b1 dc 127.0.0.1 5672\nLISTEN START {port}\n")
    async with router_with(config, socket_path) as controller:
        assert port in controller.server.listeners
        # Its own file, and its own port: this router holds it, a reload keeps it.
        assert await ask(socket_path, "CONFIG CHECK") == f"Configuration valid: {config}\n"
        other = tmp_path / "next.conf"
        other.write_text(
            f"BACKEND ADD b1 dc 127.0.0.1 5672\nFARM ADD f round-robin b1 b9\nLISTEN START {port}\n"
        )
        reply = await controller.handle(f"CONFIG CHECK {other}")
        assert not reply.ok
        assert reply.text == (
            f"{other}:2: FARM ADD f round-robin b1 b9: Backend 'b9' not found; Farm not "
            "inserted due to at least one missing Backend\n"
            "Configuration invalid: 1 problem\n"
        )
        # Nothing was applied.
        assert "f" not in controller.server.routing.farms
        reply = await controller.handle(f"CONFIG CHECK {tmp_path / 'none.conf'}")
        assert (reply.ok, reply.text) == (
            False,
            f"Cannot read {tmp_path / 'none.conf'}: No such file or directory\n"
            "Configuration invalid: 1 problem\n",
        )


async def test_config_check_without_a_config_file(tmp_path: Path) -> None:
    async with router_with(None, tmp_path / "ctl") as controller:
        reply = await controller.handle("CONFIG CHECK")
        assert reply.ok
        assert reply.text.startswith("No configuration file to check")


async def test_a_reload_whose_listen_fails_gives_one_verdict_with_the_line(
    tmp_path: Path,
) -> None:
    config, socket_path = tmp_path / "router.conf", tmp_path / "ctl"
    config.write_text("BACKEND ADD b1 dc 127.0.0.1 5672\n")
    async with router_with(config, socket_path):
        with port_in_use() as taken:
            config.write_text(f"BACKEND ADD b1 dc 127.0.0.1 5672\n\nLISTEN START {taken}\n")
            reply = await ask(socket_path, "CONFIG RELOAD")
            assert reply == (
                f"Failed: {config}:3: LISTEN START {taken}: Cannot listen on port {taken}: "
                "Address already in use\n"
            )
            assert "No changes" not in reply
            # With a change that did apply: the change, then the failure.
            config.write_text(
                f"BACKEND ADD b1 dc 127.0.0.1 5672\nMAP BACKEND v b1\nLISTEN START {taken}\n"
            )
            assert await ask(socket_path, "CONFIG RELOAD") == (
                "Added map v -> b1\n"
                f"Failed: {config}:3: LISTEN START {taken}: Cannot listen on port {taken}: "
                "Address already in use\n"
            )


async def test_a_reload_whose_routing_fails_names_the_line(tmp_path: Path) -> None:
    config, socket_path = tmp_path / "router.conf", tmp_path / "ctl"
    config.write_text("BACKEND ADD b1 dc 127.0.0.1 5672\n")
    async with router_with(config, socket_path):
        config.write_text("BACKEND ADD b1 dc 127.0.0.1 5672\n# a farm\nFARM ADD f round-robin x\n")
        assert await ask(socket_path, "CONFIG RELOAD") == (
            f"Config reload failed: {config}:3: FARM ADD f round-robin x: Backend 'x' not "
            "found\nFarm not inserted due to at least one missing Backend\n"
        )


@pytest.mark.parametrize("line", ["CONFIG CHECK", "CONFIG CHECK /etc/router.conf"])
def test_config_check_in_a_file_is_refused_as_an_action(line: str) -> None:
    (problem,) = problems(line + "\n")
    assert problem.endswith("is an action, not configuration: a reload does not run it")
