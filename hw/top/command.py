"""The device's command decoder: one reply per request frame (`CommandDecoder`)."""

from __future__ import annotations

import struct
from collections.abc import Callable

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.link import ErrCode, OpCode, ReplyCode, frame_info_layout
from hw.sequencer import progress_layout
from hw.spec import protocol
from hw.top.reply import ReplySource, reply_request_layout

__all__ = ["ARG_BYTES", "REPLY_VALUE_BYTES", "CommandDecoder", "MemOp", "csr_access",
           "engine_state_layout"]

#: Longest reply sent from registers: IDENTIFY, STATUS, or an ERROR's two bytes.
REPLY_VALUE_BYTES = max(struct.calcsize(protocol.IDENTIFY_FORMAT),
                        struct.calcsize(protocol.STATUS_FORMAT), 2)

class MemOp(enum.Enum, shape=3):
    """The memory command being run (`hw.top.memory.MemoryCommands`)."""
    WRITE = 0
    READ = 1
    CRC = 2
    RUN = 3
    MASK = 4


#: Argument bytes at the head of each memory command's payload (the rest of MEM_WRITE's
#: is the data to write).
ARG_BYTES = {MemOp.WRITE: struct.calcsize(protocol.MEM_ADDR_FORMAT),
             MemOp.READ: struct.calcsize(protocol.MEM_RANGE_FORMAT),
             MemOp.CRC: struct.calcsize(protocol.MEM_RANGE_FORMAT),
             MemOp.RUN: struct.calcsize(protocol.PROGRAM_FORMAT),
             MemOp.MASK: struct.calcsize(protocol.MEM_MASK_FORMAT)}

#: The engine's state as STATUS reports it: the flags in `EngineFlag` bit order, then the
#: cycles of the last pass.
engine_state_layout = data.StructLayout({"busy": 1, "done": 1, "loaded": 1, "param_err": 1,
                                         "cycles": 32})


def csr_access() -> wiring.Signature:
    """One CSR_READ / CSR_WRITE access as the decoder requests it: ``go`` (one cycle) with
    ``we``, ``addr`` (a word of `protocol.CSR_WINDOW_WORDS`) and ``wdata`` held until
    ``done`` (one cycle) with ``rdata``, or ``err`` (the bus refused it)."""
    return wiring.Signature({
        "go": Out(1), "we": Out(1), "addr": Out(range(protocol.CSR_WINDOW_WORDS)),
        "wdata": Out(32), "done": In(1), "rdata": In(32), "err": In(1),
    })


class CommandDecoder(wiring.Component):
    """Received frames in (`FrameReceiver.frame`), replies out (to a `ReplySender`), and the
    request payloads (from a `PayloadReader`) routed to where the opcode says; the
    contract of each opcode is in hw/top/device.py and docs/protocol.md.

    Per frame: ``read_start`` / ``read_length`` start the payload reader as the frame is
    shown; the decoder judges the frame, and either issues one reply (``reply``; the
    sender takes it at once, since the decoder issues only while no reply is in
    progress) or first routes ``payload`` to ``config`` (LAYER_CONFIG, through a
    `LayerConfigLoader`: ``config_go``, then ``config_done`` / ``config_ok``),
    ``params`` (LOAD_PARAMS) or ``pixels`` (RUN). RUN also sends a DATA reply from the
    output FIFO whenever ``fifo_level`` reaches MAX_PAYLOAD, and ends with an OK reply
    holding at most MAX_PAYLOAD of what the FIFO holds. After the last reply's
    ``reply_done`` the frame is released (``frame.ready``, one cycle). ``payload``
    goes to ``echo`` while a reply is being sent (the sender reads it for ECHO only).

    STATUS reports the decoder's counters (cycles since reset; good and bad frames; last
    error), ``engine_state`` (`engine_state_layout`) and ``program`` (the last program's
    progress) and ``dram`` (`hw.spec.protocol.DramFlag`: the DRAM init's done, error, unleveled).
    With ``engine=False`` LAYER_CONFIG, LOAD_PARAMS and RUN answer UNSUPPORTED
    and the engine ports are unused.

    With ``memory=True`` MEM_WRITE, MEM_READ, MEM_CRC, MEM_MASK and PROGRAM_RUN go to a
    `hw.top.memory.MemoryCommands` (``mem_*``; else they answer UNSUPPORTED): after a
    length check (ERROR BAD_LENGTH) and while no program runs (else ERROR BUSY), ``mem_go``
    starts the command and the payload goes to ``mem_data``; once ``mem_checked``, a
    refused command answers ERROR ``mem_err``; MEM_WRITE and PROGRAM_RUN answer OK at
    ``mem_done``, MEM_CRC OK with ``mem_crc``, MEM_READ and MEM_MASK send their
    ``mem_read_len`` bytes from the output FIFO as DATA frames of MAX_PAYLOAD and a last OK
    with the rest.
    With ``csr=True`` (a DRAM controller behind the device) CSR_READ and CSR_WRITE go to
    ``csr`` (`csr_access`; else UNSUPPORTED): after a length check (BAD_LENGTH) and while
    no program runs (else BUSY), the payload's word address (and value) are collected, an
    address outside `protocol.CSR_WINDOW_WORDS` answers BAD_ADDRESS, else ``csr.go`` (one
    cycle) starts the access with ``csr.we`` / ``csr.addr`` / ``csr.wdata`` (held until
    the reply); at ``csr.done`` the reply is OK (CSR_READ: ``csr.rdata``) or, on
    ``csr.err``, ERROR BAD_ADDRESS.
    ``active``: a frame is waiting or being executed.
    """

    def __init__(self, identity: bytes, engine: bool = True, memory: bool = False,
                 csr: bool = False) -> None:
        self.identity = identity
        self.with_engine = engine
        self.with_memory = memory
        self.with_csr = csr
        self._mem_op = Signal(MemOp, name="mem_cmd")     # the memory command being run
        self._csr_args = Signal(64, name="csr_args")     # CSR_READ / CSR_WRITE's payload
        mem_ports = {
            "mem_go": Out(1), "mem_op": Out(MemOp), "mem_length": Out(16),
            "mem_data": Out(stream.Signature(8)), "mem_checked": In(1), "mem_ok": In(1),
            "mem_err": In(ErrCode), "mem_done": In(1), "mem_read_len": In(32),
            "mem_crc": In(32),
        } if memory else {}
        csr_ports = {"csr": Out(csr_access())} if csr else {}
        super().__init__({
            "frame": In(stream.Signature(frame_info_layout)),
            "read_start": Out(1),
            "read_length": Out(range(protocol.MAX_PAYLOAD + 1)),
            "payload": In(stream.Signature(8)),
            "reply": Out(stream.Signature(reply_request_layout(REPLY_VALUE_BYTES))),
            "reply_done": In(1),
            "echo": Out(stream.Signature(8)),
            "config": Out(stream.Signature(8)),
            "config_go": Out(1),
            "config_done": In(1),
            "config_ok": In(1),
            "params": Out(stream.Signature(8)),
            "pixels": Out(stream.Signature(8)),
            "fifo_level": In(16),
            "engine_state": In(engine_state_layout),
            "program": In(progress_layout),
            "dram": In(4),
            "active": Out(1),
            **mem_ports,
            **csr_ports,
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        frame, eng = self.frame.payload, self.engine_state
        status_len = struct.calcsize(protocol.STATUS_FORMAT)
        layer_len = struct.calcsize(protocol.LAYER_FORMAT)
        ident = Const(int.from_bytes(self.identity, "little"), 8 * len(self.identity))

        # Counters reported by STATUS; `count` counts the request's payload bytes.
        cycles, frames_ok, frames_bad = Signal(32), Signal(16), Signal(16)
        last_error = Signal(ErrCode)
        count = Signal(16)
        m.d.sync += cycles.eq(cycles + 1)
        flags = Cat(eng.busy, eng.done, eng.loaded, eng.param_err, Const(0, 4))
        prog = self.program
        prog_flags = Cat(prog.running, prog.done, Const(0, 6))
        full_frame = self.fifo_level >= protocol.MAX_PAYLOAD

        def reply(code: object, value: object, length: object,
                  source: ReplySource = ReplySource.REGS, then: str = "REPLY") -> None:
            m.d.comb += [self.reply.valid.eq(1), self.reply.payload.code.eq(code),
                         self.reply.payload.length.eq(length),
                         self.reply.payload.source.eq(source),
                         self.reply.payload.value.eq(value)]
            m.next = then

        def error(code: object) -> None:
            m.d.sync += [frames_bad.eq(frames_bad + 1), last_error.eq(code)]
            reply(ReplyCode.ERROR, Cat(code, frame.opcode), 2)

        def good() -> None:
            m.d.sync += [frames_ok.eq(frames_ok + 1), count.eq(0)]

        def route(to: stream.Interface) -> None:
            wiring.connect(m, wiring.flipped(self.payload), wiring.flipped(to))

        with m.FSM(name="cmd_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += [self.read_start.eq(self.frame.valid),
                             self.read_length.eq(frame.length)]
                with m.If(self.frame.valid):
                    with m.If(frame.error != ErrCode.NONE):
                        error(frame.error)
                    with m.Elif(frame.opcode == OpCode.IDENTIFY):
                        with m.If(frame.length != 0):
                            error(ErrCode.BAD_LENGTH)
                        with m.Else():
                            good()
                            reply(ReplyCode.OK, ident, len(self.identity))
                    with m.Elif(frame.opcode == OpCode.STATUS):
                        with m.If(frame.length != 0):
                            error(ErrCode.BAD_LENGTH)
                        with m.Else():
                            good()
                            reply(ReplyCode.OK, Cat(cycles, frames_ok, frames_bad, last_error,
                                                    flags, eng.cycles, prog_flags, prog.error,
                                                    prog.passes, prog.cycles, self.dram,
                                                    Const(0, 4)), status_len)
                    with m.Elif(frame.opcode == OpCode.ECHO):
                        good()
                        reply(ReplyCode.OK, 0, frame.length, ReplySource.PAYLOAD)
                    self._engine_ops(m, error, good, reply, layer_len)
                    self._memory_ops(m, error)
                    self._csr_ops(m, error)
                    with m.Else():
                        error(ErrCode.UNKNOWN_OPCODE)

            with m.State("REPLY"):          # a reply leaves; ECHO's is the payload
                route(self.echo)
                with m.If(self.reply_done):
                    m.next = "RELEASE"

            with m.State("CONFIG"):         # LAYER_CONFIG: counted once the shape is judged
                route(self.config)
                with m.If(self.config_done & self.config_ok):
                    good()
                    reply(ReplyCode.OK, 0, 0)
                with m.Elif(self.config_done):
                    error(ErrCode.BAD_LAYER)

            with m.State("PARAMS"):         # LOAD_PARAMS: the payload to `params`
                route(self.params)
                with m.If(self.params.valid & self.params.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count + 1 == frame.length):
                        reply(ReplyCode.OK, 0, 0)

            # RUN: the payload to `pixels`; a full frame's worth of output leaves as DATA
            # (also while `pixels` stalls: the engine may wait for its output to drain),
            # then the payload goes on; the rest (at most one frame's worth) as OK.
            with m.State("RUN_INPUT"):
                route(self.pixels)
                with m.If(self.pixels.valid & self.pixels.ready):
                    m.d.sync += count.eq(count + 1)
                with m.If(self.pixels.valid & self.pixels.ready
                          & (count + 1 == frame.length)):
                    m.next = "RUN_FLUSH"
                with m.Elif(full_frame):
                    reply(ReplyCode.DATA, 0, protocol.MAX_PAYLOAD, ReplySource.FIFO,
                          then="RUN_DATA")
            with m.State("RUN_DATA"):
                with m.If(self.reply_done):
                    m.next = "RUN_INPUT"
            with m.State("RUN_FLUSH"):
                reply(ReplyCode.OK, 0, Mux(full_frame, protocol.MAX_PAYLOAD, self.fifo_level),
                      ReplySource.FIFO)

            if self.with_memory:
                self._memory_states(m, error, good, reply, route)
            if self.with_csr:
                self._csr_states(m, error, good, reply)

            with m.State("RELEASE"):
                m.d.comb += self.frame.ready.eq(1)
                m.next = "IDLE"

        m.d.comb += self.active.eq(self.frame.valid | ~fsm.ongoing("IDLE"))
        return m

    def _engine_ops(self, m: Module, error: Callable[[object], None],
                    good: Callable[[], None], reply: Callable[..., None],
                    layer_len: int) -> None:
        """IDLE's branches for LAYER_CONFIG, LOAD_PARAMS and RUN."""
        frame, eng = self.frame.payload, self.engine_state
        if not self.with_engine:
            with m.Elif((frame.opcode == OpCode.LAYER_CONFIG)
                        | (frame.opcode == OpCode.LOAD_PARAMS) | (frame.opcode == OpCode.RUN)):
                error(ErrCode.UNSUPPORTED)
            return
        with m.Elif(frame.opcode == OpCode.LAYER_CONFIG):
            with m.If(frame.length != layer_len):
                error(ErrCode.BAD_LENGTH)
            with m.Elif(eng.busy):
                error(ErrCode.BUSY)
            with m.Else():
                m.d.comb += self.config_go.eq(1)
                m.next = "CONFIG"
        with m.Elif(frame.opcode == OpCode.LOAD_PARAMS):
            with m.If(~eng.busy | eng.loaded):
                error(ErrCode.NOT_ARMED)
            with m.Elif(frame.length == 0):
                good()
                reply(ReplyCode.OK, 0, 0)
            with m.Else():
                good()
                m.next = "PARAMS"
        with m.Elif(frame.opcode == OpCode.RUN):
            with m.If(~eng.loaded | (~eng.busy & (frame.length != 0))):
                error(ErrCode.NOT_ARMED)
            with m.Else():
                good()
                m.next = "RUN_INPUT"
                with m.If(frame.length == 0):
                    m.next = "RUN_FLUSH"

    def _memory_ops(self, m: Module, error: Callable[[object], None]) -> None:
        """IDLE's branches for MEM_WRITE, MEM_READ, MEM_CRC, MEM_MASK and PROGRAM_RUN."""
        frame = self.frame.payload
        ops = {OpCode.MEM_WRITE: MemOp.WRITE, OpCode.MEM_READ: MemOp.READ,
               OpCode.MEM_CRC: MemOp.CRC, OpCode.PROGRAM_RUN: MemOp.RUN,
               OpCode.MEM_MASK: MemOp.MASK}
        for opcode, op in ops.items():
            with m.Elif(frame.opcode == opcode):
                if not self.with_memory:
                    error(ErrCode.UNSUPPORTED)
                    continue
                n = ARG_BYTES[op]
                bad = frame.length <= n if op == MemOp.WRITE else frame.length != n
                with m.If(bad):
                    error(ErrCode.BAD_LENGTH)
                with m.Elif(self.program.running):
                    error(ErrCode.BUSY)
                with m.Else():
                    m.d.comb += [self.mem_go.eq(1), self.mem_op.eq(op),
                                 self.mem_length.eq(frame.length)]
                    m.d.sync += self._mem_op.eq(op)
                    m.next = "MEM_ARGS"

    def _csr_ops(self, m: Module, error: Callable[[object], None]) -> None:
        """IDLE's branches for CSR_READ and CSR_WRITE."""
        frame = self.frame.payload
        for opcode, fmt in ((OpCode.CSR_READ, protocol.CSR_READ_FORMAT),
                            (OpCode.CSR_WRITE, protocol.CSR_WRITE_FORMAT)):
            with m.Elif(frame.opcode == opcode):
                if not self.with_csr:
                    error(ErrCode.UNSUPPORTED)
                    continue
                with m.If(frame.length != struct.calcsize(fmt)):
                    error(ErrCode.BAD_LENGTH)
                with m.Elif(self.program.running):
                    error(ErrCode.BUSY)
                with m.Else():
                    m.d.sync += self._csr_args.eq(0)
                    m.next = "CSR_ARGS"

    def _csr_states(self, m: Module, error: Callable[[object], None],
                    good: Callable[[], None], reply: Callable[..., None]) -> None:
        """CSR_READ / CSR_WRITE: the payload's little-endian words collected, the address
        checked, then one access on ``csr``."""
        frame, args = self.frame.payload, self._csr_args
        taken, addr = Signal(4), args[:32]
        m.d.comb += [self.csr.we.eq(frame.opcode == OpCode.CSR_WRITE),
                     self.csr.addr.eq(addr), self.csr.wdata.eq(args[32:])]
        with m.State("CSR_ARGS"):
            m.d.comb += self.payload.ready.eq(1)
            with m.If(self.payload.valid):
                m.d.sync += [args.eq(Cat(args[8:], self.payload.payload)),
                             taken.eq(taken + 1)]
                with m.If(taken + 1 == frame.length):
                    m.d.sync += taken.eq(0)
                    m.next = "CSR_CHECK"
        with m.State("CSR_CHECK"):      # a read's 4 bytes went in at the top: move them down
            with m.If((frame.opcode == OpCode.CSR_READ) & (taken == 0)):
                m.d.sync += [args.eq(args[32:]), taken.eq(1)]
            with m.Elif(addr >= protocol.CSR_WINDOW_WORDS):
                m.d.sync += taken.eq(0)
                error(ErrCode.BAD_ADDRESS)
            with m.Else():
                m.d.sync += taken.eq(0)
                m.d.comb += self.csr.go.eq(1)
                m.next = "CSR_WAIT"
        with m.State("CSR_WAIT"):
            with m.If(self.csr.done & self.csr.err):
                error(ErrCode.BAD_ADDRESS)
            with m.Elif(self.csr.done):
                good()
                reply(ReplyCode.OK, self.csr.rdata,
                      Mux(frame.opcode == OpCode.CSR_READ, 4, 0))

    def _memory_states(self, m: Module, error: Callable[[object], None],
                       good: Callable[[], None], reply: Callable[..., None],
                       route: Callable[[stream.Interface], None]) -> None:
        """The states of a memory command, after MEM_ARGS (its arguments checked)."""
        left = Signal(32)                  # MEM_READ, MEM_MASK: bytes not yet in a reply
        full_frame = self.fifo_level >= protocol.MAX_PAYLOAD
        with m.State("MEM_ARGS"):
            route(self.mem_data)
            with m.If(self.mem_checked & ~self.mem_ok):
                error(self.mem_err)
            with m.Elif(self.mem_checked):
                good()
                m.d.sync += left.eq(self.mem_read_len)
                m.next = "MEM_WAIT"
                with m.If((self._mem_op == MemOp.READ) | (self._mem_op == MemOp.MASK)):
                    m.next = "MEM_READ"
        with m.State("MEM_WAIT"):          # MEM_WRITE's data to the memory; CRC; RUN
            route(self.mem_data)
            with m.If(self.mem_done):
                with m.If(self._mem_op == MemOp.CRC):
                    reply(ReplyCode.OK, self.mem_crc, 4)
                with m.Else():
                    reply(ReplyCode.OK, 0, 0)
        with m.State("MEM_READ"):          # DATA frames while more than one frame is left
            with m.If(left <= protocol.MAX_PAYLOAD):
                with m.If(self.fifo_level >= left):
                    reply(ReplyCode.OK, 0, left, ReplySource.FIFO)
            with m.Elif(full_frame):
                m.d.sync += left.eq(left - protocol.MAX_PAYLOAD)
                reply(ReplyCode.DATA, 0, protocol.MAX_PAYLOAD, ReplySource.FIFO,
                      then="MEM_READ_DATA")
        with m.State("MEM_READ_DATA"):
            with m.If(self.reply_done):
                m.next = "MEM_READ"
