"""Host link framing in gateware: frame receiver, reply framer, CRC-16 (hw/spec/protocol.py).

Every constant (sync bytes, maximum payload, error codes, CRC polynomial) comes from
`hw.spec.protocol`; the Amaranth enums below are built from its IntEnums, so the numbers exist
once and still show as names in waveforms.
"""

from __future__ import annotations

import contextlib
import enum as pyenum
import types
from collections.abc import Iterator

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, Value
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.crc import crc_next
from hw.spec import protocol

__all__ = ["BUFFER_READ_LATENCY", "ErrCode", "FrameReceiver", "FrameSender", "OpCode",
           "PayloadReader", "ReplyCode", "crc16_next", "frame_info_layout",
           "reply_header_layout"]

#: Cycles from `FrameReceiver.rd_addr` to `rd_data`: the block-RAM read, then a register.
BUFFER_READ_LATENCY = 2

def _hw_enum(name: str, codes: type[pyenum.IntEnum]) -> type[enum.Enum]:
    """An 8-bit Amaranth enum with the members of a hw.spec.protocol IntEnum."""
    def body(ns: dict) -> None:
        for member in codes:
            ns[member.name] = member.value
    return types.new_class(name, (enum.Enum,), {"shape": 8}, body)


#: The protocol's codes as Amaranth enums (values from hw.spec.protocol, never retyped).
OpCode = _hw_enum("OpCode", protocol.Op)
ReplyCode = _hw_enum("ReplyCode", protocol.Reply)
ErrCode = _hw_enum("ErrCode", protocol.Err)

#: A received frame: its opcode byte, payload length, and why it failed (NONE if good).
frame_info_layout = data.StructLayout({"opcode": 8, "length": 16, "error": ErrCode})
#: A reply to send: reply code and payload length; the payload follows on `data`.
reply_header_layout = data.StructLayout({"code": ReplyCode, "length": 16})


def crc16_next(crc: Value, byte: Value) -> Value:
    """`hw.spec.protocol.crc16_update` as combinational logic (16-bit CRC, one byte)."""
    return crc_next(protocol.crc16_update, 16, crc, byte)


class FrameReceiver(wiring.Component):
    """Bytes in, checked frames out, payload in a buffer.

    `rx` takes bytes. Bytes before SYNC are skipped. After a frame's last CRC byte (or as
    soon as it is known to be bad: a length over `max_payload`, or a gap of more than
    `timeout_cycles` between two bytes of one frame) the receiver shows one item on `frame`
    (opcode, length, error) and stops taking bytes until that item is taken; while it is
    shown, `rd_addr`/`rd_data` read the payload: `rd_data` is the byte at the `rd_addr` of
    `BUFFER_READ_LATENCY` (2) cycles before (a block-RAM read into a register, so the
    read's clock-to-out delay stays inside the receiver).
    A good frame has error NONE. After any item the receiver hunts for SYNC again, so the
    bytes left of a frame with a bad length are skipped like garbage.
    """

    def __init__(self, max_payload: int, timeout_cycles: int) -> None:
        if timeout_cycles < 2:
            raise ValueError("timeout_cycles must be at least 2")
        self.max_payload = max_payload
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "frame": Out(stream.Signature(frame_info_layout)),
            "rd_addr": In(range(max_payload)),
            "rd_data": Out(8),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.buf = buf = Memory(shape=8, depth=self.max_payload, init=[])
        wr = buf.write_port()
        rd = buf.read_port(transparent_for=())
        m.d.comb += rd.addr.eq(self.rd_addr)
        m.d.sync += self.rd_data.eq(rd.data)

        info = Signal(frame_info_layout)
        crc = Signal(16)
        crc_lo = Signal(8)
        count = Signal(16)
        byte = self.rx.payload
        take = self.rx.valid & self.rx.ready
        m.d.comb += self.frame.payload.eq(info)

        # Inter-byte timeout: counts cycles since the last byte while inside a frame.
        idle = Signal(range(self.timeout_cycles + 1))
        in_frame = Signal()
        timed_out = Signal()
        with m.If(take | ~in_frame):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.timeout_cycles):
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += timed_out.eq(in_frame & (idle == self.timeout_cycles))

        # CRC over opcode, length and payload bytes.
        crc_on = Signal()
        with m.If(take & crc_on):
            m.d.sync += crc.eq(crc16_next(crc, byte))

        # Payload bytes go to the buffer.
        m.d.comb += [wr.addr.eq(count), wr.data.eq(byte)]

        def finish(error: ErrCode) -> None:
            m.d.sync += info.error.eq(error)
            m.next = "HAVE_FRAME"

        @contextlib.contextmanager
        def frame_byte(in_crc: bool = True) -> Iterator[None]:
            """Body of a state inside a frame: the block runs when a byte is taken; the
            frame ends with TIMEOUT when bytes stop coming."""
            m.d.comb += [self.rx.ready.eq(1), in_frame.eq(1), crc_on.eq(in_crc)]
            with m.If(timed_out):
                finish(ErrCode.TIMEOUT)
            with m.Elif(take):
                yield

        with m.FSM(name="rx_fsm"):
            with m.State("SYNC0"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(take & (byte == protocol.SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(take):
                    m.d.sync += crc.eq(protocol.CRC_INIT)
                    with m.If(byte == protocol.SYNC[1]):
                        m.next = "OPCODE"
                    with m.Elif(byte != protocol.SYNC[0]):
                        m.next = "SYNC0"
            with m.State("OPCODE"), frame_byte():
                m.d.sync += info.opcode.eq(byte)
                m.next = "LEN_LO"
            with m.State("LEN_LO"), frame_byte():
                m.d.sync += info.length[:8].eq(byte)
                m.next = "LEN_HI"
            with m.State("LEN_HI"), frame_byte():
                length = Cat(info.length[:8], byte)
                m.d.sync += [info.length[8:].eq(byte), count.eq(0)]
                with m.If(length > self.max_payload):
                    finish(ErrCode.LENGTH_TOO_LONG)
                with m.Elif(length == 0):
                    m.next = "CRC_LO"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"), frame_byte():
                m.d.comb += wr.en.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count + 1 == info.length):
                    m.next = "CRC_LO"
            with m.State("CRC_LO"), frame_byte(in_crc=False):
                m.d.sync += crc_lo.eq(byte)
                m.next = "CRC_HI"
            with m.State("CRC_HI"), frame_byte(in_crc=False):
                with m.If(Cat(crc_lo, byte) == crc):
                    finish(ErrCode.NONE)
                with m.Else():
                    finish(ErrCode.BAD_CRC)
            with m.State("HAVE_FRAME"):
                m.d.comb += self.frame.valid.eq(1)
                with m.If(self.frame.ready):
                    m.next = "SYNC0"
        return m


class PayloadReader(wiring.Component):
    """The shown frame's payload as a stream: after `start` (with `length`), bytes 0 to
    `length - 1` of the receiver's buffer leave on `o` in order, at up to one per cycle.

    Reads run ahead of `o` into a small FIFO (`depth` bytes), so `o.valid`/`o.payload`
    come from registers and `o.ready` reaches neither the buffer's address nor its read
    port. `start` drops whatever an earlier payload left; the first byte is valid 5 cycles
    after `start` (address register, `BUFFER_READ_LATENCY`, the FIFO's two stages).
    """

    def __init__(self, max_payload: int, depth: int = 8) -> None:
        self.depth = depth
        super().__init__({
            "start": In(1),
            "length": In(range(max_payload + 1)),
            "rd_addr": Out(range(max_payload)),
            "rd_data": In(8),
            "o": Out(stream.Signature(8)),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        fifo = ResetInserter(self.start)(SyncFIFOBuffered(width=8, depth=self.depth))
        m.submodules.fifo = fifo
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready)]

        # Issue one address per cycle while the FIFO has room for it and for the reads in
        # flight; `flight` marks which of the last BUFFER_READ_LATENCY cycles issued one.
        length = Signal.like(self.length)
        addr = Signal.like(self.length)
        flight = Signal(BUFFER_READ_LATENCY)
        in_flight = sum(flight[k] for k in range(BUFFER_READ_LATENCY))
        issue = Signal()
        m.d.comb += [issue.eq((addr != length) & (fifo.level + in_flight < self.depth)),
                     self.rd_addr.eq(addr)]
        m.d.sync += flight.eq(Cat(issue, flight[:-1]))
        with m.If(issue):
            m.d.sync += addr.eq(addr + 1)

        # Reads land in the FIFO BUFFER_READ_LATENCY cycles after their address.
        m.d.comb += [fifo.w_en.eq(flight[-1]), fifo.w_data.eq(self.rd_data)]

        # A new payload: forget the old one, reads in flight included.
        with m.If(self.start):
            m.d.sync += [addr.eq(0), length.eq(self.length), flight.eq(0)]
        return m


class FrameSender(wiring.Component):
    """Reply framer: one `hdr` item (code, length), then `length` bytes on `data`, go out
    on `tx` as SYNC, code, length, payload and CRC-16. `hdr` is taken when the frame's
    first byte leaves; `tx.valid` never depends on `tx.ready`."""

    def __init__(self) -> None:
        super().__init__({
            "hdr": In(stream.Signature(reply_header_layout)),
            "data": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        code = Signal(8)
        length = Signal(16)
        count = Signal(16)
        crc = Signal(16)
        sent = self.tx.valid & self.tx.ready

        # CRC over code, length and payload bytes as they leave. A byte joins the CRC one
        # cycle after it left (from a register), so the payload source (a block-RAM read
        # in the device) does not share a cycle with the CRC logic; `crc_now` includes a
        # byte still pending, for the CRC bytes that may follow it at once.
        crc_on = Signal()
        pend = Signal(8)
        pend_v = Signal()
        m.d.sync += pend_v.eq(sent & crc_on)
        with m.If(sent & crc_on):
            m.d.sync += pend.eq(self.tx.payload)
        with m.If(pend_v):
            m.d.sync += crc.eq(crc16_next(crc, pend))
        crc_now = Signal(16)
        m.d.comb += crc_now.eq(Mux(pend_v, crc16_next(crc, pend), crc))

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                m.d.comb += [self.tx.valid.eq(self.hdr.valid), self.tx.payload.eq(protocol.SYNC[0]),
                             self.hdr.ready.eq(self.tx.ready)]
                with m.If(self.hdr.valid & self.tx.ready):
                    m.d.sync += [code.eq(self.hdr.payload.code), length.eq(self.hdr.payload.length),
                                 count.eq(0), crc.eq(protocol.CRC_INIT)]
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(protocol.SYNC[1])]
                with m.If(sent):
                    m.next = "CODE"
            with m.State("CODE"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(code), crc_on.eq(1)]
                with m.If(sent):
                    m.next = "LEN_LO"
            with m.State("LEN_LO"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(length[:8]), crc_on.eq(1)]
                with m.If(sent):
                    m.next = "LEN_HI"
            with m.State("LEN_HI"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(length[8:]), crc_on.eq(1)]
                with m.If(sent):
                    with m.If(length == 0):
                        m.next = "CRC_LO"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.tx.valid.eq(self.data.valid),
                             self.tx.payload.eq(self.data.payload),
                             self.data.ready.eq(self.tx.ready), crc_on.eq(1)]
                with m.If(sent):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count + 1 == length):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(crc_now[:8])]
                with m.If(sent):
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(crc_now[8:])]
                with m.If(sent):
                    m.next = "IDLE"
        return m
