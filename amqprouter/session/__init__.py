"""The trio shell around one client connection."""

from amqprouter.session.closing import End
from amqprouter.session.session import Session
from amqprouter.session.settings import SessionSettings, Timeouts
from amqprouter.session.state import State

__all__ = ["End", "Session", "SessionSettings", "State", "Timeouts"]
