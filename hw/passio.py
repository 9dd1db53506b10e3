"""A pass's memory traffic (hw/spec/memory.py): `PassReader` streams its parameter block
and its input tensor to the engine, `PassWriter` puts the engine's output into its
output tensor (at a channel offset and pitch, or upsampled 2x). `pass_layout` is the
descriptor as the gateware holds it; `decode_pass` takes it out of its memory bytes."""

from __future__ import annotations

import struct

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.dma import RangeReader, RangeWriter
from hw.linebuf import input_layout
from hw.memport import mem_port
from hw.spec.config import HwConfig
from hw.spec.engine import POOL_S2, layer_bits, max_group, out_value_bytes
from hw.spec.memory import PASS_BYTES, PASS_FIELDS

__all__ = ["READ_AHEAD_WORDS", "PassReader", "PassWriter", "decode_pass", "pass_layout"]


def _fields() -> list[tuple[str, int, int]]:
    """(name, byte offset, bytes) of every descriptor field (reserved ones left out)."""
    out, off = [], 0
    for name, fmt in PASS_FIELDS:
        size = struct.calcsize("<" + fmt)
        if not fmt.endswith("x"):
            out.append((name, off, size))
        off += size
    return out


def pass_layout(cfg: HwConfig) -> data.StructLayout:
    """A pass descriptor's fields at the widths the gateware keeps: the layer registers'
    (`engine.layer_bits`), one bit for ``upsample``, the memory format's for the rest."""
    widths = layer_bits(cfg)
    return data.StructLayout({name: widths.get(name, 1 if name == "upsample" else 8 * size)
                              for name, _, size in _fields()})


def decode_pass(cfg: HwConfig, m: Module, raw: Value) -> tuple[data.View, Signal]:
    """The descriptor in `raw` (its `PASS_BYTES` bytes, first byte lowest) as a
    `pass_layout` view, and a signal that is 1 when every field fits its width (a field
    whose value does not fit would be truncated: the sequencer refuses that pass)."""
    lay = pass_layout(cfg)
    view = Signal(lay)
    fits = Signal()
    over = []
    for name, off, size in _fields():
        bits = raw[8 * off:8 * (off + size)]
        width = Shape.cast(lay[name].shape).width
        m.d.comb += getattr(view, name).eq(bits[:width])
        if width < 8 * size:
            over.append(bits[width:].any())
    m.d.comb += fits.eq(~Value.cast(sum(o << k for k, o in enumerate(over))).any())
    assert len(raw) == 8 * PASS_BYTES
    return view, fits


#: Memory words `PassReader` reads ahead of its streams. The parameter stream takes a word
#: a cycle, so this must cover the memory's read latency and the reader's own few cycles:
#: 24 cycles in the harness's model of LiteDRAM on the Arty (tens on the board). With 16
#: the frame's parameters came at about 0.57 words a cycle (16 words per 28-cycle round
#: trip).
READ_AHEAD_WORDS = 48


class PassReader(wiring.Component):
    """The reads of one pass: ``start`` (a pulse, with the pass in ``desc``, which must
    hold until the pass ends) streams the ``param_len`` bytes at ``param_addr`` on
    ``params`` in beats of P = `HwConfig.param_beat` bytes (address and length multiples
    of P: the sequencer checks), then the input (H x W pixels of ``cin`` bytes,
    ``in_pitch`` apart from ``in_addr``; one range when ``in_pitch == cin``) on ``i``
    (`hw.linebuf.input_layout`). A dense input (``in_pitch == cin``) at an address that
    is a multiple of P >= 2 is read in beats of P bytes up to its last multiple of P
    bytes and leaves as two-value transfers (``two``), the rest one value a transfer, so
    that the engine fills row 0 of a 3x3 map at two values a cycle.

    Reads run up to ``depth`` (`READ_AHEAD_WORDS`) memory words ahead. Backpressure from
    either stream stops the reads. A range past the device memory is
    not read: ``err`` rises (until the next ``start``) and the pass stops there (the
    sequencer aborts it). ``busy`` until every byte has left."""

    def __init__(self, cfg: HwConfig, depth: int = READ_AHEAD_WORDS) -> None:
        self.cfg = cfg
        self.depth = depth
        super().__init__({
            "desc": In(pass_layout(cfg)),
            "start": In(1),
            "params": Out(stream.Signature(8 * cfg.param_beat)),
            "i": Out(stream.Signature(input_layout(cfg))),
            "busy": Out(1),
            "err": Out(1),
            "mem": Out(mem_port(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, d = self.cfg, self.desc
        P = cfg.param_beat
        m = Module()
        m.submodules.reader = rd = RangeReader(cfg, self.depth, lanes=cfg.param_beat)
        wiring.connect(m, rd.mem, wiring.flipped(self.mem))

        # Ranges: the parameter block, then the input as one range (a dense tensor) or a
        # range per pixel. Sizes are multiplied once, at `start`.
        npix = Signal(range(cfg.max_width ** 2 + 1))
        dense_len = Signal(32)
        m.d.sync += [npix.eq(d.width * d.height), dense_len.eq(npix * d.cin)]
        addr = Signal(32)
        length = Signal(32)
        left = Signal.like(npix)
        ok = Signal()
        dense = d.in_pitch == d.cin
        lb = (P - 1).bit_length()
        wide_len = Cat(Const(0, lb), dense_len[lb:])
        wide_in = Const(0) if P < 2 else (dense & (d.in_addr[:lb] == 0)
                                          & (wide_len != 0))
        in_wide = Signal()                      # the input's wide range is being read
        m.d.comb += [rd.ranges.payload.addr.eq(addr), rd.ranges.payload.len.eq(length),
                     ok.eq(addr + length <= cfg.mem_bytes)]
        with m.FSM(name="ranges") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += self.err.eq(0)
                    m.next = "SIZE"
            with m.State("SIZE"):                  # npix, then dense_len, registered
                m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.sync += [addr.eq(d.param_addr), length.eq(d.param_len)]
                m.next = "SEND_PARAMS"
            with m.State("SEND_PARAMS"):
                m.d.comb += [rd.ranges.valid.eq(ok), rd.ranges.payload.wide.eq(1)]
                with m.If(~ok):
                    m.d.sync += self.err.eq(1)
                    m.next = "IDLE"
                with m.Elif(rd.ranges.ready):
                    m.d.sync += [addr.eq(d.in_addr), length.eq(Mux(dense, dense_len, d.cin)),
                                 left.eq(Mux(dense, 1, npix)), in_wide.eq(wide_in)]
                    with m.If(wide_in):
                        m.d.sync += length.eq(wide_len)
                        m.next = "SEND_WIDE"
                    with m.Else():
                        m.next = "SEND_INPUT"
            with m.State("SEND_WIDE"):             # a dense input's first multiple of P bytes
                m.d.comb += [rd.ranges.valid.eq(ok), rd.ranges.payload.wide.eq(1)]
                with m.If(~ok):
                    m.d.sync += self.err.eq(1)
                    m.next = "IDLE"
                with m.Elif(rd.ranges.ready):
                    m.d.sync += [addr.eq(addr + wide_len), length.eq(dense_len - wide_len)]
                    m.next = "SEND_REST"
            with m.State("SEND_REST"):
                with m.If(length == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.next = "SEND_INPUT"
            with m.State("SEND_INPUT"):
                m.d.comb += rd.ranges.valid.eq(ok)
                with m.If(~ok):
                    m.d.sync += self.err.eq(1)
                    m.next = "IDLE"
                with m.Elif(rd.ranges.ready):
                    m.d.sync += [addr.eq(addr + d.in_pitch), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "IDLE"

        sending = ~fsm.ongoing("IDLE")

        # Beats: up to the parameter range's last one to `params`, the rest to `i`: a wide
        # input beat through the pair register `gb` (P / 2 two-value transfers), a byte
        # beat as one value.
        in_params = Signal()
        with m.If(self.start):
            m.d.sync += in_params.eq(1)
        with m.Elif(rd.o.valid & rd.o.ready & rd.o.payload.last & in_params):
            m.d.sync += in_params.eq(0)
        gb = Signal(8 * max(P, 2))
        gb_left = Signal(range(P // 2 + 1))
        gb_has = gb_left != 0
        byte_beat = rd.o.valid & ~in_params & ~in_wide
        m.d.comb += [
            self.params.valid.eq(rd.o.valid & in_params),
            self.params.payload.eq(rd.o.payload.data),
            self.i.valid.eq(gb_has | byte_beat),
            self.i.payload.data[0].eq(Mux(gb_has, gb[:8], rd.o.payload.data[:8])),
            self.i.payload.data[1].eq(gb[8:16]),
            self.i.payload.two.eq(gb_has),
            self.busy.eq(sending | rd.busy | gb_has),
        ]
        with m.If(in_params):
            m.d.comb += rd.o.ready.eq(self.params.ready)
        with m.Elif(in_wide):
            m.d.comb += rd.o.ready.eq(~gb_has | ((gb_left == 1) & self.i.ready))
        with m.Else():
            m.d.comb += rd.o.ready.eq(~gb_has & self.i.ready)
        with m.If(self.i.valid & self.i.ready & gb_has):
            m.d.sync += [gb.eq(gb >> 16), gb_left.eq(gb_left - 1)]
        with m.If(rd.o.valid & rd.o.ready & ~in_params & in_wide):
            m.d.sync += [gb.eq(rd.o.payload.data), gb_left.eq(P // 2)]
            with m.If(rd.o.payload.last):
                m.d.sync += in_wide.eq(0)
        with m.If(self.start):
            m.d.sync += [gb_left.eq(0), in_wide.eq(0)]
        return m


class PassWriter(wiring.Component):
    """The writes of one pass: after ``start`` (with the pass in ``desc``, held until the
    pass ends) the output values taken on ``i`` (HWC over OH x OW x cout; ``head``: values
    of `out_value_bytes` bytes little-endian, else int8) go to ``out_addr + (y * OW + x) *
    out_pitch + c * vb``, or with ``upsample`` to the four pixels (2y+i, 2x+j) of a 2*OW
    wide tensor.

    One byte per cycle (a value is taken as the previous one's last byte leaves; a pixel's
    bytes are replayed from a buffer for the three more copies of an upsampled pixel). A
    write past the device memory is not made: ``err`` rises (until the next ``start``).
    ``busy`` until every word has been taken by the memory."""

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        super().__init__({
            "desc": In(pass_layout(cfg)),
            "start": In(1),
            "i": In(stream.Signature(signed(cfg.head_bits))),
            "busy": Out(1),
            "err": Out(1),
            "mem": Out(mem_port(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, d = self.cfg, self.desc
        vb_head = out_value_bytes(cfg, True)
        m = Module()
        m.submodules.writer = wr = RangeWriter(cfg)
        wiring.connect(m, wr.mem, wiring.flipped(self.mem))
        g = max(max_group(cfg), 1)
        m.submodules.replay = replay = memory.Memory(shape=8, depth=g, init=[])
        rp_w = replay.write_port()
        rp_r = replay.read_port(domain="comb")

        # Output geometry, registered at `start`: OH x OW pixels of `nbytes` bytes; the
        # upsampled tensor's row pitch.
        s2 = d.pool == POOL_S2
        oh = Signal(range(cfg.max_width + 1))
        ow = Signal(range(cfg.max_width + 1))
        nbytes = Signal(range(g * vb_head + 1))
        row2 = Signal(32)
        m.d.sync += [oh.eq(Mux(s2, d.height >> 1, d.height)),
                     ow.eq(Mux(s2, d.width >> 1, d.width)),
                     nbytes.eq(Mux(d.head, d.cout * vb_head, d.cout)),
                     row2.eq(2 * ow * d.out_pitch)]

        # Ranges: per pixel one (or four, upsampled), each `nbytes` long.
        x = Signal.like(ow)
        y = Signal.like(oh)
        rep = Signal(2)
        pix = Signal(32)           # the pixel's first address (upsampled: of its 2x2)
        row = Signal(32)           # the row's first pixel's address
        offs = [0, d.out_pitch, row2, row2 + d.out_pitch]
        off = Signal(32)
        with m.Switch(rep):
            for k, o in enumerate(offs):
                with m.Case(k):
                    m.d.comb += off.eq(o)
        addr = Signal(32)
        ok = Signal()
        m.d.comb += [addr.eq(pix + Mux(d.upsample, off, 0)),
                     wr.ranges.payload.addr.eq(addr), wr.ranges.payload.len.eq(nbytes),
                     ok.eq(addr + nbytes <= cfg.mem_bytes)]
        step = Mux(d.upsample, 2 * d.out_pitch, d.out_pitch)
        with m.FSM(name="ranges") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += self.err.eq(0)
                    m.next = "SIZE"
            with m.State("SIZE"):                  # oh, ow, nbytes; then row2
                m.next = "FIRST"
            with m.State("FIRST"):
                m.d.sync += [x.eq(0), y.eq(0), rep.eq(0), pix.eq(d.out_addr),
                             row.eq(d.out_addr)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += wr.ranges.valid.eq(ok)
                with m.If(~ok):
                    m.d.sync += self.err.eq(1)
                    m.next = "IDLE"
                with m.Elif(wr.ranges.ready):
                    m.d.sync += rep.eq(rep + 1)
                    with m.If(~d.upsample | (rep == 3)):
                        m.d.sync += [rep.eq(0), x.eq(x + 1), pix.eq(pix + step)]
                        with m.If(x == ow - 1):
                            nxt = row + Mux(d.upsample, 2 * row2, row2 >> 1)
                            m.d.sync += [x.eq(0), y.eq(y + 1), row.eq(nxt), pix.eq(nxt)]
                            with m.If(y == oh - 1):
                                m.next = "IDLE"

        sending = ~fsm.ongoing("IDLE")

        # Bytes: each value as 1 or `vb_head` bytes; an upsampled pixel's bytes are kept
        # and sent three more times from the replay buffer.
        val = Signal(8 * vb_head)
        held = Signal()
        bidx = Signal(range(vb_head))
        c = Signal(range(g * vb_head + 1))
        copy = Signal(2)
        vb_last = Mux(d.head, vb_head - 1, 0)
        replaying = copy != 0
        fire = Signal()
        last_byte = Signal()
        m.d.comb += [
            # The next value is taken as the held one's last byte leaves.
            last_byte.eq(fire & ~replaying & (bidx == vb_last)),
            self.i.ready.eq(~held | last_byte),
            wr.i.valid.eq(Mux(replaying, 1, held)),
            wr.i.payload.eq(Mux(replaying, rp_r.data, val.word_select(bidx, 8))),
            fire.eq(wr.i.valid & wr.i.ready),
            rp_r.addr.eq(c),
            rp_w.addr.eq(c), rp_w.data.eq(val.word_select(bidx, 8)),
            rp_w.en.eq(fire & ~replaying & d.upsample),
        ]
        with m.If(fire):
            m.d.sync += c.eq(c + 1)
            with m.If(~replaying):
                m.d.sync += bidx.eq(bidx + 1)
                with m.If(bidx == vb_last):
                    m.d.sync += held.eq(0)
            with m.If(c == nbytes - 1):
                m.d.sync += c.eq(0)
                with m.If(d.upsample):
                    m.d.sync += copy.eq(copy + 1)
        with m.If(self.i.valid & self.i.ready):          # after the above: a value taken
            m.d.sync += [val.eq(self.i.payload.as_unsigned()), held.eq(1), bidx.eq(0)]
        with m.If(self.start):
            m.d.sync += [c.eq(0), copy.eq(0), held.eq(0)]
        m.d.comb += self.busy.eq(sending | held | replaying | wr.busy)
        return m
