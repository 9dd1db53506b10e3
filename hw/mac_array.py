"""Systolic int8 MAC array: R output channels x C input channels per cycle.

Dataflow (see docs/gateware.md): output-stationary per output pixel with streamed
weights. Each cycle one vector of C activations and the matching R x C weights enter;
activation ``x[c]`` travels down column c (reused by all R output channels), partial sums
travel along each row, and a per-row accumulator sums consecutive vectors until a
vector marked ``last``. This fits the project's dataflow: the weights of one R-channel
group stay in on-chip memory and are replayed for every pixel while the input map is
streamed once per group.

With ``HwConfig.mac_pack = 2`` rows 2p and 2p + 1 (two output channels, the same
activations) share one `PackedMultiplier` per column: two int8 products in one DSP48E1
(hw/spec/dsppack.py). Activations then move down one row *pair* per cycle.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import delay, delay_taps
from hw.packed_mul import PackedMultiplier
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import mac_latency

__all__ = ["MacArray", "mac_in_layout", "mac_out_layout"]


def mac_in_layout(cfg: HwConfig) -> data.StructLayout:
    """One input vector: C activations, R x C weights (w[r][c]) and the group's end mark."""
    act = signed(cfg.act_bits)
    return data.StructLayout({
        "x": data.ArrayLayout(act, cfg.array_cols),
        "w": data.ArrayLayout(data.ArrayLayout(signed(cfg.weight_bits), cfg.array_cols),
                              cfg.array_rows),
        "last": unsigned(1),
    })


def mac_out_layout(cfg: HwConfig) -> data.ArrayLayout:
    """One result: R accumulators."""
    return data.ArrayLayout(signed(cfg.acc_bits), cfg.array_rows)


class MacArray(wiring.Component):
    """R x C systolic int8 multiply-accumulate array (R = array_rows, C = array_cols).

    Contract: a *group* is a run of input vectors whose last one has ``last = 1``. For each
    group the array emits one transfer on ``o`` with, for every row r,
    ``sum over the group's vectors of sum_c w[r][c] * x[c]`` (``tests.reference.ref_mac``).
    Products are exact for all int8 operands (|x * w| <= 2**14); the row partial
    sums are exact; the accumulator is ``acc_bits`` wide and exact while the group's
    ``n * C`` terms stay within ``HwConfig.max_dot_terms`` (it wraps beyond).

    Timing: one vector per cycle, any group length >= 1, groups back to back.
    The result of a group is valid ``latency`` cycles after its last vector is accepted
    (`hw.spec.engine.mac_latency`): ``R + C + 3`` (1 input register, 2 multiplier
    pipeline registers (operands, product), C columns, R - 1 deskew steps, 1 output
    register; the skew of column c and the deskew of row r add up to the same for every
    row). With ``mac_pack = 2``: ``R / 2 + C + 4`` (rows move in pairs: R / 2 - 1 deskew
    steps; the packed multiplier has 3 pipeline registers).
    Backpressure: the whole array stalls while ``o`` is valid and not ready;
    ``i.ready`` depends combinationally on ``o.ready``.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(mac_in_layout(cfg))),
            "o": Out(stream.Signature(mac_out_layout(cfg))),
        })

    @property
    def latency(self) -> int:
        """Cycles from a group's last vector to its result (see the class docstring)."""
        return mac_latency(self.cfg)

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        rows, cols = cfg.array_rows, cfg.array_cols
        m = Module()
        prod_max = 1 << (cfg.act_bits + cfg.weight_bits - 2)      # |(-128) * (-128)|
        psum_shape = signed((cols * prod_max).bit_length() + 1)

        # Global stall: every register of the array moves when the output can take a value.
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Input register.
        vec = Signal(mac_in_layout(cfg), reset_less=True)
        vec_valid = Signal()
        with m.If(adv):
            m.d.sync += [vec.eq(self.i.payload), vec_valid.eq(self.i.valid)]

        # Processing elements: x moves down its column (one level per cycle), the partial
        # sums move right. A level is one row, or a row pair sharing packed multipliers
        # (mac_pack = 2).
        pack = cfg.mac_pack
        if pack == 2 and getattr(platform, "family", None) == "ecp5":
            raise ValueError("mac_pack = 2 needs a 25x18 multiplier (DSP48E1); an ECP5 "
                             "MULT18X18D cannot hold two exact int8 products")
        levels = rows // pack
        # Skew: activation x[c] reaches level lv c + lv cycles late (c cycles of skew, then
        # one level per cycle down its column); weight w[r][c] of level lv = r // pack is
        # delayed lv + c cycles to meet it there. All these delay lines are one tapered
        # shift register (`delay_taps`: the same flip-flops, fewer signals to simulate).
        taps = delay_taps(m, [vec.x[c] for c in range(cols)]
                          + [vec.w[r][c] for r in range(rows) for c in range(cols)],
                          [c + levels - 1 for c in range(cols)]
                          + [r // pack + c for r in range(rows) for c in range(cols)],
                          adv, name="skew")
        x_pe = [[taps[c][c + lv] for c in range(cols)] for lv in range(levels)]

        # Each multiply has a register on its operands and one on its product (the
        # pipeline registers of an ECP5 MULT18X18D or a DSP48E1), so nothing but the
        # multiplier sits between two registers; the add follows in the next stage. A
        # packed multiplier (mac_pack = 2) has a third stage (P = M + 2**15) and yields the
        # products of both rows of its pair, each added into its own row's partial sum.
        row_out = []
        for lv in range(levels):
            psums: list[Signal | int] = [0] * pack
            for c in range(cols):
                ws = [taps[cols * (1 + lv * pack + k) + c][lv + c] for k in range(pack)]
                if pack == 1:
                    prods = [self._multiply(m, platform, ws[0], x_pe[lv][c], adv, f"{lv}_{c}")]
                else:
                    m.submodules[f"pmul_{lv}_{c}"] = pm = PackedMultiplier()
                    m.d.comb += [pm.x.eq(x_pe[lv][c]), pm.w_lo.eq(ws[0]), pm.w_hi.eq(ws[1]),
                                 pm.en.eq(adv)]
                    prods = [pm.lo, pm.hi]
                for k in range(pack):
                    reg = Signal(psum_shape, name=f"psum_{lv * pack + k}_{c}",
                                 reset_less=True)
                    with m.If(adv):
                        m.d.sync += reg.eq(psums[k] + prods[k])
                    psums[k] = reg
            # Deskew: level lv finishes lv cycles after level 0; line it up with the last.
            row_out += [delay(m, ps, levels - 1 - lv, adv, name=f"deskew{lv * pack + k}")
                        for k, ps in enumerate(psums)]

        # Group accumulation: the valid and last marks follow the vectors through the array.
        depth = self.latency - 2      # all but the input and output registers
        valid_a = delay(m, vec_valid, depth, adv, name="valid", reset_less=False)
        last_a = delay(m, vec.last, depth, adv, name="last")
        acc = [Signal(signed(cfg.acc_bits), name=f"acc{r}") for r in range(rows)]
        with m.If(adv):
            m.d.sync += self.o.valid.eq(valid_a & last_a)
            for r in range(rows):
                total = acc[r] + row_out[r]
                with m.If(valid_a):
                    m.d.sync += [
                        acc[r].eq(total),
                        self.o.payload[r].eq(total),
                    ]
                    with m.If(last_a):
                        m.d.sync += acc[r].eq(0)
        return m

    @staticmethod
    def _multiply(m: Module, platform: object, a: Value, b: Value, en: Value,
                  name: str) -> Value:
        """``a * b`` (signed) with a register on both operands and one on the product,
        all moving on `en`: the product of operands presented at one enabled edge is
        out two enabled edges later. On an ECP5 (`platform.family == "ecp5"`) this is
        one MULT18X18D with its own input and output registers, which Yosys does not
        infer; elsewhere plain registers around a multiply (on a 7-series these are the
        DSP48E1's A/B and M/P registers, if synthesis packs them)."""
        width = len(a) + len(b)
        if getattr(platform, "family", None) != "ecp5" or max(len(a), len(b)) > 18:
            a_r = delay(m, a, 1, en, name=f"aop_{name}")
            b_r = delay(m, b, 1, en, name=f"bop_{name}")
            return delay(m, a_r * b_r, 1, en, name=f"prod_{name}")
        a18 = Signal(signed(18), name=f"dsp_a_{name}")
        b18 = Signal(signed(18), name=f"dsp_b_{name}")
        p36 = Signal(signed(36), name=f"dsp_p_{name}")
        m.d.comb += [a18.eq(a), b18.eq(b)]
        ports = {f"i_A{i}": a18[i] for i in range(18)}
        ports |= {f"i_B{i}": b18[i] for i in range(18)}
        ports |= {f"i_C{i}": Const(0) for i in range(18)}
        ports |= {f"o_P{i}": p36[i] for i in range(36)}
        for k in range(4):
            ports |= {f"i_CLK{k}": ClockSignal() if k == 0 else Const(0),
                      f"i_CE{k}": en if k == 0 else Const(0), f"i_RST{k}": Const(0)}
        regs = {f"p_REG_{r}_{f}": v for r in ("INPUTA", "INPUTB", "OUTPUT")
                for f, v in (("CLK", "CLK0"), ("CE", "CE0"), ("RST", "RST0"))}
        m.submodules[f"mult_{name}"] = Instance(
            "MULT18X18D", **regs, p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
            p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
            p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT",
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            **ports)
        return p36[:width].as_signed()
