"""The memory device on LiteDRAM in simulation: `MemDeviceTop` with its memory port on
the native user port of a generated core with SDRAMPHYModel, and the init."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.dram import GeneratedCore, init_program
from hw.dram.core import DramInit, LiteDRAMCore
from hw.spec.config import HwConfig
from hw.top.memory import MemDeviceTop

__all__ = ["DramSimTop"]


class DramSimTop(wiring.Component):
    """``rx`` / ``tx`` / ``active`` as `MemDeviceTop`'s; the device takes no byte before
    the DRAM init is done (the host's bytes wait in the link). ``active`` is also high
    while the init runs. ``init_done`` / ``init_error``: the core's status."""

    def __init__(self, cfg: HwConfig, core: GeneratedCore,
                 timeout_cycles: int | None = None) -> None:
        self.cfg = cfg
        self.core = core
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "active": Out(1),
            "init_done": Out(1),
            "init_error": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.dev = dev = MemDeviceTop(self.cfg, self.timeout_cycles)
        m.submodules.dram = dram = LiteDRAMCore(self.cfg, self.core)
        m.submodules.init = init = DramInit(init_program(self.core))
        wiring.connect(m, dev.mem, dram.user)
        wiring.connect(m, init.bus, dram.ctrl)
        ready = dram.init_done & ~dram.init_error & init.done
        m.d.comb += [
            dev.rx.valid.eq(self.rx.valid & ready),
            dev.rx.payload.eq(self.rx.payload),
            self.rx.ready.eq(dev.rx.ready & ready),
            self.active.eq(dev.active | ~init.done),
            self.init_done.eq(dram.init_done),
            self.init_error.eq(dram.init_error | init.error),
        ]
        wiring.connect(m, dev.tx, wiring.flipped(self.tx))
        return m
