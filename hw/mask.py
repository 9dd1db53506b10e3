"""`RecordMask`: one bit per fixed-size record of a byte stream, set when the record's int16
key exceeds a threshold (MEM_MASK, `hw.spec.protocol.record_mask`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RecordMask"]


class RecordMask(wiring.Component):
    """``start`` (one cycle, with the settings held until ``busy`` falls) begins a run of
    ``records`` records of ``record_bytes`` bytes each on ``i``; record n's little-endian
    int16 at byte ``key_offset`` (``key_offset + 2 <= record_bytes``, ``records >= 1``:
    the caller checks) sets bit n % 8 of mask byte n // 8 when it is greater than
    ``threshold``. The mask bytes leave on ``o``, the last one with its unused high bits 0.

    Takes one byte a cycle, less one cycle after each mask byte (so 8 records of 2 bytes
    at the least give 16 bytes in 17 cycles); a mask byte leaves one cycle after its last
    record byte. ``busy``: from ``start`` until the last mask byte is taken.
    """

    def __init__(self) -> None:
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "start": In(1),
            "records": In(16),
            "record_bytes": In(16),
            "key_offset": In(16),
            "threshold": In(signed(16)),
            "busy": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        pos = Signal(16)                 # byte index within the record
        left = Signal(16)                # records not yet ended
        running = Signal()
        low = Signal(8)                  # the key's low byte
        hit = Signal()                   # this record's key is over the threshold
        bits = Signal(8)                 # the mask byte being filled, and its bits so far
        nbits = Signal(3)
        out = Signal(8)
        full = Signal()
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(out),
                     self.i.ready.eq(running & ~full), self.busy.eq(running | full)]

        # The mask byte waits in `out` until taken; no byte is taken meanwhile.
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)

        # Per byte: the key's two bytes, then at the record's last byte its bit.
        key_high = pos == self.key_offset + 1
        over = Cat(low, self.i.payload).as_signed() > self.threshold
        bit = Mux(key_high, over, hit)
        filled = bits | (bit << nbits)
        with m.If(self.start):
            m.d.sync += [pos.eq(0), left.eq(self.records), running.eq(self.records != 0),
                         bits.eq(0), nbits.eq(0), hit.eq(0)]
        with m.Elif(self.i.valid & self.i.ready):
            with m.If(pos == self.key_offset):
                m.d.sync += low.eq(self.i.payload)
            with m.If(key_high):
                m.d.sync += hit.eq(over)
            with m.If(pos == self.record_bytes - 1):
                m.d.sync += [pos.eq(0), left.eq(left - 1)]
                with m.If((nbits == 7) | (left == 1)):
                    m.d.sync += [out.eq(filled), full.eq(1), bits.eq(0), nbits.eq(0)]
                with m.Else():
                    m.d.sync += [bits.eq(filled), nbits.eq(nbits + 1)]
                with m.If(left == 1):
                    m.d.sync += running.eq(0)
            with m.Else():
                m.d.sync += pos.eq(pos + 1)
        return m
