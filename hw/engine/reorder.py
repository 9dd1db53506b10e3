"""The layer engine's per-pixel reorder buffer (`ReorderBuffer`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.engine.layouts import chunks_max, pixel_depth, pixel_word, setup_layout
from hw.linebuf import window_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import BANKS, TAPS

__all__ = ["ReorderBuffer", "pixel_read_signature"]


def pixel_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the pixel on offer: word q holds channels q*C .. q*C + C - 1 of all
    9 taps (`pixel_word`)."""
    return memory.ReadPort.Signature(addr_width=ceil_log2(chunks_max(cfg)),
                                     shape=pixel_word(cfg))


class ReorderBuffer(wiring.Component):
    """Windows in (9 taps of one channel per transfer), whole pixels out (C channels of
    every tap per word), in `BANKS` banks of one pixel each.

    A pixel is ``cin = setup.cin_m1 + 1`` windows on `i`, channel 0 first (the window
    generator's order). Window c goes to word ``c // C``, lane ``c % C`` of every tap of
    the bank being written. Once a bank holds its ``cin`` windows it is full: ``pixel``
    offers it (``pixel.valid``), and `rd` reads its words (address = word; lanes of
    channels past ``cin`` hold stale data). A transfer on ``pixel`` frees the bank and
    offers the next one; the banks fill and drain in turn.

    Timing: one window per cycle while a bank is free; ``i.ready`` is 0 while the bank
    being written is full (all `BANKS` pixels wait), from flip-flops. ``pixel.valid`` rises
    the cycle after the pixel's last window is taken and comes from flip-flops;
    ``pixel.ready`` may follow ``pixel.valid`` combinationally (the feeder holds it low
    until the pixel's last array vector). `rd`: data the cycle after an enabled read
    (a block-RAM read port, non-transparent).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(window_layout(cfg))),
            "setup": In(setup_layout(cfg)),
            "pixel": Out(stream.Signature(0)),
            "rd": Out(pixel_read_signature(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        C, nq_max = cfg.array_cols, chunks_max(cfg)
        m = Module()
        m.submodules.pix = pix = memory.Memory(shape=pixel_word(cfg), depth=pixel_depth(cfg),
                                               init=[])
        pix_wr, pix_rd = pix.write_port(granularity=1), pix.read_port()

        # Bank state: `full` bits set by the write side, cleared by the read side.
        full = Signal(BANKS)
        set_full = Signal(BANKS)
        clr_full = Signal(BANKS)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # Write side: window of channel `wc` to word `wq`, lane `wl` of bank `wbank`.
        wbank = Signal(range(BANKS))
        wl = Signal(range(C))
        wq = Signal(range(nq_max))
        wc = Signal(range(cfg.max_in_channels))
        wfire = self.i.valid & self.i.ready
        lane = Signal(C)
        m.d.comb += [
            self.i.ready.eq(~full.bit_select(wbank, 1)),
            lane.eq(1 << wl),
            pix_wr.addr.eq(wbank * nq_max + wq),
            pix_wr.en.eq(Mux(wfire, lane.replicate(TAPS), 0)),
        ]
        for t in range(TAPS):
            for n in range(C):
                m.d.comb += pix_wr.data[t * C + n].eq(self.i.payload[t])
        with m.If(wfire):
            m.d.sync += [wc.eq(wc + 1), wl.eq(wl + 1)]
            with m.If(wl == C - 1):
                m.d.sync += [wl.eq(0), wq.eq(wq + 1)]
            with m.If(wc == self.setup.cin_m1):
                m.d.sync += [wc.eq(0), wl.eq(0), wq.eq(0),
                             wbank.eq(Mux(wbank == BANKS - 1, 0, wbank + 1))]
                m.d.comb += set_full.eq(1 << wbank)

        # Read side: bank `rbank` on offer, read through `rd`, freed by a transfer.
        rbank = Signal(range(BANKS))
        m.d.comb += [
            self.pixel.valid.eq(full.bit_select(rbank, 1)),
            pix_rd.addr.eq(rbank * nq_max + self.rd.addr),
            pix_rd.en.eq(self.rd.en),
            self.rd.data.eq(pix_rd.data),
        ]
        with m.If(self.pixel.valid & self.pixel.ready):
            m.d.sync += rbank.eq(Mux(rbank == BANKS - 1, 0, rbank + 1))
            m.d.comb += clr_full.eq(1 << rbank)
        return m
