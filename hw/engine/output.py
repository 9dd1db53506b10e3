"""The layer engine's output stage: requantizer, optional max pool, output register
(`OutputStage`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import StreamRegister
from hw.engine.layouts import layer_layout, pool_frame_layout
from hw.maxpool import MaxPool
from hw.requant import Requantizer, requant_in_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import POOL_NONE

__all__ = ["OutputStage"]


class OutputStage(wiring.Component):
    """Requantizer inputs in, the pass's outputs out: each input requantized
    (`Requantizer`), then, with ``layer.pool`` set, max pooled over the map `frame`
    describes (`MaxPool`: its ports ``width``, ``height``, ``channels``, ``stride2``,
    ``vertical``), else passed on as is.

    ``conv`` pulses for each requantized value taken from the requantizer's register
    stage (the pass's conv results), ``out`` for each output that enters the output
    register stage (the pass's outputs); `PassControl` counts both.

    Timing: requantizer (`REQUANT_LATENCY`), a `StreamRegister`, the max pool
    (`MAXPOOL_LATENCY`, or nothing), the output `StreamRegister`. Backpressure: the two
    `StreamRegister`s end the ready chains, so ``o.ready`` reaches neither the max pool
    nor the requantizer within a cycle, and ``i.ready`` is the requantizer's
    (``~o.valid | o.ready`` of its own output register).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(requant_in_layout(cfg))),
            "o": Out(stream.Signature(signed(cfg.head_bits))),
            "layer": In(layer_layout(cfg)),
            "frame": In(pool_frame_layout(cfg)),
            "conv": Out(1),
            "out": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        m.submodules.rq = rq = Requantizer(cfg)
        m.submodules.rq_reg = rq_reg = StreamRegister(rq.o.payload.shape())
        m.submodules.pool = mp = MaxPool(cfg)
        m.submodules.o_reg = o_reg = StreamRegister(self.o.payload.shape())
        wiring.connect(m, wiring.flipped(self.i), rq.i)
        wiring.connect(m, rq.o, rq_reg.i)
        wiring.connect(m, o_reg.o, wiring.flipped(self.o))
        for name in ("width", "height", "channels", "stride2", "vertical"):
            m.d.comb += getattr(mp, name).eq(self.frame[name])

        # The requantized value to the max pool or straight on to the output register.
        pooled = self.layer.pool != POOL_NONE
        m.d.comb += [
            mp.i.valid.eq(rq_reg.o.valid & pooled),
            mp.i.payload.eq(rq_reg.o.payload[:cfg.act_bits]),
            rq_reg.o.ready.eq(Mux(pooled, mp.i.ready, o_reg.i.ready)),
            mp.o.ready.eq(o_reg.i.ready & pooled),
            o_reg.i.valid.eq(Mux(pooled, mp.o.valid, rq_reg.o.valid)),
            o_reg.i.payload.eq(Mux(pooled, mp.o.payload, rq_reg.o.payload)),
        ]

        # Events for the pass's counters.
        m.d.comb += [self.conv.eq(rq_reg.o.valid & rq_reg.o.ready),
                     self.out.eq(o_reg.i.valid & o_reg.i.ready)]
        return m
