"""Two host links, one device (`LinkArbiter`): the board's UART and its Ethernet bridge share
the memory device a whole request at a time (docs/ethernet.md, "Two links")."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.spec import protocol

__all__ = ["LinkArbiter"]

_S0, _S1 = protocol.SYNC


class LinkArbiter(wiring.Component):
    """``rx0``/``tx0`` and ``rx1``/``tx1``: the two links' byte streams (from the host / to
    the host); ``dev_rx``/``dev_tx``: the device's (to it / from it).

    Each link has its own SYNC hunter: bytes before a frame's SYNC are dropped here, as the
    device's receiver would drop them, so garbage or a half frame on one link never reaches
    the device nor holds it. A link whose hunter has seen SYNC waits for the device; the
    device is granted to one waiting link (round robin when both wait), which then sends
    exactly one request frame: SYNC, opcode, length, payload and CRC as the length field
    says (only up to the length when it exceeds ``max_payload``: the device answers
    LENGTH_TOO_LONG and skips the rest, which the link's hunter then drops). Every reply
    frame goes to the link that asked, up to and including the first that is not DATA; then
    the device is free. A reply that ends the request early (the device's TIMEOUT on a frame
    that stopped coming) also frees it, and the link hunts for SYNC again. Nothing of the
    other link is taken meanwhile except hunted garbage: its frame waits in its own
    buffer. ``owner``: the link granted; ``busy``: a request is being taken or answered.
    """

    def __init__(self, max_payload: int = protocol.MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        super().__init__({
            "rx0": In(stream.Signature(8)), "tx0": Out(stream.Signature(8)),
            "rx1": In(stream.Signature(8)), "tx1": Out(stream.Signature(8)),
            "dev_rx": Out(stream.Signature(8)), "dev_tx": In(stream.Signature(8)),
            "owner": Out(1), "busy": Out(1),
        })

    def _hunter(self, m: Module, rx: stream.Interface, i: int, hunting: Signal) -> Signal:
        """Link `i`'s SYNC hunter, taking bytes while ``hunting``; returns its `ready` flag
        (a SYNC seen, the frame's next byte waiting)."""
        ready = Signal(name=f"sync_seen{i}")
        half = Signal(name=f"half_sync{i}")
        with m.If(hunting & ~ready):
            m.d.comb += rx.ready.eq(1)
            with m.If(rx.valid):
                m.d.sync += [half.eq(rx.payload == _S0), ready.eq(half & (rx.payload == _S1))]
        return ready

    def elaborate(self, platform: object) -> Module:
        m = Module()
        links = ((self.rx0, self.tx0), (self.rx1, self.tx1))
        owner, last = self.owner, Signal()
        own_rx = stream.Signature(8).flip().create()
        hunting = [Signal(name=f"hunting{i}", init=1) for i in range(2)]
        seen = [self._hunter(m, rx, i, hunting[i]) for i, (rx, _) in enumerate(links)]

        # The owner's request bytes (its replies: below).
        for i, (rx, _) in enumerate(links):
            with m.If(owner == i):
                m.d.comb += [own_rx.valid.eq(rx.valid), own_rx.payload.eq(rx.payload)]
        m.d.comb += self.dev_rx.payload.eq(own_rx.payload)

        # The reply: frames from the device, the request answered after the first that is
        # not DATA.
        rpos, rend, rcode, rlen_lo = Signal(16), Signal(16), Signal(8), Signal(8)
        rtake = self.dev_tx.valid & self.dev_tx.ready
        answered = Signal()
        with m.If(rtake):
            m.d.sync += rpos.eq(rpos + 1)
            with m.Switch(rpos):
                with m.Case(2):
                    m.d.sync += rcode.eq(self.dev_tx.payload)
                with m.Case(3):
                    m.d.sync += rlen_lo.eq(self.dev_tx.payload)
                with m.Case(4):
                    m.d.sync += rend.eq(Cat(rlen_lo, self.dev_tx.payload) + 6)
            with m.If((rpos > 4) & (rpos == rend)):
                m.d.sync += rpos.eq(0)
                m.d.comb += answered.eq(rcode != protocol.Reply.DATA)

        # The request: bytes after SYNC (opcode, length, payload, CRC).
        pos, need, len_lo = Signal(2), Signal(range(self.max_payload + 3)), Signal(8)
        take = own_rx.valid & self.dev_rx.ready
        with m.FSM(name="arb_fsm") as fsm:
            with m.State("IDLE"):
                pick = Signal()
                m.d.comb += pick.eq(seen[1] & (~seen[0] | ~last))
                with m.If(seen[0] | seen[1]):
                    m.d.sync += [owner.eq(pick), last.eq(pick), rpos.eq(0), pos.eq(0)]
                    m.next = "SYNC0"
            with m.State("SYNC0"):
                m.d.comb += [self.dev_rx.valid.eq(1), self.dev_rx.payload.eq(_S0)]
                with m.If(self.dev_rx.ready):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                m.d.comb += [self.dev_rx.valid.eq(1), self.dev_rx.payload.eq(_S1)]
                with m.If(self.dev_rx.ready):
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += self.dev_rx.valid.eq(own_rx.valid)
                with m.If(take):
                    with m.Switch(pos):
                        with m.Case(0):
                            m.d.sync += pos.eq(1)
                        with m.Case(1):
                            m.d.sync += [pos.eq(2), len_lo.eq(own_rx.payload)]
                        with m.Case(2):
                            length = Cat(len_lo, own_rx.payload)
                            m.d.sync += [pos.eq(3), need.eq(length + 2)]
                            with m.If(length > self.max_payload):
                                m.next = "REPLY"
                        with m.Default():
                            m.d.sync += need.eq(need - 1)
                            with m.If(need == 1):
                                m.next = "REPLY"
                with m.If(answered):        # ended early: TIMEOUT
                    m.next = "IDLE"
            with m.State("REPLY"):
                with m.If(answered):
                    m.next = "IDLE"

        busy = Signal()
        m.d.comb += [busy.eq(~fsm.ongoing("IDLE")), self.busy.eq(busy)]
        for i, (rx, tx) in enumerate(links):
            mine = busy & (owner == i)
            # Not the owner (or idle): the link hunts for its next SYNC; the owner's bytes go
            # to the device while a request is taken.
            m.d.comb += hunting[i].eq(~mine)
            with m.If(mine):
                m.d.comb += [tx.valid.eq(self.dev_tx.valid), tx.payload.eq(self.dev_tx.payload)]
                m.d.comb += self.dev_tx.ready.eq(tx.ready)
                with m.If(fsm.ongoing("REQUEST")):
                    m.d.comb += rx.ready.eq(self.dev_rx.ready)
            with m.If(mine & fsm.ongoing("SYNC0")):
                m.d.sync += seen[i].eq(0)
        return m
