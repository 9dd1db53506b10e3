"""1,000 malformed frames through the Verilator-built device (bench/link_fuzz.py; the
10,000-frame run is `python bench/link_fuzz.py`): no hang, no wrong reply, no silent wrong
result, and afterwards IDENTIFY and a bit-exact layer. A lying stand-in device shows that
the counts catch what they count."""

from __future__ import annotations

from bench.link_fuzz import KINDS, fuzz, layer_after
from hw.spec.config import DEFAULT
from hw.spec.protocol import FrameDecoder, Op, Reply, encode_frame
from sw.runtime.link import Link, SimLink


def test_thousand_frames_through_the_rtl():
    with SimLink(DEFAULT) as link:
        counts = fuzz(link, 1000, seed=7)
        assert layer_after(link, DEFAULT, seed=7)
    assert (counts.hang, counts.wrong, counts.silent) == (0, 0, 0), counts.examples
    assert counts.frames == 1000 and set(counts.kinds) == set(KINDS)
    assert min(counts.kinds.values()) >= 60
    assert {"BAD_CRC", "LENGTH_TOO_LONG", "BAD_LENGTH", "UNKNOWN_OPCODE", "NOT_ARMED",
            "BAD_LAYER", "TIMEOUT", "OK"} <= set(counts.replies)


class _LyingDevice(Link):
    """Answers IDENTIFY and the fuzz's marker echoes; every other ECHO comes back with its
    first byte changed (a silent wrong result); everything else gets no reply."""

    name = "lying device"

    def __init__(self) -> None:
        self.dec = FrameDecoder()
        self.out = b""

    def write(self, data: bytes) -> None:
        for f in self.dec.feed(data):
            if f.opcode == Op.IDENTIFY:
                self.out += encode_frame(Reply.OK, b"\x01" * 11)
            elif f.opcode == Op.ECHO:
                p = f.payload
                lie = p if p.startswith(b"\xc3FZ") or not p else bytes([p[0] ^ 1]) + p[1:]
                self.out += encode_frame(Reply.OK, lie)

    def read(self, timeout: float) -> bytes:
        out, self.out = self.out, b""
        return out

    def close(self) -> None:
        """Nothing to release."""


def test_counts_catch_a_lying_device():
    counts = fuzz(_LyingDevice(), 200, seed=3, timeout=0.2)
    assert counts.silent > 0 and counts.wrong >= counts.silent
    assert counts.hang > 0         # it never times a truncated frame out: markers are lost
