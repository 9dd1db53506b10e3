"""The memory device on LiteDRAM: `MemDeviceTop` with its memory port on the native user
port of a generated core, and the core's init (`DramInit` on its CSR bus). The same
component is the board system (a board core: PHY, pads, the board's clocking;
`hw.dram.board`) and the system simulation (a simulation core: SDRAMPHYModel in place of
the PHY; `hw.simulator --top dram`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Cat, Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.dram import GeneratedCore, check_csr_map, init_program
from hw.dram.core import CsrBridge, DramInit, LiteDRAMCore
from hw.spec.config import HwConfig
from hw.top.memory import MemDeviceTop

if TYPE_CHECKING:
    from hw.eth import EthSettings

__all__ = ["DramSystem"]


class DramSystem(wiring.Component):
    """``rx`` / ``tx`` / ``active`` as `MemDeviceTop`'s; the device takes no byte before
    the DRAM init has finished (the host's bytes wait in the link), then answers whether
    it succeeded or not: IDENTIFY reports `Feature.DRAM`, STATUS the init's flags
    (`DramFlag`; UNLEVELED for a board core whose PHY needs the read leveling `DramInit`
    does not run). ``active`` is also high while the init runs. ``init_done``: the DRAM is
    usable; ``init_error``: the init failed (the core's user port stays blocked).

    Once the init has finished, the core's CSR bus belongs to the host: CSR_READ /
    CSR_WRITE (IDENTIFY's ``dram_phy`` names the layout, `hw.spec.dram`) through a
    `CsrBridge`, whose leveled flag the host sets after its read leveling (STATUS: LEVELED
    instead of UNLEVELED). ``unleveled``: the DRAM is up, its PHY needs the leveling and
    the host has not marked it done (the board's ready LED blinks slowly).

    ``connect`` / ``unused``: the board core's clock, reset and pads (`LiteDRAMCore`);
    none for a simulation core. ``eth``: the device's Ethernet addresses where it also
    answers UDP (IDENTIFY reports them).
    """

    def __init__(self, cfg: HwConfig, core: GeneratedCore, timeout_cycles: int | None = None,
                 connect: dict[str, object] | None = None, unused: tuple[str, ...] = (),
                 eth: EthSettings | None = None) -> None:
        self.cfg = cfg
        self.core = core
        self.timeout_cycles = timeout_cycles
        self.eth = eth
        self.dram = LiteDRAMCore(cfg, core, connect, unused)    # checks the core's ports now
        #: The CSR layout the host is told (checked against the core's own now).
        self.csr_map = check_csr_map(core)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "active": Out(1),
            "init_done": Out(1),
            "init_error": Out(1),
            "unleveled": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.dev = dev = MemDeviceTop(self.cfg, self.timeout_cycles, dram=True,
                                              eth=self.eth, dram_phy=self.csr_map.phy)
        m.submodules.dram = dram = self.dram
        m.submodules.init = init = DramInit(init_program(self.core))
        wiring.connect(m, dev.mem, dram.user)
        m.submodules.csr = csr = CsrBridge()
        wiring.connect(m, dev.csr, csr.req)
        settled = init.done | init.error
        # The CSR bus: the init's until it has finished, then the host's (the device takes
        # no request before, and the init writes nothing after).
        for name in ("adr", "dat_w", "sel", "cyc", "stb", "we"):
            m.d.comb += getattr(dram.ctrl, name).eq(Mux(settled, getattr(csr.bus, name),
                                                        getattr(init.bus, name)))
        for bus in (init.bus, csr.bus):
            m.d.comb += [bus.dat_r.eq(dram.ctrl.dat_r), bus.ack.eq(dram.ctrl.ack),
                         bus.err.eq(dram.ctrl.err)]
        error = dram.init_error | init.error
        m.d.comb += [
            dev.rx.valid.eq(self.rx.valid & settled),
            dev.rx.payload.eq(self.rx.payload),
            self.rx.ready.eq(dev.rx.ready & settled),
            self.active.eq(dev.active | ~settled),
            self.init_done.eq(dram.init_done & ~error),
            self.init_error.eq(error),
            # a PHY with leveling registers (a board's DDR3; `DramInit` does not level):
            # UNLEVELED until the host marks it leveled (docs/dram.md)
            self.unleveled.eq(self.init_done & (self.csr_map.leveling is not None)
                              & ~csr.leveled),
            dev.dram_flags.eq(Cat(self.init_done, self.init_error, self.unleveled,
                                  csr.leveled)),
        ]
        wiring.connect(m, dev.tx, wiring.flipped(self.tx))
        return m
