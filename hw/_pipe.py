"""Small pipeline helpers shared by the gateware blocks."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ShapeLike, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister", "delay"]


def delay(m: Module, value: Value, cycles: int, en: Value, *, name: str,
          reset_less: bool = True) -> Value:
    """`value` delayed by `cycles` enabled clock edges (a shift register that moves on `en`).

    Data delay lines have no reset, so synthesis can map them to shift-register LUTs.
    """
    out = value
    for k in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{k + 1}", reset_less=reset_less)
        with m.If(en):
            m.d.sync += reg.eq(out)
        out = reg
    return out


class StreamRegister(wiring.Component):
    """A registered stream stage (skid buffer): ``o.valid``, ``o.payload`` and ``i.ready``
    all come from flip-flops, so no combinational path crosses it in either direction.

    Latency 1 cycle; full throughput (one transfer per cycle); backpressure without loss:
    a transfer accepted while ``o`` stalls waits in a second register.
    """

    def __init__(self, shape: ShapeLike) -> None:
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        skid = Signal.like(self.o.payload, name="skid")
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        take = self.i.valid & self.i.ready
        with m.If(~self.o.valid | self.o.ready):
            # the output register empties (or was empty): refill from the skid or the input
            m.d.sync += [self.o.valid.eq(skid_valid | take),
                         self.o.payload.eq(Mux(skid_valid, skid, self.i.payload)),
                         skid_valid.eq(0)]
        with m.Elif(take):
            # output stalled: park the new transfer
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
