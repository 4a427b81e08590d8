"""The optional compiled frame scanner: the build backend's choices, and what this
checkout runs.

scripts/compiled_check.py builds the compiled wheel and runs the protocol, session and
net tests on it; these check the switch itself, without building.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from amqprouter.net import engine
from amqprouter.protocol import frames

REPO = Path(__file__).resolve().parent.parent
BACKEND = REPO / "packaging" / "backend" / "amqprouter_build.py"


#: What the stand-in for setuptools answers, and the AMQPROUTER_COMPILE it saw.
SETUPTOOLS_REQUIRES = ["setuptools-stand-in"]


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The in-tree backend, with setuptools' own hooks replaced by a stand-in: what is
    tested is the backend's switch, not setuptools (whose answer depends on its version,
    and which runs setup.py; a real build runs both, in scripts/compiled_check.py)."""
    monkeypatch.delenv("AMQPROUTER_COMPILE", raising=False)
    spec = importlib.util.spec_from_file_location("amqprouter_build", BACKEND)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen: list[str | None] = []

    def stand_in(config_settings: object = None) -> list[str]:
        seen.append(os.environ.get("AMQPROUTER_COMPILE"))
        return list(SETUPTOOLS_REQUIRES)

    monkeypatch.setattr(module.build_meta, "get_requires_for_build_wheel", stand_in)
    monkeypatch.setattr(module.build_meta, "get_requires_for_build_editable", stand_in)
    module.seen = seen  # type: ignore[attr-defined]
    return module


def test_pyproject_names_the_in_tree_backend() -> None:
    build_system = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    assert build_system["build-backend"] == "amqprouter_build"
    assert build_system["backend-path"] == ["packaging/backend"]
    assert (REPO / build_system["backend-path"][0] / "amqprouter_build.py").is_file()


def test_a_default_build_is_pure_and_asks_for_no_compiler(backend: ModuleType) -> None:
    assert backend.get_requires_for_build_wheel() == SETUPTOOLS_REQUIRES
    assert backend.get_requires_for_build_editable() == SETUPTOOLS_REQUIRES


def test_a_compiling_build_asks_for_mypy_and_the_runtime_dependencies(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQPROUTER_COMPILE", "1")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert backend.get_requires_for_build_wheel() == [
        *SETUPTOOLS_REQUIRES,
        backend.COMPILER,
        *project["dependencies"],
    ]
    # setuptools answers from setup.py, which would need mypyc to compile: it is asked
    # as for a pure build, and the switch is back on afterwards.
    assert backend.seen == ["0"]
    assert os.environ["AMQPROUTER_COMPILE"] == "1"


def test_a_compiling_editable_install_is_refused(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQPROUTER_COMPILE", "1")
    with pytest.raises(ValueError, match="builds wheels only: an editable install"):
        backend.get_requires_for_build_editable()


@pytest.mark.parametrize("value", ["yes", "true", "2", " 1"])
def test_only_0_or_1_is_understood(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AMQPROUTER_COMPILE", value)
    with pytest.raises(ValueError, match="AMQPROUTER_COMPILE must be 0 or 1"):
        backend.get_requires_for_build_wheel()


def test_this_checkout_runs_the_pure_module_and_says_so() -> None:
    # The editable install never compiles (above): tests here exercise the pure module,
    # scripts/compiled_check.py the compiled one.
    assert frames.__file__ is not None and frames.__file__.endswith("frames.py")
    assert frames.COMPILED is False
    assert engine.__file__ is not None and engine.__file__.endswith("engine.py")
    assert engine.COMPILED is False
    said = subprocess.run(
        [sys.executable, "-m", "amqprouter", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert said.endswith("(frame scanner: pure Python)")


def test_the_compiled_build_holds_the_scanner_and_the_engine() -> None:
    """setup.py compiles the forwarding engine with the scanner (each read of every
    session in the engine runs both), and compiled_check.py asks the wheel for both."""
    setup = (REPO / "setup.py").read_text()
    listed = setup[setup.index("COMPILED_MODULES = [") :].split("]")[0]
    assert '"amqprouter/protocol/frames.py"' in listed
    assert '"amqprouter/net/engine.py"' in listed
    check = (REPO / "scripts" / "compiled_check.py").read_text()
    assert '"amqprouter/net/engine.cpython-"' in check
