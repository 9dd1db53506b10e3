"""The device on two links on a board (docs/ethernet.md, "The board build"): `DualLinkDevice`
puts the UART's byte streams and LiteEth's UDP bridge in front of one device through
`LinkArbiter`; `connect_pins` wires the core to the board's MII PHY (pins, its 25 MHz
reference clock, reset) and `PHY_CONSTRAINTS` are the PHY clocks' constraints for Vivado."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.eth import EthError, EthSettings, GeneratedEthCore
from hw.eth.arbiter import LinkArbiter
from hw.eth.bridge import UdpBridge
from hw.eth.core import LiteEthCore, mii_signature
from hw.spec import protocol

__all__ = ["PHY_CONSTRAINTS", "UART_BUFFER", "DualLinkDevice", "connect_pins"]

#: Bytes the UART link can hold while the device answers the other link: the largest request
#: frame and more (one block RAM). The UART has no flow control, so a request must never
#: wait in the 16-byte FIFO of `hw.uart.UartDevice` alone.
UART_BUFFER = 2048
assert UART_BUFFER > protocol.MAX_PAYLOAD + protocol.FRAME_OVERHEAD

#: The MII PHY's clocks (the DP83848 drives both at 25 MHz) and their crossing into the
#: sys clock, as LiteEth's own constraints say it (liteeth_core.xdc names the standalone
#: core's top-level nets, which are not top-level here): `{rx}` / `{tx}` are the ports,
#: `{osc}` the oscillator's clock (Amaranth names it after its port).
PHY_CONSTRAINTS = """\
create_clock -name eth_rx_clk -period 40.0 [get_ports {{{rx}}}]
create_clock -name eth_tx_clk -period 40.0 [get_ports {{{tx}}}]
set_clock_groups -asynchronous -group [get_clocks eth_rx_clk] -group [get_clocks eth_tx_clk] \
-group [get_clocks -include_generated_clocks {{{osc}}}]
set_false_path -quiet -through [get_nets -hierarchical -filter {{mr_ff == TRUE}}]
set_false_path -quiet -to [get_pins -filter {{REF_PIN_NAME == PRE}} -of_objects \
[get_cells -hierarchical -filter {{ars_ff1 == TRUE || ars_ff2 == TRUE}}]]
set_max_delay 2 -quiet -from [get_pins -filter {{REF_PIN_NAME == C}} -of_objects \
[get_cells -hierarchical -filter {{ars_ff1 == TRUE}}]] -to [get_pins -filter \
{{REF_PIN_NAME == D}} -of_objects [get_cells -hierarchical -filter {{ars_ff2 == TRUE}}]]
"""


class DualLinkDevice(wiring.Component):
    """`device` (any component with byte streams ``rx`` / ``tx``; the memory device on its
    DRAM on the boards) answering two links: ``rx`` / ``tx`` (the UART's bytes, through a
    `UART_BUFFER`-byte FIFO) and Ethernet (``mii``: LiteEth's core with `UdpBridge` on its
    raw UDP port), a whole request at a time (`LinkArbiter`: link 0 the UART, link 1 the
    bridge). ``init_done`` / ``init_error`` / ``unleveled`` are the device's where it has
    them (DRAM);
    ``active``: the device's, the bridge's or the arbiter's work."""

    def __init__(self, device: wiring.Component, core: GeneratedEthCore,
                 settings: EthSettings) -> None:
        self.device = device
        self.core = core
        self.settings = settings
        members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                   "mii": Out(mii_signature()), "active": Out(1)}
        if hasattr(device, "init_done"):
            members.update(init_done=Out(1), init_error=Out(1), unleveled=Out(1))
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.dev = dev = self.device
        m.submodules.uart_buf = buf = SyncFIFOBuffered(width=8, depth=UART_BUFFER)
        m.submodules.arbiter = arb = LinkArbiter()
        m.submodules.bridge = br = UdpBridge(self.settings.udp_port)
        m.submodules.eth = eth = LiteEthCore(self.core, self.settings)
        wiring.connect(m, wiring.flipped(self.rx), buf.w_stream)
        wiring.connect(m, buf.r_stream, arb.rx0)
        wiring.connect(m, arb.tx0, wiring.flipped(self.tx))
        wiring.connect(m, br.dev_rx, arb.rx1)
        wiring.connect(m, arb.tx1, br.dev_tx)
        wiring.connect(m, arb.dev_rx, dev.rx)
        wiring.connect(m, dev.tx, arb.dev_tx)
        wiring.connect(m, eth.udp_rx, br.udp_rx)
        wiring.connect(m, br.udp_tx, eth.udp_tx)
        wiring.connect(m, wiring.flipped(self.mii), eth.mii)
        m.d.comb += [eth.dst_port.eq(br.dst_port),
                     self.active.eq(arb.busy | br.busy | getattr(dev, "active", 0))]
        if hasattr(dev, "init_done"):
            m.d.comb += [self.init_done.eq(dev.init_done), self.init_error.eq(dev.init_error),
                         self.unleveled.eq(dev.unleveled)]
        return m


def connect_pins(m: Module, pins: object, ref_clk: object, mii: wiring.PureInterface,
                 clock_hz: int) -> None:
    """Wire `mii` (the core's side) to the MII resource `pins` (amaranth-boards' ``eth_mii``:
    MDIO left an input, so the PHY keeps its strapped defaults; reset through the
    resource's inversion) and drive the PHY's 25 MHz reference clock on `ref_clk` from the
    ``sync`` clock divided by 4 (an IOB flip-flop; the PHY's crystal-less input on the
    Arty). EthError when `clock_hz` is not 100 MHz."""
    if clock_hz != 100_000_000:
        raise EthError(f"the PHY's 25 MHz reference clock is made from a 100 MHz sys clock, "
                       f"not {clock_hz / 1e6:g} MHz")
    bufs = {}
    for name, d in (("rx_clk", "i"), ("tx_clk", "i"), ("rx_dv", "i"), ("rx_er", "i"),
                    ("rx_data", "i"), ("col", "i"), ("crs", "i"), ("tx_en", "o"),
                    ("tx_data", "o"), ("rst", "o"), ("mdc", "o"), ("mdio", "io")):
        m.submodules[f"eth_{name}"] = bufs[name] = io.Buffer(d, getattr(pins, name))
    for name in ("rx_clk", "tx_clk", "rx_dv", "rx_er", "rx_data", "col", "crs"):
        m.d.comb += getattr(mii, name).eq(bufs[name].i)
    m.d.comb += [bufs["tx_en"].o.eq(mii.tx_en), bufs["tx_data"].o.eq(mii.tx_data),
                 bufs["rst"].o.eq(~mii.rst_n), bufs["mdc"].o.eq(mii.mdc),
                 bufs["mdio"].oe.eq(0)]
    div = Signal(2)
    m.d.sync += div.eq(div + 1)
    m.submodules.eth_ref_clk = ref = io.FFBuffer("o", ref_clk)
    m.d.comb += ref.o.eq(div[1])
