"""The layer engine's parameter loader and store (`ParamLoader`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.engine.layouts import (
    group_max,
    lane_depth,
    setup_layout,
    walk_max,
    weight_depth,
    weight_word,
)
from hw.spec.config import DEFAULT, HwConfig

__all__ = ["ParamLoader", "bias_read_signature", "shift_read_signature",
           "weight_read_signature"]


def weight_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the weight memory (one `weight_word` per address)."""
    return memory.ReadPort.Signature(addr_width=ceil_log2(weight_depth(cfg)),
                                     shape=weight_word(cfg))


def bias_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the bias memory: word j holds the int32 biases of output channels
    ``j * L .. j * L + L - 1`` (L = `HwConfig.out_lanes`; element l channel j * L + l)."""
    return memory.ReadPort.Signature(
        addr_width=ceil_log2(lane_depth(cfg)),
        shape=data.ArrayLayout(signed(cfg.acc_bits), cfg.out_lanes))


def shift_read_signature(cfg: HwConfig) -> wiring.Signature:
    """Read port of the shift memory (`shift_bits` per output channel; words of L
    channels as the bias memory's)."""
    return memory.ReadPort.Signature(
        addr_width=ceil_log2(lane_depth(cfg)),
        shape=data.ArrayLayout(unsigned(cfg.shift_bits), cfg.out_lanes))


class _Load(enum.Enum, shape=2):
    """Which part of the group's byte stream comes next."""
    WEIGHTS = 0
    BIASES = 1
    SHIFTS = 2
    LOADED = 3


class ParamLoader(wiring.Component):
    """The group's parameter block in, the weight, bias and shift memories' read ports out.

    The loader owns the three memories: it is the one place that knows where a parameter
    byte goes, and the units that read them (the feeder: weights in walk order from
    address 0 up; the serializer: bias and shift at the output channel) only count
    addresses. The memories are written from `params` alone, so the loader's test reads
    back exactly what a block leaves in them.

    After ``start`` (a one-cycle pulse; `setup` must hold the pass's ``walk_m1`` and
    ``cout_m1`` from then on), `params` takes the block of
    `hw.spec.engine.group_params` as beats of P = `HwConfig.param_beat` bytes (P divides
    R x C; byte n of a beat in bits 8n..8n+7, `param_bytes` / P beats):

    - weights: the weight memory's words from address 0 up, ``ceil(cout / R) * nv`` of
      them (``nv = ceil(walk / C)``), each R x C bytes in R x C / P beats, beat j to lanes
      ``j * P .. j * P + P - 1`` (written `HwConfig.weight_lane_bytes` at a time: a
      lane's earlier beats wait in a staging register for its last);
    - then ``cout`` biases, int32 little-endian, to the bias memory's channels
      0 .. cout - 1, and ``cout`` shift bytes (their low ``shift_bits``) to the shift
      memory's channels 0 .. cout - 1 (channel ch: word ``ch // L``, element ``ch % L``);
      the rest of the last beat is padding.

    Then ``loaded`` is 1 until the next ``start``.
    ``overflow`` pulses for a beat that had no place: a weight beat past the weight memory
    (``cout`` above the group size) or a beat after the last shift; such beats are
    dropped.

    Timing: weight beats at one a cycle (``params.ready`` stays 1); the bias and shift
    beats at one byte a cycle (``ready`` is 0 while a beat's bytes are written). Each beat
    is registered on arrival and written from the register, so ``loaded`` rises 2 cycles
    after the beat holding the last shift is taken (+ its bytes before that shift) and
    ``overflow`` pulses 1 cycle after its beat. A beat taken in the ``start`` cycle is
    dropped. Read ports: the memories' own (data the cycle after an enabled read,
    non-transparent).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "params": In(stream.Signature(8 * cfg.param_beat)),
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
        R, C, P = cfg.array_rows, cfg.array_cols, cfg.param_beat
        g_max, w_depth = group_max(cfg), weight_depth(cfg)
        m = Module()
        m.submodules.wmem = wmem = memory.Memory(shape=weight_word(cfg), depth=w_depth, init=[])
        L = cfg.out_lanes
        m.submodules.bmem = bmem = memory.Memory(
            shape=data.ArrayLayout(signed(cfg.acc_bits), L), depth=lane_depth(cfg), init=[])
        m.submodules.smem = smem = memory.Memory(
            shape=data.ArrayLayout(unsigned(cfg.shift_bits), L), depth=lane_depth(cfg),
            init=[])
        # The weight memory is written a lane (G bytes, g beats) at a time: one enable per
        # lane; the bias and shift memories a channel (one element of L) at a time.
        G = cfg.weight_lane_bytes
        g = G // P
        w_wr = wmem.write_port(granularity=G)
        b_wr, s_wr = bmem.write_port(granularity=1), smem.write_port(granularity=1)
        wiring.connect(m, wiring.flipped(self.weights), wmem.read_port())
        wiring.connect(m, wiring.flipped(self.bias), bmem.read_port())
        wiring.connect(m, wiring.flipped(self.shift), smem.read_port())

        # The beat register: a beat is registered on arrival (no path from the sender's
        # logic into the memories) and written from here: a weight beat at once, a bias
        # or shift beat byte by byte (`bp`). `params.ready` as the register frees.
        beat = Signal(8 * P)
        pend = Signal()
        bp = Signal(range(P))
        phase = Signal(_Load)
        byte = beat.word_select(bp, 8)
        weights = pend & (phase == _Load.WEIGHTS)
        serial = pend & (phase != _Load.WEIGHTS)
        bias_end = Signal()
        shifts_end = Signal()
        freed = Signal()
        m.d.comb += [
            freed.eq(weights | (serial & ((bp == P - 1) | shifts_end
                                          | (phase == _Load.LOADED)))),
            self.params.ready.eq(~pend | freed),
            self.loaded.eq(phase == _Load.LOADED),
        ]
        with m.If(self.params.valid & self.params.ready & ~self.start):
            m.d.sync += [beat.eq(self.params.payload), pend.eq(1), bp.eq(0)]
        with m.Elif(freed | self.start):
            m.d.sync += pend.eq(0)
        with m.Elif(serial):
            m.d.sync += bp.eq(bp + 1)

        # Weight addresses: `wa` the word, `lk` the lane within it and `lb` the beat within
        # the lane; `lcb` the first walk product of the word's vector and `lr0` the first
        # output channel of its row block (the ends of the walk and of the group).
        lb = Signal(range(g))
        lk = Signal(range(R * C // G))
        lane_end = lb == g - 1
        stage = Signal(8 * max(G - P, 1))      # the lane's beats before its last, the
        #                                        oldest lowest
        wa = Signal(range(w_depth + 1))
        lcb = Signal(range(walk_max(cfg) + C))
        lr0 = Signal(range(g_max + R))
        # Biases: `bb` bytes of the current one shifted into `bsr`; `bidx` its channel.
        bb = Signal(2)
        bidx = Signal(range(g_max + 1))
        bsr = Signal(24)
        elem = Const(1, L) << (bidx % L)                          # the channel's element
        m.d.comb += [
            w_wr.addr.eq(wa),
            w_wr.en.eq(Mux(weights & (wa < w_depth) & lane_end, Const(1, R * C // G) << lk, 0)),
            b_wr.addr.eq(bidx // L), s_wr.addr.eq(bidx // L),
            b_wr.en.eq(Mux(serial & (phase == _Load.BIASES) & (bb == 3), elem, 0)),
            s_wr.en.eq(Mux(serial & (phase == _Load.SHIFTS), elem, 0)),
            bias_end.eq((bb == 3) & (bidx == s.cout_m1)),
            shifts_end.eq((phase == _Load.SHIFTS) & (bidx == s.cout_m1)),
        ]
        for n in range(R * C):
            b, q = divmod(n % G, P)                  # beat within the lane, byte within it
            src = beat if b == g - 1 else stage
            m.d.comb += w_wr.data[n].eq(src.word_select(q if b == g - 1 else b * P + q, 8))
        for n in range(L):
            m.d.comb += [b_wr.data[n].eq(Cat(bsr, byte).as_signed()),
                         s_wr.data[n].eq(byte[:cfg.shift_bits])]

        # The walk over the block.
        with m.If(self.start):
            m.d.sync += [phase.eq(_Load.WEIGHTS), lb.eq(0), lk.eq(0), wa.eq(0), lcb.eq(0),
                         lr0.eq(0), bb.eq(0), bidx.eq(0)]
        with m.Elif(weights):
            with m.If(wa >= w_depth):
                m.d.comb += self.overflow.eq(1)
            m.d.sync += lb.eq(lb + 1)
            if g > 1:                          # a shift register: no per-beat select
                m.d.sync += stage.eq(Cat(stage[8 * P:], beat))
            with m.If(lane_end):
                m.d.sync += [lb.eq(0), lk.eq(lk + 1)]
            with m.If(lane_end & (lk == R * C // G - 1)):        # the word's last beat
                m.d.sync += [lk.eq(0), wa.eq(Mux(wa < w_depth, wa + 1, wa)), lcb.eq(lcb + C)]
                with m.If(lcb + C > s.walk_m1):                  # the walk's last vector
                    m.d.sync += [lcb.eq(0), lr0.eq(lr0 + R)]
                    with m.If(lr0 + R > s.cout_m1):              # the group's last block
                        m.d.sync += phase.eq(_Load.BIASES)
        with m.Elif(serial):
            with m.Switch(phase):
                with m.Case(_Load.BIASES):
                    m.d.sync += [bb.eq(bb + 1), bsr.eq(Cat(bsr[8:], byte))]
                    with m.If(bb == 3):
                        m.d.sync += bidx.eq(bidx + 1)
                    with m.If(bias_end):
                        m.d.sync += [bidx.eq(0), phase.eq(_Load.SHIFTS)]
                with m.Case(_Load.SHIFTS):
                    m.d.sync += bidx.eq(bidx + 1)
                    with m.If(shifts_end):
                        m.d.sync += [bidx.eq(0), phase.eq(_Load.LOADED)]
                with m.Case(_Load.LOADED):
                    m.d.comb += self.overflow.eq(1)
        return m
