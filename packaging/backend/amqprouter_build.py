"""The build backend: setuptools, plus mypy when a compiled frame scanner is asked for.

``AMQPROUTER_COMPILE=1`` at build time compiles ``amqprouter/protocol/frames.py`` (the
frame reader and the forwarding scanner) and the handshake machines beside it
(``COMPILED_MODULES`` in setup.py) with mypyc into C extensions; the
wheel is then CPython-, version- and platform-specific, and needs a C compiler and the
Python headers to build. Without it the package is pure Python and installs anywhere.
Both run the same code: the extensions are those modules, compiled.

mypyc comes with mypy, which only a compiling build needs, so it is asked for here
rather than in ``[build-system] requires`` (every install would download it).
An editable install with AMQPROUTER_COMPILE=1 is refused: the extension would land
in the source tree and shadow every later edit of frames.py.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403 (the PEP 517 hooks not changed here)

#: mypyc of this release compiles setup.py's modules as they are (tests on both builds).
COMPILER = "mypy>=1.10"


def compile_requires() -> list[str]:
    """mypyc, and the runtime dependencies: it type-checks what frames.py imports
    (attrs, pamqp and the modules of its package) to compile it."""
    with open(Path(__file__).parents[2] / "pyproject.toml", "rb") as file:
        dependencies: list[str] = tomllib.load(file)["project"]["dependencies"]
    return [COMPILER, *dependencies]


def compiling() -> bool:
    value = os.environ.get("AMQPROUTER_COMPILE", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"AMQPROUTER_COMPILE must be 0 or 1, not {value!r}")
    return value == "1"


def get_requires_for_build_wheel(
    config_settings: dict[str, str | list[str]] | None = None,
) -> list[str]:
    if not compiling():
        return list(build_meta.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to answer, and setup.py needs mypyc to compile: ask it
    # as for a pure build, then add the compiler.
    os.environ["AMQPROUTER_COMPILE"] = "0"
    try:
        return [*build_meta.get_requires_for_build_wheel(config_settings), *compile_requires()]
    finally:
        os.environ["AMQPROUTER_COMPILE"] = "1"


def get_requires_for_build_editable(
    config_settings: dict[str, str | list[str]] | None = None,
) -> list[str]:
    if compiling():
        raise ValueError(
            "AMQPROUTER_COMPILE=1 builds wheels only: an editable install would leave the "
            "compiled module in the source tree, where it hides every edit of frames.py. "
            "Unset it for an editable install (the pure module), or build a wheel."
        )
    return list(build_meta.get_requires_for_build_editable(config_settings))
