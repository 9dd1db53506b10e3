"""The memory device on two links as the Arty builds have it, but for its DRAM: the UART's
byte streams and Ethernet (LiteEth's core on the MII pins, `UdpBridge`) in front of one
`MemDeviceTop` through `hw.eth.board.DualLinkDevice` (the Ethernet system simulation's top,
`hw.eth.simulator`)."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.eth import EthSettings, GeneratedEthCore
from hw.eth.board import DualLinkDevice
from hw.eth.core import mii_signature
from hw.memport import mem_port
from hw.spec.config import HwConfig
from hw.top.memory import MemDeviceTop

__all__ = ["EthDeviceTop"]


class EthDeviceTop(wiring.Component):
    """``rx`` / ``tx``: the UART's bytes (the other link); ``mii``: the PHY's pins; ``mem``:
    the device's memory port (`MemDeviceTop.mem`); ``active``: a request is being taken,
    executed or answered on either link, or a program runs. IDENTIFY reports `settings`
    (`Feature.ETHERNET`, the IPv4 address and UDP port) on both links."""

    def __init__(self, cfg: HwConfig, core: GeneratedEthCore, settings: EthSettings,
                 timeout_cycles: int | None = None) -> None:
        self.cfg = cfg
        self.core = core
        self.settings = settings
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "mii": Out(mii_signature()),
            "mem": Out(mem_port(cfg)),
            "active": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        dev = MemDeviceTop(self.cfg, self.timeout_cycles, eth=self.settings)
        m.submodules.links = links = DualLinkDevice(dev, self.core, self.settings)
        wiring.connect(m, wiring.flipped(self.rx), links.rx)
        wiring.connect(m, links.tx, wiring.flipped(self.tx))
        wiring.connect(m, wiring.flipped(self.mii), links.mii)
        wiring.connect(m, dev.mem, wiring.flipped(self.mem))
        m.d.comb += self.active.eq(links.active)
        return m
