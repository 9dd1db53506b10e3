"""The layer engine's output stage: requantizers, optional max pool, output register
(`OutputStage`), and the lanes split into single values (`LaneSplitter`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ShapeLike, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import StreamRegister
from hw.engine.layouts import group_max, layer_layout, pool_frame_layout
from hw.engine.results import serial_layout
from hw.fifo import BlockRamFifo
from hw.maxpool import MaxPool
from hw.requant import Requantizer
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import POOL_NONE, out_queue_depth

__all__ = ["LaneSplitter", "OutputStage"]


class LaneSplitter(wiring.Component):
    """Transfers of ``lanes`` values in, single values out: a transfer's elements leave
    in order, one a cycle, except those past a pixel's channels (``count_m1 + 1``
    channels a pixel, ``ceil(channels / lanes)`` transfers; the last one's elements past
    the count are dropped). ``clear`` (a pulse) restarts the count at a pixel's first
    channel.

    Timing: ``o`` is a register (``o.valid``, ``o.payload`` flip-flops); the transfer is
    taken as its last element enters it. Backpressure: ``i.ready`` depends
    combinationally on ``o.ready``. ``out`` pulses as a value enters the register.
    """

    def __init__(self, shape: ShapeLike, lanes: int, max_count: int) -> None:
        self.lanes = lanes
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(shape, lanes))),
            "o": Out(stream.Signature(shape)),
            "count_m1": In(range(max_count + 1)),
            "clear": In(1),
            "out": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        L = self.lanes
        m = Module()
        lane = Signal(range(L))
        ch = Signal.like(self.count_m1)
        last = (lane == L - 1) | (ch == self.count_m1)
        adv = ~self.o.valid | self.o.ready
        take = adv & self.i.valid
        m.d.comb += [self.i.ready.eq(take & last), self.out.eq(take)]
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(self.i.valid),
                         self.o.payload.eq(self.i.payload.as_value().word_select(
                             lane, self.o.payload.shape().width))]
        with m.If(take):
            m.d.sync += [lane.eq(Mux(last, 0, lane + 1)),
                         ch.eq(Mux(ch == self.count_m1, 0, ch + 1))]
        with m.If(self.clear):
            m.d.sync += [lane.eq(0), ch.eq(0)]
        return m


class OutputStage(wiring.Component):
    """Serializer transfers in (`serial_layout`: L = `HwConfig.out_lanes` requantizer
    inputs), the pass's outputs out, one value a transfer: each input requantized
    (`Requantizer`, one per lane), then, with ``layer.pool`` set, max pooled over the map
    `frame` describes (`MaxPool` on L lanes: its ports ``width``, ``height``,
    ``channels`` (transfers a pixel), ``stride2``, ``vertical``), else passed on as is.
    With L = 2 the transfers then wait in a queue of `out_queue_depth` transfers and
    leave split (`LaneSplitter`, which drops a value past ``layer.cout``).

    ``conv`` pulses for each requantized transfer taken from the requantizers' register
    stage (the pass's conv results), ``out`` for each output that enters the output
    `StreamRegister` (the pass's outputs); `PassControl` counts both. ``clear`` (the pass's
    start) restarts the splitter's channel count.

    Timing: requantizer (`REQUANT_LATENCY`), a `StreamRegister`, the max pool
    (`MAXPOOL_LATENCY`, or nothing), with L = 2 the queue (`BlockRamFifo`, 5 cycles) and
    the splitter's register, then the output `StreamRegister`. Backpressure: the
    `StreamRegister`s and the queue end the ready chains, so ``o.ready`` reaches neither
    the splitter, the max pool nor the requantizers within a cycle, and ``i.ready`` is
    the requantizers' (``~o.valid | o.ready`` of their own output registers).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(serial_layout(cfg))),
            "o": Out(stream.Signature(signed(cfg.head_bits))),
            "layer": In(layer_layout(cfg)),
            "frame": In(pool_frame_layout(cfg)),
            "clear": In(1),
            "conv": Out(1),
            "out": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, L = self.cfg, self.cfg.out_lanes
        value = data.ArrayLayout(signed(cfg.head_bits), L)
        m = Module()
        rqs = [Requantizer(cfg) for _ in range(L)]
        for n, rq in enumerate(rqs):
            m.submodules[f"rq{n}"] = rq
        m.submodules.rq_reg = rq_reg = StreamRegister(value)
        m.submodules.pool = mp = MaxPool(cfg, L)
        for name in ("width", "height", "channels", "stride2", "vertical"):
            m.d.comb += getattr(mp, name).eq(self.frame[name])

        # The lanes' requantizers in step: the same valid and ready, one register stage.
        m.d.comb += [self.i.ready.eq(rqs[0].i.ready), rq_reg.i.valid.eq(rqs[0].o.valid)]
        for n, rq in enumerate(rqs):
            m.d.comb += [rq.i.valid.eq(self.i.valid), rq.i.payload.eq(self.i.payload[n]),
                         rq.o.ready.eq(rq_reg.i.ready), rq_reg.i.payload[n].eq(rq.o.payload)]

        # Then the output register (L = 1), or the queue, the splitter and the output
        # register (L = 2).
        m.submodules.o_reg = o_reg = StreamRegister(signed(cfg.head_bits))
        wiring.connect(m, o_reg.o, wiring.flipped(self.o))
        m.d.comb += self.out.eq(o_reg.i.valid & o_reg.i.ready)
        if L == 1:
            last = o_reg.i
        else:
            m.submodules.queue = queue = BlockRamFifo(value.size, out_queue_depth(cfg))
            m.submodules.split = split = LaneSplitter(signed(cfg.head_bits), L, group_max(cfg))
            last = queue.w
            wiring.connect(m, queue.r, split.i)
            wiring.connect(m, split.o, o_reg.i)
            m.d.comb += [split.count_m1.eq(self.layer.cout - 1), split.clear.eq(self.clear)]

        # The requantized transfer to the max pool (its int8 lanes), or on as is.
        pooled = self.layer.pool != POOL_NONE
        m.d.comb += [
            mp.i.valid.eq(rq_reg.o.valid & pooled),
            rq_reg.o.ready.eq(Mux(pooled, mp.i.ready, last.ready)),
            mp.o.ready.eq(last.ready & pooled),
            last.valid.eq(Mux(pooled, mp.o.valid, rq_reg.o.valid)),
        ]
        for n in range(L):
            m.d.comb += [
                mp.i.payload[n].eq(rq_reg.o.payload[n][:cfg.act_bits]),
                Value.cast(last.payload)[n * cfg.head_bits:(n + 1) * cfg.head_bits].eq(
                    Mux(pooled, mp.o.payload[n], rq_reg.o.payload[n])),
            ]

        # Conv results for the pass's counters.
        m.d.comb += self.conv.eq(rq_reg.o.valid & rq_reg.o.ready)
        return m
