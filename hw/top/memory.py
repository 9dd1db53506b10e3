"""The memory device's own commands (MEM_WRITE, MEM_READ, MEM_CRC, MEM_MASK, PROGRAM_RUN) on its
memory (`MemoryCommands`), and the memory device top (`MemDeviceTop`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.accel import Accelerator
from hw.crc import Crc32
from hw.dma import RangeReader, RangeWriter
from hw.fifo import BlockRamFifo
from hw.link import ErrCode
from hw.mask import RecordMask
from hw.memport import MemArbiter, mem_port
from hw.sequencer import program_layout
from hw.spec import protocol
from hw.spec.config import HwConfig
from hw.spec.memory import PASS_BYTES, TRACE_BYTES
from hw.top.command import ARG_BYTES, CommandDecoder, MemOp, csr_access
from hw.top.device import OUT_FIFO_DEPTH, identity, link_endpoint

if TYPE_CHECKING:
    from hw.eth import EthSettings

__all__ = ["MemDeviceTop", "MemoryCommands"]


class MemoryCommands(wiring.Component):
    """Runs one memory command, started by ``go`` (with ``op`` and the frame's payload
    ``length``, both taken with it); the payload arrives on ``data``: the command's
    arguments (`ARG_BYTES`, little-endian as `hw.spec.protocol` formats them), then
    MEM_WRITE's bytes.

    Once the arguments are in, ``checked`` rises (held until the next ``go``) with ``ok``,
    or ``err`` saying why not: BAD_LENGTH (a zero-length read or CRC), BAD_ADDRESS (a
    range past the memory; for PROGRAM_RUN its descriptors or trace records), BAD_PROGRAM
    (PROGRAM_RUN of no passes); for MEM_MASK, BAD_LENGTH for no records or a key past the
    record's end. A refused command touches nothing and takes no more
    bytes. Then: MEM_WRITE writes the data bytes; MEM_READ gives the range's bytes on
    ``rbytes`` (``read_len`` of them); MEM_MASK gives the records' mask
    (`hw.spec.protocol.record_mask`, ``read_len`` bytes) on ``rbytes``; MEM_CRC computes
    their CRC-32 into ``crc``;
    PROGRAM_RUN hands the program to ``run``. ``done`` rises (held until the next ``go``)
    when the write has reached the memory, the last byte has left, the CRC is final, or the
    program was taken.
    """

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        super().__init__({
            "go": In(1),
            "op": In(MemOp),
            "length": In(16),
            "data": In(stream.Signature(8)),
            "checked": Out(1),
            "ok": Out(1),
            "err": Out(ErrCode),
            "done": Out(1),
            "read_len": Out(32),
            "crc": Out(32),
            "rbytes": Out(stream.Signature(8)),
            "run": Out(stream.Signature(program_layout)),
            "mem": Out(mem_port(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        m.submodules.reader = rd = RangeReader(cfg)
        m.submodules.writer = wr = RangeWriter(cfg)
        m.submodules.crc = crc = Crc32()
        m.submodules.mask = mask = RecordMask()
        m.submodules.arb = arb = MemArbiter(cfg, 2, depth=8)
        wiring.connect(m, rd.mem, arb.masters[0])
        wiring.connect(m, wr.mem, arb.masters[1])
        wiring.connect(m, arb.mem, wiring.flipped(self.mem))

        # The command (taken at `go`) and its arguments: the first bytes of the payload,
        # little-endian.
        op = Signal(MemOp)
        length = Signal(16)
        with m.If(self.go):
            m.d.sync += [op.eq(self.op), length.eq(self.length)]
        args = Signal(8 * max(ARG_BYTES.values()))
        nargs = Signal(range(max(ARG_BYTES.values()) + 1))
        need = Signal.like(nargs)
        gap = Signal(range(len(args) + 1))      # bits above the arguments, once shifted in
        with m.Switch(op):
            for kind, n in ARG_BYTES.items():
                with m.Case(kind):
                    m.d.comb += [need.eq(n), gap.eq(len(args) - 8 * n)]
        addr = args[:32]
        size = args[32:64]                      # MEM_READ / MEM_CRC length
        count = args[32:48]                     # PROGRAM_RUN passes
        trace = args[48:80]
        records, record_bytes = args[32:48], args[48:64]    # MEM_MASK
        key_offset, threshold = args[64:80], args[80:96]
        # The checks' operands in two register stages after the args (states SPAN, ENDS):
        # the products, then the ends (at most one multiply or one wide add a cycle).
        span = Signal(32)                       # MEM_MASK's bytes
        run_bytes = Signal(16 + PASS_BYTES.bit_length())
        trace_bytes = Signal(16 + TRACE_BYTES.bit_length())
        m.d.sync += [span.eq(records * record_bytes), run_bytes.eq(count * PASS_BYTES),
                     trace_bytes.eq(count * TRACE_BYTES)]
        m.d.comb += [mask.records.eq(records), mask.record_bytes.eq(record_bytes),
                     mask.key_offset.eq(key_offset), mask.threshold.eq(threshold)]
        wlen = Signal(16)
        is_mask = op == MemOp.MASK
        m.d.comb += [wlen.eq(length - ARG_BYTES[MemOp.WRITE]), self.crc.eq(crc.value),
                     self.read_len.eq(Mux(is_mask, (records + 7) >> 3, size))]
        end = Signal(34)
        trace_end = Signal(34)
        key_fits = Signal()
        with m.Switch(op):
            with m.Case(MemOp.WRITE):
                m.d.sync += end.eq(addr + wlen)
            with m.Case(MemOp.READ, MemOp.CRC):
                m.d.sync += end.eq(addr + size)
            with m.Case(MemOp.RUN):
                m.d.sync += end.eq(addr + run_bytes)
            with m.Case(MemOp.MASK):
                m.d.sync += end.eq(addr + span)
        m.d.sync += [trace_end.eq(trace + trace_bytes),
                     key_fits.eq(key_offset + 2 <= record_bytes)]

        # The reader's bytes: MEM_READ's out on `rbytes`, MEM_CRC's into the CRC, MEM_MASK's
        # into the mask, whose bytes go out on `rbytes`.
        is_crc = op == MemOp.CRC
        m.d.comb += [
            self.rbytes.valid.eq(Mux(is_mask, mask.o.valid, rd.o.valid & ~is_crc)),
            self.rbytes.payload.eq(Mux(is_mask, mask.o.payload, rd.o.payload.data)),
            mask.o.ready.eq(is_mask & self.rbytes.ready),
            rd.o.ready.eq(Mux(is_crc, 1, Mux(is_mask, mask.i.ready, self.rbytes.ready))),
            crc.i.valid.eq(rd.o.valid & is_crc), crc.i.payload.eq(rd.o.payload.data),
            mask.i.valid.eq(rd.o.valid & is_mask), mask.i.payload.eq(rd.o.payload.data),
            rd.ranges.payload.addr.eq(addr),
            rd.ranges.payload.len.eq(Mux(is_mask, span, size)),
            wr.ranges.payload.addr.eq(addr), wr.ranges.payload.len.eq(wlen),
            self.run.payload.eq(Cat(addr, count, trace)),
        ]

        def check(ok: object, err: object) -> None:
            m.d.sync += [self.checked.eq(1), self.ok.eq(ok), self.err.eq(Mux(ok, ErrCode.NONE,
                                                                              err))]

        with m.FSM(name="mem_cmd"):
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [nargs.eq(0), self.checked.eq(0), self.done.eq(0)]
                    m.next = "ARGS"
            with m.State("ARGS"):              # shifted in from the top, then aligned
                m.d.comb += self.data.ready.eq(nargs != need)
                with m.If(self.data.valid & self.data.ready):
                    m.d.sync += [args.eq(Cat(args[8:], self.data.payload)), nargs.eq(nargs + 1)]
                with m.Elif(nargs == need):
                    m.d.sync += args.eq(args >> gap)
                    m.next = "SPAN"
            with m.State("SPAN"):              # the products registered from the args
                m.next = "ENDS"
            with m.State("ENDS"):              # the ends registered from the products
                m.next = "CHECK"
            with m.State("CHECK"):
                with m.Switch(op):
                    with m.Case(MemOp.WRITE):
                        check(end <= cfg.mem_bytes, ErrCode.BAD_ADDRESS)
                    with m.Case(MemOp.READ, MemOp.CRC):
                        check((size != 0) & (end <= cfg.mem_bytes),
                              Mux(size == 0, ErrCode.BAD_LENGTH, ErrCode.BAD_ADDRESS))
                    with m.Case(MemOp.RUN):
                        check((count != 0) & (end <= cfg.mem_bytes)
                              & (trace_end <= cfg.mem_bytes),
                              Mux(count == 0, ErrCode.BAD_PROGRAM, ErrCode.BAD_ADDRESS))
                    with m.Case(MemOp.MASK):
                        shape_ok = (records != 0) & key_fits
                        check(shape_ok & (end <= cfg.mem_bytes),
                              Mux(shape_ok, ErrCode.BAD_ADDRESS, ErrCode.BAD_LENGTH))
                m.next = "JUDGED"
            with m.State("JUDGED"):
                m.d.comb += [crc.clear.eq(1), mask.start.eq(self.ok & is_mask)]
                with m.If(~self.ok):
                    m.next = "IDLE"
                with m.Elif(op == MemOp.RUN):
                    m.next = "RUN"
                with m.Else():
                    m.next = "RANGE"
            with m.State("RANGE"):
                is_write = op == MemOp.WRITE
                m.d.comb += [wr.ranges.valid.eq(is_write), rd.ranges.valid.eq(~is_write)]
                with m.If(Mux(is_write, wr.ranges.ready, rd.ranges.ready)):
                    m.next = "MOVE"
            with m.State("MOVE"):              # the data to the writer; wait for the end
                wiring.connect(m, wiring.flipped(self.data), wr.i)
                with m.If(~rd.busy & ~wr.busy & ~mask.busy):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += self.run.valid.eq(1)
                with m.If(self.run.ready):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m


class MemDeviceTop(wiring.Component):
    """The device with its memory (docs/memory.md): the host link protocol over a byte
    stream (``rx`` / ``tx``, as `DeviceTop`), the accelerator running programs from the
    memory behind ``mem`` (LiteDRAM's native port), and the memory commands.

    IDENTIFY reports `Feature.MEMORY` (LAYER_CONFIG, LOAD_PARAMS and RUN answer
    UNSUPPORTED), and `Feature.DRAM` with ``dram`` (a DRAM controller behind ``mem``,
    whose init flags ``dram_flags``, `DramFlag`, STATUS reports, whose CSR layout
    ``dram_phy``, `hw.spec.dram.DramPhy`, IDENTIFY reports, and whose CSRs CSR_READ /
    CSR_WRITE reach through ``csr``, `csr_access`; without ``dram`` they answer
    UNSUPPORTED); STATUS carries the
    program's progress. While a program runs, MEM_* and
    PROGRAM_RUN answer BUSY. ``active``: a request is being executed or a program runs.
    With ``eth`` (the device also answers on Ethernet, `hw.eth.board.DualLinkDevice`)
    IDENTIFY reports `Feature.ETHERNET` with its IPv4 address and UDP port.
    """

    def __init__(self, cfg: HwConfig, timeout_cycles: int | None = None,
                 dram: bool = False, eth: EthSettings | None = None,
                 dram_phy: int = 0) -> None:
        self.cfg = cfg
        self.dram = dram
        self.dram_phy = dram_phy
        self.eth = eth
        self.timeout_cycles = timeout_cycles or protocol.default_timeout_cycles(
            cfg.uart_divisor)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "active": Out(1),
            "mem": Out(mem_port(cfg)),
            "dram_flags": In(4),
            **({"csr": Out(csr_access())} if dram else {}),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        ident = identity(cfg, engine=False, memory=True, dram=self.dram, eth=self.eth,
                         dram_phy=self.dram_phy)
        dec = CommandDecoder(ident.encode(), engine=False, memory=True, csr=self.dram)
        m.d.comb += dec.dram.eq(self.dram_flags)
        if self.dram:
            wiring.connect(m, dec.csr, wiring.flipped(self.csr))
        rep = link_endpoint(m, self, dec, self.timeout_cycles)
        m.submodules.commands = cmd = MemoryCommands(cfg)
        m.submodules.accel = acc = Accelerator(cfg)
        m.submodules.out_fifo = fifo = BlockRamFifo(8, OUT_FIFO_DEPTH)
        m.d.comb += self.active.eq(dec.active | acc.progress.running)

        # Memory commands: decoded, then run on the accelerator's host port; MEM_READ's
        # bytes through the output FIFO into the replies.
        wiring.connect(m, dec.mem_data, cmd.data)
        m.d.comb += [cmd.go.eq(dec.mem_go), cmd.op.eq(dec.mem_op), cmd.length.eq(dec.mem_length),
                     dec.mem_checked.eq(cmd.checked), dec.mem_ok.eq(cmd.ok),
                     dec.mem_err.eq(cmd.err), dec.mem_done.eq(cmd.done),
                     dec.mem_read_len.eq(cmd.read_len), dec.mem_crc.eq(cmd.crc),
                     dec.fifo_level.eq(fifo.level), dec.program.eq(acc.progress)]
        wiring.connect(m, cmd.rbytes, fifo.w)
        wiring.connect(m, fifo.r, rep.fifo)
        wiring.connect(m, cmd.run, acc.run)
        wiring.connect(m, cmd.mem, acc.host)
        wiring.connect(m, acc.mem, wiring.flipped(self.mem))
        return m
