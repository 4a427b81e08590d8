"""The PROXY v2 parser against the specification's rules, over generated headers.

Each example is a v2 header built from an arbitrary command byte, address
family/protocol byte, address block and TLV area (TLV lengths sometimes lying). The
oracle below restates the specification (section 2.2) independently of the parser: a
header is accepted iff its command is PROXY or LOCAL, its family byte is one of the
seven defined, its length is within the router's bound and, for PROXY, covers the
family's addresses with the TLVs after them filling the rest exactly. An accepted
header yields the TCP addresses it encodes and consumes exactly its own bytes.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (loads the hypothesis profile)
from amqprouter.protocol.proxy_header import (
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    Parsed,
    ProxyHeader,
    ProxyHeaderError,
    parse,
)

AMQP = b"AMQP\x00\x00\x09\x01"
#: The specification's address family/protocol bytes and their address block sizes.
SPEC_FAMILIES = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}
PROXY, LOCAL = 0x21, 0x20


def tlvs_fill_exactly(area: bytes) -> bool:
    """The specification's TLV walk: type (1 byte), length (2), value; all inside."""
    if not area:
        return True
    if len(area) < 3:
        return False
    size = int.from_bytes(area[1:3], "big")
    return 3 + size <= len(area) and tlvs_fill_exactly(area[3 + size :])


def expected(command: int, family: int, block: bytes) -> ProxyHeader | None:
    """What the specification has a receiver make of the header; None: refused."""
    if command not in (PROXY, LOCAL) or family not in SPEC_FAMILIES:
        return None
    if len(block) > V2_MAX_PAYLOAD:
        return None
    if command == LOCAL:
        return ProxyHeader(2)
    size = SPEC_FAMILIES[family]
    if len(block) < size or not tlvs_fill_exactly(block[size:]):
        return None
    if family == 0x11:
        return ProxyHeader(
            2,
            (str(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big")),
            (str(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big")),
        )
    if family == 0x21:
        return ProxyHeader(
            2,
            (str(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big")),
            (str(ipaddress.IPv6Address(block[16:32])), int.from_bytes(block[34:36], "big")),
        )
    return ProxyHeader(2)  # UNSPEC, UDP, UNIX: no TCP endpoint to take


@st.composite
def tlv(draw: st.DrawFn) -> bytes:
    value = draw(st.binary(max_size=40))
    # Mostly honest lengths; sometimes one that runs past its value or stops short.
    declared = len(value) + draw(st.sampled_from([0, 0, 0, 0, 1, 7, -1, 300]))
    return bytes([draw(st.integers(0, 255))]) + struct.pack("!H", max(declared, 0)) + value


@st.composite
def v2_header(draw: st.DrawFn) -> tuple[int, int, bytes]:
    command = draw(st.one_of(st.sampled_from([PROXY, LOCAL]), st.integers(0, 255)))
    family = draw(st.one_of(st.sampled_from(sorted(SPEC_FAMILIES)), st.integers(0, 255)))
    natural = SPEC_FAMILIES.get(family, 12)
    address_size = draw(st.one_of(st.just(natural), st.integers(0, 240)))
    block = draw(st.binary(min_size=address_size, max_size=address_size))
    block += b"".join(draw(st.lists(tlv(), max_size=4)))
    block += draw(st.one_of(st.just(b""), st.binary(max_size=3)))  # a stray tail
    if draw(st.integers(0, 20)) == 0:
        block += bytes(V2_MAX_PAYLOAD)  # over the router's bound
    return command, family, block


@given(v2_header())
def test_v2_accepted_iff_valid_per_specification(header: tuple[int, int, bytes]) -> None:
    command, family, block = header
    data = V2_SIGNATURE + struct.pack("!BBH", command, family, len(block)) + block
    want = expected(command, family, block)
    if want is None:
        try:
            got = parse(data + AMQP)
        except ProxyHeaderError:
            return
        raise AssertionError(f"accepted an invalid header: {got}")
    assert parse(data + AMQP) == Parsed(want, len(data))
    # A valid header cut short is never refused, nor taken as whole, before its end.
    for cut in (0, 1, 12, 15, 16, len(data) // 2, len(data) - 1):
        assert parse(data[:cut]) is None, cut
