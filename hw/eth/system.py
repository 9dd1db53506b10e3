"""The memory device on Ethernet: `MemDeviceTop`'s byte streams behind `UdpBridge` on
LiteEth's raw UDP port, the core on the board's MII PHY pins."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from hw.eth import EthSettings, GeneratedEthCore
from hw.eth.bridge import UdpBridge
from hw.eth.core import LiteEthCore, mii_signature
from hw.memport import mem_port
from hw.spec.config import HwConfig
from hw.top.memory import MemDeviceTop

__all__ = ["EthDeviceTop"]


class EthDeviceTop(wiring.Component):
    """``mii``: the PHY's pins; ``mem``: the device's memory port (`MemDeviceTop.mem`);
    ``active``: a request is being taken, executed or answered, or a program runs."""

    def __init__(self, cfg: HwConfig, core: GeneratedEthCore, settings: EthSettings,
                 timeout_cycles: int | None = None) -> None:
        self.cfg = cfg
        self.core = core
        self.settings = settings
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "mii": Out(mii_signature()),
            "mem": Out(mem_port(cfg)),
            "active": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.dev = dev = MemDeviceTop(self.cfg, self.timeout_cycles)
        m.submodules.bridge = br = UdpBridge(self.settings.udp_port)
        m.submodules.eth = eth = LiteEthCore(self.core, self.settings)
        wiring.connect(m, eth.udp_rx, br.udp_rx)
        wiring.connect(m, br.udp_tx, eth.udp_tx)
        wiring.connect(m, br.dev_rx, dev.rx)
        wiring.connect(m, dev.tx, br.dev_tx)
        wiring.connect(m, wiring.flipped(self.mii), eth.mii)
        wiring.connect(m, dev.mem, wiring.flipped(self.mem))
        m.d.comb += [eth.dst_port.eq(br.dst_port), self.active.eq(dev.active | br.busy)]
        return m
