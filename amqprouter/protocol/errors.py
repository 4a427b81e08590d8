"""Protocol errors, each carrying the AMQP reply code to close the connection with.

As in h11, the protocol layer raises; the session layer turns the error into a
``Connection.Close`` with ``reply_code`` and ``str(error)`` as its text, then closes.
"""

from __future__ import annotations

from amqprouter.protocol import constants


class ProtocolError(Exception):
    """A peer broke AMQP 0.9.1 (or asked for something we do not do)."""

    reply_code: int = constants.INTERNAL_ERROR

    def __init__(self, text: str, *, reply_code: int | None = None) -> None:
        super().__init__(text)
        if reply_code is not None:
            self.reply_code = reply_code

    @property
    def reply_text(self) -> str:
        # Reply texts are short strings on the wire: 255 octets at most.
        return str(self)[:255]


class BadProtocolHeader(ProtocolError):
    """The first 8 bytes were not an AMQP 0-9-1 protocol header.

    The answer is our own protocol header, then a close (AMQP 0.9.1 section 4.2.2),
    not a Connection.Close: the peer has not shown it speaks our framing.
    """

    reply_code = constants.FRAME_ERROR

    def __init__(self, received: bytes) -> None:
        super().__init__(f"bad protocol header {received!r}")
        self.received = received


class FrameError(ProtocolError):
    """Malformed framing: bad type, bad frame-end octet, oversized or undecodable frame."""

    reply_code = constants.FRAME_ERROR


class UnexpectedFrame(ProtocolError):
    """A well-formed frame that is not allowed at this point of the conversation."""

    reply_code = constants.UNEXPECTED_FRAME


class NegotiationError(ProtocolError):
    """Tune parameters that cannot work (the peer asked for more than was offered)."""

    reply_code = constants.NOT_ALLOWED
