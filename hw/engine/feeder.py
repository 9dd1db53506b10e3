"""The layer engine's feeder: pixels and weights to MAC array vectors (`Feeder`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import StreamRegister
from hw.engine.counters import end_flag
from hw.engine.layouts import (
    chunks_max,
    group_max,
    layer_layout,
    pack_chunks,
    pixel_word,
    setup_layout,
    walk_max,
    weight_depth,
    weight_word,
)
from hw.engine.params import weight_read_signature
from hw.engine.reorder import pixel_read_signature
from hw.mac_array import mac_in_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import PACK_CIN, TAPS, packed

__all__ = ["Feeder", "feed_control_layout", "feed_data_layout"]


def feed_control_layout(cfg: HwConfig) -> data.StructLayout:
    """What a feeder stage carries beside the memories' data: whether it holds a vector
    (`valid`), the vector's `last` mark (the last of its row block), the `tap` whose C
    lanes it takes, the chunk `q` (packed lanes) and the `mask` of lanes within the
    walk's channels."""
    return data.StructLayout({
        "valid": 1, "last": 1, "tap": range(TAPS), "q": range(pack_chunks(cfg)),
        "mask": cfg.array_cols,
    })


def feed_data_layout(cfg: HwConfig) -> data.StructLayout:
    """The memories' read data as a feeder stage holds it: a pixel word and a weight word."""
    return data.StructLayout({"pix": pixel_word(cfg), "w": weight_word(cfg)})


class Feeder(wiring.Component):
    """Pixels (reorder buffer) and weights (weight memory) in, MAC array vectors out.

    For each pixel on ``pixel``, one vector per (row block, tap, chunk of C channels), in
    that order: ``ceil(cout / R) * (kk_last + 1) * ceil(walk_cin / C)`` vectors, ``w``
    the next weight word (address 0 up, the order `ParamLoader` stores them in; back to 0
    with the next pixel), ``x`` lane n the pixel's tap ``t`` (the centre tap with ``k3``
    = 0), channel ``q * C + n``, or 0 past ``walk_cin`` channels; ``last`` on the last
    vector of each row block. A packed group (``setup.pk``) has one tap of
    ``9 * PACK_CIN`` channels: lane n of chunk q is tap ``f // PACK_CIN``, channel
    ``f % PACK_CIN`` of word 0, ``f = q * C + n``. The pixel is taken (``pixel.ready``)
    with its last vector. `layer` (``k3``, ``cout``) and `setup` (``pk``, ``walk_cin``,
    ``kk_last``) hold still for the pass; between pixels ``cout`` may change.

    Timing: one vector per cycle while ``o`` takes them, over pixels without a gap.
    Latency 5 cycles from a vector's memory reads to ``o``: F0 addresses the memories,
    F1 (their read registers), F2 and F2b (plain registers, so the block RAMs' slow
    clock-to-out and the long way to the array take separate hops), then the tap select,
    packing and mask into F3, a `StreamRegister`. Backpressure: F3's skid buffer ends the
    ready chain: ``o.ready`` reaches F2b, F2, F1 and the memory read enables (a stage
    moves when the one after it is empty or moves) but nothing upstream of the feeder.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "pixel": In(stream.Signature(0)),
            "pix": In(pixel_read_signature(cfg)),
            "weights": In(weight_read_signature(cfg)),
            "layer": In(layer_layout(cfg)),
            "setup": In(setup_layout(cfg)),
            "o": Out(stream.Signature(mac_in_layout(cfg))),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, s = self.cfg, self.setup
        R, C, a = cfg.array_rows, cfg.array_cols, cfg.act_bits
        m = Module()
        m.submodules.f3 = f3 = StreamRegister(mac_in_layout(cfg))
        wiring.connect(m, f3.o, wiring.flipped(self.o))

        # Stage registers and the stall logic: a stage moves when the next one can take it.
        f1, f2, f2b = (Signal(feed_control_layout(cfg), name=n) for n in ("f1", "f2", "f2b"))
        f2d, f2bd = (Signal(feed_data_layout(cfg), name=n, reset_less=True)
                     for n in ("f2d", "f2bd"))
        adv_2b = ~f2b.valid | f3.i.ready
        adv_2 = ~f2.valid | adv_2b
        adv_f = ~f1.valid | adv_2
        fire_f = adv_f & self.pixel.valid

        # Stage F0: the walk. `fcb` = fq * C; the tap's last chunk (fcb + C >= walk_cin)
        # and the pixel's last row block (fr0 + R >= cout) are kept in registers.
        fq = Signal(range(max(chunks_max(cfg), pack_chunks(cfg))))
        fcb = Signal(range(walk_max(cfg) + C))
        ft = Signal(range(TAPS))                            # tap walk index
        fr0 = Signal(range(group_max(cfg) + R))            # first channel of the row block
        fwa = Signal(range(weight_depth(cfg) + 1))
        q_last = end_flag(m, fire_f, fcb, C, s.walk_cin, name="q_last")
        t_last = ft == s.kk_last
        rb_last = end_flag(m, fire_f & q_last & t_last, fr0, R, self.layer.cout,
                           name="rb_last")
        m.d.comb += [
            self.pixel.ready.eq(fire_f & q_last & t_last & rb_last),
            self.pix.addr.eq(Mux(s.pk, 0, fq)), self.pix.en.eq(adv_f),
            self.weights.addr.eq(fwa), self.weights.en.eq(adv_f),
        ]
        with m.If(fire_f):
            m.d.sync += [fq.eq(fq + 1), fcb.eq(fcb + C), fwa.eq(fwa + 1)]
            with m.If(q_last):
                m.d.sync += [fq.eq(0), fcb.eq(0), ft.eq(ft + 1)]
                with m.If(t_last):
                    m.d.sync += [ft.eq(0), fr0.eq(fr0 + R)]
                    with m.If(rb_last):
                        m.d.sync += [fr0.eq(0), fwa.eq(0)]

        # Stage F1: the memories' read registers, and what the vector needs from the walk.
        with m.If(adv_f):
            m.d.sync += [f1.valid.eq(fire_f), f1.last.eq(q_last & t_last),
                         f1.tap.eq(Mux(self.layer.k3, ft, TAPS // 2)), f1.q.eq(fq),
                         f1.mask.eq(Cat(*[fcb + n < s.walk_cin for n in range(C)]))]

        # Stages F2 and F2b: the read data registered as is (no logic after the RAMs).
        with m.If(adv_2):
            m.d.sync += [f2.eq(f1), f2d.pix.eq(self.pix.data), f2d.w.eq(self.weights.data)]
        with m.If(adv_2b):
            m.d.sync += [f2b.eq(f2), f2bd.eq(f2d)]

        # F2b -> F3: tap select, packed lanes and channel mask.
        m.d.comb += [
            f3.i.valid.eq(f2b.valid),
            f3.i.payload.last.eq(f2b.last),
            f3.i.payload.w.as_value().eq(f2bd.w.as_value()),
        ]
        pix = f2bd.pix.as_value()
        x_sel = pix.word_select(f2b.tap, C * a)
        for n in range(C):
            lane_x = x_sel[n * a:(n + 1) * a]
            if packed(cfg, 3, PACK_CIN):
                for q in range(pack_chunks(cfg)):
                    f = min(q * C + n, TAPS * PACK_CIN - 1)    # past the taps: masked
                    e = f // PACK_CIN * C + f % PACK_CIN
                    lane_x = Mux(s.pk & (f2b.q == q), pix[e * a:(e + 1) * a], lane_x)
            m.d.comb += f3.i.payload.x[n].eq(Mux(f2b.mask[n], lane_x, 0))
        return m

