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
from hw.spec.engine import TAPS

__all__ = ["Feeder", "feed_control_layout", "feed_data_layout"]


def feed_control_layout(cfg: HwConfig) -> data.StructLayout:
    """What a feeder stage carries beside the memories' data: whether it holds a vector
    (`valid`), the vector's `last` mark (the last of its row block), the `slice` of C
    elements of the pixel word it takes and the `mask` of lanes within the walk."""
    return data.StructLayout({
        "valid": 1, "last": 1, "slice": range(TAPS), "mask": cfg.array_cols,
    })


def feed_data_layout(cfg: HwConfig) -> data.StructLayout:
    """The memories' read data as a feeder stage holds it: a pixel word and a weight word."""
    return data.StructLayout({"pix": pixel_word(cfg), "w": weight_word(cfg)})


class Feeder(wiring.Component):
    """Pixels (reorder buffer) and weights (weight memory) in, MAC array vectors out.

    For each pixel on ``pixel``, one vector per (row block, run of C products of the flat
    walk), in that order: ``ceil(cout / R) * ceil(walk / C)`` vectors, ``w`` the next
    weight word (address 0 up, the order `ParamLoader` stores them in; back to 0 with the
    next pixel), ``x`` lane n of vector v the walk's product ``f = v * C + n`` (element
    ``f % 9C`` of pixel word ``f // 9C``, `ReorderBuffer`), or 0 for ``f >= walk``;
    ``last`` on the last vector of each row block. The pixel is taken (``pixel.ready``)
    with its last vector. `layer` (``cout``) and `setup` (``walk``) hold still for the
    pass; between pixels ``cout`` may change.

    Timing: one vector per cycle while ``o`` takes them, over pixels without a gap.
    Latency 5 cycles from a vector's memory reads to ``o``: F0 addresses the memories,
    F1 (their read registers), F2 and F2b (plain registers, so the block RAMs' slow
    clock-to-out and the long way to the array take separate hops), then the tap select,
    and mask into F3, a `StreamRegister`. Backpressure: F3's skid buffer ends the
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

        # Stage F0: the walk. Vector v is slice `fs` = v % 9 of word `fq` = v // 9, its
        # first product `fcb` = v * C; the walk's last vector (fcb + C >= walk) and the
        # pixel's last row block (fr0 + R >= cout) are kept in registers.
        fq = Signal(range(chunks_max(cfg)))
        fs = Signal(range(TAPS))
        fcb = Signal(range(walk_max(cfg) + C))
        fr0 = Signal(range(group_max(cfg) + R))            # first channel of the row block
        fwa = Signal(range(weight_depth(cfg) + 1))
        v_last = end_flag(m, fire_f, fcb, C, s.walk, name="v_last")
        rb_last = end_flag(m, fire_f & v_last, fr0, R, self.layer.cout, name="rb_last")
        m.d.comb += [
            self.pixel.ready.eq(fire_f & v_last & rb_last),
            self.pix.addr.eq(fq), self.pix.en.eq(adv_f),
            self.weights.addr.eq(fwa), self.weights.en.eq(adv_f),
        ]
        with m.If(fire_f):
            m.d.sync += [fs.eq(fs + 1), fcb.eq(fcb + C), fwa.eq(fwa + 1)]
            with m.If(fs == TAPS - 1):
                m.d.sync += [fs.eq(0), fq.eq(fq + 1)]
            with m.If(v_last):
                m.d.sync += [fs.eq(0), fq.eq(0), fcb.eq(0), fr0.eq(fr0 + R)]
                with m.If(rb_last):
                    m.d.sync += [fr0.eq(0), fwa.eq(0)]

        # Stage F1: the memories' read registers, and what the vector needs from the walk.
        with m.If(adv_f):
            m.d.sync += [f1.valid.eq(fire_f), f1.last.eq(v_last), f1.slice.eq(fs),
                         f1.mask.eq(Cat(*[fcb + n < s.walk for n in range(C)]))]

        # Stages F2 and F2b: the read data registered as is (no logic after the RAMs).
        with m.If(adv_2):
            m.d.sync += [f2.eq(f1), f2d.pix.eq(self.pix.data), f2d.w.eq(self.weights.data)]
        with m.If(adv_2b):
            m.d.sync += [f2b.eq(f2), f2bd.eq(f2d)]

        # F2b -> F3: the slice and the lane mask.
        m.d.comb += [
            f3.i.valid.eq(f2b.valid),
            f3.i.payload.last.eq(f2b.last),
            f3.i.payload.w.as_value().eq(f2bd.w.as_value()),
        ]
        x_sel = f2bd.pix.as_value().word_select(f2b.slice, C * a)
        for n in range(C):
            m.d.comb += f3.i.payload.x[n].eq(Mux(f2b.mask[n], x_sel[n * a:(n + 1) * a], 0))
        return m
