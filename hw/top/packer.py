"""Output values to link bytes (`ValuePacker`); link bytes to parameter beats (`BeatPacker`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.spec.config import HwConfig
from hw.spec.engine import out_value_bytes

__all__ = ["BeatPacker", "ValuePacker"]


class ValuePacker(wiring.Component):
    """Engine output values in, their bytes out: one byte (the int8 value) per value, or,
    with ``head`` set, ``n = out_value_bytes(cfg, True)`` bytes little-endian: the
    ``head_bits`` two's-complement bits zero-extended to ``8 * n`` (the host
    sign-extends from ``head_bits``). ``head`` holds still while values flow.

    Timing: a value taken is held in a register while its bytes leave, one per cycle
    (``o.valid``, ``o.payload`` from flip-flops); the next value is taken as the last
    byte leaves, so a stream of n-byte values runs at one byte per cycle.
    Backpressure: ``i.ready`` is ``~holding | last byte leaving``, combinationally
    dependent on ``o.ready``.
    """

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(signed(cfg.head_bits))),
            "head": In(1),
            "o": Out(stream.Signature(8)),
        })

    def elaborate(self, platform: object) -> Module:
        nmax = out_value_bytes(self.cfg, True)
        m = Module()
        nbytes = Mux(self.head, nmax, 1)
        value = Signal(8 * nmax)
        holding = Signal()
        idx = Signal(range(nmax + 1))
        last_byte = Signal()
        m.d.comb += [self.o.payload.eq(value.word_select(idx, 8)), self.o.valid.eq(holding),
                     last_byte.eq(holding & self.o.ready & (idx + 1 == nbytes)),
                     self.i.ready.eq(~holding | last_byte)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [value.eq(self.i.payload.as_unsigned()), holding.eq(1), idx.eq(0)]
        with m.Elif(last_byte):
            m.d.sync += holding.eq(0)
        with m.Elif(holding & self.o.ready):
            m.d.sync += idx.eq(idx + 1)
        return m


class BeatPacker(wiring.Component):
    """Link bytes in, beats of `n` bytes out (the first byte in bits 0..7), for the
    engine's `params` port: LOAD_PARAMS payloads (any split into frames) become the
    parameter block's beats. ``clear`` (a pulse: the pass's `start`) drops a partial beat.

    Timing: a beat leaves the cycle after its last byte is taken, from a register; bytes
    are taken at one a cycle while the beat is not full or leaves.
    Backpressure: ``i.ready`` is ``~full | o.ready``.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        super().__init__({
            "i": In(stream.Signature(8)),
            "clear": In(1),
            "o": Out(stream.Signature(8 * n)),
        })

    def elaborate(self, platform: object) -> Module:
        n = self.n
        m = Module()
        buf = Signal(8 * n)
        cnt = Signal(range(n))
        full = Signal()
        leave = full & self.o.ready
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(buf),
                     self.i.ready.eq(~full | self.o.ready)]
        with m.If(leave):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [buf.word_select(cnt, 8).eq(self.i.payload), cnt.eq(cnt + 1)]
            with m.If(cnt == n - 1):
                m.d.sync += [cnt.eq(0), full.eq(1)]
        with m.If(self.clear):
            m.d.sync += [cnt.eq(0), full.eq(0)]
        return m
