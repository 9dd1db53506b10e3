"""A block-RAM queue whose output side never sees the RAM's clock-to-out delay."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.bankmem import READ_LATENCY, BankedMemory

__all__ = ["BlockRamFifo"]


class BlockRamFifo(wiring.Component):
    """First in, first out: ``depth`` words of ``width`` bits in block RAM (`BankedMemory`)
    plus an ``out_depth``-word output queue that reads run ahead into.

    ``w`` takes a word per cycle while the RAM part has room (``w.ready`` is a register);
    ``r`` gives them back in order, ``r.valid``/``r.payload`` from registers, and
    ``r.ready`` reaches neither the RAM nor its read pointer. ``level`` (a register)
    counts the words held (RAM, reads in flight, output queue), at most
    ``depth + out_depth``.
    Latency: a word written into an empty queue is on ``r`` 5 cycles later (the count's
    register, the two-cycle RAM read, the output queue's two). One word per cycle with
    ``out_depth`` >= 5 (the reads in flight plus the output queue's own latency).
    """

    def __init__(self, width: int, depth: int, out_depth: int = 8) -> None:
        if out_depth <= READ_LATENCY:
            raise ValueError(f"out_depth must exceed the read latency {READ_LATENCY}")
        self.width = width
        self.depth = depth
        self.out_depth = out_depth
        super().__init__({
            "w": In(stream.Signature(width)),
            "r": Out(stream.Signature(width)),
            "level": Out(range(depth + out_depth + 1)),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.mem = mem = BankedMemory(self.width, self.depth)
        m.submodules.out = out = SyncFIFOBuffered(width=self.width, depth=self.out_depth)
        m.d.comb += [self.r.valid.eq(out.r_rdy), self.r.payload.eq(out.r_data),
                     out.r_en.eq(self.r.ready)]

        # Writes go to the RAM at `wp`; `stored` counts the words not yet read from it.
        wp = Signal(range(self.depth))
        rp = Signal(range(self.depth))
        stored = Signal(range(self.depth + 1))
        full = Signal()
        write = self.w.valid & self.w.ready
        m.d.comb += [self.w.ready.eq(~full),
                     mem.wr_addr.eq(wp), mem.wr_data.eq(self.w.payload), mem.wr_en.eq(write)]
        with m.If(write):
            m.d.sync += wp.eq(wp + 1)
            with m.If(wp == self.depth - 1):
                m.d.sync += wp.eq(0)

        # Reads are issued while the output queue has room for them and for those in
        # flight (`flight` marks which of the last READ_LATENCY cycles issued one); a word
        # written on one edge can be read from the next.
        flight = Signal(READ_LATENCY)
        in_flight = sum(flight[k] for k in range(READ_LATENCY))
        issue = Signal()
        m.d.comb += [issue.eq((stored != 0) & (out.level + in_flight < self.out_depth)),
                     mem.rd_addr.eq(rp), mem.rd_en.eq(1)]
        m.d.sync += flight.eq(Cat(issue, flight[:-1]))
        with m.If(issue):
            m.d.sync += rp.eq(rp + 1)
            with m.If(rp == self.depth - 1):
                m.d.sync += rp.eq(0)
        stored_next = Signal.like(stored)
        m.d.comb += stored_next.eq(stored + write - issue)
        m.d.sync += [stored.eq(stored_next), full.eq(stored_next == self.depth)]
        m.d.comb += [out.w_en.eq(flight[-1]), out.w_data.eq(mem.rd_data)]

        # `level`: words in minus words out, a register (equal to stored + in flight +
        # the output queue's level).
        m.d.sync += self.level.eq(self.level + write - (self.r.valid & self.r.ready))
        return m
