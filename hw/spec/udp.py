"""The host protocol over UDP (docs/protocol.md, "Over UDP"): every datagram carries a
header and, in a request, exactly one frame of `hw.spec.protocol`; a reply carries the
device's reply frames to it. Part of the contract layer: plain Python.

    magic (2, b"TY") | version (1) | flags / status (1) | session (4) | seq (4) | body

Multi-byte fields little-endian. The host opens a session with a random non-zero
`session` and `seq` 0, then numbers its requests 1, 2, ... and sends one at a time
(stop and wait), resending the same datagram (same seq) until its reply arrives. The
device executes a request once: the next seq of its session (or seq 0 of a new session);
the last seq again gets the stored reply again (`Status.REPLAY`, the same bytes); any
other seq is answered `Status.STALE` and not executed.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from hw.spec.protocol import FRAME_OVERHEAD, MAX_PAYLOAD

__all__ = ["HEADER_BYTES", "HEADER_FORMAT", "MAGIC", "MAX_DATAGRAM", "MAX_REPLY_BYTES",
           "MAX_REQUEST_BYTES", "UDP_VERSION", "Header", "Status", "UdpProtocolError"]

#: The datagram header.
HEADER_FORMAT = "<2sBBII"
HEADER_BYTES = struct.calcsize(HEADER_FORMAT)
MAGIC = b"TY"
#: Bumped when the datagram layout or the sequence rules change.
UDP_VERSION = 1
#: A request's body: one frame of at most MAX_PAYLOAD bytes.
MAX_REQUEST_BYTES = FRAME_OVERHEAD + MAX_PAYLOAD
#: The UDP payload of one Ethernet frame of at most 1500 bytes of IP (no fragments: LiteEth
#: neither sends nor reassembles them).
MAX_DATAGRAM = 1500 - 20 - 8
#: A reply's body: the reply frames of one request, stored for replay (the device's reply
#: buffer). A MEM_READ over UDP asks for at most MAX_PAYLOAD bytes (one OK frame).
MAX_REPLY_BYTES = MAX_DATAGRAM - HEADER_BYTES


class Status(enum.IntEnum):
    """A reply's status byte (a request's flags byte is 0)."""

    OK = 0            # executed now; the body is its reply frames
    REPLAY = 1        # a resent request already executed: its stored reply again
    STALE = 2         # neither the session's last nor next seq: not executed, no body
    BAD_DATAGRAM = 3  # bad magic or version, or not exactly one frame: not executed
    TOO_LONG = 4      # executed, but its reply overflowed the reply buffer: no body


class UdpProtocolError(ValueError):
    """A datagram that does not parse."""


@dataclass(frozen=True)
class Header:
    """A datagram's header; `flags` is a request's flags or a reply's `Status`."""

    flags: int
    session: int
    seq: int
    version: int = UDP_VERSION

    def encode(self) -> bytes:
        return struct.pack(HEADER_FORMAT, MAGIC, self.version, self.flags, self.session,
                           self.seq)

    @classmethod
    def decode(cls, data: bytes) -> tuple[Header, bytes]:
        """(header, body) of a datagram."""
        if len(data) < HEADER_BYTES:
            raise UdpProtocolError(f"a {len(data)}-byte datagram is shorter than the header")
        magic, version, flags, session, seq = struct.unpack_from(HEADER_FORMAT, data)
        if magic != MAGIC:
            raise UdpProtocolError(f"bad magic {magic!r}")
        return cls(flags, session, seq, version), data[HEADER_BYTES:]
