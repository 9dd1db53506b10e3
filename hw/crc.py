"""CRCs in gateware: a byte's update of any CRC register as combinational logic, and the
CRC-32 unit that checks memory ranges (MEM_CRC)."""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.spec import protocol

__all__ = ["Crc32", "crc_next"]


def crc_next(update: Callable[[int, int], int], width: int, crc: Value, byte: Value) -> Value:
    """`update(crc, byte)` (a Python CRC byte update, e.g. `protocol.crc16_update`) as
    combinational logic. The update is linear over GF(2), so each next-state bit is the XOR
    of the state and byte bits whose unit vectors flip it (found by running `update` on
    them)."""
    bits = []
    for j in range(width):
        terms = [crc[i] for i in range(width) if update(1 << i, 0) >> j & 1]
        terms += [byte[i] for i in range(8) if update(0, 1 << i) >> j & 1]
        bit = terms[0]
        for t in terms[1:]:
            bit = bit ^ t
        bits.append(bit)
    return Cat(*bits)


class Crc32(wiring.Component):
    """CRC-32 (`protocol.crc32`, as zlib) of the bytes taken on ``i`` since ``clear``.

    ``i.ready`` is always 1; ``value`` is the CRC of the bytes taken up to the previous
    cycle (the register inverted). ``clear`` restarts it.
    """

    def __init__(self) -> None:
        super().__init__({"i": In(stream.Signature(8)), "clear": In(1), "value": Out(32)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        reg = Signal(32, init=protocol.CRC32_INIT)
        m.d.comb += [self.i.ready.eq(1), self.value.eq(~reg)]
        with m.If(self.clear):
            m.d.sync += reg.eq(protocol.CRC32_INIT)
        with m.Elif(self.i.valid):
            m.d.sync += reg.eq(crc_next(protocol.crc32_update, 32, reg, self.i.payload))
        return m
