"""SESSION CAPTURE: a session's frames as a pcap file Wireshark's AMQP dissector reads.

The router sees a session's frames in clear, TLS or not, but on two TCP connections
(client to router, router to broker) neither of which alone is the session. A capture
writes them as the one TCP connection the session stands for: the real client's
address and port (as the session knows it: a PROXY header's client, when there is
one) to the broker's real address and port. The packets are built with dpkt
(Ethernet, IPv4 or IPv6, TCP, classic libpcap records), never by hand: a synthetic
three-way handshake opens the stream, each frame is one segment (a frame larger
than ``MAX_SEGMENT`` several) with sequence and acknowledgement numbers counted from
there, and a FIN exchange closes it when the capture ends. The first segment being
one whole frame is what lets the dissector recognise AMQP 0-9-1 in a stream that
began after the protocol header.

What the capture holds is what the session forwards, with one change: a frame that
carries credentials (Connection.StartOk and SecureOk's response, UpdateSecret's
secret) is re-encoded without them (protocol/frame_describe.py ``redacted``).

Like a trace, a capture never slows its session: records go to a bounded channel
with ``send_nowait``; the writer task puts them in the file. Records that do not fit
are dropped and counted, and their sequence numbers still advance, so Wireshark shows
the gap ("previous segment not captured") where they were.
"""

from __future__ import annotations

import ipaddress
import os
import time
from typing import Final

import dpkt
import structlog
import trio

from amqprouter.protocol.frame_describe import frames_in, redacted
from amqprouter.session.trace import Watched, ready, write_all

log = structlog.get_logger("amqprouter.capture")

#: Records (one packet each) waiting for the writer; past this they are dropped.
CAPTURE_BUFFER: Final = 512
DEFAULT_SECONDS: Final = 60.0
MAX_SECONDS: Final = 24 * 3600.0
#: TCP payload per packet: an IPv4 packet's total length is 16 bits.
MAX_SEGMENT: Final = 65000
#: Room for the largest packet in each record.
SNAPLEN: Final = 65535 + 64
_CLIENT_MAC: Final = b"\x02\x00\x00\x00\x00\x01"
_BROKER_MAC: Final = b"\x02\x00\x00\x00\x00\x02"
# Initial sequence numbers: synthetic, fixed, so two captures of one session compare.
_CLIENT_ISN: Final = 1_000_000
_BROKER_ISN: Final = 2_000_000


class _Collector:
    """A file object for dpkt's writer: each record it writes, kept for the channel."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class TcpStream:
    """The packets of one synthetic TCP connection between a client and a broker."""

    def __init__(self, client: tuple[str, int], broker: tuple[str, int]) -> None:
        client_ip, broker_ip = ipaddress.ip_address(client[0]), ipaddress.ip_address(broker[0])
        if client_ip.version != broker_ip.version:
            # A router may bridge IPv6 clients to IPv4 brokers: both as IPv6 then.
            client_ip, broker_ip = _as_v6(client_ip), _as_v6(broker_ip)
        self.v6 = client_ip.version == 6
        self.client = (client_ip.packed, client[1])
        self.broker = (broker_ip.packed, broker[1])
        self.next_seq = {True: _CLIENT_ISN, False: _BROKER_ISN}

    def packet(self, from_client: bool, flags: int, payload: bytes = b"") -> bytes:
        """One Ethernet frame: ``payload`` with ``flags`` one way; the sequence advances."""
        src, dst = (self.client, self.broker) if from_client else (self.broker, self.client)
        seq = self.next_seq[from_client]
        ack = self.next_seq[not from_client] if flags & dpkt.tcp.TH_ACK else 0
        tcp = dpkt.tcp.TCP(
            sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, win=65535, data=payload
        )
        ip: dpkt.ip.IP | dpkt.ip6.IP6
        if self.v6:
            ip = dpkt.ip6.IP6(src=src[0], dst=dst[0], nxt=dpkt.ip.IP_PROTO_TCP, hlim=64, data=tcp)
            ip.plen = len(tcp)
            kind = dpkt.ethernet.ETH_TYPE_IP6
        else:
            ip = dpkt.ip.IP(src=src[0], dst=dst[0], p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
            kind = dpkt.ethernet.ETH_TYPE_IP
        macs = (_CLIENT_MAC, _BROKER_MAC) if from_client else (_BROKER_MAC, _CLIENT_MAC)
        ethernet = dpkt.ethernet.Ethernet(src=macs[0], dst=macs[1], type=kind, data=ip)
        self.next_seq[from_client] = (
            seq + len(payload) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)
        ) & 0xFFFFFFFF
        return bytes(ethernet)

    def opening(self) -> list[tuple[bool, int]]:
        syn, ack = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK
        return [(True, syn), (False, syn | ack), (True, ack)]

    def closing(self) -> list[tuple[bool, int]]:
        fin, ack = dpkt.tcp.TH_FIN, dpkt.tcp.TH_ACK
        return [(True, fin | ack), (False, fin | ack), (True, ack)]


def _as_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(f"::ffff:{address}")


class Capture:
    """One capture of one session to one file (a ``FrameObserver``); ``run`` writes it."""

    def __init__(self, session: Watched, fd: int, path: str, seconds: float) -> None:
        self.session_id = session.id
        self.path = path
        self.fd = fd
        self.deadline = trio.current_time() + seconds
        self.seconds = seconds
        self.stream = TcpStream(session.client_address, session.broker_address)
        self._send, self._receive = trio.open_memory_channel[bytes](CAPTURE_BUFFER)
        self._collector = _Collector()
        self._writer = dpkt.pcap.Writer(self._collector, snaplen=SNAPLEN)
        self.stopped: str | None = None
        self.packets = 0
        self.dropped = 0
        self._offset: float | None = None
        self._queue(self._collector.take())  # the file's global header
        for from_client, flags in self.stream.opening():
            self._packet(from_client, flags, b"", time.time())

    def _packet(self, from_client: bool, flags: int, payload: bytes, when: float) -> None:
        self._writer.writepkt(self.stream.packet(from_client, flags, payload), ts=when)
        self._queue(self._collector.take())

    def _queue(self, record: bytes) -> bool:
        try:
            self._send.send_nowait(record)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        else:
            self.packets += 1
        return True

    # -- FrameObserver --------------------------------------------------------------

    def frames(self, session: Watched, from_client: bool, now: float, data: bytes) -> bool:
        if self.stopped is not None:
            return False
        if self._offset is None:
            self._offset = time.time() - now
        when = now + self._offset
        push = dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
        for _type, _channel, start, end in frames_in(data):
            frame = redacted(data[start:end])
            for at in range(0, len(frame), MAX_SEGMENT):
                self._packet(from_client, push, frame[at : at + MAX_SEGMENT], when)
        return True

    def session_ended(self, session: Watched) -> None:
        self.stop("the session ended")

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            for from_client, flags in self.stream.closing():
                self._packet(from_client, flags, b"", time.time())
            self._send.close()

    # -- the writer -------------------------------------------------------------------

    async def run(self) -> None:
        """Write records to the file until the capture stops (its deadline included)."""
        try:
            with trio.move_on_at(self.deadline):
                async for record in self._receive:
                    await write_all(self.fd, b"".join([record, *ready(self._receive)]))
            if self.stopped is None:
                self.stop(f"{self.seconds:g}s elapsed")
            while rest := ready(self._receive):  # the closing packets among them
                await write_all(self.fd, b"".join(rest))
        except OSError as exc:
            self.stop(f"write failed: {exc.strerror or exc}")
        finally:
            self.stop("the router stopped")
            os.close(self.fd)
            log.info(
                "capture finished",
                session=self.session_id,
                path=self.path,
                reason=self.stopped,
                packets=self.packets,
                dropped=self.dropped,
            )
