"""A deep memory split into banks one block RAM deep, each read landing in its own register.

A memory deeper than one block RAM is built by synthesis from several RAMs and a LUT
multiplexer after their outputs. The RAM's clock-to-out delay (5.8 ns on the ECP5's
DP16KD without its output register, which Yosys does not use) plus that multiplexer and
the routing to wherever the consumer sits was the whole design's critical path.
`BankedMemory` keeps the multiplexer after a register per bank instead, at the cost of
one more cycle of read latency.
"""

from __future__ import annotations

import math

from amaranth.hdl import Array, Module, Shape, ShapeLike, Signal, Value
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BLOCK_RAM_BITS", "READ_LATENCY", "BankedMemory", "bank_geometry"]

#: Data bits of the smallest block RAM of the target families: the ECP5's DP16KD
#: (1024 x 18 or 2048 x 9, of which 16 or 8 bits are data) and the 7-series' RAMB18.
BLOCK_RAM_BITS = 16384
#: Enabled clock edges from `rd_addr` to the word on `rd_data`.
READ_LATENCY = 2


def bank_geometry(width: int, depth: int, bank_bits: int = BLOCK_RAM_BITS) -> tuple[int, int]:
    """(words per bank, banks) for ``depth`` words of ``width`` bits: banks are the
    largest power of two that fits ``bank_bits`` (at least one word, at most ``depth``
    rounded up to a power of two)."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    bank_depth = min(1 << max(0, (bank_bits // width).bit_length() - 1),
                     1 << max(0, (depth - 1).bit_length()))
    return bank_depth, math.ceil(depth / bank_depth)


class BankedMemory(wiring.Component):
    """``depth`` words of ``shape``, in banks of `bank_depth` words (a power of two that
    fits one block RAM at this width).

    Write: ``wr_en`` (one bit per ``granularity`` elements of an array layout or bits of
    a plain shape, or one bit) writes ``wr_data`` at ``wr_addr`` on the clock edge.
    Read: ``rd_data`` is the word at the ``rd_addr`` of `READ_LATENCY` (2) edges with
    ``rd_en`` set before; it holds while ``rd_en`` is low (so a pipeline that stalls with
    ``rd_en`` low keeps its read in flight). A read and a write of the same address on the
    same edge read the old word. ``rd_data`` comes from the bank registers through the bank
    multiplexer (combinational from registers, so the consumer should register it).
    """

    def __init__(self, shape: ShapeLike, depth: int, *, granularity: int | None = None,
                 bank_bits: int = BLOCK_RAM_BITS) -> None:
        width = Shape.cast(shape).width
        self.shape = shape
        self.depth = depth
        self.granularity = granularity
        self.bank_depth, self.banks = bank_geometry(width, depth, bank_bits)
        if granularity is None:
            en_width = 1
        elif isinstance(shape, data.ArrayLayout):
            en_width = shape.length // granularity
        else:
            en_width = width // granularity
        super().__init__({
            "wr_addr": In(range(depth)),
            "wr_data": In(shape),
            "wr_en": In(en_width),
            "rd_addr": In(range(depth)),
            "rd_en": In(1),
            "rd_data": Out(shape),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        lo = (self.bank_depth - 1).bit_length()         # address bits inside a bank
        width = Shape.cast(self.shape).width
        hi_shape = range(self.banks)
        wr_bank = self.wr_addr[lo:] if self.banks > 1 else 0
        rd_bank = self.rd_addr[lo:] if self.banks > 1 else 0

        # Banks: each one block RAM deep, its read data into its own register.
        regs = []
        for k in range(self.banks):
            size = min(self.bank_depth, self.depth - k * self.bank_depth)
            mem = memory.Memory(shape=self.shape, depth=size, init=[])
            m.submodules[f"bank{k}"] = mem
            wr = mem.write_port(granularity=self.granularity)
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(self.wr_addr[:lo]), wr.data.eq(self.wr_data),
                wr.en.eq(0),
                rd.addr.eq(self.rd_addr[:lo]), rd.en.eq(self.rd_en),
            ]
            with m.If(wr_bank == k):
                m.d.comb += wr.en.eq(self.wr_en)
            reg = Signal(width, name=f"bank{k}_q", reset_less=True)
            with m.If(self.rd_en):
                m.d.sync += reg.eq(Value.cast(rd.data))
            regs.append(reg)

        # Bank select, delayed with the read: one register per pipeline stage.
        sel1 = Signal(hi_shape, reset_less=True)
        sel2 = Signal(hi_shape, reset_less=True)
        with m.If(self.rd_en):
            m.d.sync += [sel1.eq(rd_bank), sel2.eq(sel1)]
        out = regs[0] if self.banks == 1 else Array(regs)[sel2]
        m.d.comb += Value.cast(self.rd_data).eq(out)
        return m
