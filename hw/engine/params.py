"""The layer engine's parameter loader and store (`ParamLoader`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.engine.layouts import (
    chunks_max,
    group_max,
    pack_chunks,
    setup_layout,
    walk_max,
    weight_depth,
    weight_word,
)
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import TAPS

__all__ = ["ParamLoader", "bias_read_signature", "shift_read_signature",
           "weight_read_signature"]


def weight_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the weight memory (one `weight_word` per address)."""
    return memory.ReadPort.Signature(addr_width=ceil_log2(weight_depth(cfg)),
                                     shape=weight_word(cfg))


def bias_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the bias memory (int32 per output channel of the group)."""
    return memory.ReadPort.Signature(addr_width=ceil_log2(group_max(cfg)),
                                     shape=signed(cfg.acc_bits))


def shift_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the shift memory (`shift_bits` per output channel of the group)."""
    return memory.ReadPort.Signature(addr_width=ceil_log2(group_max(cfg)),
                                     shape=unsigned(cfg.shift_bits))


class _Load(enum.Enum, shape=2):
    """Which part of the group's byte stream comes next."""
    WEIGHTS = 0
    BIASES = 1
    SHIFTS = 2
    LOADED = 3


class ParamLoader(wiring.Component):
    """The group's parameter bytes in, the weight, bias and shift memories' read ports out.

    The loader owns the three memories: it is the one place that knows where a parameter
    byte goes, and the units that read them (the feeder: weights in walk order from
    address 0 up; the serializer: bias and shift at the output channel) only count
    addresses. The memories are written from `params` alone, so the loader's test reads
    back exactly what a byte stream leaves in them.

    After ``start`` (a one-cycle pulse; `setup` must hold the pass's ``walk_cin_m1``,
    ``kk_last`` and ``cout_m1`` from then on), `params` takes
    ``cout * k*k * cin + 5 * cout`` bytes (`hw.spec.engine.group_params`):

    - OHWI weights: weight ``(o, t, i)`` (tap t of the walk, channel i of the walk)
      goes to word ``((o // R) * (kk_last + 1) + t) * nq + i // C``, lane
      ``(o % R) * C + i % C``, ``nq = ceil(walk_cin / C)`` (the lanes of channels past
      ``walk_cin`` are not written). A packed group walks one tap of ``9 * PACK_CIN``
      channels, the OHWI order of its bytes.
    - ``cout`` biases, int32 little-endian, to bias words 0 .. cout - 1;
    - ``cout`` shift bytes (their low ``shift_bits``) to shift words 0 .. cout - 1.

    Then ``loaded`` is 1 until the next ``start``.
    ``overflow`` pulses for a byte that had no place: a weight past the weight memory
    (``cout`` above the group size) or a byte after the last shift; such bytes are
    dropped.

    Timing: ``params.ready`` is always 1; each byte is registered on arrival and written
    on the next edge, so ``loaded`` rises 2 cycles after the last byte is taken and
    ``overflow`` pulses 1 cycle after its byte. A byte taken in the ``start`` cycle is
    dropped. Read ports: the memories' own (data the cycle after an enabled read,
    non-transparent).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "params": In(stream.Signature(8)),
            "start": In(1),
            "setup": In(setup_layout(cfg)),
            "loaded": Out(1),
            "overflow": Out(1),
            "weights": Out(weight_read_signature(cfg)),
            "bias": Out(bias_read_signature(cfg)),
            "shift": Out(shift_read_signature(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, s = self.cfg, self.setup
        R, C = cfg.array_rows, cfg.array_cols
        nq_max, g_max, w_depth = chunks_max(cfg), group_max(cfg), weight_depth(cfg)
        m = Module()
        m.submodules.wmem = wmem = memory.Memory(shape=weight_word(cfg), depth=w_depth, init=[])
        m.submodules.bmem = bmem = memory.Memory(shape=signed(cfg.acc_bits), depth=g_max,
                                                 init=[])
        m.submodules.smem = smem = memory.Memory(shape=unsigned(cfg.shift_bits), depth=g_max,
                                                 init=[])
        w_wr, b_wr, s_wr = wmem.write_port(granularity=1), bmem.write_port(), smem.write_port()
        wiring.connect(m, wiring.flipped(self.weights), wmem.read_port())
        wiring.connect(m, wiring.flipped(self.bias), bmem.read_port())
        wiring.connect(m, wiring.flipped(self.shift), smem.read_port())

        # The bytes are registered on arrival (`params.ready` is always 1, so a plain
        # register is enough): no path from the sender's logic into the memories.
        byte = Signal(8)
        take = Signal()
        phase = Signal(_Load)
        m.d.sync += [byte.eq(self.params.payload), take.eq(self.params.valid & ~self.start)]
        m.d.comb += [self.params.ready.eq(1), self.loaded.eq(phase == _Load.LOADED)]

        # Weight addresses: `tbase` is the first word of the current (row block, tap),
        # `rbase` that of the current row block; `lw` the word and `li` the lane within
        # the tap; `lo` the output channel (`lo_r` = lo % R).
        li_all = Signal(range(walk_max(cfg) + 1))
        li = Signal(range(C))
        lw = Signal(range(max(nq_max, pack_chunks(cfg))))
        lt = Signal(range(TAPS))
        lo = Signal(range(g_max + 1))
        lo_r = Signal(range(R))
        addr_w = (g_max // R + 1) * TAPS * nq_max + nq_max
        tbase = Signal(range(addr_w))
        rbase = Signal(range(addr_w))
        waddr = tbase + lw
        onehot = Signal(R * C)
        # Biases: `bb` bytes of the current one shifted into `bsr`; `bidx` its channel.
        bb = Signal(2)
        bidx = Signal(range(g_max + 1))
        bsr = Signal(24)
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

        # The walk over the stream.
        with m.If(self.start):
            m.d.sync += [phase.eq(_Load.WEIGHTS), li_all.eq(0), li.eq(0), lw.eq(0), lt.eq(0),
                         lo.eq(0), lo_r.eq(0), tbase.eq(0), rbase.eq(0), bb.eq(0), bidx.eq(0)]
        with m.Elif(take):
            with m.Switch(phase):
                with m.Case(_Load.WEIGHTS):
                    with m.If(waddr >= w_depth):
                        m.d.comb += self.overflow.eq(1)
                    m.d.sync += [li_all.eq(li_all + 1), li.eq(li + 1)]
                    with m.If(li == C - 1):
                        m.d.sync += [li.eq(0), lw.eq(lw + 1)]
                    with m.If(li_all == s.walk_cin_m1):
                        m.d.sync += [li_all.eq(0), li.eq(0), lw.eq(0), lt.eq(lt + 1),
                                     tbase.eq(waddr + 1)]
                        with m.If(lt == s.kk_last):
                            m.d.sync += [lt.eq(0), lo.eq(lo + 1), lo_r.eq(lo_r + 1),
                                         tbase.eq(rbase)]
                            with m.If(lo_r == R - 1):
                                m.d.sync += [lo_r.eq(0), tbase.eq(waddr + 1),
                                             rbase.eq(waddr + 1)]
                            with m.If(lo == s.cout_m1):
                                m.d.sync += phase.eq(_Load.BIASES)
                with m.Case(_Load.BIASES):
                    m.d.sync += [bb.eq(bb + 1), bsr.eq(Cat(bsr[8:], byte))]
                    with m.If(bb == 3):
                        m.d.sync += bidx.eq(bidx + 1)
                        with m.If(bidx == s.cout_m1):
                            m.d.sync += [bidx.eq(0), phase.eq(_Load.SHIFTS)]
                with m.Case(_Load.SHIFTS):
                    m.d.sync += bidx.eq(bidx + 1)
                    with m.If(bidx == s.cout_m1):
                        m.d.sync += [bidx.eq(0), phase.eq(_Load.LOADED)]
                with m.Case(_Load.LOADED):
                    m.d.comb += self.overflow.eq(1)
        return m
