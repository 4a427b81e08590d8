"""The package layers import downward only (docs/architecture.md draws them).

protocol <- routing <- net <- session <- server <- observe <- control <- the
composition root (cli, __main__); ``text`` (escaping for output) and ``systemd_notify``
(sd_notify, the standard library only) are leaves under them all and import nothing of
the router. A module may import its own layer and the ones below it; importing a higher
layer fails here, naming the file, the line and the import, so the shape stays as new
pieces arrive. Imports under ``TYPE_CHECKING`` count too: a type that lives in a higher
layer is a sign the code is in the wrong one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "amqprouter"

#: Lowest first. The top-level modules of the package are the composition root,
#: except the leaves, which every layer may use.
LAYERS = ["protocol", "routing", "net", "session", "server", "observe", "control"]
LEAVES = {"text", "systemd_notify"}
ROOT = len(LAYERS)


def _layer(module: str) -> int | None:
    """The layer of a dotted module name inside amqprouter, None outside it."""
    parts = module.split(".")
    if parts[0] != "amqprouter":
        return None
    if len(parts) == 1 or parts[1] in LEAVES:
        return -1  # the package itself (``__version__``) and the leaves: below all
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else ROOT


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts).removesuffix(".__init__")


def test_every_subpackage_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS)


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_imports_point_down(path: Path) -> None:
    own = _layer(_module_name(path))
    assert own is not None
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}"
        for line, module in _imports(path)
        if (layer := _layer(module)) is not None and layer > own
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_imports_are_absolute(path: Path) -> None:
    # A relative import hides its layer from the check above (and from a reader).
    relative = [f"{path.relative_to(PACKAGE.parent)}:{found}" for found in _relative(path)]
    assert not relative, "\n".join(relative)


def _relative(path: Path) -> list[str]:
    return [
        f"{node.lineno}: from {'.' * node.level}{node.module or ''} import ..."
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]


def test_the_check_sees_a_relative_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from amqprouter.net import sockets\nfrom ..control import commands\n")
    assert _relative(sample) == ["2: from ..control import ..."]


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The check itself must be able to fail.
    sample = tmp_path / "sample.py"
    sample.write_text("from amqprouter.control import commands\nimport amqprouter.server\n")
    assert [module for _line, module in _imports(sample)] == [
        "amqprouter.control",
        "amqprouter.server",
    ]
    assert (_layer("amqprouter.control.commands"), _layer("amqprouter.routing.model")) == (6, 1)
