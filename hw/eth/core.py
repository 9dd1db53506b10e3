"""The generated LiteEth core as an Amaranth component (`LiteEthCore`)."""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.eth import EthError, EthSettings, GeneratedEthCore
from hw.eth.bridge import udp_rx_layout, udp_tx_layout

__all__ = ["LiteEthCore", "mii_signature"]


def mii_signature() -> wiring.Signature:
    """The MII data and clock pins as the MAC sees them (TI DP83848 on the Arty)."""
    return wiring.Signature({
        "rx_clk": In(1), "tx_clk": In(1), "rx_dv": In(1), "rx_er": In(1), "rx_data": In(4),
        "col": In(1), "crs": In(1), "tx_en": Out(1), "tx_data": Out(4), "rst_n": Out(1),
        "mdc": Out(1),
    })


class LiteEthCore(wiring.Component):
    """The generated core (``core``; MAC, ARP, IPv4, ICMP, UDP on the board's PHY) in the
    ``sync`` domain with the device's `settings` (its MAC and IP address inputs tied to
    them). ``mii``: the PHY pins (MDIO left unconnected: the DP83848 strap defaults are
    used); ``udp_rx`` / ``udp_tx``: the raw UDP port; ``dst_port``: its filter / send
    port (`hw.eth.bridge.UdpBridge.dst_port`)."""

    def __init__(self, core: GeneratedEthCore, settings: EthSettings) -> None:
        if core.meta.get("phy") != "LiteEthPHYMII":
            raise EthError(f"LiteEthCore wraps an MII core, not {core.meta.get('phy')}")
        self.core = core
        self.settings = settings
        super().__init__({
            "mii": Out(mii_signature()),
            "udp_rx": Out(stream.Signature(udp_rx_layout)),
            "udp_tx": In(stream.Signature(udp_tx_layout)),
            "dst_port": In(16),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        p, s = self.core.port_prefix, self.settings
        rx, tx, mii = self.udp_rx, self.udp_tx, self.mii
        ports = self.core.meta["ports"]
        extra = {"i_sim_trace": Const(0, 1)} if "sim_trace" in ports else {}
        m.submodules.core = Instance(
            self.core.meta["module"],
            i_sys_clock=ClockSignal("sync"), i_sys_reset=ResetSignal("sync"),
            i_mac_address=Const(s.mac_int, 48), i_ip_address=Const(s.ip_int, 32),
            i_mii_clocks_rx=mii.rx_clk, i_mii_clocks_tx=mii.tx_clk,
            i_mii_rx_dv=mii.rx_dv, i_mii_rx_er=mii.rx_er, i_mii_rx_data=mii.rx_data,
            i_mii_col=mii.col, i_mii_crs=mii.crs,
            o_mii_tx_en=mii.tx_en, o_mii_tx_data=mii.tx_data, o_mii_rst_n=mii.rst_n,
            o_mii_mdc=mii.mdc,
            **extra,
            **{
                f"o_{p}_source_valid": rx.valid, f"i_{p}_source_ready": rx.ready,
                f"o_{p}_source_data": rx.payload.data, f"o_{p}_source_last": rx.payload.last,
                f"o_{p}_source_error": rx.payload.error,
                f"o_{p}_source_ip_address": rx.payload.ip,
                f"o_{p}_source_src_port": rx.payload.port,
                f"o_{p}_source_length": rx.payload.length,
                f"o_{p}_source_dst_port": Signal(16), f"o_{p}_source_last_be": Signal(1),
                f"i_{p}_sink_valid": tx.valid, f"o_{p}_sink_ready": tx.ready,
                f"i_{p}_sink_data": tx.payload.data, f"i_{p}_sink_last": tx.payload.last,
                f"i_{p}_sink_ip_address": tx.payload.ip,
                f"i_{p}_sink_dst_port": self.dst_port,
                f"i_{p}_sink_src_port": Const(s.udp_port, 16),
                f"i_{p}_sink_length": tx.payload.length, f"i_{p}_sink_last_be": Const(1, 1),
            },
        )
        return m
