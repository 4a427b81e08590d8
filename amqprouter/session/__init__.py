"""The trio shell around one client connection."""

from amqprouter.session.session import End, Session, State
from amqprouter.session.settings import SessionSettings, Timeouts

__all__ = ["End", "Session", "SessionSettings", "State", "Timeouts"]
