"""Only the optional compiled modules; everything else is in pyproject.toml.

``AMQPROUTER_COMPILE=1`` (see packaging/backend/amqprouter_build.py) compiles the frame
scanner (amqprouter/protocol/frames.py) and the handshake machines with mypyc
(``COMPILED_MODULES``); otherwise the package is pure Python.
"""

from __future__ import annotations

import os

from setuptools import setup

#: The frame scanner (per forwarded read) and the handshake machines (per connection).
#: They import no trio; their attrs value classes (tune.py, events.py) stay interpreted,
#: as mypyc compiles no attrs field() defaults. close.py is here because its machine
#: subclasses machine.Machine: an interpreted class cannot inherit from a compiled one.
COMPILED_MODULES = [
    "amqprouter/protocol/frames.py",
    "amqprouter/protocol/machine.py",
    "amqprouter/protocol/client_handshake.py",
    "amqprouter/protocol/broker_handshake.py",
    "amqprouter/protocol/close.py",
    "amqprouter/protocol/field_table.py",
    "amqprouter/protocol/properties.py",
    "amqprouter/protocol/methods.py",
]

ext_modules = []
if os.environ.get("AMQPROUTER_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED_MODULES, opt_level="3")

setup(ext_modules=ext_modules)
