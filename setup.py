"""Only the optional compiled frame scanner; everything else is in pyproject.toml.

``AMQPROUTER_COMPILE=1`` (see packaging/backend/amqprouter_build.py) compiles
amqprouter/protocol/frames.py with mypyc; otherwise the package is pure Python.
"""

from __future__ import annotations

import os

from setuptools import setup

ext_modules = []
if os.environ.get("AMQPROUTER_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(["amqprouter/protocol/frames.py"], opt_level="3")

setup(ext_modules=ext_modules)
