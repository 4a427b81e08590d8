"""The package's metadata, read from pyproject.toml: what PyPI and pip users see.

scripts/wheel_smoke.py checks the built sdist and wheel themselves; these need no build.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import trove_classifiers
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from amqprouter.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
PROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
FIRST_PARTY = {"amqprouter", "amqprouter_ctl"}
#: Calendar-versioned, with a written promise not to break without a long deprecation:
#: a new year in the version says nothing, so they are not capped (pyproject.toml).
UNCAPPED = {"attrs", "structlog"}


def requirements(entries: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(entry) for entry in entries]
    return {canonicalize_name(requirement.name): requirement for requirement in parsed}


def test_classifiers_are_pypis_and_say_trio_and_typed() -> None:
    classifiers: list[str] = PROJECT["classifiers"]
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert unknown == [], "PyPI refuses an upload with unknown classifiers"
    assert not set(classifiers) & set(trove_classifiers.deprecated_classifiers)
    assert {"Framework :: Trio", "Typing :: Typed"} <= set(classifiers)
    # setuptools refuses a License classifier next to an SPDX `license`.
    assert PROJECT["license"] == "Apache-2.0"
    assert not [c for c in classifiers if c.startswith("License ::")]


def test_python_classifiers_name_the_version_the_suite_runs_on() -> None:
    allowed = SpecifierSet(PROJECT["requires-python"])
    versions = [
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions
    assert all(f"{version}.0" in allowed for version in versions), versions
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert running in versions, f"add the classifier for Python {running}, which runs the suite"


def test_runtime_dependencies_have_floors_and_caps_where_majors_break() -> None:
    for name, requirement in requirements(PROJECT["dependencies"]).items():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators, f"{name}: no floor"
        if name in UNCAPPED:
            assert "<" not in operators, f"{name}: capped, but UNCAPPED says why it is not"
        else:
            assert "<" in operators, f"{name}: a new major (or 0.x minor) may break us"


def example_imports() -> dict[str, set[str]]:
    """Third-party top-level module → the example files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "examples").rglob("*.py")):
        siblings = {sibling.stem for sibling in path.parent.glob("*.py")}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                local = top in FIRST_PARTY or top in siblings or top == "__future__"
                if not local and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_examples_extra_holds_what_examples_import_and_nothing_else() -> None:
    runtime = set(requirements(PROJECT["dependencies"]))
    extra = set(requirements(PROJECT["optional-dependencies"]["examples"]))
    providers = importlib.metadata.packages_distributions()
    imported = example_imports()
    assert {"pika", "aio_pika"} <= set(imported)
    used: set[str] = set()
    for module, files in imported.items():
        dists = {canonicalize_name(dist) for dist in providers.get(module, [])}
        declared = dists & (runtime | extra)
        assert declared, f"{module} (imported by {sorted(files)}) comes from no declared package"
        used |= declared
    assert extra - used == set(), "an examples extra no example imports"


def test_test_extra_includes_the_examples_extra() -> None:
    # The examples run in the suite (tests/test_examples*.py).
    assert "amqprouter[examples]" in PROJECT["optional-dependencies"]["test"]


def test_pypi_description_has_no_relative_links_or_repository_scripts() -> None:
    assert PROJECT["readme"] == "docs/pypi.md"
    text = (REPO / PROJECT["readme"]).read_text()
    targets = re.findall(r"\]\(([^)\s]*)", text)  # [text](target), ![alt](target)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, re.MULTILINE)  # [ref]: target
    targets += re.findall(r"""(?:src|href)=["']([^"']*)""", text)
    assert [t for t in targets if not t.startswith("https://")] == []
    # Those run only from a checkout, not from an installed package.
    assert "scripts/" not in text
    assert "pip install 'amqprouter[examples]'" in text


def test_pypi_description_names_only_real_flags() -> None:
    text = (REPO / PROJECT["readme"]).read_text()
    mentioned = set(re.findall(r"(?<![\w-])--[a-zA-Z][\w-]*", text))
    parameters = cli_main.get_params(click.Context(cli_main))  # --help included
    known = {opt for parameter in parameters for opt in parameter.opts}
    assert mentioned
    assert mentioned - known == set()


def test_readme_keeps_the_repository_commands() -> None:
    readme = (REPO / "README.md").read_text()
    for script in ("scripts/demo", "scripts/test"):
        assert f"./{script}" in readme
        assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert "[examples]" in readme
