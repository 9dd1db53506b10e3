"""Line buffer and window generator: 3x3 windows (or 1x1 pass-through) of an HWC int8 map."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import frame_walk
from hw.bankmem import BankedMemory
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import TAPS, pairs_1x1

__all__ = ["WINDOW_LATENCY", "WindowGen", "gen_layout", "input_layout", "window_layout"]

#: Cycles from the input pixel completing a window to the window on `o` (no stalls).
WINDOW_LATENCY = 5


def input_layout(cfg: HwConfig) -> data.StructLayout:
    """One input transfer: one int8 value (``data[0]``), or two consecutive ones
    (``data[0]`` first) with ``two`` set. A single value in the low 8 bits of the raw
    payload is a one-value transfer."""
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.act_bits), 2), "two": 1})


def window_layout(cfg: HwConfig) -> data.ArrayLayout:
    """One window: 9 int8 taps, row-major (top-left first)."""
    return data.ArrayLayout(signed(cfg.act_bits), TAPS)


def gen_layout(cfg: HwConfig) -> data.StructLayout:
    """One output transfer of `WindowGen`: a window (``taps``), or with ``two`` (1x1 mode
    only) two consecutive channels' centre taps, the first in tap 4, the second in tap 5
    (the other taps zero). ``two`` is the top bit, so a one-window transfer's raw value
    is its window's."""
    return data.StructLayout({"taps": window_layout(cfg), "two": 1})


class WindowGen(wiring.Component):
    """Windows of an H x W x C int8 map streamed in HWC order (row-major, C fastest).

    Ports ``width``, ``height``, ``channels`` and ``k3`` describe the frame; they must
    hold still from the frame's first pixel until its last window has been taken.
    Limits: 1 <= W <= max_width, 1 <= H <= max_width, 1 <= C <= max_in_channels,
    W * C <= line_buffer_depth.

    - ``k3 = 1``: one window per input pixel, in HWC order of the window centres: 9 taps
      of one channel, row-major, zero where the window leaves the map (padding 1 on all
      four borders, as for a 3x3 conv with stride 1 and pad 1).
    - ``k3 = 0``: 1x1 pass-through: the same windows with only the centre tap set; where
      `pairs_1x1`, a two-value transfer of channels c, c + 1 of one pixel with c even
      leaves as one transfer of both (`gen_layout`'s ``two``).

    ``tests.reference.ref_windows`` states it exactly. The next frame may follow at once.

    Input: `input_layout` transfers of one value, or two with ``two`` set (any mix; the
    frame ports must then hold one cycle before the frame's first transfer).
    Both values of a two-value transfer are stored in one cycle where that is possible:
    in row 0 of a 3x3 frame (which yields no window), at an even ``x * C + c``, with
    ``C >= 2`` and both values in the row, and in a 1x1 frame (`pairs_1x1`) at an even
    ``c`` below ``C - 1``; elsewhere the second value waits in a register and takes the
    next cycle (``i.ready`` is 0 then).

    Storage: two rows of W x C (two 16-bit-wide `BankedMemory` of ``line_buffer_depth / 2``
    words, the even and the odd positions ``a = x * C + c``, a lane per row; the third
    row of a window is the incoming one) and the last two columns' taps
    per channel (``max_in_channels`` x 48 bits, two lanes of three taps, lane ``x % 2``
    for column x).

    Timing: one input value per cycle, two per cycle in row 0 of a 3x3 frame sent as
    two-value transfers and (`pairs_1x1`) in a 1x1 frame so sent. A 3x3
    frame walks ``(H + 1) * (W + 1) * C - C`` steps (the extra
    row and column carry the bottom/right padding and need no input; row 0 has no
    padding column, where nothing would be emitted or kept, unless ``W * C <= 2``), fewer
    with two-value
    transfers in row 0, so the last row leaves without waiting for another frame. A
    window leaves
    `WINDOW_LATENCY` (5) cycles after the pixel that completes it (its bottom-right
    neighbour): row read (two cycles: the banked store's bank registers, then their
    multiplexer), column-history read, window assembly, output register; every block-RAM
    read lands in a register next to it. Backpressure: the whole pipeline
    stalls while ``o`` is valid and not ready; ``i.ready`` depends combinationally on
    ``o.ready``.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(input_layout(cfg))),
            "o": Out(stream.Signature(gen_layout(cfg))),
            "width": In(range(cfg.max_width + 1)),
            "height": In(range(cfg.max_width + 1)),
            "channels": In(range(cfg.max_in_channels + 1)),
            "k3": In(1),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        px = signed(cfg.act_bits)
        column = data.ArrayLayout(px, 3)              # top, middle, bottom tap of a column
        m = Module()
        # Row store: position a of the row in lane r (rows y with y % 2 == r) is in word
        # a // 2 of `rows[a % 2]` (two memories, so that a pair's two positions are written
        # together and a write never meets a read of the same memory word on one edge).
        half = (cfg.line_buffer_depth + 1) // 2
        rows = [BankedMemory(data.ArrayLayout(px, 2), half, granularity=1) for _ in range(2)]
        m.submodules.rows_even, m.submodules.rows_odd = rows
        # Column history: lane p holds, per channel, the taps of the last column x with
        # x % 2 == p (so at column x lane x % 2 still holds column x - 2 until it is
        # overwritten, and lane (x - 1) % 2 holds column x - 1).
        m.submodules.cols = cols = memory.Memory(
            shape=data.ArrayLayout(column, 2), depth=cfg.max_in_channels, init=[])
        col_wr = cols.write_port(granularity=1)
        col_rd = cols.read_port(transparent_for=(col_wr,))

        # Global stall: all stages move when the output register can take a value.
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)

        # Position walk (y, x, c); `a` = x * C + c addresses the row store. In 3x3 mode the
        # walk has an extra column x = W (not in row 0) and row y = H of zero padding (no
        # input taken); the window emitted at (y, x) is centred on (y - 1, x - 1). A
        # two-value transfer is one step of two positions where `pair_ok`, else its second
        # value waits in `spare` and is the next position's.
        k3 = self.k3
        two = Signal()
        # Row 0's padding column is skipped unless W * C <= 2: then the last write of row 0
        # would meet row 1's first read of the same word on one edge (which reads the old).
        w_, c_ = self.width, self.channels
        skip = ~(((w_ == 1) & (c_ <= 2)) | ((w_ == 2) & (c_ == 1)))
        walk, step = frame_walk(m, cfg.max_width, cfg.max_in_channels, cfg.line_buffer_depth,
                                self.width, self.height, self.channels, k3, two=two,
                                skip_top_pad=skip)
        y, x, c, a, pad_col, pad = walk.y, walk.x, walk.c, walk.a, walk.pad_col, walk.pad
        spare = Signal(px)
        spare_valid = Signal()
        # Frame constants for the pair rule, registered (equality compares only).
        w_m1 = Signal.like(x, name="w_m1")
        c_m1 = Signal.like(c, name="c_m1")
        c_one = Signal()
        m.d.sync += [w_m1.eq(self.width - 1), c_m1.eq(self.channels - 1),
                     c_one.eq(self.channels == 1)]
        pair_ok = k3 & (y == 0) & ~a[0] & ~c_one & ~((x == w_m1) & (c == c_m1))
        if pairs_1x1(cfg):
            pair_ok |= ~k3 & ~c[0] & (c != c_m1)
        taking = ~pad & ~spare_valid & self.i.valid
        fire = Signal()
        m.d.comb += [
            fire.eq(adv & (pad | spare_valid | self.i.valid)),
            self.i.ready.eq(adv & ~pad & ~spare_valid),
            two.eq(taking & self.i.payload.two & pair_ok),
            step.eq(fire),
        ]
        with m.If(fire & ~pad):
            m.d.sync += spare_valid.eq(taking & self.i.payload.two & ~pair_ok)
            m.d.sync += spare.eq(self.i.payload.data[1])

        # Stage A: read rows y-2 and y-1 at this (x, c); the current value (two in a
        # pair) replaces row y-2 (lane y % 2) in the row store one cycle later, from
        # registers (so the walk's compares do not reach the block RAM's write enable).
        # The same position is read again at least two steps later (W * C >= 3 steps from
        # row 0, (W + 1) * C from the others), after that write; 1x1 mode does not use the
        # row store. The read is enabled with `adv`: a position that has not fired reads
        # the address it will read again when it does.
        cur = Mux(pad, 0, Mux(spare_valid, spare, self.i.payload.data[0]))
        wr_en = [Signal(2, name="wr_en_even"), Signal(2, name="wr_en_odd")]
        wr_addr = Signal(range(half + 1))
        wr_data = [Signal(px, name="wr_even"), Signal(px, name="wr_odd")]
        lane = Mux(y[0], 0b10, 0b01)
        with m.If(fire & ~pad):
            m.d.sync += [wr_en[0].eq(Mux(two | ~a[0], lane, 0)),
                         wr_en[1].eq(Mux(two | a[0], lane, 0))]
        with m.Else():
            m.d.sync += [wr_en[0].eq(0), wr_en[1].eq(0)]
        m.d.sync += [wr_addr.eq(a >> 1), wr_data[0].eq(cur),
                     wr_data[1].eq(Mux(two, self.i.payload.data[1], cur))]
        for mem, en, d in zip(rows, wr_en, wr_data, strict=True):
            m.d.comb += [
                mem.rd_addr.eq(a >> 1), mem.rd_en.eq(adv),
                mem.wr_addr.eq(wr_addr), mem.wr_en.eq(en),
                mem.wr_data[0].eq(d), mem.wr_data[1].eq(d),
            ]
        # What stages A2, B and C carry along for a position (registered as one struct).
        pos = data.StructLayout({
            "valid": 1, "cur": px, "cur2": px, "two": 1, "odd": 1, "aodd": 1, "pad_col": 1,
            "top_zero": 1, "left_zero": 1,
            "xodd": 1, "emit": 1, "k3": 1, "c": Shape.cast(range(cfg.max_in_channels)),
        })
        pa = Signal(pos)
        with m.If(adv):
            m.d.sync += [
                pa.valid.eq(fire), pa.cur.eq(cur), pa.odd.eq(y[0]), pa.aodd.eq(a[0]),
                pa.cur2.eq(self.i.payload.data[1]), pa.two.eq(two & ~k3),
                pa.pad_col.eq(pad_col),
                pa.top_zero.eq(y == 1), pa.left_zero.eq(x == 1), pa.xodd.eq(x[0]),
                pa.k3.eq(k3), pa.c.eq(c), pa.emit.eq(~k3 | ((y != 0) & (x != 0))),
            ]

        # Stage A2: the row store's banks land their reads in their registers.
        pb = Signal(pos)
        with m.If(adv):
            m.d.sync += pb.eq(pa)

        # Stage B: the row store's bank multiplexer into a register; read this channel's
        # column history (used in stage D).
        m.d.comb += [col_rd.addr.eq(pb.c), col_rd.en.eq(adv)]
        rows_c = Signal(data.ArrayLayout(px, 2))
        pc = Signal(pos)
        with m.If(adv):
            m.d.sync += [rows_c.eq(Mux(pb.aodd, rows[1].rd_data, rows[0].rd_data)),
                         pc.eq(pb)]

        # Stage C: this column's three taps (zero in the padding column, and the top one
        # above the map) go into lane x % 2 of the column history. It is read in stage B
        # and written here, so with C = 1 the next column's read sees this write in the
        # same cycle (transparent read port).
        now = Signal(column)
        m.d.comb += [
            now[0].eq(Mux(pc.top_zero | pc.pad_col, 0, Mux(pc.odd, rows_c[1], rows_c[0]))),
            now[1].eq(Mux(pc.pad_col, 0, Mux(pc.odd, rows_c[0], rows_c[1]))),
            now[2].eq(pc.cur),
            col_wr.addr.eq(pc.c), col_wr.data[0].eq(now), col_wr.data[1].eq(now),
            col_wr.en.eq(Mux(adv & pc.valid, Mux(pc.xodd, 0b10, 0b01), 0)),
        ]
        hist_d = Signal(data.ArrayLayout(column, 2))
        now_d = Signal(column)
        valid_d = Signal()
        left_zero_d = Signal()
        xodd_d = Signal()
        k3_d = Signal()
        two_d = Signal()
        cur2_d = Signal(px)
        with m.If(adv):
            m.d.sync += [
                hist_d.eq(col_rd.data), now_d.eq(now), valid_d.eq(pc.valid & pc.emit),
                left_zero_d.eq(pc.left_zero), xodd_d.eq(pc.xodd), k3_d.eq(pc.k3),
                two_d.eq(pc.two), cur2_d.eq(pc.cur2),
            ]

        # Stage D: the window (two previous columns, zero left of the map, and this one)
        # goes to the output register.
        prev = Signal(column)
        older = Signal(column)
        m.d.comb += [
            prev.eq(Mux(xodd_d, hist_d[0], hist_d[1])),
            older.eq(Mux(left_zero_d, 0, Mux(xodd_d, hist_d[1], hist_d[0]))),
        ]
        window = Signal(window_layout(cfg))
        for ky in range(3):
            m.d.comb += [
                window[ky * 3 + 0].eq(older[ky]),
                window[ky * 3 + 1].eq(prev[ky]),
                window[ky * 3 + 2].eq(now_d[ky]),
            ]
        # (1x1 mode: the centre tap, and with `two` the next channel's value beside it.)
        with m.If(adv):
            m.d.sync += self.o.valid.eq(valid_d)
            with m.If(k3_d):
                m.d.sync += [self.o.payload.taps.eq(window), self.o.payload.two.eq(0)]
            with m.Else():
                m.d.sync += self.o.payload.eq(0)
                m.d.sync += [self.o.payload.taps[4].eq(now_d[2]),
                             self.o.payload.two.eq(two_d)]
                with m.If(two_d):
                    m.d.sync += self.o.payload.taps[5].eq(cur2_d)
        return m
