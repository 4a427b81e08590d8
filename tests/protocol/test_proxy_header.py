"""The PROXY protocol header: building v1/v2, parsing them strictly and bounded."""

from __future__ import annotations

import struct

import pytest

from amqprouter.protocol.proxy_header import (
    MAX_HEADER,
    V1_MAX_LINE,
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    Parsed,
    ProxyHeader,
    ProxyHeaderError,
    build,
    build_v1,
    build_v2,
    parse,
)

AMQP = b"AMQP\x00\x00\x09\x01"


def test_v1_tcp4_is_the_reference_line() -> None:
    line = build_v1(("1.2.3.4", 40000), ("10.0.0.5", 5672))
    assert line == b"PROXY TCP4 1.2.3.4 10.0.0.5 40000 5672\r\n"
    assert parse(line) == Parsed(ProxyHeader(1, ("1.2.3.4", 40000), ("10.0.0.5", 5672)), len(line))


def test_v1_tcp6_and_mixed_families_are_never_malformed() -> None:
    assert build_v1(("::1", 1), ("::1", 2)) == b"PROXY TCP6 ::1 ::1 1 2\r\n"
    # An IPv4-mapped client (a dual-stack listener) to an IPv4 backend is plain TCP4.
    assert build_v1(("::ffff:127.0.0.1", 1), ("127.0.0.1", 2)) == (
        b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n"
    )
    # IPv6 client, IPv4 backend: both written as IPv6 (the backend mapped).
    mixed = build_v1(("2001:db8::1", 1), ("10.0.0.1", 2))
    assert mixed == b"PROXY TCP6 2001:db8::1 ::ffff:a00:1 1 2\r\n"
    assert parse(mixed) is not None
    # Not an address at all (the reference wrote "PROXY TCP4 1.2.3.4  5555 5672").
    assert build_v1(("1.2.3.4", 1), ("", 2)) == b"PROXY UNKNOWN\r\n"


def test_longest_v1_line_fits_the_limit() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = build_v1((full, 65535), (full, 65535))
    assert len(line) == 104
    parsed = parse(line + AMQP)
    assert parsed is not None and parsed.consumed == len(line)
    # The specification's worst case: an UNKNOWN line carrying full IPv6 addresses.
    unknown = line.replace(b"TCP6", b"UNKNOWN")
    assert len(unknown) == V1_MAX_LINE
    assert parse(unknown + AMQP) == Parsed(ProxyHeader(1), V1_MAX_LINE)
    with pytest.raises(ProxyHeaderError):
        parse(unknown.replace(b" 65535\r", b" 655350\r"))


def test_v1_unknown_ignores_the_rest_of_its_line() -> None:
    assert parse(b"PROXY UNKNOWN\r\n") == Parsed(ProxyHeader(1), 15)
    assert parse(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n" + AMQP) == Parsed(ProxyHeader(1), 35)


@pytest.mark.parametrize(
    ("source", "destination", "family"),
    [(("1.2.3.4", 40000), ("10.0.0.5", 5672), 0x11), (("::1", 1), ("2001:db8::2", 5671), 0x21)],
)
def test_v2_round_trip(source: tuple[str, int], destination: tuple[str, int], family: int) -> None:
    header = build_v2(source, destination)
    assert header.startswith(V2_SIGNATURE) and header[12] == 0x21 and header[13] == family
    assert parse(header) == Parsed(ProxyHeader(2, source, destination), len(header))
    assert (
        build(2, source, destination) == header and build(1, source, destination)[:6] == b"PROXY "
    )


def test_v2_local_and_other_families_name_no_client() -> None:
    local = V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)
    assert parse(local + AMQP) == Parsed(ProxyHeader(2), 16)
    unix = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x31, 216) + bytes(216)
    assert parse(unix) == Parsed(ProxyHeader(2), 16 + 216)
    # TLVs after the addresses are skipped, and counted in what the header took.
    tlv = build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))
    with_tlv = tlv[:14] + struct.pack("!H", 12 + 7) + tlv[16:] + b"\x05\x00\x04abcd"
    assert parse(with_tlv + AMQP) == Parsed(
        ProxyHeader(2, ("1.2.3.4", 1), ("5.6.7.8", 2)), len(with_tlv)
    )


@pytest.mark.parametrize(
    "header", [build_v1(("1.2.3.4", 1), ("5.6.7.8", 2)), build_v2(("::1", 1), ("::1", 2))]
)
def test_a_header_split_across_reads_is_incomplete_until_whole(header: bytes) -> None:
    for cut in range(len(header)):
        assert parse(header[:cut]) is None, cut
    parsed = parse(header + AMQP)
    # Bytes after the header are not the header's: they stay the caller's.
    assert parsed is not None and parsed.consumed == len(header)


def _v2_tcp4_with(tlvs: bytes) -> bytes:
    """A v2 TCP4 header whose length covers its addresses and ``tlvs``."""
    header = build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))
    return header[:14] + struct.pack("!H", 12 + len(tlvs)) + header[16:] + tlvs


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (AMQP, "not a PROXY protocol header"),
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"PROXX", "not a PROXY protocol header"),
        (b"\r\n\r\n\x00\r\nQUIX", "not a PROXY protocol header"),
        (b"PROXY " + b"1" * 200, f"longer than {V1_MAX_LINE} bytes"),
        (b"PROXY TCP4 1.2.3.4\n", "stray CR or LF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "is not 'PROXY TCP4|TCP6"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "is not 'PROXY TCP4|TCP6"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "is not IPv6"),
        (b"PROXY TCP4 host 5.6.7.8 1 2\r\n", "is not an IP address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "is not a port number"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "is not a port number"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "is not a port number"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "is not 'PROXY TCP4|TCP6"),
        (b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n", "not ASCII"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, V2_MAX_PAYLOAD + 1), "is over"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 0xFFFF), "is over"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x11, 0x11, 12), "version/command"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x22, 0x11, 12), "version/command"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 4) + bytes(4), "shorter than"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, 12) + bytes(12), "shorter than"),
        # An undefined family/protocol byte is refused, not taken as UNSPEC, with either
        # command, and at once (before the header's length arrives).
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x51, 12) + bytes(12), "0x51 is not defined"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x51, 0), "0x51 is not defined"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x13, 12), "0x13 is not defined"),
        # A TLV whose length runs past the header's end, or a TLV header cut short.
        (_v2_tcp4_with(b"\x05\x00\x09abcd"), "TLV value runs past"),
        (_v2_tcp4_with(b"\x05\x00"), "TLV header runs past"),
    ],
)
def test_garbage_is_refused_early(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        parse(data)


def test_an_oversized_v1_line_is_refused_at_the_limit_not_later() -> None:
    prefix = b"PROXY TCP4 " + b"1" * (V1_MAX_LINE - 12)
    assert parse(prefix) is None  # 106 bytes without CRLF: may still end
    with pytest.raises(ProxyHeaderError):
        parse(prefix + b"1")
    # A reader never needs more than MAX_HEADER bytes to decide.
    assert MAX_HEADER == 16 + V2_MAX_PAYLOAD
