"""Reply frames' headers and payload bytes for the frame sender (`ReplySender`)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.link import ReplyCode, reply_header_layout

__all__ = ["ReplySender", "ReplySource", "reply_request_layout"]


class ReplySource(enum.Enum, shape=2):
    """Where a reply's payload bytes come from."""
    REGS = 0       # the request's `value`, lowest byte first
    PAYLOAD = 1    # the `payload` stream (ECHO: the request's own payload)
    FIFO = 2       # the `fifo` stream (RUN: the engine's output bytes)


def reply_request_layout(value_bytes: int) -> data.StructLayout:
    """One reply to send: code, payload length, payload source, and `value` (the payload
    of a `REGS` reply, up to `value_bytes` bytes)."""
    return data.StructLayout({"code": ReplyCode, "length": 16, "source": ReplySource,
                              "value": 8 * value_bytes})


class ReplySender(wiring.Component):
    """Reply requests in, a header and ``length`` payload bytes out to a `FrameSender`
    (hw/link.py: ``hdr`` and ``data``).

    A request on ``req`` is taken while no reply is in progress; its header goes to
    ``hdr``, then ``length`` bytes to ``data``: from ``value`` (lowest byte first),
    or passed through from the ``payload`` or ``fifo`` stream (whose ``ready`` follows
    ``data.ready`` only while it is the source). ``done`` pulses (combinationally) with
    the reply's last transfer: the header's for an empty reply, else the last byte's.

    Timing: ``req.ready`` is 1 exactly while idle (a request is taken the cycle it comes
    and the header is offered from the next); then one byte per cycle as ``data`` takes
    them and the source has them; a new request can be taken the cycle after ``done``.
    """

    def __init__(self, value_bytes: int) -> None:
        self.value_bytes = value_bytes
        super().__init__({
            "req": In(stream.Signature(reply_request_layout(value_bytes))),
            "payload": In(stream.Signature(8)),
            "fifo": In(stream.Signature(8)),
            "hdr": Out(stream.Signature(reply_header_layout)),
            "data": Out(stream.Signature(8)),
            "done": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        rq = Signal(reply_request_layout(self.value_bytes))
        count = Signal(16)
        m.d.comb += [self.hdr.payload.code.eq(rq.code), self.hdr.payload.length.eq(rq.length)]

        with m.FSM(name="reply_fsm"):
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += [rq.eq(self.req.payload), count.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += self.hdr.valid.eq(1)
                with m.If(self.hdr.ready):
                    m.next = "DATA"
                    with m.If(rq.length == 0):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
            with m.State("DATA"):
                with m.Switch(rq.source):
                    with m.Case(ReplySource.REGS):
                        m.d.comb += [self.data.valid.eq(1), self.data.payload.eq(rq.value[:8])]
                    with m.Case(ReplySource.PAYLOAD):
                        wiring.connect(m, wiring.flipped(self.payload), wiring.flipped(self.data))
                    with m.Case(ReplySource.FIFO):
                        wiring.connect(m, wiring.flipped(self.fifo), wiring.flipped(self.data))
                with m.If(self.data.valid & self.data.ready):
                    m.d.sync += [rq.value.eq(rq.value >> 8), count.eq(count + 1)]
                    with m.If(count + 1 == rq.length):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
        return m
