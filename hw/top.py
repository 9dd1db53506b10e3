"""The device top: host link protocol (hw/spec/protocol.py) over a byte stream, driving the
layer engine (hw/engine.py, docs/engine.md).

`DeviceTop(cfg)` takes request bytes on `rx` and gives reply bytes on `tx`; boards put a
UART in front (hw/uart.py), the simulator harness (sim/harness_cpp/) a pipe. Every
request frame gets its reply, in order (docs/protocol.md):

- IDENTIFY (empty): OK with `Identity` (cfg.config_id, versions, MAX_PAYLOAD, features,
  array rows and cols).
- STATUS (empty): OK with `Status` (cycles since reset, good and bad frame counts, last
  error code, engine flags, engine cycles of the last pass).
- ECHO: OK with the same payload.
- LAYER_CONFIG (`LAYER_FORMAT`): sets the engine's layer registers and arms a pass
  (`start`); ERROR BUSY while a pass runs.
- LOAD_PARAMS: its payload goes to the engine's `params` stream; ERROR NOT_ARMED unless
  an armed pass still waits for parameters.
- RUN: its payload goes to the engine's input `i` (ERROR NOT_ARMED before the parameters
  are complete, or with input bytes after the pass has ended). Output values (1 byte, or
  `ceil(head_bits/8)` bytes little-endian in head mode) collect in a 2 KiB FIFO; whenever
  it holds MAX_PAYLOAD bytes they leave as a DATA frame; when the payload is consumed, the
  reply OK carries what the FIFO holds (up to MAX_PAYLOAD). A RUN with an empty payload
  collects the outputs still coming.
- anything else: ERROR with (error code, opcode byte): BAD_CRC, LENGTH_TOO_LONG, TIMEOUT
  (a frame stopped for `timeout_cycles`), BAD_LENGTH, UNKNOWN_OPCODE.

The device takes no request bytes while it works on a request (`rx.ready` low): a host
sends a request, then waits for its reply. `engine=False` builds the link alone
(LAYER_CONFIG, LOAD_PARAMS, RUN answer UNSUPPORTED; `Feature.ENGINE` clear).
"""

from __future__ import annotations

import struct

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.fifo import BlockRamFifo
from hw.link import ErrCode, FrameReceiver, FrameSender, OpCode, PayloadReader, ReplyCode
from hw.spec import protocol
from hw.spec.config import HwConfig
from hw.spec.engine import out_value_bytes

__all__ = ["GATEWARE_VERSION", "OUT_FIFO_DEPTH", "DeviceTop", "identity"]

#: Bumped with every change of the device's observable behaviour.
GATEWARE_VERSION = 2
#: Output FIFO of RUN (bytes): two frames' worth, so the engine keeps running while one
#: DATA frame leaves.
OUT_FIFO_DEPTH = 2 * protocol.MAX_PAYLOAD


def identity(cfg: HwConfig, engine: bool = True) -> protocol.Identity:
    """The IDENTIFY reply a DeviceTop built for `cfg` gives."""
    features = protocol.Feature.ENGINE if engine else protocol.Feature(0)
    return protocol.Identity(cfg.config_id, protocol.PROTOCOL_VERSION, GATEWARE_VERSION,
                             protocol.MAX_PAYLOAD, features, cfg.array_rows, cfg.array_cols)


class DeviceTop(wiring.Component):
    """Protocol endpoint over a byte stream (see the module docstring for the contract).

    `timeout_cycles` is the inter-byte timeout of a frame; the default is the protocol's
    board value (`protocol.default_timeout_cycles`), simulations pass a smaller one.
    """

    def __init__(self, cfg: HwConfig, timeout_cycles: int | None = None,
                 engine: bool = True) -> None:
        self.cfg = cfg
        self.engine = engine
        self.timeout_cycles = timeout_cycles or protocol.default_timeout_cycles(
            cfg.uart_divisor)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "active": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.receiver = rcv = FrameReceiver(protocol.MAX_PAYLOAD, self.timeout_cycles)
        m.submodules.sender = snd = FrameSender()
        m.submodules.reader = rdr = PayloadReader(protocol.MAX_PAYLOAD)
        m.d.comb += [rcv.rd_addr.eq(rdr.rd_addr), rdr.rd_data.eq(rcv.rd_data)]
        wiring.connect(m, wiring.flipped(self.rx), rcv.rx)
        wiring.connect(m, snd.tx, wiring.flipped(self.tx))
        if self.engine:
            from hw.engine import LayerEngine
            m.submodules.engine = eng = LayerEngine(self.cfg)
            # The output queue: its block RAM's reads land in registers next to it and run
            # ahead into a small output queue before the sender's byte mux.
            m.submodules.out_fifo = fifo = BlockRamFifo(8, OUT_FIFO_DEPTH)
            out_level = fifo.level
        cfg = self.cfg
        frame = rcv.frame.payload
        ident = identity(cfg, self.engine).encode()
        ident_bits = Const(int.from_bytes(ident, "little"), 8 * len(ident))
        status_len = struct.calcsize(protocol.STATUS_FORMAT)
        layer_len = struct.calcsize(protocol.LAYER_FORMAT)

        # Counters and engine state reported by STATUS.
        cycles = Signal(32)
        frames_ok = Signal(16)
        frames_bad = Signal(16)
        last_error = Signal(ErrCode)
        m.d.sync += cycles.eq(cycles + 1)
        eng_flags = Signal(8)
        eng_cycles = Signal(32)
        if self.engine:
            m.d.comb += [eng_flags.eq(Cat(eng.busy, eng.done, eng.loaded, eng.param_err)),
                         eng_cycles.eq(eng.cycles)]

        # Layer registers (LAYER_CONFIG payload, little-endian fields in LAYER_FORMAT
        # order), loaded byte by byte into `layer`.
        layer = Signal(8 * layer_len)
        fields = Signal(8 * layer_len)
        if self.engine:
            offs = 0
            for port, size in ((eng.width, 16), (eng.height, 16), (eng.cin, 16),
                               (eng.cout, 16), (eng.k3, 8), (eng.leaky, 8), (eng.head, 8),
                               (eng.pool, 8)):
                m.d.comb += port.eq(layer[offs:offs + size])
                offs += size

        # Output values -> bytes -> FIFO: a value is held in `oval` while its bytes go in.
        if self.engine:
            nbytes = Mux(eng.head, out_value_bytes(cfg, True), 1)
            oval = Signal(8 * out_value_bytes(cfg, True))
            ohas = Signal()
            oidx = Signal(range(out_value_bytes(cfg, True) + 1))
            last_byte = Signal()
            m.d.comb += [fifo.w.payload.eq(oval.word_select(oidx, 8)), fifo.w.valid.eq(ohas),
                         last_byte.eq(ohas & fifo.w.ready & (oidx + 1 == nbytes)),
                         eng.o.ready.eq(~ohas | last_byte)]
            with m.If(eng.o.valid & eng.o.ready):
                m.d.sync += [oval.eq(eng.o.payload.as_unsigned()), ohas.eq(1), oidx.eq(0)]
            with m.Elif(last_byte):
                m.d.sync += ohas.eq(0)
            with m.Elif(ohas & fifo.w.ready):
                m.d.sync += oidx.eq(oidx + 1)

        # Short replies are shifted out of `regs`, lowest byte first; ECHO replies send the
        # payload reader's bytes, RUN replies the output FIFO.
        regs = Signal(8 * max(len(ident), status_len, 2))
        reply_code = Signal(ReplyCode, init=ReplyCode.OK)
        reply_len = Signal(16)
        count = Signal(16)     # request payload byte index
        ocount = Signal(16)    # reply payload byte index (RUN)
        m.d.comb += [snd.hdr.payload.code.eq(reply_code), snd.hdr.payload.length.eq(reply_len)]
        fifo_full_frame = Signal()
        if self.engine:
            m.d.comb += fifo_full_frame.eq(out_level >= protocol.MAX_PAYLOAD)

        def reply(code: ReplyCode, value: object, length: int) -> None:
            m.d.sync += [reply_code.eq(code), regs.eq(value), reply_len.eq(length), count.eq(0)]
            m.next = "REG_HDR"

        def error(code: object) -> None:
            m.d.sync += [frames_bad.eq(frames_bad + 1), last_error.eq(code)]
            reply(ReplyCode.ERROR, Cat(code, frame.opcode), 2)

        def good() -> None:
            m.d.sync += [frames_ok.eq(frames_ok + 1), count.eq(0)]

        def send_header(state: str, then: str) -> None:
            """A state sending the reply header; an empty reply ends with it."""
            with m.State(state):
                m.d.comb += snd.hdr.valid.eq(1)
                with m.If(snd.hdr.ready):
                    m.next = then
                    with m.If(reply_len == 0):
                        m.next = "RELEASE"

        def send_fifo(state: str, then: str) -> None:
            """A state sending `reply_len` output bytes from the FIFO (`ocount` counts)."""
            with m.State(state):
                m.d.comb += [snd.data.valid.eq(fifo.r.valid),
                             snd.data.payload.eq(fifo.r.payload),
                             fifo.r.ready.eq(snd.data.ready)]
                with m.If(snd.data.ready & fifo.r.valid):
                    m.d.sync += ocount.eq(ocount + 1)
                    with m.If(ocount + 1 == reply_len):
                        m.next = then

        def engine_ops() -> None:
            if not self.engine:
                with m.Elif((frame.opcode == OpCode.LAYER_CONFIG)
                            | (frame.opcode == OpCode.LOAD_PARAMS)
                            | (frame.opcode == OpCode.RUN)):
                    error(ErrCode.UNSUPPORTED)
                return
            with m.Elif(frame.opcode == OpCode.LAYER_CONFIG):
                with m.If(frame.length != layer_len):
                    error(ErrCode.BAD_LENGTH)
                with m.Elif(eng.busy):
                    error(ErrCode.BUSY)
                with m.Else():            # counted good or bad once the shape is judged
                    m.d.sync += count.eq(0)
                    m.next = "CFG_READ"
            with m.Elif(frame.opcode == OpCode.LOAD_PARAMS):
                with m.If(~eng.busy | eng.loaded):
                    error(ErrCode.NOT_ARMED)
                with m.Elif(frame.length == 0):
                    good()
                    reply(ReplyCode.OK, 0, 0)
                with m.Else():
                    good()
                    m.next = "PAR_SEND"
            with m.Elif(frame.opcode == OpCode.RUN):
                with m.If(~eng.loaded | (~eng.busy & (frame.length != 0))):
                    error(ErrCode.NOT_ARMED)
                with m.Else():
                    good()
                    m.d.sync += ocount.eq(0)
                    m.next = "RUN_SEND"
                    with m.If(frame.length == 0):
                        m.next = "RUN_FLUSH"

        # Command decoder: one reply per frame (RUN: DATA frames, then one reply), then
        # the frame is released.
        with m.FSM(name="cmd_fsm") as cmd_fsm:
            with m.State("IDLE"):
                m.d.comb += [rdr.start.eq(rcv.frame.valid), rdr.length.eq(frame.length)]
                with m.If(rcv.frame.valid):
                    with m.If(frame.error != ErrCode.NONE):
                        error(frame.error)
                    with m.Elif(frame.opcode == OpCode.IDENTIFY):
                        with m.If(frame.length != 0):
                            error(ErrCode.BAD_LENGTH)
                        with m.Else():
                            good()
                            reply(ReplyCode.OK, ident_bits, len(ident))
                    with m.Elif(frame.opcode == OpCode.STATUS):
                        with m.If(frame.length != 0):
                            error(ErrCode.BAD_LENGTH)
                        with m.Else():
                            good()
                            reply(ReplyCode.OK, Cat(cycles, frames_ok, frames_bad, last_error,
                                                    eng_flags, eng_cycles), status_len)
                    with m.Elif(frame.opcode == OpCode.ECHO):
                        good()
                        m.d.sync += [reply_code.eq(ReplyCode.OK), reply_len.eq(frame.length)]
                        m.next = "ECHO_HDR"
                    engine_ops()
                    with m.Else():
                        error(ErrCode.UNKNOWN_OPCODE)

            # Short replies from `regs`.
            send_header("REG_HDR", "REG_DATA")
            with m.State("REG_DATA"):
                m.d.comb += [snd.data.valid.eq(1), snd.data.payload.eq(regs[:8])]
                with m.If(snd.data.ready):
                    m.d.sync += [regs.eq(regs >> 8), count.eq(count + 1)]
                    with m.If(count + 1 == reply_len):
                        m.next = "RELEASE"

            # ECHO: the payload, as the reader gives it.
            send_header("ECHO_HDR", "ECHO_DATA")
            with m.State("ECHO_DATA"):
                m.d.comb += [snd.data.valid.eq(rdr.o.valid), snd.data.payload.eq(rdr.o.payload),
                             rdr.o.ready.eq(snd.data.ready)]
                with m.If(snd.data.ready & rdr.o.valid):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count + 1 == reply_len):
                        m.next = "RELEASE"

            if self.engine:
                # LAYER_CONFIG: payload bytes into `fields`, then registers and `start`.
                with m.State("CFG_READ"):
                    m.d.comb += rdr.o.ready.eq(1)
                    with m.If(rdr.o.valid):
                        m.d.sync += [fields.eq(Cat(fields[8:], rdr.o.payload)),
                                     count.eq(count + 1)]
                        with m.If(count + 1 == layer_len):
                            m.next = "CFG_APPLY"
                with m.State("CFG_APPLY"):
                    m.d.sync += [layer.eq(fields), count.eq(0)]
                    m.next = "CFG_CHECK"
                with m.State("CFG_CHECK"):     # the engine judges the shape in two cycles
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == 1):
                        m.next = "CFG_START"
                with m.State("CFG_START"):     # registers are stable from `start` on
                    with m.If(eng.shape_ok):
                        m.d.comb += eng.start.eq(1)
                        good()
                        reply(ReplyCode.OK, 0, 0)
                    with m.Else():
                        error(ErrCode.BAD_LAYER)

                # LOAD_PARAMS: the payload to `params`, up to one byte per cycle.
                with m.State("PAR_SEND"):
                    wiring.connect(m, rdr.o, eng.params)
                    with m.If(rdr.o.valid & eng.params.ready):
                        m.d.sync += count.eq(count + 1)
                        with m.If(count + 1 == frame.length):
                            reply(ReplyCode.OK, 0, 0)

                # RUN: the payload to `i`, up to one byte per cycle; a full frame's worth of
                # output leaves as DATA (also while `i` stalls: the engine may wait for its
                # output to drain), then the payload goes on.
                def data_reply() -> None:
                    m.d.sync += [reply_code.eq(ReplyCode.DATA),
                                 reply_len.eq(protocol.MAX_PAYLOAD), ocount.eq(0)]
                    m.next = "RUN_DATA_HDR"

                with m.State("RUN_SEND"):
                    wiring.connect(m, rdr.o, eng.i)
                    with m.If(rdr.o.valid & eng.i.ready):
                        m.d.sync += count.eq(count + 1)
                        with m.If(count + 1 == frame.length):
                            m.next = "RUN_FLUSH"
                        with m.Elif(fifo_full_frame):
                            data_reply()
                    with m.Elif(fifo_full_frame):
                        data_reply()
                send_header("RUN_DATA_HDR", "RUN_DATA")
                send_fifo("RUN_DATA", "RUN_SEND")
                with m.State("RUN_FLUSH"):     # the rest (at most one frame's worth) as OK
                    level = Mux(fifo_full_frame, protocol.MAX_PAYLOAD, out_level)
                    m.d.sync += [reply_code.eq(ReplyCode.OK), reply_len.eq(level), ocount.eq(0)]
                    m.next = "RUN_OK_HDR"
                send_header("RUN_OK_HDR", "RUN_OK_DATA")
                send_fifo("RUN_OK_DATA", "RELEASE")

            with m.State("RELEASE"):
                m.d.comb += rcv.frame.ready.eq(1)
                m.next = "IDLE"

        # Activity: a received frame is waiting or being executed (its reply not yet sent).
        m.d.comb += self.active.eq(rcv.frame.valid | ~cmd_fsm.ongoing("IDLE"))
        return m
