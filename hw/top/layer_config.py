"""LAYER_CONFIG payload to the engine's layer registers (`LayerConfigLoader`)."""

from __future__ import annotations

import struct

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.engine.layouts import layer_layout
from hw.spec import protocol
from hw.spec.config import HwConfig

__all__ = ["LAYER_CHECK_CYCLES", "LayerConfigLoader"]

#: Cycles the loader waits after setting the registers for the engine's `shape_ok`
#: (`LayerDecode`: two register stages).
LAYER_CHECK_CYCLES = 2


class LayerConfigLoader(wiring.Component):
    """A LAYER_CONFIG payload in, the engine's layer registers and ``start`` out.

    After ``go`` (a one-cycle pulse) it takes ``calcsize(LAYER_FORMAT)`` bytes from
    ``payload``, one per cycle as they come (``payload.ready`` is 1 while reading), and
    sets ``layer`` (`layer_layout`, flip-flops that hold until the next payload) from
    them: each field from its bytes at `protocol.LAYER_SPANS`, little-endian, cut to the
    field's width. Then it waits `LAYER_CHECK_CYCLES` cycles for the engine to judge the
    registers and, in one cycle, pulses ``done`` with ``ok`` = ``shape_ok``; ``start``
    pulses with them when ``ok``.
    """

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        super().__init__({
            "go": In(1),
            "payload": In(stream.Signature(8)),
            "layer": Out(layer_layout(cfg)),
            "shape_ok": In(1),
            "start": Out(1),
            "done": Out(1),
            "ok": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        size = struct.calcsize(protocol.LAYER_FORMAT)
        m = Module()
        fields = Signal(8 * size)
        count = Signal(range(max(size, LAYER_CHECK_CYCLES) + 1))
        with m.FSM(name="config_fsm"):
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += count.eq(0)
                    m.next = "READ"
            with m.State("READ"):          # the payload shifts in, first byte lowest
                m.d.comb += self.payload.ready.eq(1)
                with m.If(self.payload.valid):
                    m.d.sync += [fields.eq(Cat(fields[8:], self.payload.payload)),
                                 count.eq(count + 1)]
                    with m.If(count + 1 == size):
                        m.next = "APPLY"
            with m.State("APPLY"):
                for name, (offset, nbytes) in protocol.LAYER_SPANS.items():
                    m.d.sync += self.layer[name].eq(fields[8 * offset:8 * (offset + nbytes)])
                m.d.sync += count.eq(0)
                m.next = "CHECK"
            with m.State("CHECK"):         # the engine judges the registers
                m.d.sync += count.eq(count + 1)
                with m.If(count == LAYER_CHECK_CYCLES - 1):
                    m.next = "START"
            with m.State("START"):         # registers are stable from `start` on
                m.d.comb += [self.done.eq(1), self.ok.eq(self.shape_ok),
                             self.start.eq(self.shape_ok)]
                m.next = "IDLE"
        return m
