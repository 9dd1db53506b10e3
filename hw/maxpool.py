"""2x2 max pooling, stride 2 or stride 1 (Darknet's border rule), on an HWC int8 stream."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import frame_walk
from hw.bankmem import BankedMemory
from hw.spec.config import DEFAULT, HwConfig

__all__ = ["MAXPOOL_LATENCY", "MaxPool", "maxpool_out_shape", "pool_value"]

#: Cycles from the input pixel completing a window to the window's max on `o` (no stalls).
MAXPOOL_LATENCY = 5


def maxpool_out_shape(h: int, w: int, stride2: bool, vertical: bool = False
                      ) -> tuple[int, int]:
    """Output (height, width): floor halves for stride 2 (only the height with
    `vertical`), unchanged for stride 1."""
    if vertical:
        return (h // 2, w)
    return (h // 2, w // 2) if stride2 else (h, w)


def pool_value(cfg: HwConfig, lanes: int) -> data.ArrayLayout:
    """One max-pool transfer: `lanes` int8 values of consecutive channels."""
    return data.ArrayLayout(signed(cfg.act_bits), lanes)


def _lane_max(a: Value, b: Value, lanes: int, width: int, take_b: Value | int = 1) -> Value:
    """Element-wise max of two `lanes` x `width` arrays (raw values); with `take_b` = 0,
    `a`."""
    out = []
    for n in range(lanes):
        x, y = a.word_select(n, width).as_signed(), b.word_select(n, width).as_signed()
        out.append(Mux((y > x) & take_b, y, x))
    return Cat(*out)


class MaxPool(wiring.Component):
    """2x2 max pool of an H x W x C int8 map streamed in HWC order (row-major, C fastest).

    Ports ``width``, ``height``, ``channels`` and ``stride2`` describe the frame; they
    must hold still from the frame's first pixel until its last output has been taken.
    Limits: 1 <= W <= max_width, 1 <= H <= max_width (square maps: max_width bounds H too),
    1 <= C <= max_in_channels and W * C <= line_buffer_depth.

    - ``stride2 = 1``: ``floor(H/2) x floor(W/2) x C`` outputs; an odd last row/column
      is dropped (Darknet's behaviour for even maps, which are the only ones it pools).
    - ``stride2 = 0``: ``H x W x C`` outputs; the window at (i, j) is the max over the
      valid positions among rows i..i+1 and columns j..j+1 (Darknet's stride-1 border rule).
    - ``vertical = 1`` (with ``stride2 = 1`` only): 2x1 windows, ``floor(H/2) x W x C``
      outputs (for a map whose columns were pooled before, as the layer engine does).

    Outputs leave in HWC order; ``tests.reference.ref_maxpool`` states it exactly. After a frame the
    block is ready for the next one with no reset.

    ``lanes`` (L, default 1): a transfer is L values of consecutive channels (`pool_value`),
    pooled element by element; ``channels`` then counts transfers (a map of C channels is
    ``ceil(C / L)`` transfers a pixel, W * ceil(C / L) <= ceil((line_buffer_depth +
    (L - 1) * max_width) / L)), and the timing below is per transfer.

    Timing: one input pixel per cycle. In stride-1 mode the block also walks one extra
    column per row and one extra row (``(H + 1) * (W + 1) * C`` cycles per frame, the
    extra ones needing no input), which flushes the last row without a further frame.
    Latency from the pixel completing a window to its output: `MAXPOOL_LATENCY` (5) cycles
    (row read into the banked row store's bank registers, their multiplexer, column read,
    vertical max, window max: every block-RAM read lands in a register next to it and no
    stage has more than one 8-bit compare).
    Backpressure: the whole pipeline stalls while ``o`` is valid and not ready;
    ``i.ready`` depends combinationally on ``o.ready``.
    """

    def __init__(self, cfg: HwConfig = DEFAULT, lanes: int = 1) -> None:
        self.cfg = cfg
        self.lanes = lanes
        super().__init__({
            "i": In(stream.Signature(pool_value(cfg, lanes))),
            "o": Out(stream.Signature(pool_value(cfg, lanes))),
            "width": In(range(cfg.max_width + 1)),
            "height": In(range(cfg.max_width + 1)),
            "channels": In(range(cfg.max_in_channels + 1)),
            "stride2": In(1),
            "vertical": In(1),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, L, bits = self.cfg, self.lanes, self.cfg.act_bits
        word = pool_value(cfg, L)
        depth = -(-(cfg.line_buffer_depth + (L - 1) * cfg.max_width) // L)
        max_ch = -(-cfg.max_in_channels // L)
        m = Module()
        m.submodules.rows = rows = BankedMemory(word, depth)
        m.submodules.cols = cols = memory.Memory(shape=word, depth=max_ch, init=[])
        col_wr = cols.write_port()
        col_rd = cols.read_port(transparent_for=(col_wr,))

        # Global stall: all stages move when the output register can take a value.
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)

        # Position walk (y, x, c) over the frame; `a` = x * C + c addresses the row store.
        # Stride 1 walks x up to W and y up to H: those extra positions are padding and
        # take no input. The window ending at the current position is the 2x2 window
        # whose bottom-right corner it is.
        s2 = self.stride2
        walk, step = frame_walk(m, cfg.max_width, max_ch, depth, self.width, self.height,
                                self.channels, ~s2)
        y, x, c, a, pad_col, pad = walk.y, walk.x, walk.c, walk.a, walk.pad_col, walk.pad
        emit = Mux(s2, y[0] & (x[0] | self.vertical), (y != 0) & (x != 0))
        fire = Signal()
        m.d.comb += [
            fire.eq(adv & (pad | self.i.valid)),
            self.i.ready.eq(adv & ~pad),
            step.eq(fire),
        ]

        # Stage A: read the pixel one row up (same x, c); store the current pixel for the
        # next row (the read sees the old word). The read is enabled with `adv`: a
        # position that has not fired reads the address it will read again when it does.
        lowest = Cat(*[Const(-(1 << (bits - 1)), signed(bits))] * L)
        cur = Mux(pad, lowest, self.i.payload)
        m.d.comb += [
            rows.rd_addr.eq(a), rows.rd_en.eq(adv),
            rows.wr_addr.eq(a), rows.wr_data.eq(cur), rows.wr_en.eq(fire & ~pad),
        ]
        # What stages A2 and B carry along for a position (registered as one struct).
        pos = data.StructLayout({"valid": 1, "cur": word, "pad_col": 1,
                                 "emit": 1, "c": Shape.cast(range(max_ch))})
        pa = Signal(pos)
        with m.If(adv):
            m.d.sync += [pa.valid.eq(fire), pa.cur.eq(cur), pa.pad_col.eq(pad_col),
                         pa.emit.eq(emit), pa.c.eq(c)]

        # Stage A2: the row store's banks land their reads in their registers.
        pb = Signal(pos)
        with m.If(adv):
            m.d.sync += pb.eq(pa)

        # Stage B: the row store's bank multiplexer into a register; read the vertical max
        # of the previous column (same c).
        m.d.comb += [col_rd.addr.eq(pb.c), col_rd.en.eq(adv)]
        pc = Signal(pos)
        up_c = Signal(word)
        with m.If(adv):
            m.d.sync += [pc.eq(pb), up_c.eq(rows.rd_data)]

        # Stage C: vertical max of this column (the pad column has no stored row above).
        up = Mux(pc.pad_col, lowest, up_c)
        vert = Signal(word)
        m.d.comb += vert.eq(_lane_max(pc.cur.as_value(), up, L, bits))
        valid_d = Signal()
        emit_d = Signal()
        c_d = Signal.like(c)
        left_d = Signal(word)
        vert_d = Signal(word)
        with m.If(adv):
            m.d.sync += [valid_d.eq(pc.valid), emit_d.eq(pc.valid & pc.emit), c_d.eq(pc.c),
                         left_d.eq(col_rd.data), vert_d.eq(vert)]

        # Stage D: the vertical max goes to the column store from a register (the store is
        # far from the compare). The next column's pixel of the same channel reads it in
        # stage B: with C >= 3 after this write, with C = 2 in the same cycle (transparent
        # read port); with C = 1 it is the previous pixel, taken from `prev_vert` instead.
        # The window max (left column against this one; this column alone in vertical
        # mode) goes to the output register.
        prev_vert = Signal(word)
        left = Mux(self.channels == 1, prev_vert.as_value(), left_d.as_value())
        m.d.comb += [col_wr.addr.eq(c_d), col_wr.data.eq(vert_d), col_wr.en.eq(adv & valid_d)]
        with m.If(adv & valid_d):
            m.d.sync += prev_vert.eq(vert_d)
        with m.If(adv):
            m.d.sync += [
                self.o.valid.eq(emit_d),
                self.o.payload.eq(_lane_max(vert_d.as_value(), left, L, bits, ~self.vertical)),
            ]
        return m
