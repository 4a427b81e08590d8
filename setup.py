"""Only the optional compiled modules; everything else is in pyproject.toml.

``AMQPROUTER_COMPILE=1`` (see packaging/backend/amqprouter_build.py) compiles the frame
scanner (amqprouter/protocol/frames.py) and the handshake machines with mypyc
(``COMPILED_MODULES``); otherwise the package is pure Python.
"""

from __future__ import annotations

import os

from setuptools import setup

#: The frame scanner (per forwarded read), the forwarding engine's thread (every read of
#: every session in it) and the handshake machines (per connection). The machines import
#: no trio; their attrs value classes (tune.py, events.py) stay interpreted, as mypyc
#: compiles no attrs field() defaults. close.py is here because its machine subclasses
#: machine.Machine: an interpreted class cannot inherit from a compiled one. The engine
#: calls trio only on the trio thread (its owner task, the wait's abort callback, the
#: hand-back), through trio's Python API like any caller.
COMPILED_MODULES = [
    "amqprouter/protocol/frames.py",
    "amqprouter/net/engine.py",
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
