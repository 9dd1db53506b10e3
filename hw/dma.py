"""Memory readers and writers: byte streams to and from ranges of the device memory.

`RangeReader` turns byte ranges into a byte stream, `RangeWriter` a byte stream into
ranges; both are masters of a memory port (`hw.memport.mem_port`) and handle any byte
alignment (partial words: byte enables on writes, unused bytes dropped on reads).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.memport import mem_addr_bits, mem_port
from hw.spec.config import HwConfig

__all__ = ["RangeReader", "RangeWriter", "beat_layout", "byte_layout", "range_layout",
           "read_range_layout"]

#: A range of device memory: first byte address and length in bytes (at least 1).
range_layout = data.StructLayout({"addr": 32, "len": 32})
#: A range to read; `wide`: in beats of `RangeReader.lanes` bytes.
read_range_layout = data.StructLayout({"addr": 32, "len": 32, "wide": 1})


def beat_layout(lanes: int = 1) -> data.StructLayout:
    """A beat of a range read: `lanes` bytes (first byte lowest), `last` on the range's
    last beat."""
    return data.StructLayout({"data": 8 * lanes, "last": 1})


#: A byte of a range, `last` on the range's last byte.
byte_layout = beat_layout(1)


class RangeReader(wiring.Component):
    """Reads ranges: each range taken on ``ranges`` gives its bytes on ``o``, in address
    order, ``last`` on its range's last beat; ranges follow each other without a gap.

    A beat is one byte (in the low 8 bits of ``o.payload.data``), or with ``wide`` set in
    the range, ``lanes`` bytes (byte n in bits 8n..8n+7): a wide range's address and
    length must be multiples of ``lanes`` (their low bits are ignored).

    Reads run up to ``depth`` words ahead of ``o`` (one read command per word, issued only
    while a word of room is reserved, so ``mem.rdata`` is always taken at once). Throughput
    one beat per cycle; latency from a range to its first beat: the memory's read latency
    plus 3 cycles. Backpressure on ``o`` stops the reads once the room is used. ``busy``:
    a range is being read or its bytes have not all left.
    """

    def __init__(self, cfg: HwConfig, depth: int = 16, lanes: int = 1) -> None:
        if lanes < 1 or lanes & (lanes - 1) or cfg.mem_word_bytes % lanes:
            raise ValueError(f"a beat of {lanes} bytes must be a power of two dividing the "
                             f"memory word ({cfg.mem_word_bytes} bytes)")
        self.cfg = cfg
        self.depth = depth
        self.lanes = lanes
        super().__init__({
            "ranges": In(stream.Signature(read_range_layout)),
            "o": Out(stream.Signature(beat_layout(lanes))),
            "mem": Out(mem_port(cfg)),
            "busy": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, depth, lanes = self.cfg, self.depth, self.lanes
        wb = cfg.mem_word_bytes
        s = wb.bit_length() - 1
        info = data.StructLayout({"lo": range(wb), "hi": range(wb), "last": 1, "wide": 1})
        m = Module()
        m.submodules.words = words = SyncFIFO(width=cfg.mem_data_bits, depth=depth)
        m.submodules.infos = infos = SyncFIFO(width=info.size, depth=depth)

        # Range to word reads: the first and last word's byte bounds go with each read.
        act = Signal()
        wide = Signal()
        waddr = Signal(mem_addr_bits(cfg))
        wleft = Signal(33 - s)
        lo = Signal(range(wb))
        hi = Signal(range(wb))
        first = Signal()
        r = self.ranges.payload
        end = Signal(33)
        m.d.comb += [end.eq(r.addr + r.len - 1), self.ranges.ready.eq(~act)]
        with m.If(self.ranges.valid & ~act):
            m.d.sync += [act.eq(1), waddr.eq(r.addr >> s), first.eq(1),
                         wleft.eq((end >> s) - (r.addr >> s) + 1),
                         lo.eq(r.addr[:s]), hi.eq(end[:s]), wide.eq(r.wide & (lanes > 1))]

        # Reads are issued while fewer than `depth` words are reserved (issued and not
        # yet unpacked).
        used = Signal(range(depth + 1))
        issue = Signal()
        pop = Signal()
        last_word = wleft == 1
        item = Signal(info)
        m.d.comb += [
            self.mem.cmd.valid.eq(act & (used < depth)),
            self.mem.cmd.payload.we.eq(0),
            self.mem.cmd.payload.addr.eq(waddr),
            issue.eq(self.mem.cmd.valid & self.mem.cmd.ready),
            item.lo.eq(Mux(first, lo, 0)),
            item.hi.eq(Mux(last_word, hi, wb - 1)),
            item.last.eq(last_word),
            item.wide.eq(wide),
            infos.w_en.eq(issue), infos.w_data.eq(item),
            self.mem.wdata.valid.eq(0),
            self.mem.rdata.ready.eq(words.w_rdy),
            words.w_en.eq(self.mem.rdata.valid), words.w_data.eq(self.mem.rdata.payload),
        ]
        with m.If(issue):
            m.d.sync += [waddr.eq(waddr + 1), wleft.eq(wleft - 1), first.eq(0)]
            with m.If(last_word):
                m.d.sync += act.eq(0)
        m.d.sync += used.eq(used + issue - pop)

        # Unpacker: the current word's beats from byte lo to byte hi, one per cycle (a
        # wide beat: `lanes` bytes from a multiple of `lanes`); the next word is taken as
        # the last beat leaves.
        cur = Signal(cfg.mem_data_bits)
        cur_info = Signal(info)
        cur_valid = Signal()
        b = Signal(range(wb))
        step = Mux(cur_info.wide, lanes, 1)
        at_end = (b | Mux(cur_info.wide, lanes - 1, 0)) == cur_info.hi
        fire = self.o.valid & self.o.ready
        m.d.comb += [
            self.o.valid.eq(cur_valid),
            self.o.payload.data.eq(Mux(cur_info.wide,
                                       cur.word_select(b >> (lanes.bit_length() - 1),
                                                       8 * lanes),
                                       cur.word_select(b, 8))),
            self.o.payload.last.eq(cur_info.last & at_end),
            pop.eq((~cur_valid | (fire & at_end)) & words.r_rdy & infos.r_rdy),
            words.r_en.eq(pop), infos.r_en.eq(pop),
        ]
        with m.If(pop):
            nxt = data.View(info, infos.r_data)
            m.d.sync += [cur.eq(words.r_data), cur_info.eq(infos.r_data),
                         b.eq(Mux(nxt.wide, nxt.lo & ~(lanes - 1), nxt.lo)), cur_valid.eq(1)]
        with m.Elif(fire):
            m.d.sync += b.eq(b + step)
            with m.If(at_end):
                m.d.sync += cur_valid.eq(0)
        m.d.comb += self.busy.eq(act | (used != 0) | cur_valid)
        return m


class RangeWriter(wiring.Component):
    """Writes ranges: each range taken on ``ranges`` takes its ``len`` bytes from ``i``
    and writes them from its address on, a word command per word touched (partial words
    with byte enables).

    Throughput one byte per cycle, ranges back to back (the next range is taken with the
    current one's last byte; up to 4 words queued for the memory). ``busy``: a range is
    being written, or a word's command or data has not been taken by the memory yet.
    """

    def __init__(self, cfg: HwConfig, depth: int = 4) -> None:
        self.cfg = cfg
        self.depth = depth
        super().__init__({
            "ranges": In(stream.Signature(range_layout)),
            "i": In(stream.Signature(8)),
            "mem": Out(mem_port(cfg)),
            "busy": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        wb = cfg.mem_word_bytes
        s = wb.bit_length() - 1
        m = Module()
        m.submodules.cmds = cmds = SyncFIFO(width=mem_addr_bits(cfg), depth=self.depth)
        m.submodules.words = words = SyncFIFO(width=cfg.mem_data_bits + wb, depth=self.depth)

        # The current range: next byte address and bytes left. The next range is taken
        # as the current one's last byte is (below, after the byte's updates).
        act = Signal()
        a = Signal(32)
        left = Signal(32)

        # Bytes into the word being assembled; a word leaves (a command and its data)
        # with its last byte or the range's.
        buf = Signal(cfg.mem_data_bits)
        en = Signal(wb)
        off = a[:s]
        room = cmds.w_rdy & words.w_rdy
        take = Signal()
        done_word = Signal()
        nbuf = Signal(cfg.mem_data_bits)
        nen = Signal(wb)
        m.d.comb += [
            self.i.ready.eq(act & room),
            take.eq(self.i.valid & self.i.ready),
            done_word.eq((off == wb - 1) | (left == 1)),
            nbuf.eq(buf), nbuf.word_select(off, 8).eq(self.i.payload),
            nen.eq(en | (1 << off)),
            cmds.w_en.eq(take & done_word), cmds.w_data.eq(a >> s),
            words.w_en.eq(take & done_word), words.w_data.eq(nbuf | (nen << cfg.mem_data_bits)),
        ]
        m.d.comb += self.ranges.ready.eq(~act | (take & (left == 1)))
        with m.If(take):
            m.d.sync += [a.eq(a + 1), left.eq(left - 1), buf.eq(nbuf),
                         en.eq(Mux(done_word, 0, nen))]
            with m.If(left == 1):
                m.d.sync += act.eq(0)
        with m.If(self.ranges.valid & self.ranges.ready):
            m.d.sync += [act.eq(1), a.eq(self.ranges.payload.addr),
                         left.eq(self.ranges.payload.len)]

        # The memory takes commands and data on their own streams, in order.
        m.d.comb += [
            self.mem.cmd.valid.eq(cmds.r_rdy),
            self.mem.cmd.payload.we.eq(1),
            self.mem.cmd.payload.addr.eq(cmds.r_data),
            cmds.r_en.eq(self.mem.cmd.ready),
            self.mem.wdata.valid.eq(words.r_rdy),
            self.mem.wdata.payload.data.eq(words.r_data[:cfg.mem_data_bits]),
            self.mem.wdata.payload.we.eq(words.r_data[cfg.mem_data_bits:]),
            words.r_en.eq(self.mem.wdata.ready),
            self.mem.rdata.ready.eq(1),
            self.busy.eq(act | cmds.r_rdy | words.r_rdy),
        ]
        return m
