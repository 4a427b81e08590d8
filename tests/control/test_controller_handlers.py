"""The controller's table from command type to handler: every command the grammar can
return has exactly one (HELP is answered before it), and each handler's annotation
names the commands it is given."""

from __future__ import annotations

import types
import typing

from amqprouter.control import commands as c
from amqprouter.control import controller


def _types(annotation: object) -> set[object]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return set(typing.get_args(annotation))
    return {annotation}


def test_every_command_but_help_has_a_handler() -> None:
    every = _types(c.Command)
    assert len(every) > 50
    assert set(controller._HANDLERS) == every - {c.Help}


def test_each_handler_is_annotated_with_the_commands_it_runs() -> None:
    every = _types(c.Command)
    for kind, handler in controller._HANDLERS.items():
        accepted = _types(typing.get_type_hints(handler)["command"])
        assert kind in accepted or accepted == every, f"{handler.__name__} given {kind}"
