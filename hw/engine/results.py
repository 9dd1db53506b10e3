"""The layer engine's result path from the MAC array to the requantizer: `ResultIntake`
(array results, column pairs pooled) and `Serializer` (`HwConfig.out_lanes` channels per
cycle, with their biases and shifts)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.engine.counters import end_flag
from hw.engine.layouts import group_max, lane_depth, layer_layout, pair_layout, setup_layout
from hw.engine.params import bias_read_signature, shift_read_signature
from hw.mac_array import mac_out_layout
from hw.requant import requant_in_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import HPOOL_BLOCKS

__all__ = ["ResultIntake", "Serializer", "serial_layout"]


class ResultIntake(wiring.Component):
    """MAC array results in (R channels of one row block of one pixel each, in pass
    order: pixels row-major, row blocks within a pixel), results for the serializer out.

    It counts the results over the pass (``ceil(cout / R)`` row blocks per pixel,
    ``width_m1 + 1`` columns, ``height_m1 + 1`` rows; back to the start on ``start``)
    and pulses ``last`` as it takes the pass's last one. Normally each result goes on
    as is (``pair`` = 0). In a column-pooled group (``setup.hpool``) an even column's
    results are kept (`HPOOL_BLOCKS` registers of R accumulators, one per row block)
    and the next column's go on with them as ``partner`` (``pair`` = 1); an odd last
    column's results are dropped.

    Timing: ``o`` is a register stage (``o.valid``, ``o.payload`` flip-flops); a result
    goes on the cycle after it is taken. ``i.ready`` = ``~o.valid``, or 1 for an even
    column's result in a column-pooled group: from flip-flops, independent of ``o.ready``
    (a result every other cycle at most, enough for a serializer that takes at least
    R / L >= 2 cycles a result, except with `HwConfig.out_lanes` = 2 on results of two
    channels or fewer). With ``out_lanes = 2`` also ``| o.ready`` (combinational: the
    engine then takes ``o`` into a `StreamRegister`, whose ``ready`` is a flip-flop): a
    result every cycle while ``o`` takes them.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(mac_out_layout(cfg))),
            "o": Out(stream.Signature(pair_layout(cfg))),
            "start": In(1),
            "layer": In(layer_layout(cfg)),
            "setup": In(setup_layout(cfg)),
            "last": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, s = self.cfg, self.setup
        R = cfg.array_rows
        m = Module()
        pend = [Signal(mac_out_layout(cfg), name=f"pend{j}") for j in range(HPOOL_BLOCKS)]
        res_rb = Signal(range(group_max(cfg) // R + 1))     # row block and column
        res_r0 = Signal(range(group_max(cfg) + R))
        res_x = Signal(range(cfg.max_width))
        res_y = Signal(range(cfg.max_width))
        even = ~res_x[0]
        through = self.o.ready if cfg.out_lanes > 1 else 0
        m.d.comb += self.i.ready.eq(~self.o.valid | through | (s.hpool & even))
        take = self.i.valid & self.i.ready
        rb_last = end_flag(m, take, res_r0, R, self.layer.cout, name="res_rb_last")
        partner = pend[0]                                    # pend[res_rb]
        for j in range(1, HPOOL_BLOCKS):
            partner = Mux(res_rb == j, pend[j], partner)

        # The output register: emptied when taken, filled from `i` (or `pend` kept).
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            with m.If(~s.hpool):
                m.d.sync += [self.o.payload.acc.eq(self.i.payload), self.o.payload.pair.eq(0),
                             self.o.valid.eq(1)]
            with m.Elif(~even):
                m.d.sync += [self.o.payload.acc.eq(self.i.payload),
                             self.o.payload.partner.eq(partner), self.o.payload.pair.eq(1),
                             self.o.valid.eq(1)]
            with m.Elif(res_x != s.width_m1):
                for j in range(HPOOL_BLOCKS):
                    with m.If(res_rb == j):
                        m.d.sync += pend[j].eq(self.i.payload)

        # Position of the next result in the pass.
        with m.If(take):
            with m.If(~rb_last):
                m.d.sync += [res_rb.eq(res_rb + 1), res_r0.eq(res_r0 + R)]
            with m.Else():
                m.d.sync += [res_rb.eq(0), res_r0.eq(0), res_x.eq(res_x + 1)]
                with m.If(res_x == s.width_m1):
                    m.d.sync += [res_x.eq(0), res_y.eq(res_y + 1)]
                    with m.If(res_y == s.height_m1):
                        m.d.sync += res_y.eq(0)
                        m.d.comb += self.last.eq(1)
        with m.If(self.start):
            m.d.sync += [res_rb.eq(0), res_r0.eq(0), res_x.eq(0), res_y.eq(0)]
        return m


def serial_layout(cfg: HwConfig) -> data.ArrayLayout:
    """One serializer transfer: `HwConfig.out_lanes` requantizer inputs (channels
    ``j * L .. j * L + L - 1`` of a pixel, element l channel ``j * L + l``)."""
    return data.ArrayLayout(requant_in_layout(cfg), cfg.out_lanes)


class Serializer(wiring.Component):
    """Results in (`pair_layout`), requantizer inputs out (`serial_layout`): L =
    `HwConfig.out_lanes` output channels a transfer.

    A result's channels ``r0 .. min(r0 + R, cout) - 1`` leave in order, L a cycle
    (``r0`` counts row blocks over the pixel's ``cout = cout_m1 + 1`` channels; R is a
    multiple of L, so a transfer never spans two results), each with ``acc`` = the
    channel's accumulator (the max of ``acc`` and ``partner`` for a ``pair``), its
    ``bias`` and ``shift`` read from the parameter memories at the channel, and the
    layer's ``leaky`` and ``head``. With an odd ``cout`` and L = 2 the pixel's last
    transfer carries channel ``cout`` in element 1 too: a value past the layer, which
    whoever splits the lanes drops.

    Timing: the result taken moves into a hold register (the column-pool max is taken
    on the way, from registers); the next result is taken as the last transfer leaves,
    so results of ``n`` channels follow every ``ceil(n / L)`` cycles. Stage S1 (the
    memories' read registers and the transfer's accumulators) is the output:
    ``o.valid``, ``acc`` from flip-flops, ``bias`` and ``shift`` straight from the
    block-RAM reads. Backpressure: S1 holds while ``o`` is not ready; ``i.ready``
    depends combinationally on ``o.ready``.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(pair_layout(cfg))),
            "bias": In(bias_read_signature(cfg)),
            "shift": In(shift_read_signature(cfg)),
            "layer": In(layer_layout(cfg)),
            "setup": In(setup_layout(cfg)),
            "o": Out(stream.Signature(serial_layout(cfg))),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        R, L = cfg.array_rows, cfg.out_lanes
        m = Module()
        hold = Signal(mac_out_layout(cfg))
        hold_valid = Signal()
        sj = Signal(range(R // L))                   # transfer within the result
        sch = Signal(range(lane_depth(cfg) + 1))     # transfer within the pixel
        s1_valid = Signal()
        s1_acc = Signal(data.ArrayLayout(signed(cfg.acc_bits), L))
        adv_s = ~s1_valid | self.o.ready
        fire_s = adv_s & hold_valid
        s_last = (sj == R // L - 1) | (sch == self.setup.ser_m1)

        # Stage S1: the transfer's accumulators, biases and shifts.
        m.d.comb += [
            self.bias.addr.eq(sch), self.bias.en.eq(adv_s),
            self.shift.addr.eq(sch), self.shift.en.eq(adv_s),
        ]
        with m.If(adv_s):
            m.d.sync += [s1_valid.eq(fire_s),
                         s1_acc.eq(hold.as_value().word_select(sj, L * cfg.acc_bits))]
        with m.If(fire_s):
            m.d.sync += [sj.eq(sj + 1), sch.eq(sch + 1)]
            with m.If(s_last):
                m.d.sync += [sj.eq(0), hold_valid.eq(0)]
            with m.If(sch == self.setup.ser_m1):
                m.d.sync += sch.eq(0)
        m.d.comb += self.o.valid.eq(s1_valid)
        for n in range(L):
            lane = self.o.payload[n]
            m.d.comb += [
                lane.acc.eq(s1_acc[n]), lane.bias.eq(self.bias.data[n]),
                lane.shift.eq(self.shift.data[n]),
                lane.leaky.eq(self.layer.leaky), lane.head.eq(self.layer.head),
            ]

        # The hold register takes the next result as the last transfer leaves.
        a, b = self.i.payload.acc, self.i.payload.partner
        m.d.comb += self.i.ready.eq(~hold_valid | (fire_s & s_last))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += hold_valid.eq(1)
            for n in range(R):
                m.d.sync += hold[n].eq(Mux(self.i.payload.pair & (b[n] > a[n]), b[n], a[n]))
        return m
