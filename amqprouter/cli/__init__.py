"""The ``amqprouter`` command: its flags and how they become control commands
(``command``), and how ``--help`` groups and names them (``help_sections``)."""

from amqprouter.cli.command import main

__all__ = ["main"]
