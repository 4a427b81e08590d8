"""A fleet of routers: ``--workers N`` runs a supervisor process that owns the control
socket, the HTTP port and the log, and N worker processes that each listen on the
client ports (SO_REUSEPORT) and forward on their own (docs/fleet.md).

The layer above ``control``: it speaks the control grammar to its workers and merges
their replies; the composition root (cli, app) starts it.
"""
