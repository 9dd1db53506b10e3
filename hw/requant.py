"""Power-of-two requantizer: accumulator + bias to int8 (or the linear head format).

The arithmetic is the contract of `hw.spec.intmath.requant`, bit for bit
(`tests.reference.ref_requant` is what the testbenches compare against).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.spec.config import DEFAULT, HwConfig
from hw.spec.intmath import LEAKY_MUL, LEAKY_SHIFT

__all__ = ["REQUANT_LATENCY", "Requantizer", "requant_in_layout"]

#: Cycles from an accepted input to its result on `o` when `o` is always ready.
REQUANT_LATENCY = 5


def requant_in_layout(cfg: HwConfig) -> data.StructLayout:
    """Payload of the requantizer's input stream (one output value per transfer)."""
    return data.StructLayout({
        "acc": signed(cfg.acc_bits),      # sum of products
        "bias": signed(cfg.acc_bits),     # per-channel bias at the accumulator scale
        "shift": unsigned(cfg.shift_bits),
        "leaky": unsigned(1),             # 1: leaky ReLU 13/128 on negative values
        "head": unsigned(1),              # 1: linear head, saturate to head_bits, not int8
    })


class Requantizer(wiring.Component):
    """Bias add, optional leaky ReLU, rounding right shift and saturation.

    Contract (per transfer on `i`, result on `o`, in order):

    - ``a = acc + bias``, computed exactly (``acc_bits + 1`` bits, no wrap).
    - negative ``a`` with ``leaky`` set: ``y = round_shift(a * 13, shift + 7)``,
      otherwise ``y = round_shift(a, shift)``; ``round_shift(x, s) = (x + 2**(s-1)) >> s``
      (round half up; ``s = 0`` is the identity).
    - ``y`` saturates to ``act_bits`` (int8) or, with ``head`` set, to ``head_bits``;
      `o.payload` is ``head_bits`` wide, int8 results sign-extended.

    This equals ``hw.spec.intmath.requant(acc + bias, shift, leaky, out_bits)`` for *every*
    representable input, not only for those the numerics allow. Widths: ``acc`` and
    ``bias`` are ``acc_bits`` signed, so ``|a| <= 2**acc_bits`` fits ``acc_bits + 1``
    signed bits; ``|13 a| < 16 * 2**acc_bits`` fits ``acc_bits + 5`` signed bits; the
    rounding increment is added after an arithmetic shift by ``s - 1`` (see `elaborate`),
    so no intermediate is wider than ``acc_bits + 5`` bits. Under the numerics contract
    (``|acc + bias| < 2**(acc_bits-1)``, `HwConfig.max_dot_terms`) the margins are unused.

    Timing: fully pipelined, one transfer per cycle, latency `REQUANT_LATENCY` (5) cycles:
    an input register (nothing upstream shares a cycle with the bias add), bias add,
    times 13, shift, rounding and saturation.
    Backpressure: the pipeline stalls as a whole while `o` is valid and not ready;
    ``i.ready`` is combinationally ``~o.valid | o.ready``.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(requant_in_layout(cfg))),
            "o": Out(stream.Signature(signed(cfg.head_bits))),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        wide = cfg.acc_bits + 5                    # holds a * 13
        shift_w = (cfg.max_shift + LEAKY_SHIFT).bit_length()

        # Global stall: every stage moves when the output register can take a value.
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Stage 0: the input as is, so that nothing upstream (the engine feeds `acc`,
        # `bias` and `shift` from block-RAM reads) shares a cycle with the bias add.
        v0 = Signal()
        in0 = Signal(requant_in_layout(cfg))
        with m.If(adv):
            m.d.sync += [v0.eq(self.i.valid), in0.eq(self.i.payload)]

        # Stage 1: bias add (exact) and the leaky decision.
        v1 = Signal()
        a1 = Signal(signed(cfg.acc_bits + 1))
        shift1 = Signal(cfg.shift_bits)
        neg1 = Signal()
        head1 = Signal()
        a_next = in0.acc + in0.bias
        with m.If(adv):
            m.d.sync += [
                v1.eq(v0),
                a1.eq(a_next),
                shift1.eq(in0.shift),
                neg1.eq(in0.leaky & a_next[-1]),
                head1.eq(in0.head),
            ]

        # Stage 2: times 13 (shift-and-add, keeps DSPs for the MAC array) on the leaky
        # negative path, and the effective shift s; we keep s - 1 and whether s is zero.
        assert LEAKY_MUL == 13
        v2 = Signal()
        x2 = Signal(signed(wide))
        sm1_2 = Signal(shift_w)
        s0_2 = Signal()
        head2 = Signal()
        times13 = (a1 << 3) + (a1 << 2) + a1
        s_eff = shift1 + Mux(neg1, LEAKY_SHIFT, 0)
        with m.If(adv):
            m.d.sync += [
                v2.eq(v1),
                x2.eq(Mux(neg1, times13, a1)),
                sm1_2.eq(s_eff - 1),
                s0_2.eq(s_eff == 0),
                head2.eq(head1),
            ]

        # Stage 3: arithmetic shift by s - 1: floor((x + 2**(s-1)) / 2**s) equals
        # floor((floor(x / 2**(s-1)) + 1) / 2), so the half-LSB add happens after the shift.
        v3 = Signal()
        t3 = Signal(signed(wide))
        s0_3 = Signal()
        head3 = Signal()
        with m.If(adv):
            m.d.sync += [
                v3.eq(v2),
                t3.eq(Mux(s0_2, x2, x2 >> sm1_2)),
                s0_3.eq(s0_2),
                head3.eq(head2),
            ]

        # Stage 4: final halving with rounding, then saturation to int8 or head_bits. The
        # range checks look at t3 itself (y = (t3 + 1) >> 1 is below lo iff
        # t3 < 2 lo - 1, above hi iff t3 > 2 hi), so they run beside the rounding add
        # rather than after it, and the add only needs the bits that reach the output.
        hb = cfg.head_bits
        lo_int = Mux(head3, -(1 << (hb - 1)), cfg.act_min)
        hi_int = Mux(head3, (1 << (hb - 1)) - 1, cfg.act_max)
        lo_thr = Mux(s0_3, lo_int, (lo_int << 1) - 1)
        hi_thr = Mux(s0_3, hi_int, hi_int << 1)
        y = Signal(signed(hb))
        m.d.comb += y.eq(Mux(s0_3, t3[:hb], (t3[:hb + 1] + 1)[1:hb + 1]))
        with m.If(adv):
            m.d.sync += [
                self.o.valid.eq(v3),
                self.o.payload.eq(Mux(t3 < lo_thr, lo_int, Mux(t3 > hi_thr, hi_int, y))),
            ]
        return m
