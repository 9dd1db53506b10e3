"""The layer engine's per-pixel reorder buffer (`ReorderBuffer`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.engine.layouts import chunks_max, pixel_depth, pixel_word, setup_layout
from hw.linebuf import gen_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import BANKS, TAPS, pairs_1x1

__all__ = ["ReorderBuffer", "pixel_read_signature"]


def pixel_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the pixel on offer: word q holds products 9Cq .. 9C(q + 1) - 1 of the
    pixel's flat walk (`pixel_word`)."""
    return memory.ReadPort.Signature(addr_width=ceil_log2(chunks_max(cfg)),
                                     shape=pixel_word(cfg))


class ReorderBuffer(wiring.Component):
    """Windows in (9 taps of one channel per transfer), whole pixels out as their flat walk
    (`hw.spec.engine.param_walk`: product ``c * k*k + tap``), 9C products a word, in
    `BANKS` banks of one pixel each.

    A pixel is ``cin = setup.cin_m1 + 1`` windows on `i` (`gen_layout`), channel 0
    first (the window generator's order). With ``setup.k3`` window c's 9 taps go to
    elements ``9 * (c % C) .. + 8`` of word ``c // C``; without, its centre tap to
    element ``c % 9C`` of word ``c // 9C`` (a transfer with ``two``: channels c and
    c + 1 of the pixel, c even, 9C even, so both in one word). So product f of the walk
    is element ``f % 9C`` of word ``f // 9C``,
    and any C consecutive products ``vC .. vC + C - 1`` are one C-element slice of one
    word. Once a bank holds its ``cin`` windows it is full: ``pixel`` offers it
    (``pixel.valid``), and `rd` reads its words (address = word; elements past the walk
    hold stale data). A transfer on ``pixel`` frees the bank and
    offers the next one; the banks fill and drain in turn.

    Timing: one transfer per cycle while a bank is free; ``i.ready`` is 0 while the bank
    being written is full (all `BANKS` pixels wait), from flip-flops. ``pixel.valid`` rises
    the cycle after the pixel's last window is taken and comes from flip-flops;
    ``pixel.ready`` may follow ``pixel.valid`` combinationally (the feeder holds it low
    until the pixel's last array vector). `rd`: data the cycle after an enabled read
    (a block-RAM read port, non-transparent).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(gen_layout(cfg))),
            "setup": In(setup_layout(cfg)),
            "pixel": Out(stream.Signature(0)),
            "rd": Out(pixel_read_signature(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        C, nq_max = cfg.array_cols, chunks_max(cfg)
        m = Module()
        # (`HwConfig.reorder_lutram`: a hint to synthesis, no change in behaviour.)
        attrs = {"ram_style": "distributed"} if cfg.reorder_lutram else None
        m.submodules.pix = pix = memory.Memory(shape=pixel_word(cfg), depth=pixel_depth(cfg),
                                               init=[], attrs=attrs)
        pix_wr, pix_rd = pix.write_port(granularity=1), pix.read_port()

        # Bank state: `full` bits set by the write side, cleared by the read side.
        full = Signal(BANKS)
        set_full = Signal(BANKS)
        clr_full = Signal(BANKS)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # Write side: window of channel `wc` to elements `wp` .. of word `wq` of bank
        # `wbank` (9 elements a window in 3x3 mode, the centre tap alone in 1x1 mode).
        k3 = self.setup.k3
        wbank = Signal(range(BANKS))
        wp = Signal(range(TAPS * C))
        wq = Signal(range(nq_max))
        wc = Signal(range(cfg.max_in_channels))
        wfire = self.i.valid & self.i.ready
        two = self.i.payload.two & ~k3 if pairs_1x1(cfg) else 0
        taps = self.i.payload.taps
        word_end = Mux(k3, wp == TAPS * (C - 1), Mux(two, wp == TAPS * C - 2, wp == TAPS * C - 1))
        m.d.comb += [
            self.i.ready.eq(~full.bit_select(wbank, 1)),
            pix_wr.addr.eq(wbank * nq_max + wq),
            pix_wr.en.eq(Mux(wfire, Mux(k3, (1 << TAPS) - 1, Mux(two, 0b11, 1)) << wp, 0)),
        ]
        for e in range(TAPS * C):
            centre = Mux(two, taps[TAPS // 2 + 1], taps[TAPS // 2]) if e % 2 else taps[TAPS // 2]
            m.d.comb += pix_wr.data[e].eq(Mux(k3, taps[e % TAPS], centre))
        with m.If(wfire):
            m.d.sync += [wc.eq(wc + 1 + two), wp.eq(wp + Mux(k3, TAPS, 1 + two))]
            with m.If(word_end):
                m.d.sync += [wp.eq(0), wq.eq(wq + 1)]
            with m.If(wc + two == self.setup.cin_m1):
                m.d.sync += [wc.eq(0), wp.eq(0), wq.eq(0),
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
