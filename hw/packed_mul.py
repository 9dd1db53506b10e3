"""Two int8 products sharing one operand in one multiplier, in the DSP48E1's shape.

The arithmetic and its exhaustive proof: `hw.spec.dsppack` (tests/test_dsppack.py).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.spec.dsppack import B_BITS, FIELD_BITS, PACK_BIAS, PACK_SHIFT, PREADD_BITS

__all__ = ["PACKED_MUL_LATENCY", "PackedMultiplier"]

#: Enabled clock edges from operands to products (AREG/DREG/BREG, MREG, PREG).
PACKED_MUL_LATENCY = 3


class PackedMultiplier(wiring.Component):
    """``hi = w_hi * x`` and ``lo = w_lo * x`` (all int8, full range) from one multiply.

    Written as the registers and arithmetic of one DSP48E1, so that Yosys's
    `synth_xilinx` maps it onto one (checked by tests/test_hw_mac_array.py):
    A = w_hi (shifted left 16 into the 25-bit pre-adder), D = w_lo, B = x, each with
    its input register (AREG = DREG = BREG = 1); pre-adder AD = A + D combinational
    (ADREG = 0); M = AD * B registered (MREG = 1); P = M + 2**15 registered (PREG = 1,
    the constant on the C port is the low field's sign-borrow correction). The outputs
    are wires of P: ``hi = P[31:16]``, ``lo = {~P[15], P[14:0]}``, both signed 16 bits.

    Timing: every register moves on ``en`` (the array's stall enable, the DSP's CE
    pins); operands present at one enabled edge give their products after
    `PACKED_MUL_LATENCY` (3) enabled edges. No reset.
    """

    def __init__(self) -> None:
        super().__init__({
            "x": In(signed(8)),
            "w_hi": In(signed(8)),
            "w_lo": In(signed(8)),
            "en": In(1),
            "hi": Out(signed(FIELD_BITS)),
            "lo": Out(signed(FIELD_BITS)),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        ad = Signal(signed(PREADD_BITS), name="ad_reg", reset_less=True)
        b = Signal(signed(B_BITS), name="b_reg", reset_less=True)
        prod = Signal(signed(PREADD_BITS + B_BITS), name="m_reg", reset_less=True)
        p = Signal(signed(48), name="p_reg", reset_less=True)
        with m.If(self.en):
            m.d.sync += [ad.eq((self.w_hi << PACK_SHIFT) + self.w_lo), b.eq(self.x),
                         prod.eq(ad * b), p.eq(prod + PACK_BIAS)]
        m.d.comb += [
            self.hi.eq(p[FIELD_BITS:2 * FIELD_BITS].as_signed()),
            self.lo.eq(Cat(p[:FIELD_BITS - 1], ~p[FIELD_BITS - 1]).as_signed()),
        ]
        return m
