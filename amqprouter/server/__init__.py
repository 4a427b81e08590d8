"""Listeners, the session registry, start-up and shutdown."""

from amqprouter.server.server import Server

__all__ = ["Server"]
