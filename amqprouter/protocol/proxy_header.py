"""The PROXY protocol header (HAProxy's, v1 text and v2 binary), sans-IO.

A load balancer in front of a TCP service sends one header before the service's own
bytes, naming the connection's real source and destination. The router reads one on
a listener started with ACCEPT-PROXY and writes one to a backend flagged SEND-PROXY
(v1) or SEND-PROXY-V2. Specification: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

Reading is strict and bounded, since the bytes come from the network before anything
else is known about the peer: a v1 line is at most 107 bytes (the specification's
limit, CRLF included), a v2 header at most ``V2_MAX_PAYLOAD`` bytes after its 16-byte
prefix. A v2 header's address family/protocol byte must be one the specification
defines, and the TLVs after a PROXY command's addresses must fill its length exactly.
``parse`` never consumes bytes past the header: what follows it (the client's AMQP
header, maybe in the same read) stays the caller's.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

import attrs

#: The v2 signature: 12 bytes no v1 line (nor AMQP) starts with.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX: Final = b"PROXY "
#: The longest v1 line, "PROXY TCP6 <two full IPv6> <two ports>\r\n".
V1_MAX_LINE: Final = 107
#: v2's payload bound: the addresses (216 bytes at most, for AF_UNIX) and some room for
#: TLVs (HAProxy's unique id, SSL details). A longer header is refused, not buffered.
V2_MAX_PAYLOAD: Final = 1024
#: The most bytes a header may take: a reader never needs to look further.
MAX_HEADER: Final = len(V2_SIGNATURE) + 4 + V2_MAX_PAYLOAD

_V2_PROXY: Final = 0x21  # version 2, command PROXY
_V2_LOCAL: Final = 0x20  # version 2, command LOCAL (the balancer's own health check)
_V2_TCP4: Final = 0x11  # AF_INET, STREAM
_V2_TCP6: Final = 0x21  # AF_INET6, STREAM
#: Every address family/protocol byte the specification defines, with the size of the
#: address block it implies (UNSPEC has none; UNIX is two 108-byte paths). Any other
#: byte "must be rejected as invalid by receivers" (section 2.2).
_V2_ADDRESS_SIZES: Final = {
    0x00: 0,  # UNSPEC
    0x11: 12,  # TCP over IPv4
    0x12: 12,  # UDP over IPv4
    0x21: 36,  # TCP over IPv6
    0x22: 36,  # UDP over IPv6
    0x31: 216,  # UNIX stream
    0x32: 216,  # UNIX datagram
}


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY header (or not one the router accepts)."""


@attrs.frozen
class ProxyHeader:
    """A parsed header. ``source`` and ``destination`` are None for v1 UNKNOWN and for
    v2 LOCAL or an unsupported address family: the connection's own endpoints apply."""

    version: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


@attrs.frozen
class Parsed:
    """A complete header, which took the first ``consumed`` bytes."""

    header: ProxyHeader
    consumed: int


#: More bytes are needed; every byte given so far belongs to the header.
INCOMPLETE: Final = None


def parse(data: bytes) -> Parsed | None:
    """The header at the start of ``data``; None (``INCOMPLETE``) if more is needed.

    When None is returned, all of ``data`` is a header prefix, so a reader may consume
    it. Raises ProxyHeaderError as soon as ``data`` cannot start a valid header.
    """
    if not data:
        return INCOMPLETE
    if data[0:1] == V2_SIGNATURE[0:1]:
        return _parse_v2(data)
    if data[0:1] == V1_PREFIX[0:1]:
        return _parse_v1(data)
    raise ProxyHeaderError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> Parsed | None:
    head = data[: len(V1_PREFIX)]
    if not V1_PREFIX.startswith(head):
        raise ProxyHeaderError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        if len(data) >= V1_MAX_LINE:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX_LINE} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("PROXY v1 line with a stray CR or LF")
        return INCOMPLETE
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    fields = line.split(" ")
    consumed = end + 2
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        # The rest of an UNKNOWN line is to be ignored (the specification).
        return Parsed(ProxyHeader(1), consumed)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 line is not 'PROXY TCP4|TCP6 src dst sport dport'")
    _, protocol, src, dst, sport, dport = fields
    version = 4 if protocol == "TCP4" else 6
    return Parsed(
        ProxyHeader(
            1,
            (_v1_address(src, version), _v1_port(sport)),
            (
                _v1_address(dst, version),
                _v1_port(dport),
            ),
        ),
        consumed,
    )


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 address {text!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1 address {text!r} is not IPv{version}")
    return str(address)


def _v1_port(text: str) -> int:
    # Decimal, no sign, no leading zero (the specification), 0-65535.
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"PROXY v1 port {text!r} is not a port number")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY v1 port {text!r} is not a port number")
    return port


def _parse_v2(data: bytes) -> Parsed | None:
    head = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(head):
        raise ProxyHeaderError("not a PROXY protocol header")
    if len(data) < 16:
        return INCOMPLETE
    command, family, length = struct.unpack_from("!BBH", data, 12)
    if command not in (_V2_PROXY, _V2_LOCAL):
        raise ProxyHeaderError(f"PROXY v2 version/command byte {command:#04x} is not supported")
    address_size = _V2_ADDRESS_SIZES.get(family)
    if address_size is None:
        raise ProxyHeaderError(
            f"PROXY v2 address family/protocol byte {family:#04x} is not defined"
        )
    if length > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"PROXY v2 header length {length} is over {V2_MAX_PAYLOAD}")
    if command == _V2_PROXY and length < address_size:
        raise ProxyHeaderError("PROXY v2 header shorter than its addresses")
    consumed = 16 + length
    if len(data) < consumed:
        return INCOMPLETE
    payload = data[16:consumed]
    if command == _V2_LOCAL:
        # The balancer's own connection: the specification has the block discarded.
        return Parsed(ProxyHeader(2), consumed)
    _check_tlvs(payload, address_size)
    if family == _V2_TCP4:
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", payload)
    elif family == _V2_TCP6:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", payload)
    else:
        # UNSPEC, UDP, UNIX: no TCP address to take; the connection's own applies.
        return Parsed(ProxyHeader(2), consumed)
    return Parsed(
        ProxyHeader(
            2,
            (str(ipaddress.ip_address(src)), sport),
            (str(ipaddress.ip_address(dst)), dport),
        ),
        consumed,
    )


def _check_tlvs(payload: bytes, offset: int) -> None:
    """The TLVs after the addresses must fill the rest of the block exactly: each one's
    3-byte type and length, then its value, within what remains. A TLV running past the
    header means the sender and the router disagree on where the header ends."""
    end = len(payload)
    while offset < end:
        if end - offset < 3:
            raise ProxyHeaderError("PROXY v2 TLV header runs past the end of the header")
        (size,) = struct.unpack_from("!H", payload, offset + 1)
        offset += 3 + size
        if offset > end:
            raise ProxyHeaderError("PROXY v2 TLV value runs past the end of the header")


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _addresses(
    source: tuple[str, int], destination: tuple[str, int]
) -> tuple[_Address, _Address] | None:
    """Both addresses in one family (an IPv4 one mapped to IPv6 if the other is IPv6);
    None if either is not an IP address."""
    try:
        src = ipaddress.ip_address(source[0].split("%", 1)[0])
        dst = ipaddress.ip_address(destination[0].split("%", 1)[0])
    except ValueError:
        return None
    src, dst = _unmapped(src), _unmapped(dst)
    if src.version != dst.version:
        src, dst = _mapped(src), _mapped(dst)
    return src, dst


def _unmapped(address: _Address) -> _Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _mapped(address: _Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{address}")
    return address


def build_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """``PROXY TCP4|TCP6 src dst sport dport\\r\\n``; ``PROXY UNKNOWN\\r\\n`` when an
    endpoint is not an IP address. A mixed pair is written as TCP6 (IPv4 mapped), so the
    line is never malformed."""
    pair = _addresses(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    src, dst = pair
    protocol = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {protocol} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")


def build_v2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The binary v2 header, command PROXY, TCP over INET or INET6 (no TLVs); the
    UNSPEC family when an endpoint is not an IP address."""
    pair = _addresses(source, destination)
    if pair is None:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, 0x00, 0)
    src, dst = pair
    family, size = (_V2_TCP4, 12) if src.version == 4 else (_V2_TCP6, 36)
    return (
        V2_SIGNATURE
        + struct.pack("!BBH", _V2_PROXY, family, size)
        + src.packed
        + dst.packed
        + struct.pack("!HH", source[1], destination[1])
    )


def build(version: int, source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The header of ``version`` (1 or 2)."""
    return build_v1(source, destination) if version == 1 else build_v2(source, destination)
