"""Layer engine: one output-channel group of a 3x3 / 1x1 conv layer, fused with bias,
requantization, activation and an optional 2x2 max pool (see docs/engine.md).

Datapath: WindowGen -> per-pixel reorder buffer (BANKS pixels) -> MacArray -> result
serializer (bias and shift memories) -> Requantizer -> MaxPool (bypassed when pool = 0).
The host-facing contract (parameter layout, group sizes, cycle model) is `hw.spec.engine`.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import StreamRegister
from hw.linebuf import WindowGen
from hw.mac_array import MacArray
from hw.maxpool import MaxPool
from hw.requant import Requantizer
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import (
    BANKS,
    HPOOL_BLOCKS,
    PACK_CIN,
    POOL_NONE,
    POOL_S2,
    TAPS,
    max_group,
    packed,
)

__all__ = ["LayerEngine"]

class _Load(enum.Enum, shape=2):
    """Parameter loader state: which part of the group's byte stream comes next."""
    WEIGHTS = 0
    BIASES = 1
    SHIFTS = 2
    LOADED = 3


def _map_counter(m: Module, clear: Signal, fire: Signal, c: Signal, w: Signal, h: Signal, *,
                 name: str) -> Signal:
    """Counts transfers over an H x W x C map (C fastest); returns "this one is the last".

    `c`, `w`, `h` are the last indices (C - 1, W - 1, H - 1), so only equalities remain."""
    cc = Signal.like(c, name=f"{name}_c")
    cx = Signal.like(w, name=f"{name}_x")
    cy = Signal.like(h, name=f"{name}_y")
    last = Signal(name=f"{name}_last")
    m.d.comb += last.eq(fire & (cc == c) & (cx == w) & (cy == h))
    with m.If(clear):
        m.d.sync += [cc.eq(0), cx.eq(0), cy.eq(0)]
    with m.Elif(fire):
        m.d.sync += cc.eq(cc + 1)
        with m.If(cc == c):
            m.d.sync += [cc.eq(0), cx.eq(cx + 1)]
            with m.If(cx == w):
                m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                with m.If(cy == h):
                    m.d.sync += cy.eq(0)
    return last


def _end_flag(m: Module, step: Value, base: Signal, size: int, limit: Value, *,
              name: str) -> Signal:
    """A register equal to `base + size >= limit` ("this block is the last"), for a `base`
    that on `step` moves up by `size`, or back to 0 when the flag is set, and otherwise
    rests (at 0 between pixels and passes, where the flag follows `limit`): no
    add-and-compare chain between `base` and the logic that uses the flag."""
    flag = Signal(name=name)
    with m.If(step):
        m.d.sync += flag.eq(Mux(flag, limit <= size, base + 2 * size >= limit))
    with m.Elif(base == 0):
        m.d.sync += flag.eq(limit <= size)
    return flag


class LayerEngine(wiring.Component):
    """One output-channel group of a conv layer (port contract: docs/engine.md).

    Sequence: pulse ``start``; send ``param_bytes(k, cin, cout)`` bytes on ``params``
    (OHWI weights, int32 LE biases, shift bytes); stream the H x W x cin input map once on
    ``i``; take ``OH * OW * cout`` values from ``o`` (HWC, int8 results sign-extended);
    ``done`` rises once the last output is taken and every conv result has drained.
    Layer registers hold still from ``start`` to ``done``.

    Timing: the MAC array runs ``ceil(cout/R) * k*k * ceil(cin/C)`` vectors per output
    pixel, one per cycle; the reorder buffer holds `BANKS` pixels so that the next pixels'
    windows (``cin`` cycles each) are written while the array works on the current one
    (`engine_cycles`). Latency from a pixel's complete window to its first output: about
    the pixel's array cycles + R + C + 20 (+ 5 with pooling).
    Backpressure: ``o.ready = 0`` stalls the engine without loss;
    ``params.ready`` is always 1 (extra bytes set ``param_err``); ``i.ready`` is 0 until
    the parameters are loaded.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "params": In(stream.Signature(8)),
            "i": In(stream.Signature(signed(cfg.act_bits))),
            "o": Out(stream.Signature(signed(cfg.head_bits))),
            "width": In(range(cfg.max_width + 1)),
            "height": In(range(cfg.max_width + 1)),
            "cin": In(range(cfg.max_in_channels + 1)),
            "cout": In(range(max_group(cfg) + 1)),
            "k3": In(1),
            "leaky": In(1),
            "head": In(1),
            "pool": In(2),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "loaded": Out(1),
            "param_err": Out(1),
            "shape_ok": Out(1),
            "cycles": Out(32),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        R, C = cfg.array_rows, cfg.array_cols
        act = signed(cfg.act_bits)
        nq_max = math.ceil(cfg.max_in_channels / C)      # chunk words per pixel and tap
        w_depth = cfg.weight_mem_bytes // (R * C)
        g_max = max(max_group(cfg), R)
        m = Module()

        m.submodules.wgen = wgen = WindowGen(cfg)
        m.submodules.mac = mac = MacArray(cfg)
        m.submodules.rq = rq = Requantizer(cfg)
        m.submodules.pool = mp = MaxPool(cfg)
        # Reorder buffer: BANKS banks of nq_max words, each word 9 taps x C channels.
        m.submodules.pix = pix = memory.Memory(
            shape=data.ArrayLayout(act, TAPS * C), depth=BANKS * nq_max, init=[])
        m.submodules.wmem = wmem = memory.Memory(
            shape=data.ArrayLayout(signed(cfg.weight_bits), R * C), depth=w_depth, init=[])
        m.submodules.bmem = bmem = memory.Memory(
            shape=signed(cfg.acc_bits), depth=g_max, init=[])
        m.submodules.smem = smem = memory.Memory(
            shape=unsigned(cfg.shift_bits), depth=g_max, init=[])
        pix_wr, pix_rd = pix.write_port(granularity=1), pix.read_port()
        w_wr, w_rd = wmem.write_port(granularity=1), wmem.read_port()
        b_wr, b_rd = bmem.write_port(), bmem.read_port()
        s_wr, s_rd = smem.write_port(), smem.read_port()

        # Shape check: `shape_ok` judges the registers as they were two cycles ago (the
        # row products are registered first). A `start` while it is 0 starts nothing and
        # sets `param_err`.
        row_in, row_out = Signal(24), Signal(24)
        m.d.sync += [row_in.eq(self.width * self.cin), row_out.eq(self.width * self.cout)]
        legal = ((self.width >= 1) & (self.width <= cfg.max_width)
                 & (self.height >= 1) & (self.height <= cfg.max_width)
                 & (self.cin >= 1) & (self.cin <= cfg.max_in_channels)
                 & (self.cout >= 1) & (self.cout <= max_group(cfg))
                 & (self.pool != 3) & ((self.pool == POOL_NONE) | ~self.head)
                 & (~self.k3 | (row_in <= cfg.line_buffer_depth))
                 & ((self.pool == POOL_NONE) | (row_out <= cfg.line_buffer_depth)))
        m.d.sync += self.shape_ok.eq(legal)
        start = Signal()
        m.d.comb += start.eq(self.start & self.shape_ok)

        # Modes (`packed`, `column_pooled`), registered like the shape check. A packed
        # group walks its 9 * PACK_CIN taps x channels as `walk_cin` channels of one tap
        # (the parameter bytes come in that order already: OHWI).
        pack_ok = packed(cfg, 3, PACK_CIN)
        pack_chunks = math.ceil(TAPS * PACK_CIN / C)
        pk, hpool = Signal(), Signal()
        pk_now = self.k3 & (self.cin == PACK_CIN) if pack_ok else Const(0)
        s2_now = self.pool == POOL_S2
        hpool_now = s2_now & (self.cout <= HPOOL_BLOCKS * R) & (self.width >= 2)
        walk_cin_now = Mux(pk_now, TAPS * PACK_CIN, self.cin)
        conv_w_now = Mux(hpool_now, self.width >> 1, self.width)   # requantized columns
        walk_cin_max = max(cfg.max_in_channels, TAPS * PACK_CIN)
        walk_cin = Signal(range(walk_cin_max + 1))
        kk_last = Signal(range(TAPS))                     # last tap index of the walk
        m.d.sync += [pk.eq(pk_now), hpool.eq(hpool_now), walk_cin.eq(walk_cin_now),
                     kk_last.eq(Mux(self.k3 & ~pk_now, TAPS - 1, 0))]

        # Last indices of the counters (register - 1), registered: the counters' ends are
        # equalities against flip-flops, not subtract-and-compare chains.
        def last_index(value: object, like: Signal, name: str) -> Signal:
            reg = Signal.like(like, name=name)
            m.d.sync += reg.eq(value - 1)
            return reg
        cout_m1 = last_index(self.cout, self.cout, "cout_m1")
        cin_m1 = last_index(self.cin, self.cin, "cin_m1")
        walk_cin_m1 = last_index(walk_cin_now, walk_cin, "walk_cin_m1")
        width_m1 = last_index(self.width, self.width, "width_m1")
        height_m1 = last_index(self.height, self.height, "height_m1")
        conv_w_m1 = last_index(conv_w_now, self.width, "conv_w_m1")
        out_w_m1 = last_index(Mux(s2_now, self.width >> 1, self.width), self.width, "out_w_m1")
        out_h_m1 = last_index(Mux(s2_now, self.height >> 1, self.height), self.height,
                              "out_h_m1")
        out_none = Signal()                              # pool 1 of a single row/column
        m.d.sync += out_none.eq(s2_now & ((self.width < 2) | (self.height < 2)))
        with m.If(self.start & ~self.shape_ok):
            m.d.sync += self.param_err.eq(1)

        # Between passes the window generator and the max pool see a 1x1x1 frame: they
        # wait at its first position for input, whatever the registers hold meanwhile
        # (zero after reset, half-written by the host); a pass finds them at position 0.
        # Their frame registers follow one cycle behind (input arrives only once the
        # parameters are loaded, many cycles after `start`).
        run = self.busy
        frame = [(wgen.width, self.width), (wgen.height, self.height),
                 (wgen.channels, self.cin), (mp.width, conv_w_now),
                 (mp.height, self.height), (mp.channels, self.cout)]
        for port, value in frame:
            reg = Signal.like(port, init=1, name=f"idle_{port.name}")
            m.d.sync += reg.eq(Mux(run, value, 1))
            m.d.comb += port.eq(reg)
        k3_reg, s2_reg, vert_reg = Signal(), Signal(), Signal()
        m.d.sync += [k3_reg.eq(self.k3 & run), s2_reg.eq(s2_now & run),
                     vert_reg.eq(hpool_now & run)]
        m.d.comb += [wgen.k3.eq(k3_reg), mp.stride2.eq(s2_reg), mp.vertical.eq(vert_reg)]

        # Parameter loader: weights (OHWI) into word ((o // R) * kk + t) * nq + i // C,
        # lane (o % R) * C + i % C; then int32 LE biases; then shifts. `tbase` is the first
        # word of the current (row block, tap), `rbase` that of the current row block.
        phase = Signal(_Load)
        li_all = Signal.like(walk_cin)
        li = Signal(range(C))
        lw = Signal(range(max(nq_max, pack_chunks)))
        lt = Signal(range(TAPS))
        lo = Signal(range(g_max + 1))
        lo_r = Signal(range(R))
        addr_w = (g_max // R + 1) * TAPS * nq_max + nq_max
        tbase = Signal(range(addr_w))
        rbase = Signal(range(addr_w))
        bb = Signal(2)
        bidx = Signal(range(g_max + 1))
        bsr = Signal(24)
        # The parameter bytes are registered on arrival (`params.ready` is always 1, so a
        # plain register is enough): no path from the sender's logic into the memories.
        byte = Signal(8)
        take = Signal()
        m.d.sync += [byte.eq(self.params.payload), take.eq(self.params.valid & ~start)]
        m.d.comb += [self.params.ready.eq(1), self.loaded.eq(phase == _Load.LOADED)]
        waddr = tbase + lw
        onehot = Signal(R * C)
        m.d.comb += [
            onehot.eq(1 << (lo_r * C + li)),
            w_wr.addr.eq(waddr),
            w_wr.en.eq(Mux(take & (phase == _Load.WEIGHTS) & (waddr < w_depth), onehot, 0)),
            b_wr.addr.eq(bidx), b_wr.data.eq(Cat(bsr, byte).as_signed()),
            b_wr.en.eq(take & (phase == _Load.BIASES) & (bb == 3)),
            s_wr.addr.eq(bidx), s_wr.data.eq(byte[:cfg.shift_bits]),
            s_wr.en.eq(take & (phase == _Load.SHIFTS)),
        ]
        for n in range(R * C):
            m.d.comb += w_wr.data[n].eq(byte)
        with m.If(start):
            m.d.sync += [phase.eq(_Load.WEIGHTS), li_all.eq(0), li.eq(0), lw.eq(0), lt.eq(0),
                         lo.eq(0), lo_r.eq(0), tbase.eq(0), rbase.eq(0), bb.eq(0), bidx.eq(0),
                         self.param_err.eq(0)]
        with m.Elif(take):
            with m.Switch(phase):
                with m.Case(_Load.WEIGHTS):
                    with m.If(waddr >= w_depth):
                        m.d.sync += self.param_err.eq(1)
                    m.d.sync += [li_all.eq(li_all + 1), li.eq(li + 1)]
                    with m.If(li == C - 1):
                        m.d.sync += [li.eq(0), lw.eq(lw + 1)]
                    with m.If(li_all == walk_cin_m1):
                        m.d.sync += [li_all.eq(0), li.eq(0), lw.eq(0), lt.eq(lt + 1),
                                     tbase.eq(waddr + 1)]
                        with m.If(lt == kk_last):
                            m.d.sync += [lt.eq(0), lo.eq(lo + 1), lo_r.eq(lo_r + 1),
                                         tbase.eq(rbase)]
                            with m.If(lo_r == R - 1):
                                m.d.sync += [lo_r.eq(0), tbase.eq(waddr + 1),
                                             rbase.eq(waddr + 1)]
                            with m.If(lo == cout_m1):
                                m.d.sync += phase.eq(_Load.BIASES)
                with m.Case(_Load.BIASES):
                    m.d.sync += [bb.eq(bb + 1), bsr.eq(Cat(bsr[8:], byte))]
                    with m.If(bb == 3):
                        m.d.sync += bidx.eq(bidx + 1)
                        with m.If(bidx == cout_m1):
                            m.d.sync += [bidx.eq(0), phase.eq(_Load.SHIFTS)]
                with m.Case(_Load.SHIFTS):
                    m.d.sync += bidx.eq(bidx + 1)
                    with m.If(bidx == cout_m1):
                        m.d.sync += [bidx.eq(0), phase.eq(_Load.LOADED)]
                with m.Case(_Load.LOADED):
                    m.d.sync += self.param_err.eq(1)

        # Input: the window generator sees the map only once the parameters are loaded,
        # through a register stage (no combinational path between `i` and the generator).
        m.submodules.i_reg = i_reg = StreamRegister(signed(cfg.act_bits))
        m.d.comb += [
            i_reg.i.valid.eq(self.i.valid & self.loaded),
            i_reg.i.payload.eq(self.i.payload),
            self.i.ready.eq(i_reg.i.ready & self.loaded),
        ]
        wiring.connect(m, i_reg.o, wgen.i)

        # Reorder buffer, write side: window of channel c goes to word c // C of the
        # write bank, lane c % C of every tap. A bank is full after cin windows.
        full = Signal(BANKS)
        wbank = Signal(range(BANKS))
        wl = Signal(range(C))
        wq = Signal(range(nq_max))
        wc = Signal(range(cfg.max_in_channels))
        wfire = wgen.o.valid & wgen.o.ready
        lane = Signal(C)
        m.d.comb += [
            wgen.o.ready.eq(~full.bit_select(wbank, 1)),
            lane.eq(1 << wl),
            pix_wr.addr.eq(wbank * nq_max + wq),
            pix_wr.en.eq(Mux(wfire, lane.replicate(TAPS), 0)),
        ]
        for t in range(TAPS):
            for n in range(C):
                m.d.comb += pix_wr.data[t * C + n].eq(wgen.o.payload[t])
        set_full = Signal(BANKS)
        with m.If(wfire):
            m.d.sync += [wc.eq(wc + 1), wl.eq(wl + 1)]
            with m.If(wl == C - 1):
                m.d.sync += [wl.eq(0), wq.eq(wq + 1)]
            with m.If(wc == cin_m1):
                m.d.sync += [wc.eq(0), wl.eq(0), wq.eq(0),
                             wbank.eq(Mux(wbank == BANKS - 1, 0, wbank + 1))]
                m.d.comb += set_full.eq(1 << wbank)

        # Feeder: per pixel, for each row block, tap and chunk of C channels, one vector
        # (weights in walk order, so the weight address just counts). Stage F0 addresses
        # the memories; stage F1 (their read registers) is the array's input.
        rbank = Signal(range(BANKS))
        fq = Signal(range(max(nq_max, pack_chunks)))
        fcb = Signal(range(walk_cin_max + C))              # fq * C
        ft = Signal(range(TAPS))                            # tap walk index
        fr0 = Signal(range(g_max + R))                      # first channel of the row block
        fwa = Signal(range(w_depth + 1))
        f1_valid = Signal()
        f1_last = Signal()
        f1_tap = Signal(range(TAPS))
        f1_q = Signal(range(pack_chunks))
        f1_mask = Signal(C)
        f2_valid = Signal()
        m.submodules.f3 = f3 = StreamRegister(mac.i.payload.shape())
        f2b_valid = Signal()
        adv_2b = ~f2b_valid | f3.i.ready
        adv_2 = ~f2_valid | adv_2b
        adv_f = ~f1_valid | adv_2
        fire_f = adv_f & full.bit_select(rbank, 1)
        # the tap's last chunk (fcb + C >= walk_cin) and the pixel's last row block
        # (fr0 + R >= cout), kept in registers
        q_last = _end_flag(m, fire_f, fcb, C, walk_cin, name="q_last")
        t_last = ft == kk_last
        rb_last = _end_flag(m, fire_f & q_last & t_last, fr0, R, self.cout, name="rb_last")
        clr_full = Signal(BANKS)
        m.d.comb += [
            pix_rd.addr.eq(rbank * nq_max + Mux(pk, 0, fq)), pix_rd.en.eq(adv_f),
            w_rd.addr.eq(fwa), w_rd.en.eq(adv_f),
        ]
        with m.If(adv_f):
            m.d.sync += [f1_valid.eq(fire_f), f1_last.eq(q_last & t_last),
                         f1_tap.eq(Mux(self.k3, ft, TAPS // 2)), f1_q.eq(fq),
                         f1_mask.eq(Cat(*[fcb + n < walk_cin for n in range(C)]))]
        with m.If(fire_f):
            m.d.sync += [fq.eq(fq + 1), fcb.eq(fcb + C), fwa.eq(fwa + 1)]
            with m.If(q_last):
                m.d.sync += [fq.eq(0), fcb.eq(0), ft.eq(ft + 1)]
                with m.If(t_last):
                    m.d.sync += [ft.eq(0), fr0.eq(fr0 + R)]
                    with m.If(rb_last):
                        m.d.sync += [fr0.eq(0), fwa.eq(0),
                                     rbank.eq(Mux(rbank == BANKS - 1, 0, rbank + 1))]
                        m.d.comb += clr_full.eq(1 << rbank)
        m.d.sync += full.eq((full | set_full) & ~clr_full)
        # Stage F2: the memories' read data registered as is (no logic after the block
        # RAMs); the tap select and channel mask run between F2b (below) and stage F3, a
        # register stage with a skid buffer (`StreamRegister`), so the weight memory's
        # 30-odd block RAMs reach the array over three registered hops and the array's
        # `ready` stops at F3.
        f2_last = Signal()
        f2_tap = Signal(range(TAPS))
        f2_q = Signal.like(f1_q)
        f2_mask = Signal(C)
        f2_pix = Signal(len(pix_rd.data.as_value()), reset_less=True)
        f2_w = Signal(len(w_rd.data.as_value()), reset_less=True)
        with m.If(adv_2):
            m.d.sync += [f2_valid.eq(f1_valid), f2_last.eq(f1_last), f2_tap.eq(f1_tap),
                         f2_q.eq(f1_q), f2_mask.eq(f1_mask),
                         f2_pix.eq(pix_rd.data.as_value()),
                         f2_w.eq(w_rd.data.as_value())]
        # Stage F2b: the same again (no logic between), so that the RAMs' slow clock-to-out
        # and the long way from the RAM columns to the array take two hops: F2 can sit by
        # the RAMs and F2b between them and F3.
        f2b_last = Signal()
        f2b_tap = Signal.like(f2_tap)
        f2b_q = Signal.like(f2_q)
        f2b_mask = Signal.like(f2_mask)
        f2b_pix = Signal.like(f2_pix)
        f2b_w = Signal.like(f2_w)
        with m.If(adv_2b):
            m.d.sync += [f2b_valid.eq(f2_valid), f2b_last.eq(f2_last), f2b_tap.eq(f2_tap),
                         f2b_q.eq(f2_q), f2b_mask.eq(f2_mask), f2b_pix.eq(f2_pix),
                         f2b_w.eq(f2_w)]
        x_sel = f2b_pix.word_select(f2b_tap, C * cfg.act_bits)
        m.d.comb += [
            f3.i.valid.eq(f2b_valid),
            f3.i.payload.last.eq(f2b_last),
            f3.i.payload.w.as_value().eq(f2b_w),
        ]
        wiring.connect(m, f3.o, mac.i)
        a = cfg.act_bits
        for n in range(C):
            lane_x = x_sel[n * a:(n + 1) * a]
            if pack_ok:
                # packed: lane n of chunk q is tap f // PACK_CIN, channel f % PACK_CIN of
                # the pixel's word 0, f = q * C + n (f past the taps is masked)
                for q in range(pack_chunks):
                    f = min(q * C + n, TAPS * PACK_CIN - 1)
                    e = f // PACK_CIN * C + f % PACK_CIN
                    lane_x = Mux(pk & (f2b_q == q), f2b_pix[e * a:(e + 1) * a], lane_x)
            m.d.comb += f3.i.payload.x[n].eq(Mux(f2b_mask[n], lane_x, 0))

        # Result intake: each array result (R channels of one row block of one pixel)
        # waits in `nxt` until the serializer takes it. Column-pooled groups keep an even
        # column's results in `pend`; the next column's result waits with its partner
        # (`nxt_b`, `nxt_pair`) and the channel-wise max is taken as it moves on to the
        # serializer (an odd last column is dropped, as the pool would).
        acc_row = data.ArrayLayout(signed(cfg.acc_bits), R)
        nxt = Signal(acc_row)
        nxt_b = Signal(acc_row)
        nxt_pair = Signal()
        nxt_valid = Signal()
        pend = [Signal(acc_row, name=f"pend{j}") for j in range(HPOOL_BLOCKS)]
        res_rb = Signal(range(g_max // R + 1))     # row block and column of the result
        res_r0 = Signal(range(g_max + R))
        res_x = Signal(range(cfg.max_width))
        res_y = Signal(range(cfg.max_width))
        res_last = Signal()                        # the pass's last result is taken
        even = ~res_x[0]
        m.d.comb += mac.o.ready.eq(~nxt_valid | (hpool & even))   # even columns: to `pend`
        take_r = mac.o.valid & mac.o.ready
        res_rb_last = _end_flag(m, take_r, res_r0, R, self.cout, name="res_rb_last")
        partner = pend[0]                          # pend[res_rb]
        for j in range(1, HPOOL_BLOCKS):
            partner = Mux(res_rb == j, pend[j], partner)
        with m.If(take_r):
            with m.If(~hpool):
                m.d.sync += [nxt.eq(mac.o.payload), nxt_pair.eq(0), nxt_valid.eq(1)]
            with m.Elif(~even):
                m.d.sync += [nxt.eq(mac.o.payload), nxt_b.eq(partner), nxt_pair.eq(1),
                             nxt_valid.eq(1)]
            with m.Elif(res_x != width_m1):
                for j in range(HPOOL_BLOCKS):
                    with m.If(res_rb == j):
                        m.d.sync += pend[j].eq(mac.o.payload)
            with m.If(~res_rb_last):
                m.d.sync += [res_rb.eq(res_rb + 1), res_r0.eq(res_r0 + R)]
            with m.Else():
                m.d.sync += [res_rb.eq(0), res_r0.eq(0), res_x.eq(res_x + 1)]
                with m.If(res_x == width_m1):
                    m.d.sync += [res_x.eq(0), res_y.eq(res_y + 1)]
                    with m.If(res_y == height_m1):
                        m.d.sync += res_y.eq(0)
                        m.d.comb += res_last.eq(1)

        # Serializer: the held result goes to the requantizer one channel per cycle,
        # channels past cout dropped (R cycles per result: the next one is taken from
        # `nxt` as the last channel leaves); stage S1 reads the channel's bias and shift.
        hold = Signal(acc_row)
        hold_valid = Signal()
        sj = Signal(range(R))
        sch = Signal(range(g_max + 1))
        s1_valid = Signal()
        s1_acc = Signal(signed(cfg.acc_bits))
        adv_s = ~s1_valid | rq.i.ready
        fire_s = adv_s & hold_valid
        s_last = (sj == R - 1) | (sch == cout_m1)
        m.d.comb += [
            b_rd.addr.eq(sch), b_rd.en.eq(adv_s),
            s_rd.addr.eq(sch), s_rd.en.eq(adv_s),
        ]
        with m.If(adv_s):
            m.d.sync += [s1_valid.eq(fire_s),
                         s1_acc.eq(hold.as_value().word_select(sj, cfg.acc_bits))]
        with m.If(fire_s):
            m.d.sync += [sj.eq(sj + 1), sch.eq(sch + 1)]
            with m.If(s_last):
                m.d.sync += [sj.eq(0), hold_valid.eq(0)]
            with m.If(sch == cout_m1):
                m.d.sync += sch.eq(0)
        with m.If(nxt_valid & (~hold_valid | (fire_s & s_last))):
            m.d.sync += [hold_valid.eq(1), nxt_valid.eq(0)]
            for n in range(R):
                m.d.sync += hold[n].eq(Mux(nxt_pair & (nxt_b[n] > nxt[n]), nxt_b[n], nxt[n]))
        m.d.comb += [
            rq.i.valid.eq(s1_valid),
            rq.i.payload.acc.eq(s1_acc),
            rq.i.payload.bias.eq(b_rd.data),
            rq.i.payload.shift.eq(s_rd.data),
            rq.i.payload.leaky.eq(self.leaky),
            rq.i.payload.head.eq(self.head),
        ]

        # Output: the requantizer (through a register stage) directly, or through the max
        # pool, into the output register stage. The two `StreamRegister`s end the `ready`
        # chains: the receiver's backpressure reaches neither the max pool nor the
        # requantizer and serializer within one cycle.
        m.submodules.rq_reg = rq_reg = StreamRegister(rq.o.payload.shape())
        m.submodules.o_reg = o_reg = StreamRegister(self.o.payload.shape())
        wiring.connect(m, rq.o, rq_reg.i)
        wiring.connect(m, o_reg.o, wiring.flipped(self.o))
        pooled = self.pool != POOL_NONE
        m.d.comb += [
            mp.i.valid.eq(rq_reg.o.valid & pooled),
            mp.i.payload.eq(rq_reg.o.payload[:cfg.act_bits]),
            rq_reg.o.ready.eq(Mux(pooled, mp.i.ready, o_reg.i.ready)),
            mp.o.ready.eq(o_reg.i.ready & pooled),
            o_reg.i.valid.eq(Mux(pooled, mp.o.valid, rq_reg.o.valid)),
            o_reg.i.payload.eq(Mux(pooled, mp.o.payload, rq_reg.o.payload)),
        ]

        # Status: the pass ends when the array's last result has been taken (a
        # column-pooled group drops an odd last column before the requantizer), every
        # conv result has left the requantizer's register stage (the max pool drops an
        # odd last row / column) and every output has been taken: counted into the output
        # register stage (so the receiver's `ready` reaches no counter), then that stage
        # empty. `cycles` counts from the parameters complete to the end (input streaming
        # and compute).
        conv_last = _map_counter(m, start, rq_reg.o.valid & rq_reg.o.ready & self.busy, cout_m1,
                                 conv_w_m1, height_m1, name="conv")
        out_last = _map_counter(m, start, o_reg.i.valid & o_reg.i.ready & self.busy, cout_m1,
                                out_w_m1, out_h_m1, name="out")
        conv_end = Signal()
        out_end = Signal()
        res_end = Signal()
        with m.If(start):
            m.d.sync += [self.busy.eq(1), self.done.eq(0), self.cycles.eq(0),
                         conv_end.eq(0), out_end.eq(0), res_end.eq(0), res_rb.eq(0),
                         res_r0.eq(0), res_x.eq(0), res_y.eq(0)]
        with m.Elif(self.busy):
            with m.If(self.loaded):
                m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(conv_last):
                m.d.sync += conv_end.eq(1)
            with m.If(out_last):
                m.d.sync += out_end.eq(1)
            with m.If(res_last):
                m.d.sync += res_end.eq(1)
            with m.If((res_end | res_last) & (conv_end | conv_last)
                      & ((out_end & ~self.o.valid) | out_none)):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m
