"""A bounded, iterative check of an AMQP field table before pamqp decodes it.

pamqp decodes tables and arrays recursively (``field_table`` -> ``embedded_value``
-> ``field_array`` -> ...), about three Python frames per level, and copies the rest
of the buffer at every value. A StartOk of 2,486 bytes whose client properties nest
488 empty arrays therefore ends in ``RecursionError`` deep inside pamqp. This module
walks the same bytes with an explicit stack, checks every length against the
container that holds it, and refuses nesting deeper than ``MAX_DEPTH`` *before*
pamqp sees the frame, so the decoder is only ever given input it can finish.

Why 16 levels: the tables the router decodes are client properties, whose deepest
part in every known client is ``capabilities`` (2 levels). 16 leaves 8 times that
for clients that put structured data there, and keeps pamqp's recursion (about 50
Python frames) far below the interpreter's limit of 1000 whatever the caller's stack
depth. A 4 KiB frame could otherwise hold about 800 levels.

The value types are those pamqp decodes (``pamqp.decode.TABLE_MAPPING``), which are
RabbitMQ's 0-9-1 errata letters (``s`` is a signed short, not a short string) plus
``L`` (pamqp reads it as a long-long) and ``\\x00`` (void, seen in the wild).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from amqprouter.protocol.errors import FrameError

#: Deepest nesting accepted, counting the outermost table as level 1 (see above).
MAX_DEPTH: Final = 16

_unpack_length = struct.Struct(">I").unpack_from

#: Fixed-size value types: type octet -> size of the value that follows it.
_FIXED_SIZE: Final[dict[int, int]] = {
    ord("t"): 1,  # boolean
    ord("b"): 1,  # signed 8-bit
    ord("B"): 1,  # unsigned 8-bit
    ord("s"): 2,  # signed 16-bit (RabbitMQ errata)
    ord("u"): 2,  # unsigned 16-bit
    ord("I"): 4,  # signed 32-bit
    ord("i"): 4,  # unsigned 32-bit
    ord("l"): 8,  # signed 64-bit
    ord("L"): 8,  # pamqp reads it as a signed 64-bit
    ord("f"): 4,  # float
    ord("d"): 8,  # double
    ord("D"): 5,  # decimal: scale octet + 32-bit value
    ord("T"): 8,  # timestamp
    ord("V"): 0,  # void
    0: 0,  # void, as pamqp accepts it
}
#: Types whose value is a 32-bit length and that many bytes.
_LONG_BYTES: Final = frozenset((ord("S"), ord("x")))
_ARRAY: Final = ord("A")
_TABLE: Final = ord("F")


def check_field_table(data: bytes, offset: int, limit: int, what: str) -> int:
    """Check the field table at ``data[offset:]``, which must end by ``limit``.

    Returns the offset just past the table. Raises FrameError, with ``what`` (for
    example "client properties") in its text, for a length that overruns its
    container, an unknown value type, or nesting deeper than ``MAX_DEPTH``.
    """
    return scan_field_table(data, offset, limit, what).end


class TableScan(NamedTuple):
    """What one walk of a checked table learnt besides its end (``scan_field_table``)."""

    #: Just past the table.
    end: int
    #: Every key is ASCII and no value is a timestamp: the only things pamqp's decoder
    #: can still fail on in a table this walk accepted (a key that is not UTF-8, a
    #: timestamp past year 9999). A plain table decodes without error.
    plain: bool
    #: Where the value of the last top-level ``connection_name`` key starts (its type
    #: octet), or -1: found without decoding the table (the last, as a decoded dict
    #: would keep). The router reads only these few values of a client's properties.
    connection_name_at: int
    #: Likewise ``product``, ``version`` and ``platform``: who the client is (CONN).
    product_at: int = -1
    version_at: int = -1
    platform_at: int = -1


#: The top-level keys whose values a scan locates (their index in ``TableScan``'s
#: offsets, after ``end`` and ``plain``).
_WANTED: Final = {b"connection_name": 0, b"product": 1, b"version": 2, b"platform": 3}
_TIMESTAMP: Final = ord("T")


def scan_field_table(data: bytes, offset: int, limit: int, what: str) -> TableScan:
    """``check_field_table``'s walk, which also says whether the table is plain and
    where its top-level ``connection_name`` is (``TableScan``); FrameError as there."""
    end = _container_end(data, offset, limit, what)
    # (end of container, is a table) for each open container; the top is the table.
    stack: list[tuple[int, bool]] = [(end, True)]
    position = offset + 4
    plain = True
    found = [-1, -1, -1, -1]  # _WANTED's values' offsets
    while stack:
        container_end, is_table = stack[-1]
        if position == container_end:
            stack.pop()
            continue
        if is_table:
            # A field name: a short string.
            key_end = position + 1 + data[position]
            if key_end >= container_end:
                raise FrameError(f"FRAME_ERROR - {what}: a field overruns its table")
            key = data[position + 1 : key_end]
            if not key.isascii():
                plain = False
            elif len(stack) == 1 and (wanted := _WANTED.get(key)) is not None:
                found[wanted] = key_end
            position = key_end
        if position >= container_end:
            raise FrameError(f"FRAME_ERROR - {what}: a field overruns its table")
        kind = data[position]
        position += 1
        size = _FIXED_SIZE.get(kind)
        if size is not None:
            position += size
            if kind == _TIMESTAMP:
                plain = False
        elif kind in _LONG_BYTES:
            position = _container_end(data, position, container_end, what)
        elif kind in (_ARRAY, _TABLE):
            inner_end = _container_end(data, position, container_end, what)
            if len(stack) >= MAX_DEPTH:
                raise FrameError(f"FRAME_ERROR - {what} nested deeper than {MAX_DEPTH} levels")
            stack.append((inner_end, kind == _TABLE))
            position += 4
            continue
        else:
            raise FrameError(f"FRAME_ERROR - {what}: unknown field type {bytes((kind,))!r}")
        if position > container_end:
            raise FrameError(f"FRAME_ERROR - {what}: a field overruns its table")
    return TableScan(end, plain, *found)


def long_string_at(data: bytes, at: int) -> str | None:
    """The text of the long string value whose type octet is at ``data[at]`` (in a table
    ``scan_field_table`` accepted), None if it is another type or not UTF-8 (as pamqp
    gives bytes then)."""
    if data[at] != ord("S"):
        return None
    (length,) = _unpack_length(data, at + 1)
    try:
        return data[at + 5 : at + 5 + length].decode()
    except UnicodeDecodeError:
        return None


def text_at(data: bytes, at: int, most: int) -> str | None:
    """The text of the long string or byte array whose type octet is at ``data[at]`` (in
    a table ``scan_field_table`` accepted), of at most ``most`` bytes (a longer one is
    cut), undecodable bytes replaced; None for another type or ``at`` -1."""
    if at < 0 or data[at] not in (ord("S"), ord("x")):
        return None
    (length,) = _unpack_length(data, at + 1)
    return data[at + 5 : at + 5 + min(length, most)].decode("utf-8", "replace")


def _container_end(data: bytes, offset: int, limit: int, what: str) -> int:
    """The end of the length-prefixed value at ``offset``; FrameError past ``limit``."""
    if offset + 4 > limit:
        raise FrameError(f"FRAME_ERROR - {what}: a length overruns its table")
    (length,) = _unpack_length(data, offset)
    end: int = offset + 4 + length
    if end > limit:
        raise FrameError(f"FRAME_ERROR - {what}: a length overruns its table")
    return end
