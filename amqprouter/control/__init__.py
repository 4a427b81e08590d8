"""The control plane's command language: parsed commands and the pure grammar.

``parse(line)`` gives a command value or a ``ParseError`` holding the reply;
``to_line(command)`` writes a command back as the line ``parse`` accepts;
``help_text()`` is the HELP reply. Nothing here does I/O or changes state.
"""
